"""Finding 1 measures against hand-computed values, numpy/scipy references and direct losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from headjax.heads import (
    ablation_effects,
    activated_heads,
    coefficient_of_variation,
    gini,
    jaccard,
    label_permutation_null,
    p_value,
    random_head_sets,
    random_set_jaccard_null,
    spearman,
    task_overlap,
    top_k_share,
    trajectory,
)
from headjax.model import per_sample_loss


def numpy_gini(x):
    x = np.ravel(x).astype(np.float64)
    return np.abs(x[:, None] - x[None, :]).sum() / (2 * x.size ** 2 * x.mean())


def test_gini_cv_and_top_k_share_on_hand_computed_arrays():
    assert float(gini(jnp.array([[0.0, 0.0], [0.0, 1.0]]))) == pytest.approx(0.75)
    assert float(gini(jnp.array([[1.0, 2.0], [3.0, 4.0]]))) == pytest.approx(0.25)
    assert float(gini(jnp.full((3, 5), 2.0))) == pytest.approx(0.0, abs=1e-6)
    x = np.random.default_rng(0).gamma(0.5, size=(6, 9))
    assert float(gini(jnp.asarray(x))) == pytest.approx(numpy_gini(x), rel=1e-5)
    assert float(coefficient_of_variation(jnp.array([1.0, 2.0, 3.0, 4.0]))) == pytest.approx(
        np.sqrt(1.25) / 2.5)
    change = jnp.array([[-4.0, 1.0], [2.0, 3.0]])
    assert float(top_k_share(change, 2)) == pytest.approx(0.7)
    assert float(top_k_share(change, 4)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k: 5"):
        top_k_share(change, 5)


def test_trajectory_matches_numpy():
    patterns = np.random.default_rng(1).random((5, 3, 4)).astype(np.float32)
    out = trajectory(jnp.asarray(patterns))
    flat = patterns.reshape(5, -1)
    np.testing.assert_allclose(out.mse_to_base, ((flat - flat[0]) ** 2).mean(1), atol=1e-7)
    np.testing.assert_allclose(out.mse_to_final, ((flat - flat[-1]) ** 2).mean(1), atol=1e-7)
    np.testing.assert_allclose(out.corr_to_base, [np.corrcoef(f, flat[0])[0, 1] for f in flat],
                               atol=1e-5)
    np.testing.assert_allclose(out.corr_to_final,
                               [np.corrcoef(f, flat[-1])[0, 1] for f in flat], atol=1e-5)


def test_activated_heads_rules():
    change = jnp.array([[0.1, -0.9, 0.2], [0.05, 0.6, 0.0]])
    np.testing.assert_array_equal(activated_heads(change, k=2),
                                  [[False, True, False], [False, True, False]])
    np.testing.assert_array_equal(activated_heads(change, k=2, signed=True),
                                  [[False, False, True], [False, True, False]])
    magnitude = np.abs(np.asarray(change))
    expected = magnitude > magnitude.mean() + 1.0 * magnitude.std()
    np.testing.assert_array_equal(activated_heads(change, rule="zscore", z=1.0), expected)
    assert expected.sum() == 1
    with pytest.raises(ValueError, match="k: 7"):
        activated_heads(change, k=7)


def test_jaccard_and_spearman_match_references():
    a = np.array([[1, 1, 0], [0, 1, 0]], bool)
    b = np.array([[1, 0, 0], [1, 1, 1]], bool)
    assert float(jaccard(a, b)) == pytest.approx(2 / 5)
    assert float(jaccard(np.zeros(3, bool), np.zeros(3, bool))) == 0.0
    rng = np.random.default_rng(2)
    x = rng.integers(0, 5, (4, 6)).astype(np.float32)     # many ties
    y = x + rng.integers(0, 3, (4, 6))
    assert float(spearman(x, y)) == pytest.approx(stats.spearmanr(x.ravel(), y.ravel())[0],
                                                  abs=1e-5)


def test_random_set_null_has_the_hypergeometric_mean():
    shape, k = (3, 4), 3
    sets = np.asarray(random_head_sets(jax.random.key(0), shape, k, 50))
    assert (sets.sum(axis=(1, 2)) == k).all()
    n = shape[0] * shape[1]
    exact = sum(stats.hypergeom(n, k, k).pmf(i) * i / (2 * k - i) for i in range(k + 1))
    null = random_set_jaccard_null(jax.random.key(1), shape, k, num_draws=4000)
    assert float(np.mean(null)) == pytest.approx(exact, abs=0.01)


def test_p_value():
    null = np.arange(10.0)
    assert p_value(2.0, null, alternative="less") == pytest.approx(4 / 11)
    assert p_value(2.0, null, alternative="greater") == pytest.approx(9 / 11)
    assert p_value(-1.0, null) == pytest.approx(1 / 11)


def test_label_permutation_separates_distinct_tasks_from_exchangeable_ones():
    rng = np.random.default_rng(3)
    base = rng.random((4, 6))
    a, b = base.copy(), base.copy()
    a[0, :3] += 2.0          # task a loads heads (0, 0..2), task b heads (3, 3..5)
    b[3, 3:] += 2.0
    noise = lambda: 0.3 * rng.standard_normal((40, 4, 6))
    per_a, per_b = a + noise(), b + noise()
    jac, rho = task_overlap(per_a.mean(0), per_b.mean(0), k=3)
    null = label_permutation_null(jnp.asarray(per_a), jnp.asarray(per_b), jax.random.key(0),
                                  k=3, num_permutations=200)
    assert float(jac) == 0.0
    assert p_value(float(jac), null.jaccard) < 0.01
    assert p_value(float(rho), null.spearman) < 0.01
    same = a + noise()
    jac_same, _ = task_overlap(per_a.mean(0), same.mean(0), k=3)
    assert float(jac_same) == 1.0
    null_same = label_permutation_null(jnp.asarray(per_a), jnp.asarray(same), jax.random.key(1),
                                       k=3, num_permutations=200)
    assert p_value(float(jac_same), null_same.jaccard) > 0.5


def test_ablation_effects_equal_direct_gated_losses(tiny):
    config, params = tiny
    rng = np.random.default_rng(4)
    loss_mask = np.zeros((3, 9), np.float32)
    loss_mask[:2, 5:] = 1.0                 # sample 2 has no answer: excluded
    batch = {"tokens": jnp.asarray(rng.integers(0, 128, (3, 9)), jnp.int32),
             "loss_mask": jnp.asarray(loss_mask)}
    sets = {"first": np.eye(2, 4, dtype=bool), "layer1": np.array([[0, 0, 0, 0], [1] * 4], bool)}
    effects = ablation_effects(params, config, [batch, batch], sets)
    plain = np.asarray(per_sample_loss(params, batch, config))[:2]
    for name, mask in sets.items():
        gated = np.asarray(per_sample_loss(params, batch, config, jnp.asarray(1.0 - mask)))[:2]
        assert effects[name] == pytest.approx(float((gated - plain).mean()), rel=1e-4, abs=1e-7)
    assert abs(effects["layer1"]) > 0
    with pytest.raises(ValueError, match=r"head_sets\['bad'\]"):
        ablation_effects(params, config, [batch], {"bad": np.ones((4, 2), bool)})

