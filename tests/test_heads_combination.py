"""Finding 2 fits on synthetic patterns with planted weights, against numpy/scipy references."""

from __future__ import annotations

import chex
import jax
import numpy as np
import pytest
from scipy.optimize import nnls

from headjax.heads import (
    fit_combination,
    held_out_fit,
    movement_toward,
    null_tested_fit,
    p_value,
    predict,
    shuffled_fit_null,
)

RNG = np.random.default_rng(0)
BASIS = RNG.gamma(1.0, size=(3, 6, 9))            # three basic-task patterns, 6 layers x 9 heads
PLANTED = np.array([0.6, 0.3, 1.2])


def test_ols_and_nnls_recover_planted_weights():
    target = np.tensordot(PLANTED, BASIS, axes=1) + 0.25 + 0.01 * RNG.standard_normal((6, 9))
    for method in ("ols", "nnls"):
        fit = fit_combination(target, BASIS, method=method)
        np.testing.assert_allclose(fit.weights, PLANTED, atol=0.02)
        assert fit.intercept == pytest.approx(0.25, abs=0.02)
        assert fit.r2 > 0.999
        np.testing.assert_allclose(fit.fitted, predict(fit, BASIS))
    exact = fit_combination(np.tensordot(PLANTED, BASIS, axes=1), BASIS, intercept=False)
    np.testing.assert_allclose(exact.weights, PLANTED, rtol=1e-10)
    assert exact.intercept == 0.0


def test_nnls_clips_a_negative_weight_like_scipy():
    target = np.tensordot(np.array([1.0, -0.5, 0.8]), BASIS, axes=1)
    fit = fit_combination(target, BASIS, method="nnls")
    x = BASIS.reshape(3, -1).T
    reference = nnls(x - x.mean(0), target.ravel() - target.mean())[0]
    np.testing.assert_allclose(fit.weights, reference, atol=1e-10)
    assert fit.weights[1] == 0.0 and (fit.weights >= 0).all()
    assert fit.r2 < fit_combination(target, BASIS, method="ols").r2


def test_ridge_matches_closed_form_and_shrinks():
    target = np.tensordot(PLANTED, BASIS, axes=1)
    x = BASIS.reshape(3, -1).T
    xc, yc = x - x.mean(0), target.ravel() - target.mean()
    fit = fit_combination(target, BASIS, method="ridge", alpha=50.0)
    np.testing.assert_allclose(fit.weights, np.linalg.solve(xc.T @ xc + 50 * np.eye(3), xc.T @ yc))
    assert np.linalg.norm(fit.weights) < np.linalg.norm(PLANTED)
    with pytest.raises(ValueError, match="method"):
        fit_combination(target, BASIS, method="lasso")
    with pytest.raises(ValueError, match="basis"):
        fit_combination(target, BASIS[:, :5])


def test_shuffled_and_unrelated_bases_fit_poorly():
    target = np.tensordot(PLANTED, BASIS, axes=1) + 0.05 * RNG.standard_normal((6, 9))
    real = fit_combination(target, BASIS)
    null = shuffled_fit_null(target, BASIS, jax.random.key(0), num_permutations=100)
    assert null.max() < 0.5 < real.r2
    assert p_value(real.r2, null, alternative="greater") == pytest.approx(1 / 101)
    unrelated = RNG.gamma(1.0, size=(3, 6, 9))
    assert fit_combination(target, unrelated).r2 < 0.5


def test_held_out_fit_carries_over_only_for_a_real_combination():
    n = 40
    basis_samples = [b + 0.3 * RNG.standard_normal((n, 6, 9)) for b in BASIS]
    target_samples = (np.tensordot(PLANTED, BASIS, axes=1)
                      + 0.3 * RNG.standard_normal((n, 6, 9)))
    real = held_out_fit(target_samples, basis_samples, jax.random.key(0))
    assert real.r2_held_out > 0.9
    np.testing.assert_allclose(real.fit.weights, PLANTED, atol=0.15)
    noise_target = RNG.gamma(1.0, size=(6, 9)) + 0.3 * RNG.standard_normal((n, 6, 9))
    unrelated = held_out_fit(noise_target, basis_samples, jax.random.key(0))
    assert unrelated.r2_held_out < 0.3
    with pytest.raises(ValueError, match="need >= 2 samples"):
        held_out_fit(target_samples[:1], basis_samples, jax.random.key(0))


def test_movement_toward_a_goal():
    before, goal = np.zeros((2, 2)), np.array([[3.0, 0.0], [0.0, 4.0]])
    half = movement_toward(before, goal / 2, goal)
    assert half.distance_before == pytest.approx(5.0)
    assert half.distance_after == pytest.approx(2.5)
    assert half.relative_reduction == pytest.approx(0.5)
    assert half.alignment == pytest.approx(1.0)
    sideways = movement_toward(before, np.array([[0.0, 1.0], [0.0, 0.0]]), goal)
    assert sideways.alignment == pytest.approx(0.0)
    assert sideways.relative_reduction < 0


def test_null_tested_fit_combines_the_fits_and_their_null():
    target = np.tensordot(PLANTED, BASIS, axes=1) + 0.01 * RNG.standard_normal((6, 9))
    key = jax.random.key(3)
    test = null_tested_fit(target, BASIS, key, num_permutations=30)
    for fit, method in ((test.ols, "ols"), (test.nnls, "nnls")):
        np.testing.assert_array_equal(fit.weights,
                                      fit_combination(target, BASIS, method=method).weights)
    chex.assert_shape(test.null_r2, (30,))
    np.testing.assert_array_equal(test.null_r2,
                                  shuffled_fit_null(target, BASIS, key, num_permutations=30))
    assert test.ols.r2 > 0.999 > test.null_r2.max()
    assert test.p_value == pytest.approx(1 / 31)  # no shuffled basis reaches the real fit
