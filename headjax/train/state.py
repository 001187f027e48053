"""The train state: one pytree (step, params, optimizer state, RNG key data)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from headjax.lora import trainable


@struct.dataclass
class TrainState:
    """step: i32[] updates applied; params (a `headjax.lora.LoraParams` in a LoRA run);
    opt_state (of the trainable part, `headjax.lora.trainable(params)`); rng: u32[2] raw PRNG
    key data."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def create_state(params: Any, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    """Step 0 state for `params` with a fresh optimizer state (of the trainable part: the
    adapters of a `LoraParams`) and an RNG from `seed`."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(trainable(params)),
                      rng=jax.random.key_data(jax.random.key(seed)))
