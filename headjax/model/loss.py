"""The SFT loss: next-token cross-entropy on answer tokens only.

Batch convention (used across headjax): a dict with
  tokens     i32[batch, seq]   token ids,
  loss_mask  f32[batch, seq]   1 where token t is an answer token, i.e. a *target* predicted from
                               position t-1 (prompt, chat-template and padding tokens are 0),
  segment_ids i32[batch, seq]  optional packing/padding ids (0 = padding),
  positions  i32[batch, seq]   optional RoPE positions.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from headjax.model.config import ModelConfig
from headjax.model.transformer import Params, forward


def token_losses(logits: Float[Array, "batch seq vocab"], tokens) -> Float[Array, "batch seq"]:
    """Cross-entropy (nats) of predicting token t from position t-1; column 0 is 0."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])
    return jnp.pad(ce, ((0, 0), (1, 0)))


def batch_token_losses(params: Params, batch: dict, config: ModelConfig, gates=None, *,
                       adapters=None
                       ) -> tuple[Float[Array, "batch seq"], Float[Array, "batch seq"]]:
    """(masked per-token losses, loss mask) for `batch`, with optional per-head `gates` and
    low-rank `adapters` (see `forward`)."""
    logits = forward(params, batch["tokens"], config, gates=gates, adapters=adapters,
                     positions=batch.get("positions"),
                     segment_ids=batch.get("segment_ids")).logits
    mask = batch["loss_mask"].astype(jnp.float32).at[:, 0].set(0.0)
    return token_losses(logits, batch["tokens"]) * mask, mask


def loss(params: Params, batch: dict, config: ModelConfig, gates=None) -> Float[Array, ""]:
    """Batch-mean loss: summed answer-token cross-entropy / number of answer tokens in the batch."""
    losses, mask = batch_token_losses(params, batch, config, gates)
    return losses.sum() / jnp.maximum(mask.sum(), 1.0)


def per_sample_loss(params: Params, batch: dict, config: ModelConfig, gates=None
                    ) -> Float[Array, " batch"]:
    """Each sample's own mean answer-token cross-entropy, `[batch]` (0 for samples with none)."""
    losses, mask = batch_token_losses(params, batch, config, gates)
    return losses.sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)
