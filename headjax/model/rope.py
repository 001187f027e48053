"""Rotary position embeddings in Hugging Face's rotate-half layout (no q/k permutation needed)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from headjax.model.config import ModelConfig, RopeScaling


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling) -> np.ndarray:
    """f32[head_dim // 2] rotation frequencies in radians per position, scaling applied."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if scaling.kind == "linear":
        inv_freq = inv_freq / scaling.factor
    elif scaling.kind == "llama3":
        old_len = scaling.original_max_position_embeddings
        low_wavelen = old_len / scaling.low_freq_factor
        high_wavelen = old_len / scaling.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_len / wavelen - scaling.low_freq_factor) / (
            scaling.high_freq_factor - scaling.low_freq_factor)
        smoothed = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
        inv_freq = np.where(wavelen > low_wavelen, inv_freq / scaling.factor,
                            np.where(wavelen < high_wavelen, inv_freq, smoothed))
    return inv_freq.astype(np.float32)


RotaryTable = Float[Array, "batch seq head_dim"]


def rotary_tables(positions: Int[Array, "batch seq"], config: ModelConfig, *,
                  local: bool = False) -> tuple[RotaryTable, RotaryTable]:
    """cos and sin tables f32[batch, seq, head_dim] for integer `positions`.

    `local`: the table of local layers (base `config.rope_local_theta`, no scaling).
    """
    if local:
        inv_freq = inverse_frequencies(config.head_dim, config.rope_local_theta, RopeScaling())
    else:
        inv_freq = inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
    inv_freq = jnp.asarray(inv_freq)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = angles.astype(jnp.promote_types(config.dtype, jnp.float32))
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: Float[Array, "batch seq heads head_dim"], cos: RotaryTable, sin: RotaryTable
                 ) -> Float[Array, "batch seq heads head_dim"]:
    """Rotate each head of `x` by its position's angles (in >= f32, returned in x.dtype)."""
    half = x.shape[-1] // 2
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    out = x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return out.astype(x.dtype)
