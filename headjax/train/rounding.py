"""Stochastic rounding of the float32 master weights to the bf16 compute copy.

With `model.dtype = "bfloat16"` each step casts the f32 master weights to bf16 for the matrix
products. Rounded to nearest, a weight's bf16 copy moves only once the f32 copy has drifted half
a bf16 spacing (2^-9 to 2^-8 of its magnitude): at SFT's learning rates an AdamW update (about
the learning rate) is far below that, so for weights that start on the bf16 grid, as published bf16
checkpoints do, the compute copy lags the master weights by several steps (docs/scaling.md,
"bf16 compute"). Stochastic rounding rounds up with probability equal to the distance from the
lower neighbour in units of the spacing, so the copy equals the master weights in expectation
and every update takes effect at once on average.

The gradient passes straight through: the step differentiates the loss at the rounded copy and
applies that gradient to the master weights, as nearest rounding does.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

ROUNDINGS = ("nearest", "stochastic")
# Mixed into the step's key so the rounding draws are apart from LoRA's dropout draws.
ROUNDING_STREAM = 0x5EED


def stochastic_round_bf16(x: jax.Array, key: jax.Array) -> jax.Array:
    """f32 `x` (any shape) rounded to a neighbouring bf16 value at random, unbiased:
    E[result] = x. Returned as f32 holding bf16-representable values, so a later cast to bf16 is
    exact. Adds 16 random bits below bf16's mantissa to the f32 bit pattern and truncates them
    (sign-magnitude: rounds the magnitude, so negative values are unbiased too)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    noise = jax.random.bits(key, x.shape, jnp.uint16).astype(jnp.uint32)
    rounded = (bits + noise) & jnp.uint32(0xFFFF0000)
    return jax.lax.bitcast_convert_type(rounded, jnp.float32)


def stochastic_view(params: Any, key: jax.Array) -> Any:
    """`params` (a pytree of f32 arrays) with each leaf stochastically rounded to bf16 values
    (`stochastic_round_bf16`, an independent key per leaf). The gradient passes straight
    through: d view / d params = identity."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))

    def view(leaf, leaf_key):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf
        rounded = stochastic_round_bf16(leaf, leaf_key).astype(leaf.dtype)
        return leaf + jax.lax.stop_gradient(rounded - leaf)

    return jax.tree.unflatten(tree, [view(leaf, k) for leaf, k in zip(leaves, keys, strict=True)])
