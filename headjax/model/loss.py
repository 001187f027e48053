"""The SFT loss: next-token cross-entropy on answer tokens only, and the batch it reads.

The batch (`Batch`, used across headjax) is a dict with
  tokens      i32[batch, seq]  token ids,
  loss_mask   f32[batch, seq]  1 where token t is an answer token, i.e. a *target* predicted from
                               position t-1 (prompt, chat-template and padding tokens are 0),
  segment_ids i32[batch, seq]  optional packing/padding ids (0 = padding),
  positions   i32[batch, seq]  optional RoPE positions.
Data pipelines may add other fields (e.g. task ids); `model_inputs` keeps only these.

With `chunk > 0` the vocabulary projection and its cross-entropy run over `chunk` positions at a
time under `jax.checkpoint`, so the `[batch, seq, vocab]` logits never exist whole (forward or
backward): the same numbers, in `batch * chunk * vocab` memory. With
`ModelConfig.answer_positions > 0` only the positions that predict answer tokens are projected
(at most that many per row; the full projection for a batch with longer answers): the same
numbers, with the vocabulary projection's FLOPs cut from `batch * seq` positions to
`batch * answer_positions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from headjax.model.config import ModelConfig
from headjax.model.transformer import Params, cast_params, forward, unembed
from headjax.parallel import constrain


class Batch(TypedDict):
    """The arrays the model and the loss read (see the module docstring)."""

    tokens: Int[Array, "batch seq"]
    loss_mask: Float[Array, "batch seq"]
    segment_ids: NotRequired[Int[Array, "batch seq"]]
    positions: NotRequired[Int[Array, "batch seq"]]


BATCH_KEYS = tuple(Batch.__annotations__)


def model_inputs(batch: Mapping[str, Any]) -> Batch:
    """The `Batch` fields of `batch` (other fields, e.g. task names, dropped), values as given."""
    return {key: batch[key] for key in BATCH_KEYS if key in batch}  # type: ignore[return-value]


def vocab_cross_entropy(params: Params, hidden: Float[Array, "batch n d_model"],
                        targets: Int[Array, "batch n"], config: ModelConfig, chunk: int = 0
                        ) -> Float[Array, "batch n"]:
    """Cross-entropy (nats) of `targets` under `unembed(params, hidden)`, position by position.

    chunk > 0: `chunk` positions at a time under `jax.checkpoint`, each chunk's logits
    `[batch, chunk, vocab]` recomputed in the backward pass instead of stored. `params` as given
    to `forward` (cast to the compute dtype here).
    """
    params = cast_params(params, config)
    if chunk <= 0:
        return optax.softmax_cross_entropy_with_integer_labels(
            unembed(params, hidden, config), targets)
    batch, n, d_model = hidden.shape
    pad = -n % chunk
    pieces = (n + pad) // chunk
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(batch, pieces, chunk, d_model)
    targets = jnp.pad(targets, ((0, 0), (0, pad))).reshape(batch, pieces, chunk)

    @jax.checkpoint
    def piece(carry, xs):
        h, t = xs
        return carry, optax.softmax_cross_entropy_with_integer_labels(
            unembed(params, h, config), t)

    _, ce = jax.lax.scan(piece, None, (jnp.swapaxes(hidden, 0, 1), jnp.swapaxes(targets, 0, 1)))
    return jnp.swapaxes(ce, 0, 1).reshape(batch, pieces * chunk)[:, :n]


def every_position_losses(params: Params, hidden: Float[Array, "batch seq d_model"], tokens,
                          mask: Float[Array, "batch seq"], config: ModelConfig, chunk: int = 0
                          ) -> Float[Array, "batch seq"]:
    """Per-token losses times `mask`, every position projected onto the vocabulary (position t
    predicts token t + 1; column 0 is 0)."""
    ce = vocab_cross_entropy(params, hidden[:, :-1], tokens[:, 1:], config, chunk)
    return jnp.pad(ce, ((0, 0), (1, 0))) * mask


def first_answer_targets(mask: Float[Array, "batch seq"], cap: int) -> Int[Array, "batch cap"]:
    """The first `cap` positions t of each row with `mask[:, t] > 0` (answer targets), in order;
    rows with fewer are padded with 0 (where the loss mask is always 0)."""
    return jax.vmap(lambda row: jnp.nonzero(row > 0, size=cap, fill_value=0)[0])(mask)


def answer_token_losses(params: Params, hidden: Float[Array, "batch seq d_model"], tokens,
                        mask: Float[Array, "batch seq"], config: ModelConfig, cap: int,
                        chunk: int = 0) -> Float[Array, "batch seq"]:
    """Per-token losses at answer targets (where `mask > 0`; 0 elsewhere), projecting onto the
    vocabulary only the `cap` positions of each row that predict its first `cap` answer tokens.

    A batch with a row of more than `cap` answer tokens takes the full projection instead
    (`lax.cond`: only the branch taken runs), so the result is exact for every batch; `cap` only
    decides which batches are cheap. Cost: `batch * cap` positions instead of `batch * seq`.
    On a mesh every row's gather and scatter stay on the devices holding the row: the gathered
    states are pinned `("batch", "seq", "embed")` and the losses scattered back row by row, so
    the partitioner neither all-gathers the scatter's indices and logits' cotangents nor moves
    the states to an `embed`-sharded layout (all-to-all).
    """
    def selected():
        targets = first_answer_targets(mask, cap)  # answer token t is predicted from position t - 1
        h = jnp.take_along_axis(hidden, jnp.maximum(targets - 1, 0)[..., None], axis=1)
        h = constrain(h, ("batch", "seq", "embed"))
        ce = vocab_cross_entropy(params, h, jnp.take_along_axis(tokens, targets, axis=1),
                                 config, chunk)
        weights = jnp.take_along_axis(mask, targets, axis=1)
        return jax.vmap(lambda row, t, v: row.at[t].add(v))(jnp.zeros_like(mask), targets,
                                                            ce * weights)

    fits = jnp.all((mask > 0).sum(axis=1) <= cap)
    return jax.lax.cond(fits, selected, lambda: every_position_losses(params, hidden, tokens,
                                                                       mask, config, chunk))


def batch_token_losses(params: Params, batch: Batch, config: ModelConfig, gates=None, *,
                       chunk: int = 0, adapters=None
                       ) -> tuple[Float[Array, "batch seq"], Float[Array, "batch seq"]]:
    """(masked per-token losses, loss mask) for `batch`, with optional per-head `gates` and
    low-rank `adapters` (see `forward`).

    chunk > 0 projects onto the vocabulary `chunk` positions at a time (`vocab_cross_entropy`);
    `config.answer_positions` > 0 projects only the positions that predict answer tokens, up to
    that many per row (`answer_token_losses`; exact for any batch). Neither changes losses or
    gradients.
    """
    out = forward(params, batch["tokens"], config, gates=gates, adapters=adapters,
                  positions=batch.get("positions"), segment_ids=batch.get("segment_ids"),
                  return_hidden=True)
    mask = batch["loss_mask"].astype(jnp.float32).at[:, 0].set(0.0)
    if config.answer_positions > 0:
        return answer_token_losses(params, out.hidden, batch["tokens"], mask, config,
                                   config.answer_positions, chunk), mask
    return every_position_losses(params, out.hidden, batch["tokens"], mask, config, chunk), mask


def loss(params: Params, batch: Batch, config: ModelConfig, gates=None) -> Float[Array, ""]:
    """Batch-mean loss: summed answer-token cross-entropy / number of answer tokens in the batch."""
    losses, mask = batch_token_losses(params, batch, config, gates)
    return losses.sum() / jnp.maximum(mask.sum(), 1.0)


def per_sample_loss(params: Params, batch: Batch, config: ModelConfig, gates=None
                    ) -> Float[Array, " batch"]:
    """Each sample's own mean answer-token cross-entropy, `[batch]` (0 for samples with none)."""
    losses, mask = batch_token_losses(params, batch, config, gates)
    return losses.sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
