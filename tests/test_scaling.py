"""Planning for a pod: explicit sharding, memory knobs and the dry run.

Bad inputs tried: a batch the mesh's batch axes do not divide, more tensor shards than kv heads,
an activation whose batch does not divide, a run too big for the chip named with --chip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh

from headjax.model import batch_token_losses, model_inputs, param_axes, param_shapes, tiny_config
from headjax.model.loss import first_answer_targets
from headjax.parallel import (
    DEFAULT_RULES,
    activation_sharding,
    batch_spec,
    constrain,
    param_shardings,
    replicated_params,
)
from headjax.train import make_optimizer

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("plan_worker.py")


def mesh(data=1, fsdp=1, tensor=1) -> AbstractMesh:
    return AbstractMesh((data, fsdp, tensor), ("data", "fsdp", "tensor"))


def worker_env(**extra: str) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **extra)
    return env


def test_model_inputs_keep_the_batch_fields_only():
    batch = {"tokens": 1, "loss_mask": 2, "positions": 3, "task_ids": 4, "task": "x"}
    assert model_inputs(batch) == {"tokens": 1, "loss_mask": 2, "positions": 3}


def test_indivisible_batch_raises_naming_both_numbers():
    with pytest.raises(ValueError, match=r"batch of 3 rows .* 3 is not divisible by mesh data "
                                         r"= 2"):
        batch_spec((3, 16), DEFAULT_RULES, mesh(data=2))
    with pytest.raises(ValueError, match=r"6 is not divisible by mesh data x fsdp = 4"):
        batch_spec((6, 16), DEFAULT_RULES, mesh(data=2, fsdp=2))
    assert tuple(batch_spec((8, 16), DEFAULT_RULES, mesh(data=2, fsdp=2))) == \
        (("data", "fsdp"), None)


def test_weight_matrices_must_shard_small_params_may_replicate():
    config = tiny_config()  # 4 heads, 2 kv heads, d_model 32
    axes, shapes = param_axes(config), param_shapes(config)
    with pytest.raises(ValueError, match=r"layers/k_proj .*kv_heads dimension 2 is not "
                                         r"divisible by mesh tensor = 4"):
        param_shardings(axes, shapes, DEFAULT_RULES, mesh(tensor=4))
    # norm scales sharded over `tensor` by a custom rule: d_model 31 does not divide 2, so only
    # they stay replicated; every weight matrix shards.
    config = tiny_config(d_model=31)
    axes, shapes = param_axes(config), param_shapes(config)
    rules = tuple((name, "tensor" if name == "norm" else target) for name, target in DEFAULT_RULES)
    shardings = param_shardings(axes, shapes, rules, mesh(tensor=2))
    assert sorted(replicated_params(axes, shapes, rules, mesh(tensor=2))) == \
        ["final_norm", "layers/attn_norm", "layers/mlp_norm"]
    assert "tensor" in tuple(shardings["layers"]["k_proj"].spec)
    assert tuple(shardings["final_norm"].spec) == (None,)


def test_constrain_is_identity_outside_a_mesh_and_strict_inside():
    x = jnp.ones((3, 4, 8))
    assert constrain(x, ("batch", "seq", "embed")) is x
    with activation_sharding(mesh(data=2), DEFAULT_RULES), \
            pytest.raises(ValueError, match=r"batch dimension 3 is not divisible by mesh data = 2"):
        constrain(x, ("batch", "seq", "embed"))
    assert constrain(x, ("batch", "seq", "embed")) is x  # the context is gone again


def test_chunked_and_answer_only_cross_entropy_equal_plain(tiny):
    """Value and gradient (params and per-sample gates) within 1e-6 of the plain loss: chunks
    dividing the sequence (16) or not (5); answer-only projection with room for every row's
    answer (8), and too little room for one row (4: that batch takes the full projection), alone
    and chunked; with padding segments and answer tokens spread over each row."""
    config, params = tiny
    rng = np.random.default_rng(0)
    segments = np.ones((3, 16), np.int32)
    segments[1, 12:] = 0
    mask = np.zeros((3, 16), np.float32)
    mask[0, 10:14] = 1  # 4 answer tokens
    mask[1, [3, 4, 9]] = 1  # 3, in two spans
    mask[2, 8:16] = 1  # 8, up to the last position
    batch = {"tokens": jnp.asarray(rng.integers(0, 128, (3, 16)), jnp.int32),
             "loss_mask": jnp.asarray(mask), "segment_ids": jnp.asarray(segments)}
    gates = jnp.asarray(rng.uniform(0.5, 1.5, (3, config.num_layers, config.num_heads)))

    def total(p, g, chunk, answer_positions):
        c = config.replace(answer_positions=answer_positions)
        return batch_token_losses(p, batch, c, g, chunk=chunk)[0].sum()

    grad = jax.jit(jax.value_and_grad(total, argnums=(0, 1)), static_argnums=(2, 3))
    plain, plain_grads = grad(params, gates, 0, 0)
    for chunk, answer_positions in ((5, 0), (16, 0), (0, 8), (0, 4), (5, 8), (3, 4)):
        value, grads = grad(params, gates, chunk, answer_positions)
        np.testing.assert_allclose(value, plain, rtol=1e-6)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(plain_grads), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)


def test_first_answer_targets_in_order_padded_with_zero():
    mask = jnp.asarray([[0, 1, 1, 0, 1], [0, 0, 0, 0, 0], [0, 1, 1, 1, 1]], jnp.float32)
    np.testing.assert_array_equal(first_answer_targets(mask, 3),
                                  [[1, 2, 4], [0, 0, 0], [1, 2, 3]])


def test_answer_positions_must_not_be_negative(tiny):
    config, _ = tiny
    with pytest.raises(ValueError, match="answer_positions"):
        config.replace(answer_positions=-1)


def test_bfloat16_first_moment_halves_mu_only(tiny):
    import optax

    config, params = tiny
    optimizer = make_optimizer(optax.constant_schedule(1e-3), mu_dtype="bfloat16")
    state = optimizer.init(params)
    dtypes = lambda state, name: {x.dtype for x in jax.tree.leaves(  # noqa: E731
        optax.tree_utils.tree_get(state, name))}
    assert dtypes(state, "mu") == {jnp.dtype("bfloat16")}
    assert dtypes(state, "nu") == {jnp.dtype("float32")}
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = optimizer.update(grads, state, params)
    assert dtypes(state, "mu") == {jnp.dtype("bfloat16")}
    assert {x.dtype for x in jax.tree.leaves(updates)} == {jnp.dtype("float32")}


def test_dry_run_plans_llama3_8b_on_64_devices(tmp_path):
    """configs/llama3_8b_tpu_v5p.py (fsdp 16 x tensor 4, bf16, full remat) compiles on 64
    simulated devices from its preset shape: per-device state within 5% of total / 64, every
    weight matrix split 64 ways, FLOPs near 6 N T, evaluation smaller than training, and a batch
    or a mesh that cannot shard named with both numbers."""
    out = tmp_path / "plan.json"
    proc = subprocess.run([sys.executable, str(WORKER), "llama3_8b", str(out)], timeout=300,
                          env=worker_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads(out.read_text())
    assert plan["devices"] == 64 and plan["same_shape"]
    assert 8.0e9 < plan["num_params"] < 8.1e9
    whole = plan["num_params"] * 12  # f32 params + AdamW's two f32 moments
    assert abs(plan["total_state_bytes"] - whole / 64) < 0.05 * whole / 64
    params_whole = plan["num_params"] * 4
    assert abs(plan["param_bytes"] - params_whole / 64) < 0.05 * params_whole / 64
    for name, p in plan["params"].items():
        if not p["small"]:
            assert p["shard"] * 64 == p["size"], name
    assert 1.0 < plan["step_flops"] / plan["model_flops"] < 1.5  # remat recomputes the forward
    train = plan["programs"]["train step"]
    assert sum(train["collectives"].values()) > 0
    # The largest program decides where a run fits; generation projects only the prompts' last
    # position onto the vocabulary, so evaluation stays below the train step.
    peaks = {name: p["peak"] for name, p in plan["programs"].items()}
    assert peaks["eval generation"] < peaks["train step"]
    assert plan["fits_v5e"] == (max(peaks.values()) <= 16 * 2**30) and plan["fits_v5p"]
    assert "kv_heads dimension 8 is not divisible by mesh tensor = 16" in plan["tensor_error"]
    assert "config.train.batch_size: a global batch of 200 rows" in plan["batch_error"]
    assert "not divisible by mesh fsdp = 16" in plan["batch_error"]


def test_dry_run_script_exits_2_naming_the_chip_or_the_numbers(tiny_model_dir):
    """scripts/train.py --dry_run on the tiny model: a 131072-row batch does not fit a v5e (the
    report, then exit 2 with one line naming the chip); a 3-row batch on 2 devices is a one-line
    error naming both numbers."""
    def run(*extra):
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "train.py"),
             "--config", str(ROOT / "configs" / "default.py"),
             f"--config.model.pretrained={tiny_model_dir}", "--dry_run", *extra],
            env=worker_env(), capture_output=True, text=True, timeout=300)

    big = run("--devices=1", "--chip=v5e", "--config.train.batch_size=131072")
    assert big.returncode == 2, big.stderr[-3000:]
    assert "| train step |" in big.stdout and "| v5e (TPU v5e) | 16 | no |" in big.stdout
    assert "| v5p (TPU v5p) | 95 | yes |" not in big.stdout
    assert big.stderr.strip().splitlines()[-1].startswith("error: --chip v5e: does not fit")
    odd = run("--devices=2", "--config.train.batch_size=3", "--config.mesh.data=2")
    assert odd.returncode == 2
    assert odd.stderr.strip().splitlines()[-1] == (
        "error: config.train.batch_size: a global batch of 3 rows cannot be split evenly: batch "
        "dimension 3 is not divisible by mesh data = 2 (use a multiple of it)")


def test_plan_and_knobs_on_one_device(tiny):
    """The tiny model's plan on one device: state bytes from the shapes, XLA's FLOPs near
    6 N T + attention, and a bf16 first moment saving exactly 2 bytes per parameter."""
    from headjax.app.dry_run import format_plan, knob_savings, plan
    from headjax.train import default_config

    config, _ = tiny
    run = default_config()
    run.train.batch_size, run.data.max_len = 4, 32
    run.heads.batch_size, run.eval.batch_size, run.eval.max_new_tokens = 2, 2, 2
    result = plan(run, config, devices=jax.devices()[:1])
    n = config.num_params()
    assert result.param_bytes == 4 * n
    assert 8 * n <= result.opt_state_bytes <= 8 * n + 64  # two f32 moments and a step count
    assert [p.name for p in result.programs] == ["train step", "head-pattern step",
                                                 "eval generation"]
    assert 0.9 < result.step_flops / result.model_flops < 1.2
    rows = {key: (state, peak) for key, _, state, peak in knob_savings(
        run, config, devices=jax.devices()[:1])}
    assert rows["as configured"][0] - rows["train.opt_state_dtype"][0] == 2 * n
    text = format_plan(result)
    assert "| train step |" in text and "replicated where a dimension does not divide: nothing" \
        in text


def test_knobs_of_a_stochastic_bf16_run_switch_to_float32_with_nearest_rounding():
    from headjax.app.dry_run import switched_knobs
    from headjax.train import default_config
    from headjax.train.config import validate

    run = default_config()
    run.model.dtype, run.train.rounding = "bfloat16", "stochastic"
    switched = {key: (value, changed) for key, value, changed in switched_knobs(run)}
    value, changed = switched["model.dtype"]
    assert value == "float32" and changed.train.rounding == "nearest"
    for _, changed in switched.values():
        validate(changed)
    assert switched["model.remat"][1].train.rounding == "stochastic"
    assert run.model.dtype == "bfloat16"  # the run's own config is left as it was
