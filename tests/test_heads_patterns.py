"""Activation patterns streamed over batches, normalisations and bootstrap intervals.

References: per-sample gate gradients computed one sample at a time with `jax.grad` of that
sample's own loss (no batching, no per-sample gates), the normalisation formulas in numpy, and a
numpy bootstrap.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from headjax.heads import activation_pattern, bootstrap_ci, normalize_pattern
from headjax.model import per_sample_loss


def make_batches() -> list[dict]:
    rng = np.random.default_rng(0)
    batches = []
    for start in (4, 6):
        loss_mask = np.zeros((3, 10), np.float32)
        loss_mask[:, start:] = 1.0
        batches.append({"tokens": rng.integers(0, 128, (3, 10)).astype(np.int32),
                        "loss_mask": loss_mask, "task": "synthetic"})
    batches[1]["loss_mask"][2] = 0.0        # no answer tokens: not a probe sample
    return batches


def one_sample_scores(params, config, batch) -> np.ndarray:
    """|dL_i/dgates| for each sample on its own (batch of one, shared [L, H] gates)."""
    grad = jax.jit(jax.grad(lambda g, single: per_sample_loss(params, single, config, g)[0]))
    ones = jnp.ones((config.num_layers, config.num_heads))
    return np.stack([np.abs(np.asarray(grad(ones, {k: jnp.asarray(batch[k][i:i + 1])
                                                   for k in ("tokens", "loss_mask")})))
                     for i in range(batch["tokens"].shape[0])])


@pytest.fixture(scope="module")
def pattern(tiny):
    config, params = tiny
    return activation_pattern(params, config, make_batches(), progress=False)


def test_pattern_is_mean_of_one_sample_scores_over_answered_samples(tiny, pattern):
    config, params = tiny
    batches = make_batches()
    reference = np.concatenate([one_sample_scores(params, config, batches[0]),
                                one_sample_scores(params, config, batches[1])[:2]])
    assert pattern.per_sample.shape == (5, config.num_layers, config.num_heads)
    np.testing.assert_allclose(pattern.per_sample, reference, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(pattern.mean, reference.mean(0), rtol=1e-4, atol=1e-7)


def test_normalisations_match_their_formulas(tiny, pattern):
    config, params = tiny
    raw = pattern.mean
    expected = {
        "layer_l2": raw / np.sqrt((raw ** 2).sum(axis=1, keepdims=True)),
        "minmax": (raw - raw.min()) / (raw.max() - raw.min()),
        "sum_to_one": raw / raw.sum(),
    }
    for name, want in expected.items():
        np.testing.assert_allclose(normalize_pattern(raw, name), want, rtol=1e-5)
    via_stream = activation_pattern(params, config, make_batches(), normalization="minmax",
                                    progress=False)
    np.testing.assert_allclose(via_stream.mean, expected["minmax"], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(via_stream.per_sample, pattern.per_sample)
    with pytest.raises(ValueError, match="normalization"):
        normalize_pattern(raw, "zscore")


def test_empty_loss_masks_raise(tiny):
    config, params = tiny
    batch = make_batches()[0]
    batch["loss_mask"][:] = 0.0
    with pytest.raises(ValueError, match="no sample with answer tokens"):
        activation_pattern(params, config, [batch], progress=False)


def test_bootstrap_interval_matches_numpy_bootstrap():
    rng = np.random.default_rng(1)
    per_sample = rng.gamma(2.0, 1.0, size=(400, 2, 3)).astype(np.float32)
    ci = bootstrap_ci(jnp.asarray(per_sample), jax.random.key(0), num_resamples=2000)
    means = np.stack([per_sample[rng.integers(0, 400, 400)].mean(0) for _ in range(2000)])
    low, high = np.quantile(means, [0.025, 0.975], axis=0)
    width = high - low
    np.testing.assert_allclose(ci.low, low, atol=0.1 * width.max())
    np.testing.assert_allclose(ci.high, high, atol=0.1 * width.max())
    # ~ mean +- 1.96 standard errors for a mean of 400 samples
    se = per_sample.std(0) / np.sqrt(400)
    np.testing.assert_allclose(np.asarray(ci.high - ci.low), 2 * 1.96 * se, rtol=0.15)
    same = bootstrap_ci(jnp.ones((7, 2, 3)), jax.random.key(0), num_resamples=50,
                        normalization="sum_to_one")
    np.testing.assert_allclose(same.low, np.full((2, 3), 1 / 6), rtol=1e-6)
    np.testing.assert_allclose(same.high, np.full((2, 3), 1 / 6), rtol=1e-6)


SHARDED_SCRIPT = """
import jax, numpy as np
from headjax.heads import activation_pattern
from headjax.model import init, param_axes, param_shapes, tiny_config
from headjax.parallel import DEFAULT_RULES, make_mesh, tree_shardings
config = tiny_config()
params = init(jax.random.key(0), config)
mesh = make_mesh({"fsdp": 2, "tensor": 2})
shardings = tree_shardings(param_axes(config), param_shapes(config), DEFAULT_RULES, mesh)
sharded = jax.device_put(params, shardings)
assert len(sharded["layers"]["q_proj"].sharding.device_set) == 4
rng = np.random.default_rng(0)
loss_mask = np.zeros((4, 10), np.float32)
loss_mask[:, 5:] = 1.0
batches = [{"tokens": rng.integers(0, 128, (4, 10)).astype(np.int32), "loss_mask": loss_mask}]
a = activation_pattern(sharded, config, batches, progress=False)
b = activation_pattern(jax.device_put(params, jax.devices()[0]), config, batches, progress=False)
np.testing.assert_allclose(a.per_sample, b.per_sample, rtol=1e-5, atol=1e-8)
print("ok")
"""


def test_sharded_params_give_the_same_pattern():
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], capture_output=True,
                            text=True, env=env, timeout=240)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
