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
backward): the same numbers, in `batch * chunk * vocab` memory.
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


def token_losses(logits: Float[Array, "batch seq vocab"], tokens) -> Float[Array, "batch seq"]:
    """Cross-entropy (nats) of predicting token t from position t-1; column 0 is 0."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])
    return jnp.pad(ce, ((0, 0), (1, 0)))


def chunked_token_losses(params: Params, hidden: Float[Array, "batch seq d_model"], tokens,
                         config: ModelConfig, chunk: int) -> Float[Array, "batch seq"]:
    """`token_losses(unembed(params, hidden), tokens)` computed `chunk` positions at a time.

    Each chunk's logits `[batch, chunk, vocab]` are recomputed in the backward pass instead of
    stored. `params` as given to `forward` (cast to the compute dtype here).
    """
    batch, seq, d_model = hidden.shape
    params = cast_params(params, config)
    # Position t predicts token t+1; the last position predicts nothing (target 0, dropped).
    targets = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))
    pad = -seq % chunk
    pieces = (seq + pad) // chunk
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(batch, pieces, chunk, d_model)
    targets = jnp.pad(targets, ((0, 0), (0, pad))).reshape(batch, pieces, chunk)

    @jax.checkpoint
    def piece(carry, xs):
        h, t = xs
        logits = unembed(params, h, config)
        return carry, optax.softmax_cross_entropy_with_integer_labels(logits, t)

    _, ce = jax.lax.scan(piece, None, (jnp.swapaxes(hidden, 0, 1), jnp.swapaxes(targets, 0, 1)))
    ce = jnp.swapaxes(ce, 0, 1).reshape(batch, pieces * chunk)[:, :seq - 1]
    return jnp.pad(ce, ((0, 0), (1, 0)))


def batch_token_losses(params: Params, batch: Batch, config: ModelConfig, gates=None, *,
                       chunk: int = 0, adapters=None
                       ) -> tuple[Float[Array, "batch seq"], Float[Array, "batch seq"]]:
    """(masked per-token losses, loss mask) for `batch`, with optional per-head `gates` and
    low-rank `adapters` (see `forward`); `chunk > 0` projects onto the vocabulary `chunk`
    positions at a time."""
    out = forward(params, batch["tokens"], config, gates=gates, adapters=adapters,
                  positions=batch.get("positions"), segment_ids=batch.get("segment_ids"),
                  return_hidden=chunk > 0)
    mask = batch["loss_mask"].astype(jnp.float32).at[:, 0].set(0.0)
    if chunk > 0:
        losses = chunked_token_losses(params, out.hidden, batch["tokens"], config, chunk)
    else:
        losses = token_losses(out.logits, batch["tokens"])
    return losses * mask, mask


def loss(params: Params, batch: Batch, config: ModelConfig, gates=None) -> Float[Array, ""]:
    """Batch-mean loss: summed answer-token cross-entropy / number of answer tokens in the batch."""
    losses, mask = batch_token_losses(params, batch, config, gates)
    return losses.sum() / jnp.maximum(mask.sum(), 1.0)


def per_sample_loss(params: Params, batch: Batch, config: ModelConfig, gates=None
                    ) -> Float[Array, " batch"]:
    """Each sample's own mean answer-token cross-entropy, `[batch]` (0 for samples with none)."""
    losses, mask = batch_token_losses(params, batch, config, gates)
    return losses.sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
