"""Gradient-based head activation scores (the paper's Equation 2), one backward pass per batch.

For head (l, h) with post-softmax attention Gamma and SFT loss L on sample x_i, the paper scores

    S_i[l, h] = | sum_{q,k} Gamma_{l,h}(x_i)[q, k] * dL(x_i)/dGamma_{l,h}[q, k] |

and the task's activation pattern is AP[l, h] = mean_i S_i[l, h]. Because a head's output is
o = Gamma V and `o_proj` is linear, the inner sum equals dL/dxi at xi = 1 for a gate xi scaling o
(the head-mask gradient). headjax gives every sample its own gate array, `gates[b, l, h]`, so
one `jax.grad` of the summed per-sample losses yields all per-sample, per-head gradients at once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from headjax.model.config import ModelConfig
from headjax.model.loss import loss as batch_mean_loss
from headjax.model.loss import per_sample_loss
from headjax.model.transformer import Params

LOSS_KINDS = ("sample_mean", "batch_mean")


def gate_gradients(params: Params, batch: dict, config: ModelConfig, *,
                   loss_kind: str = "sample_mean") -> Float[Array, "batch layers heads"]:
    """Signed dL_i/dgates[l, h] at gates = 1 for every sample i of `batch`.

    loss_kind:
      "sample_mean": L_i is sample i's own mean answer-token cross-entropy (headjax default).
      "batch_mean": L is the batch-mean loss (sum of answer-token losses / answer tokens in the
        batch), as the paper's reference script computes it; sample i's gradient is then scaled by
        1 / (answer tokens in its batch).
    """
    if loss_kind not in LOSS_KINDS:
        raise ValueError(f"loss_kind: {loss_kind!r} not in {LOSS_KINDS}")
    batch_size = batch["tokens"].shape[0]
    gates = jnp.ones((batch_size, config.num_layers, config.num_heads), jnp.float32)

    def objective(g):
        if loss_kind == "sample_mean":
            return per_sample_loss(params, batch, config, g).sum()
        return batch_mean_loss(params, batch, config, g)

    return jax.grad(objective)(gates)


def sample_weights(batch: dict) -> Float[Array, " batch"]:
    """1 for samples with at least one answer token (a target after position 0), else 0."""
    return (batch["loss_mask"][:, 1:].sum(axis=1) > 0).astype(jnp.float32)


def per_sample_head_scores(params: Params, batch: dict, config: ModelConfig, *,
                           loss_kind: str = "sample_mean") -> Float[Array, "batch layers heads"]:
    """The paper's per-sample score S_i[l, h] = |dL_i/dgate_{l,h}|, `[batch, layers, heads]`."""
    return jnp.abs(gate_gradients(params, batch, config, loss_kind=loss_kind))


@functools.partial(jax.jit, static_argnames=("config", "loss_kind"))
def head_scores(params: Params, batch: dict, config: ModelConfig, *,
                loss_kind: str = "sample_mean") -> Float[Array, "layers heads"]:
    """Activation pattern of one batch: mean over its samples (with answer tokens) of S_i."""
    scores = per_sample_head_scores(params, batch, config, loss_kind=loss_kind)
    weights = sample_weights(batch)
    return jnp.einsum("blh,b->lh", scores, weights) / jnp.maximum(weights.sum(), 1.0)
