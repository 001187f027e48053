"""RMSNorm: x / rms(x) * scale (Llama) or x / rms(x) * (1 + scale) (Gemma), in at least f32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def rms_norm(x: Float[Array, "... d"], scale: Float[Array, " d"], eps: float, *,
             plus_one: bool = False) -> Float[Array, "... d"]:
    """Normalise the last axis to unit root-mean-square, then multiply by `scale`.

    Llama order (default): the normalised x is cast back to x.dtype, then multiplied by `scale`.
    `plus_one` (Gemma): multiplied by (1 + scale) in >= f32, then cast back.
    """
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    if plus_one:
        return (normed * (1.0 + scale.astype(normed.dtype))).astype(x.dtype)
    return (normed.astype(x.dtype) * scale.astype(x.dtype))
