"""LoRA and head-LoRA (`headjax.lora`) on the tiny model: the merge formula against torch-layout
matrices, training that moves only adapters with an optimizer state of their size, head-LoRA
that leaves every other head bit-identical, sharding like the adapted weights (specs, and a
sharded step on 8 host devices equal to one device), runs through the trainer (resume, guide
head selection, export).

Bad input tried: dropout outside [0, 1), an unknown or repeated target, a zero rank,
`guide.train_mlp` beside LoRA, a parameter mask given to a LoRA run, heads of the wrong shape.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers_tasks import concatenated, digit_task, tiny_run_config
from jax.sharding import AbstractMesh
from test_parallel import WORKER, worker_env

from headjax.app.experiment import run
from headjax.io import load_native
from headjax.io.layout import to_checkpoint
from headjax.lora import (
    LoraParams,
    adapter_axes,
    adapter_shapes,
    init_adapters,
    lora_spec,
    model_params,
    restored_model_params,
    trainable_count,
    with_rank_rule,
)
from headjax.lora.export import export_peft, peft_tensors
from headjax.model import loss as model_loss
from headjax.model import param_axes
from headjax.parallel import DEFAULT_RULES, logical_to_spec
from headjax.train import create_state, make_optimizer, make_schedule, make_train_step, validate
from headjax.train.checkpoint import restore_params
from headjax.train.trainer import lora_params, train

ALL = ("q", "k", "v", "o", "gate", "up", "down")
HEADS = np.array([[False, True, False, False], [False, False, False, False]])  # one head, layer 0
merged_params = jax.jit(model_params)


def _random_adapters(config, spec, seed=3):
    """Adapters with nonzero a and b, N(0, 0.1) (b starts at zero in `init_adapters`)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda shape: jnp.asarray(0.1 * rng.standard_normal(shape), jnp.float32),
                        adapter_shapes(config, spec), is_leaf=lambda x: isinstance(x, tuple))


def _batch(batch=4, seq=12, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((batch, seq), np.float32)
    mask[:, seq // 2:] = 1.0
    return {"tokens": jnp.asarray(rng.integers(0, 128, (batch, seq)), jnp.int32),
            "loss_mask": jnp.asarray(mask)}


def _trained(params, config, steps=4, lr=3e-2):
    """`params` (a LoraParams) after `steps` AdamW steps on a fixed batch, and the loss curve."""
    schedule = make_schedule("constant", lr, steps)
    optimizer = make_optimizer(schedule, weight_decay=0.1)
    step = jax.jit(make_train_step(config, optimizer, schedule))
    state, batch, losses = create_state(params, optimizer, 0), _batch(), []
    for _ in range(steps):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return state, losses


def test_merged_weights_equal_w_plus_scaled_b_a(tiny):
    """Torch layout: W' = W + (alpha / r) B A with peft's lora_A [r, in], lora_B [out, r]."""
    config, base = tiny
    spec = lora_spec(4, 8.0, ALL)
    params = LoraParams(base, _random_adapters(config, spec), spec)
    merged = to_checkpoint(jax.device_get(merged_params(params)), config, "hf")
    before = to_checkpoint(jax.device_get(base), config, "hf")
    adapters = peft_tensors(params)
    assert len(adapters) == 2 * len(ALL) * config.num_layers
    for name, w in before.items():
        a_name = "base_model.model." + name.removesuffix(".weight") + ".lora_A.weight"
        if a_name not in adapters:
            np.testing.assert_array_equal(merged[name], w)
            continue
        a = adapters[a_name].astype(np.float64)
        b = adapters[a_name.replace("lora_A", "lora_B")].astype(np.float64)
        assert a.shape == (4, w.shape[1]) and b.shape == (w.shape[0], 4)
        expected = w.astype(np.float64) + (8.0 / 4) * b @ a
        np.testing.assert_allclose(merged[name], expected, rtol=1e-5, atol=1e-6)
        assert np.abs(expected - w).max() > 1e-2


def test_only_adapters_change_and_the_loss_falls(tiny):
    config, base = tiny
    spec = lora_spec(4, 8.0, ALL)
    params = LoraParams(base, init_adapters(jax.random.key(0), config, spec), spec)
    assert jax.tree.all(jax.tree.map(lambda m, b: bool((m == b).all()),
                                     merged_params(params), base))  # b = 0: the base model
    state, losses = _trained(params, config)
    for old, new in zip(jax.tree.leaves(base), jax.tree.leaves(state.params.base), strict=True):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    for old, new in zip(jax.tree.leaves(params.adapters), jax.tree.leaves(state.params.adapters),
                        strict=True):
        assert np.abs(np.asarray(new) - np.asarray(old)).max() > 0
    assert losses[-1] < losses[0] - 0.1
    merged_loss = float(jax.jit(model_loss, static_argnums=2)(merged_params(state.params),
                                                              _batch(), config))
    assert merged_loss < losses[-1]


def test_optimizer_state_is_the_adapters_size(tiny):
    config, base = tiny
    spec = lora_spec(2, 4.0, ("q", "v"))
    optimizer = make_optimizer(make_schedule("constant", 1e-3, 1), grad_clip=1.0)
    adapters = init_adapters(jax.random.key(0), config, spec)
    state = create_state(LoraParams(base, adapters, spec), optimizer, 0)
    arrays = [x for x in jax.tree.leaves(state.opt_state) if np.ndim(x) > 0]
    adapter_size = sum(x.size for x in jax.tree.leaves(adapters))
    assert sum(x.size for x in arrays) == 2 * adapter_size  # AdamW's mu and nu
    assert adapter_size == trainable_count(config, spec)
    assert adapter_size == 2 * 2 * (2 * 32 + 4 * 8 + 2 * 8)  # layers * rank * (q a, b, v b)
    full = create_state(base, optimizer, 0).opt_state
    assert sum(np.size(x) for x in jax.tree.leaves(full)) > 50 * adapter_size


def test_head_lora_leaves_every_other_head_untouched(tiny):
    config, base = tiny
    spec = lora_spec(4, 8.0, ALL, HEADS)
    params = LoraParams(base, init_adapters(jax.random.key(0), config, spec), spec)
    state, losses = _trained(params, config)
    assert losses[-1] < losses[0]
    before, after = jax.device_get(base["layers"]), jax.device_get(merged_params(state.params))
    after = after["layers"]
    changed = lambda x, y: np.abs(np.asarray(x) - np.asarray(y)).max() > 0
    for layer in range(config.num_layers):
        for h in range(config.num_heads):
            g = h // config.group_size
            chosen, group = HEADS[layer, h], HEADS[layer].reshape(2, 2)[g].any()
            assert changed(before["q_proj"][layer, :, h], after["q_proj"][layer, :, h]) == chosen
            assert changed(before["o_proj"][layer, h], after["o_proj"][layer, h]) == chosen
            for key in ("k_proj", "v_proj"):
                assert changed(before[key][layer, :, g], after[key][layer, :, g]) == group
        for key in ("gate_proj", "up_proj", "down_proj"):
            assert changed(before[key][layer], after[key][layer]) == HEADS[layer].any()
    # (layers with a head) * rank * (q: d + hd, k/v: d + hd each, o: hd + d, mlp: 3 * (d + f))
    assert trainable_count(config, spec) == 4 * (4 * (32 + 8) + 3 * (32 + 64))
    with pytest.raises(ValueError, match=r"lora heads: shape \(4,\)"):
        init_adapters(jax.random.key(0), config, lora_spec(4, 8.0, ("q",), np.ones(4, bool)))


def test_adapters_shard_like_the_weights_they_adapt(tiny):
    """a's layer and input dims take W's input specs, b's output dims W's output specs, the
    rank is replicated (all dims of size 2, so every rule can apply on a 2x2x2 mesh)."""
    config, _ = tiny
    mesh = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"))
    rules = with_rank_rule(DEFAULT_RULES)
    weights = param_axes(config)["layers"]

    def spec_of(names):
        return tuple(logical_to_spec(names, (2,) * len(names), rules, mesh))

    for key, names in adapter_axes(config, lora_spec(8, 8.0, ALL)).items():
        w, a, b = spec_of(weights[key]), spec_of(names["a"]), spec_of(names["b"])
        n_in = len(names["a"]) - 2
        assert a == (*w[:1 + n_in], None) and b == (w[0], None, *w[1 + n_in:])
    assert spec_of(adapter_axes(config, lora_spec(8, 8.0, ("q",)))["q_proj"]["b"]) == (
        None, None, "tensor", None)
    assert spec_of(adapter_axes(config, lora_spec(8, 8.0, ("o",)))["o_proj"]["a"]) == (
        None, "tensor", None, None)
    assert with_rank_rule(rules) == rules


def test_sharded_lora_steps_match_single_device(tmp_path):
    """data=2 x fsdp=2 x tensor=2 (8 host devices) equals one device after 3 LoRA steps; the
    adapters and their AdamW moments carry the adapted weights' shardings, the base none in the
    optimizer state."""
    out = tmp_path / "lora.json"
    env = worker_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
    subprocess.run([sys.executable, str(WORKER), "lora_sharded", str(out)], check=True,
                   timeout=600, env=env)
    result = json.loads(out.read_text())
    assert result["changed"] > 1e-3 and result["data2_fsdp2_tensor2"] < 1e-5
    specs = result["specs"]
    assert specs[".params.base['layers']['q_proj']"] == [None, "fsdp", "tensor", None]
    for prefix in (".params.adapters", ".opt_state[1][0].mu", ".opt_state[1][0].nu"):
        assert specs[f"{prefix}['q_proj']['a']"] == [None, "fsdp", None]
        assert specs[f"{prefix}['q_proj']['b']"] == [None, None, "tensor", None]
        assert specs[f"{prefix}['o_proj']['a']"] == [None, "tensor", None, None]
    assert not [k for k in specs if k.startswith(".opt_state") and "embed" in k]


def test_config_errors_name_the_key(tiny, tiny_model_dir, tmp_path):
    from headjax.train import default_config

    for field, value, match in (("dropout", 1.0, "lora.dropout: 1.0 not in \\[0, 1\\)"),
                                ("targets", ("q", "x"), "lora.targets"),
                                ("targets", ("q", "q"), "lora.targets"),
                                ("rank", 0, "lora.rank: must be > 0")):
        c = default_config()
        c.lora[field] = value
        with pytest.raises(ValueError, match=match):
            validate(c)
    c = default_config()
    c.lora.enabled, c.guide.train_mlp = True, True
    with pytest.raises(ValueError, match="guide.train_mlp: with lora.enabled"):
        validate(c)
    config, base = tiny
    c = tiny_run_config(tiny_model_dir, tmp_path, ("lora_echo",))
    c.lora.enabled = True
    with pytest.raises(ValueError, match="not as a parameter mask"):
        train(c, model_config=config, params=base, make_batches=None, mask=base)
    c.lora.enabled = False
    with pytest.raises(ValueError, match="head-LoRA heads given to a run without LoRA"):
        lora_params(c, config, base, HEADS)


class _InterruptedError(Exception):
    pass


class _Batches:
    """Resumable synthetic batches (batch i from seed i); raise `_InterruptedError` at `stop`."""

    def __init__(self, state=None, stop=None):
        self.index = (state or {}).get("index", 0)
        self.stop = stop

    def __next__(self):
        if self.index == self.stop:
            raise _InterruptedError
        batch = {k: np.asarray(v) for k, v in _batch(seed=self.index).items()}
        self.index += 1
        return batch

    def state_dict(self):
        return {"index": self.index}


def test_lora_training_resumes_exactly(tiny, tiny_model_dir, tmp_path):
    config, base = tiny

    def run_steps(run_dir, stop=None):
        c = tiny_run_config(tiny_model_dir, run_dir, ("lora_echo",))
        c.lora.update(enabled=True, rank=2, targets=("q", "o", "up"))
        c.train.update(steps=3, batch_size=4, warmup_steps=0)
        c.checkpoint.update(every=1, keep=1, async_save=False)
        return train(c, model_config=config, params=base,
                     make_batches=lambda state: _Batches(state, stop))

    with pytest.raises(_InterruptedError):
        run_steps(tmp_path / "split", stop=2)
    resumed = run_steps(tmp_path / "split")
    straight = run_steps(tmp_path / "straight")
    assert isinstance(resumed.params, LoraParams) and int(resumed.step) == 3
    for x, y in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _head_lora_config(model_dir, run_dir, *, steps: int, heads: str):
    """A head-LoRA run (rank 2 on q and o, a quarter of the heads by `heads`) of the tiny model
    on 8 samples of an echo task."""
    digit_task("lora_echo", concatenated)
    c = tiny_run_config(model_dir, run_dir, ("lora_echo",))
    c.data.train_samples = 8
    c.train.update(steps=steps, warmup_steps=0)
    c.checkpoint.update(every=0)
    c.guide.update(heads=heads, head_fraction=0.25)
    c.lora.update(enabled=True, rank=2, alpha=4.0, targets=("q", "o"))
    return c


def test_guided_head_lora_run_trains_and_exports_the_pattern_heads(tiny, tiny_model_dir,
                                                                    tmp_path):
    config, base = tiny
    c = _head_lora_config(tiny_model_dir, tmp_path, steps=2, heads="pattern")
    c.train.lr = 5e-2
    state = run(c)
    record = json.loads((tmp_path / "guide.json").read_text())
    heads = np.zeros((config.num_layers, config.num_heads), bool)
    heads[tuple(np.asarray(record["trained_heads"]).T)] = True
    assert heads.sum() == 2 and state.params.spec.heads == tuple(map(tuple, heads.tolist()))
    assert record["trainable_parameters"] == trainable_count(config, state.params.spec)
    assert record["total_parameters"] == config.num_params()
    final, _, _ = load_native(str(tmp_path / "final_model"))
    restored = restored_model_params(restore_params(tmp_path / "checkpoints"), c.lora.alpha)
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(final), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    q_before, q_after = np.asarray(base["layers"]["q_proj"]), np.asarray(final["layers"]["q_proj"])
    moved = np.abs(q_after - q_before).max(axis=(1, 3)) > 0
    np.testing.assert_array_equal(moved, heads)
    adapter = tmp_path / "final_adapter"
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json",
                                                         "adapter_model.safetensors"]
    assert json.loads((adapter / "adapter_config.json").read_text())["target_modules"] == [
        "o_proj", "q_proj"]
    with pytest.raises(FileExistsError, match="not empty"):
        export_peft(str(adapter), state.params)
    assert float(optax.tree.norm(state.params.adapters)) > 0


def test_adapter_input_dims_agree_with_the_checkpoint_layout():
    """`model.adapter.INPUT_DIMS` (an adapter's `a [*in, r]`) and the checkpoint layout's torch
    `in_features` dims (`io.layout`) describe the same weights."""
    from headjax.io.layout import LAYER_RULES
    from headjax.model.adapter import INPUT_DIMS

    assert {rule.key: rule.in_dims for rule in LAYER_RULES
                          if rule.key in INPUT_DIMS} == INPUT_DIMS


def test_budget_rank_matches_plain_lora_parameters(tiny):
    """Head-LoRA on few heads gets the rank whose adapter count is nearest plain LoRA's (counted
    independently, rank by rank); every head at the same rank is plain LoRA itself."""
    from headjax.app.guide import budget_rank

    config, _ = tiny
    targets = ("q", "k", "v", "o")
    heads = np.zeros((config.num_layers, config.num_heads), bool)
    heads[0, 1] = True
    plain = trainable_count(config, lora_spec(4, 8.0, targets))
    rank = budget_rank(config, targets, heads, 4)
    counts = {r: trainable_count(config, lora_spec(r, 2.0 * r, targets, heads))
              for r in range(1, 4 * rank)}
    assert rank > 4 and rank == min(counts, key=lambda r: abs(counts[r] - plain))
    assert budget_rank(config, targets, np.ones_like(heads), 4) == 4


def test_guided_head_lora_at_a_plain_lora_budget_trains_at_the_matched_rank(tiny, tiny_model_dir,
                                                                            tmp_path):
    from headjax.app.guide import budget_rank

    config, _ = tiny
    c = _head_lora_config(tiny_model_dir, tmp_path, steps=1, heads="random")
    c.guide.lora_budget_rank = 2
    c.checkpoint.export_final = False
    state = run(c)
    record = json.loads((tmp_path / "guide.json").read_text())
    heads = np.asarray(state.params.spec.heads)
    rank = budget_rank(config, ("q", "o"), heads, 2)
    assert record["lora_rank"] == state.params.spec.rank == rank > 2
    assert state.params.spec.alpha == c.lora.alpha  # alpha kept: checkpoints merge as any run
    assert record["trainable_parameters"] == trainable_count(config, state.params.spec)
