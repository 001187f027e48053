"""Stochastic rounding of the f32 master weights to the bf16 compute copy (`train.rounding`):
unbiased between bf16 neighbours found from a table of every bf16 value, gradient straight
through, and the train step's update equal to the gradient taken at the rounded copy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

from headjax.model import loss as model_loss
from headjax.train import create_state, default_config, make_train_step
from headjax.train.config import validate
from headjax.train.rounding import stochastic_round_bf16, stochastic_view
from headjax.train.step import stochastic_to_model

DRAWS = 4096


def differs(a, b) -> bool:
    """Whether two pytrees of the same structure differ anywhere."""
    return any(bool(jnp.any(x != y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def bf16_neighbours(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) finite bf16 values around each f32 `x`, from the sorted table of all
    65536 bit patterns (lower == upper where `x` is itself a bf16 value)."""
    table = np.arange(2 ** 16, dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
    table = np.unique(table[np.isfinite(table)])
    upper = table[np.searchsorted(table, x, side="left")]
    lower = table[np.searchsorted(table, x, side="right") - 1]
    return lower, upper


def test_stochastic_rounding_picks_a_neighbour_with_the_unbiased_probability():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.05, 24), rng.normal(0, 30.0, 8), -rng.uniform(1, 2, 8),
                        np.asarray([0.02, -0.1, 1.0, 3.0], np.float32)]).astype(np.float32)
    x[-4:] = np.asarray(x[-4:], ml_dtypes.bfloat16).astype(np.float32)  # on the grid
    keys = jax.random.split(jax.random.key(1), DRAWS)
    draws = np.asarray(jax.vmap(lambda k: stochastic_round_bf16(jnp.asarray(x), k))(keys))
    lower, upper = bf16_neighbours(x)
    assert np.all((draws == lower) | (draws == upper))
    np.testing.assert_array_equal(draws[:, -4:], np.broadcast_to(x[-4:], (DRAWS, 4)))
    between = lower != upper
    p_upper = (x - lower)[between] / (upper - lower)[between]
    seen = (draws[:, between] == upper[between]).mean(axis=0)
    spread = np.sqrt(p_upper * (1 - p_upper) / DRAWS)
    assert np.all(np.abs(seen - p_upper) <= 5 * spread + 1e-9), np.abs(seen - p_upper) / spread


def test_stochastic_view_rounds_every_weight_and_passes_the_gradient_straight_through(tiny):
    config, params = tiny
    bf16 = config.replace(dtype="bfloat16")
    batch = {"tokens": jnp.asarray(np.random.default_rng(0).integers(0, 128, (2, 8)), jnp.int32),
             "loss_mask": jnp.ones((2, 8), jnp.float32)}
    key = jax.random.key(3)
    view = stochastic_view(params, key)
    for leaf, rounded in zip(jax.tree.leaves(params), jax.tree.leaves(view), strict=True):
        assert rounded.dtype == jnp.float32
        np.testing.assert_array_equal(rounded, rounded.astype(jnp.bfloat16).astype(jnp.float32))
        assert float(jnp.abs(rounded - leaf).max()) <= float(jnp.abs(leaf).max()) * 2 ** -7
    assert differs(view, stochastic_view(params, jax.random.key(4)))  # another key
    through = jax.jit(jax.grad(lambda p: model_loss(stochastic_view(p, key), batch, bf16)))(
        params)
    at_view = jax.jit(jax.grad(lambda p: model_loss(p, batch, bf16)))(view)
    for a, b in zip(jax.tree.leaves(through), jax.tree.leaves(at_view), strict=True):
        np.testing.assert_array_equal(a, b)


def test_stochastic_rounding_step_applies_the_gradient_at_the_rounded_copy(tiny):
    """With SGD at lr 1 the step's change is minus the gradient of the loss at the step's
    rounded copy (within bf16 compute's own noise: two bf16 gradient programs differ by about 1%
    in norm), the same copy for every micro-batch, and a state with another rng rounds
    otherwise."""
    config, params = tiny
    bf16 = config.replace(dtype="bfloat16")
    schedule = optax.constant_schedule(1.0)
    optimizer = optax.sgd(schedule)
    state = create_state(params, optimizer, 0)
    batch = {"tokens": jnp.asarray(np.random.default_rng(1).integers(0, 128, (4, 8)), jnp.int32),
             "loss_mask": jnp.ones((4, 8), jnp.float32)}

    compiled = {accum: jax.jit(make_train_step(bf16, optimizer, schedule, grad_accum=accum,
                                               rounding="stochastic")) for accum in (1, 2)}

    def step(state, grad_accum=1):
        return compiled[grad_accum](state, batch)[0].params

    stepped = step(state)
    view, _ = stochastic_to_model(state, None)(params, jnp.zeros((), jnp.int32))
    grads = jax.jit(jax.grad(lambda p: model_loss(p, batch, bf16)))(view)
    for new, old, g in zip(*map(jax.tree.leaves, (stepped, params, grads)), strict=True):
        assert float(jnp.linalg.norm(new - (old - g))) <= 3e-2 * float(jnp.linalg.norm(g))
    accumulated = step(state, grad_accum=2)
    for a, b, old in zip(*map(jax.tree.leaves, (accumulated, stepped, params)), strict=True):
        assert float(jnp.linalg.norm(a - b)) <= 3e-2 * float(jnp.linalg.norm(b - old))
    assert differs(step(create_state(params, optimizer, 1)), stepped)


def test_stochastic_rounding_needs_bf16_compute_over_f32_weights(tiny):
    config, _ = tiny
    schedule = optax.constant_schedule(1.0)
    with pytest.raises(ValueError, match="train.rounding"):
        make_train_step(config, optax.sgd(schedule), schedule, rounding="stochastic")
    run = default_config()
    run.train.rounding = "stochastic"
    with pytest.raises(ValueError, match=r"config\.train\.rounding: .*model\.dtype='float32'"):
        validate(run)
    run.model.dtype = "bfloat16"
    validate(run)
    run.train.rounding = "random"
    with pytest.raises(ValueError, match=r"config\.train\.rounding: 'random' not in"):
        validate(run)


def test_stochastic_rounding_in_a_lora_run_rounds_the_adapters_only(tiny):
    """LoRA with bf16 compute and stochastic rounding: the rounded copy is of the adapters (the
    trainable part); the frozen base stays bit for bit and the loss falls."""
    from headjax.lora import LoraParams, init_adapters, lora_spec

    config, base = tiny
    bf16 = config.replace(dtype="bfloat16")
    spec = lora_spec(4, 8.0, ("q", "v"))
    params = LoraParams(base, init_adapters(jax.random.key(0), config, spec), spec)
    schedule = optax.constant_schedule(3e-2)
    optimizer = optax.adam(schedule)
    step = jax.jit(make_train_step(bf16, optimizer, schedule, rounding="stochastic"))
    state = create_state(params, optimizer, 0)
    batch = {"tokens": jnp.asarray(np.random.default_rng(2).integers(0, 128, (4, 12)), jnp.int32),
             "loss_mask": jnp.ones((4, 12), jnp.float32)}
    view, _ = stochastic_to_model(state, None)(params.adapters, jnp.zeros((), jnp.int32))
    for leaf in jax.tree.leaves(view):
        np.testing.assert_array_equal(leaf, leaf.astype(jnp.bfloat16).astype(jnp.float32))
    losses = []
    for _ in range(4):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    for old, new in zip(jax.tree.leaves(base), jax.tree.leaves(state.params.base), strict=True):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    assert differs(state.params.adapters, params.adapters)
    assert losses[-1] < losses[0] - 0.05, losses
