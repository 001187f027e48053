"""RMSNorm as in Llama: x / rms(x) * scale, computed in at least float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def rms_norm(x: Float[Array, "... d_model"], scale: Float[Array, " d_model"], eps: float
             ) -> Float[Array, "... d_model"]:
    """Normalise the last axis to unit root-mean-square, then multiply by `scale`."""
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (normed.astype(x.dtype) * scale.astype(x.dtype))
