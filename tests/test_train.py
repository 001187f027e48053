"""Optimizer, step and loop behaviour on the tiny model with synthetic numpy batches.

Bad inputs tried: a batch whose row count differs from train.batch_size, grad_accum not
dividing the batch, an unknown schedule, warmup longer than the run, a loss that turns NaN.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from headjax.heads.param_change import head_parameter_mask
from headjax.model import loss as model_loss
from headjax.train import (
    Hooks,
    TrainingDivergedError,
    create_state,
    default_config,
    make_optimizer,
    make_schedule,
    make_train_step,
    run_loop,
)


def fixed_batch(batch=4, seq=12, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((batch, seq), np.float32)
    mask[:, seq // 2:] = 1.0
    return {"tokens": jnp.asarray(rng.integers(0, 128, (batch, seq)), jnp.int32),
            "loss_mask": jnp.asarray(mask)}


def test_tiny_model_memorises_a_fixed_batch(tiny):
    config, params = tiny
    schedule = make_schedule("constant", 3e-2, 150, 5)
    optimizer = make_optimizer(schedule, grad_clip=1.0)
    step = jax.jit(make_train_step(config, optimizer, schedule))
    state, batch = create_state(params, optimizer, 0), fixed_batch()
    first = None
    for _ in range(150):
        state, metrics = step(state, batch)
        first = first if first is not None else float(metrics["loss"])
    assert first > 4.0  # ~ln(128) at random init
    assert float(model_loss(state.params, batch, config)) < 0.05
    assert int(state.step) == 150 and float(metrics["answer_tokens"]) == 4 * 6


def test_metrics_match_an_independent_loss_and_grad(tiny):
    config, params = tiny
    schedule = make_schedule("constant", 1e-3, 10)
    optimizer = make_optimizer(schedule)
    batch = fixed_batch()
    step = jax.jit(make_train_step(config, optimizer, schedule))
    _, metrics = step(create_state(params, optimizer, 0), batch)
    expected_loss, grads = jax.jit(jax.value_and_grad(model_loss), static_argnums=2)(
        params, batch, config)
    np.testing.assert_allclose(metrics["loss"], expected_loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-5)
    assert float(metrics["lr"]) == pytest.approx(1e-3)


def test_gradient_accumulation_equals_full_batch(tiny):
    config, params = tiny
    schedule = make_schedule("constant", 1e-3, 10)
    optimizer = make_optimizer(schedule, weight_decay=0.1)
    batch = fixed_batch(batch=4)
    # Unequal answer-token counts per micro-batch.
    batch["loss_mask"] = batch["loss_mask"].at[0, 8:].set(0.0)
    state = create_state(params, optimizer, 0)
    full, m_full = jax.jit(make_train_step(config, optimizer, schedule))(state, batch)
    accum, m_acc = jax.jit(make_train_step(config, optimizer, schedule, grad_accum=2))(state,
                                                                                       batch)
    np.testing.assert_allclose(m_acc["loss"], m_full["loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(accum.params), jax.tree.leaves(full.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)  # Adam's first update is ~lr=1e-3
    with pytest.raises(ValueError, match="grad_accum=3 does not divide the batch of 4"):
        make_train_step(config, optimizer, schedule, grad_accum=3)(state, batch)


def test_parameter_mask_keeps_masked_entries_bit_identical(tiny):
    config, params = tiny
    heads = np.zeros((config.num_layers, config.num_heads), bool)
    heads[1, 2] = True
    mask = head_parameter_mask(config, heads, include_kv=False)
    schedule = make_schedule("constant", 1e-2, 10)
    optimizer = make_optimizer(schedule, weight_decay=0.5, grad_clip=1.0, mask=mask)
    step = jax.jit(make_train_step(config, optimizer, schedule))
    state = create_state(params, optimizer, 0)
    for seed in range(3):
        state, _ = step(state, fixed_batch(seed=seed))
    before, after = jax.device_get(params), jax.device_get(state.params)
    for path, m in jax.tree_util.tree_leaves_with_path(mask):
        old = np.asarray(_at(before, path))
        new = np.asarray(_at(after, path))
        frozen = np.asarray(m) == 0
        assert np.array_equal(old[frozen].view(np.uint32), new[frozen].view(np.uint32)), path
        if (~frozen).any():
            assert np.abs(old[~frozen] - new[~frozen]).min() > 0, path
    assert np.asarray(mask["layers"]["q_proj"])[1, :, 2].all()
    assert not np.asarray(mask["layers"]["q_proj"])[0].any()


def _at(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


def test_schedules_against_closed_form():
    peak, total, warmup = 1.0, 110, 10
    cosine = make_schedule("cosine", peak, total, warmup)
    linear = make_schedule("linear", peak, total, warmup, end_lr_fraction=0.1)
    constant = make_schedule("constant", peak, total, warmup)
    assert float(cosine(5)) == pytest.approx(0.5)
    for step in (10, 35, 60, 110):
        t = (step - warmup) / (total - warmup)
        assert float(cosine(step)) == pytest.approx(0.5 * (1 + math.cos(math.pi * t)), abs=1e-6)
        assert float(linear(step)) == pytest.approx(1 - 0.9 * t, abs=1e-6)
        assert float(constant(step)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="train.schedule"):
        make_schedule("step", peak, total)
    with pytest.raises(ValueError, match="train.warmup_steps"):
        make_schedule("cosine", peak, 10, 20)


class _Batches:
    def __init__(self):
        self.index = 0

    def __next__(self):
        self.index += 1
        return fixed_batch()

    def state_dict(self):
        return {"index": self.index}


def test_nan_loss_stops_with_a_clear_message(tiny, tmp_path):
    config, params = tiny
    run = default_config()
    run.run_dir = str(tmp_path)
    run.train.steps = 10

    def step_fn(state, batch):
        step = state.step + 1
        loss = float("nan") if step == 3 else 1.0
        return SimpleNamespace(step=step, params=None), {"loss": loss, "lr": 0.1, "grad_norm": 2.0}

    with pytest.raises(TrainingDivergedError, match="loss is nan at step 3.*no checkpoint"):
        run_loop(run, config, SimpleNamespace(step=0, params=None), step_fn, _Batches(),
                 lambda b: b, None, Hooks())
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 3


def test_wrong_batch_rows_are_named(tiny, tmp_path):
    from headjax.train import train

    config, params = tiny
    run = default_config()
    run.run_dir = str(tmp_path)
    run.train.update(steps=2, batch_size=8, warmup_steps=0)
    with pytest.raises(ValueError, match="a batch has 4 rows but train.batch_size is 8"):
        train(run, model_config=config, params=params, make_batches=lambda s: _Batches())


def test_loop_records_metrics_patterns_evals_and_resumes(tiny, tmp_path):
    import json
    import os

    from headjax.heads import head_scores
    from headjax.train import train

    config, params = tiny
    run = default_config()
    run.run_dir = str(tmp_path)
    run.train.update(steps=6, batch_size=4, lr=1e-2, warmup_steps=1)
    run.checkpoint.update(every=3, keep=2)
    run.eval.every = 4
    run.heads.every = 4
    probe = {k: np.asarray(v) for k, v in fixed_batch(seed=9).items()}
    evaluated = []

    def evaluate(p, step):
        evaluated.append(step)
        return {"syn": 0.25 * len(evaluated)}

    class Batches(_Batches):
        def __init__(self, state):
            self.index = (state or {}).get("index", 0)

        def __next__(self):
            self.index += 1
            return {**{k: np.asarray(v) for k, v in fixed_batch(seed=self.index).items()},
                    "task": ["syn"] * 4}

    hooks = Hooks(evaluate=evaluate, probes={"syn": [probe]})
    train(run, model_config=config, params=params, make_batches=Batches, hooks=hooks)
    patterns = sorted(p.name for p in (tmp_path / "patterns").iterdir())
    assert patterns == ["step_000000.npz", "step_000004.npz", "step_000006.npz"]
    with np.load(tmp_path / "patterns" / "step_000000.npz") as first:
        np.testing.assert_allclose(first["syn"], head_scores(params, probe, config), rtol=1e-5)
        assert first["per_sample/syn"].shape == (4, config.num_layers, config.num_heads)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [(r["step"], r["eval/accuracy/syn"]) for r in records if "loss" not in r] == \
        [(0, 0.25), (4, 0.5), (6, 0.75)]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3", "6"]
    assert list((tmp_path / "tensorboard").iterdir())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["accuracy"] == {"0": {"syn": 0.25}, "4": {"syn": 0.5}, "6": {"syn": 0.75}}
    assert summary["machine"] == f"{os.cpu_count()} CPU cores"  # where the wall time was spent

    run.train.steps = 8  # resume from step 6: no second step-0 measurement
    state = train(run, model_config=config, params=params, make_batches=Batches, hooks=hooks)
    assert int(state.step) == 8 and evaluated == [0, 4, 6, 8]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["resumed_from"] == 6  # the accuracies measured before the resume are kept
    assert summary["accuracy"] == {"0": {"syn": 0.25}, "4": {"syn": 0.5}, "6": {"syn": 0.75},
                                   "8": {"syn": 1.0}}
    assert (tmp_path / "patterns" / "step_000008.npz").exists()


def test_remat_and_bfloat16_steps_agree_with_float32(tiny):
    from headjax.train.trainer import model_config_for_training

    config, params = tiny
    schedule = optax.constant_schedule(1.0)
    optimizer = optax.sgd(schedule)  # parameter change = -gradient
    state, batch = create_state(params, optimizer, 0), fixed_batch()

    def run(dtype, remat):
        run_config = default_config()
        run_config.model.update(dtype=dtype, remat=remat)
        model = model_config_for_training(config, run_config)
        assert (model.dtype, model.remat) == (dtype, remat)
        return jax.jit(make_train_step(model, optimizer, schedule))(state, batch)

    (plain, m_plain), (remat, m_remat) = run("float32", "none"), run("float32", "full")
    np.testing.assert_allclose(m_remat["grad_norm"], m_plain["grad_norm"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(remat.params), jax.tree.leaves(plain.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-7)
    half, m_half = run("bfloat16", "dots")
    assert jax.tree.leaves(half.params)[0].dtype == jnp.float32  # master weights stay f32
    np.testing.assert_allclose(m_half["loss"], m_plain["loss"], rtol=2e-2)
