"""AdamW with a learning-rate schedule, global-norm clipping and an optional parameter mask.

`mu_dtype` stores AdamW's first moment in another dtype (bfloat16 halves it); the second moment
stays float32: with b2 = 0.999 its per-step change (0.1%) is below bfloat16's resolution (0.4%),
so a bfloat16 second moment would stop tracking the gradients.

The mask is a pytree of 0/1 arrays shaped like the params (per element, so single heads' slices
can be trained). It zeroes gradients before clipping (the clip norm counts trainable entries
only) and zeroes the final updates, weight decay included, so masked entries stay bit-identical.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("cosine", "linear", "constant")
OPTIMIZERS = ("adamw",)


def make_schedule(kind: str, peak_lr: float, total_steps: int, warmup_steps: int = 0,
                  end_lr_fraction: float = 0.0) -> optax.Schedule:
    """Linear warmup to `peak_lr`, then `kind` decay to `end_lr_fraction * peak_lr` at the end.

    kind: "cosine" | "linear" | "constant" (constant keeps `peak_lr` after warmup).
    """
    if kind not in SCHEDULES:
        raise ValueError(f"train.schedule: {kind!r} not in {SCHEDULES}")
    if total_steps < 1:
        raise ValueError(f"train.steps: must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"train.warmup_steps: {warmup_steps} not in [0, steps={total_steps}]")
    end_lr = end_lr_fraction * peak_lr
    decay_steps = max(total_steps - warmup_steps, 1)
    if kind == "cosine":
        decay = optax.cosine_decay_schedule(peak_lr, decay_steps, alpha=end_lr_fraction)
    elif kind == "linear":
        decay = optax.linear_schedule(peak_lr, end_lr, decay_steps)
    else:
        decay = optax.constant_schedule(peak_lr)
    if warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(0.0, peak_lr, warmup_steps)
    return optax.join_schedules([warmup, decay], [warmup_steps])


class MaskedState(NamedTuple):
    """The mask (bool, shaped like the params) and the wrapped transformation's state."""

    mask: Any
    inner: Any


def masked(inner: optax.GradientTransformation, mask: Any) -> optax.GradientTransformation:
    """`inner` applied to masked gradients, its updates masked again (masked entries: 0).

    The mask lives in the optimizer state (sharded and checkpointed like the params) rather than
    in the compiled step as a constant.
    """

    def apply(tree, mask_tree):
        return jax.tree.map(lambda x, m: jnp.where(m, x, jnp.zeros_like(x)), tree, mask_tree)

    def init_fn(params):
        mask_tree = jax.tree.map(lambda m, p: jnp.broadcast_to(jnp.asarray(m) != 0, p.shape),
                                 mask, params)
        return MaskedState(mask=mask_tree, inner=inner.init(params))

    def update_fn(updates, state, params=None):
        updates, inner_state = inner.update(apply(updates, state.mask), state.inner, params)
        return apply(updates, state.mask), MaskedState(mask=state.mask, inner=inner_state)

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(schedule: optax.Schedule, *, weight_decay: float = 0.0,
                   grad_clip: float = 0.0, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8, mask: Any = None, mu_dtype: str | None = None
                   ) -> optax.GradientTransformation:
    """AdamW (decoupled weight decay on every parameter) with optional clipping and mask.

    grad_clip: global-norm clipping threshold; 0 disables clipping.
    mask: optional 0/1 pytree shaped like the params; masked entries never change, and the
      clipping norm counts trainable entries only.
    mu_dtype: storage dtype of the first moment (None: the params' dtype).
    """
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                             mu_dtype=mu_dtype))
    chain = optax.chain(*parts)
    return chain if mask is None else masked(chain, mask)

