"""Finding 2: a complex task's pattern as a weighted sum of basic-task patterns.

Every head is one observation. With target y = vec(P_target) (n = layers * heads entries) and
basis X = [vec(P_1), ..., vec(P_T)] (`[n, T]`), a fit finds weights a and intercept b with

    y ~ X a + b

    "ols"    min ||y - X a - b||^2                        (the paper's regression, default)
    "nnls"   the same with a >= 0                         (scipy.optimize.nnls on centred data)
    "ridge"  min ||y - X a - b||^2 + alpha ||a||^2        (b not penalised)

    R^2 = 1 - sum (y - y_hat)^2 / sum (y - mean y)^2

The paper regresses changes (dAP = AP_after_SFT - AP_base) of the complex task on the basic
tasks' dAPs; the same functions fit raw patterns. With an intercept, b is free: fitting on
centred y and X and setting b = mean(y) - mean(X) a is exact for all three methods.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from scipy.optimize import nnls

from headjax.heads.specificity import p_value

METHODS = ("ols", "nnls", "ridge")


class Fit(NamedTuple):
    """A fitted combination: weights `[tasks]`, intercept, R^2 and the fitted `[layers, heads]`."""

    weights: Float[np.ndarray, " tasks"]
    intercept: float
    r2: float
    fitted: Float[np.ndarray, "layers heads"]


def r_squared(target: Float[Array, "..."], fitted: Float[Array, "..."]) -> Float[Array, ""]:
    """Coefficient of determination 1 - SS_res / SS_tot over the flattened entries."""
    y, y_hat = jnp.ravel(jnp.asarray(target)), jnp.ravel(jnp.asarray(fitted))
    return 1.0 - jnp.sum((y - y_hat) ** 2) / jnp.sum((y - y.mean()) ** 2)


def _design(target, basis):
    target, basis = np.asarray(target, np.float64), np.asarray(basis, np.float64)
    if basis.ndim != 3 or basis.shape[1:] != target.shape:
        raise ValueError(f"basis: shape {basis.shape}, expected [tasks, *{target.shape}] "
                         f"matching target")
    return target.ravel(), basis.reshape(basis.shape[0], -1).T


def _solve(y, x, method, alpha):
    if method == "ols":
        return np.linalg.lstsq(x, y, rcond=None)[0]
    if method == "nnls":
        return nnls(x, y)[0]
    return np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ y)


def fit_combination(target: Float[Array, "layers heads"], basis: Float[Array, "tasks layers heads"],
                    *, method: str = "ols", intercept: bool = True, alpha: float = 1.0) -> Fit:
    """Fit `target` as `sum_t weights[t] * basis[t] + intercept` (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"method: {method!r} not in {METHODS}")
    y, x = _design(target, basis)
    y_mean, x_mean = (y.mean(), x.mean(axis=0)) if intercept else (0.0, np.zeros(x.shape[1]))
    weights = _solve(y - y_mean, x - x_mean, method, alpha)
    b = float(y_mean - x_mean @ weights)
    fitted = (x @ weights + b).reshape(np.shape(target))
    return Fit(weights=weights, intercept=b, r2=float(r_squared(y, fitted)), fitted=fitted)


def predict(fit: Fit, basis: Float[Array, "tasks layers heads"]
            ) -> Float[np.ndarray, "layers heads"]:
    """`sum_t fit.weights[t] * basis[t] + fit.intercept` for a new basis (e.g. held-out halves)."""
    return np.tensordot(fit.weights, np.asarray(basis, np.float64), axes=1) + fit.intercept


class HeldOutFit(NamedTuple):
    """A fit on one half of every task's samples, scored on the other half."""

    fit: Fit
    r2_held_out: float


def held_out_fit(target_per_sample: Float[Array, "samples layers heads"],
                 basis_per_sample: list[Float[Array, "samples layers heads"]], key: jax.Array,
                 *, method: str = "ols", intercept: bool = True, alpha: float = 1.0) -> HeldOutFit:
    """Split each task's per-sample patterns at random into halves A and B; fit the mean of the
    target's half A on the means of the basis tasks' halves A; report R^2 of that fit's weights
    applied to the basis halves B against the target's half B (a fit that only matches sampling
    noise does not carry over)."""
    arrays = [np.asarray(target_per_sample)] + [np.asarray(b) for b in basis_per_sample]
    halves = []
    for i, per_sample in enumerate(arrays):
        if per_sample.shape[0] < 2:
            raise ValueError(f"per-sample patterns #{i}: need >= 2 samples to split, "
                             f"got {per_sample.shape[0]}")
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, i), len(per_sample)))
        half = len(per_sample) // 2
        halves.append((per_sample[order[:half]].mean(0), per_sample[order[half:]].mean(0)))
    target_a, target_b = halves[0]
    fit = fit_combination(target_a, np.stack([a for a, _ in halves[1:]]), method=method,
                          intercept=intercept, alpha=alpha)
    held_out = predict(fit, np.stack([b for _, b in halves[1:]]))
    return HeldOutFit(fit=fit, r2_held_out=float(r_squared(target_b, held_out)))


def shuffled_fit_null(target: Float[Array, "layers heads"],
                      basis: Float[Array, "tasks layers heads"], key: jax.Array, *,
                      num_permutations: int = 200, method: str = "ols", intercept: bool = True,
                      alpha: float = 1.0) -> Float[np.ndarray, " permutations"]:
    """R^2 of fits whose basis patterns had their heads permuted (each task independently):
    what a basis of the same value distributions but no head alignment achieves. Compare the
    real R^2 with `specificity.p_value(r2, null, alternative="greater")`."""
    basis = np.asarray(basis)
    flat = basis.reshape(basis.shape[0], -1)
    keys = jax.random.split(key, num_permutations * flat.shape[0]).reshape(num_permutations,
                                                                           flat.shape[0])
    r2 = np.empty(num_permutations)
    for p in range(num_permutations):
        shuffled = np.stack([row[np.asarray(jax.random.permutation(k, row.size))]
                             for row, k in zip(flat, keys[p], strict=True)])
        r2[p] = fit_combination(target, shuffled.reshape(basis.shape), method=method,
                                intercept=intercept, alpha=alpha).r2
    return r2


class NullTestedFit(NamedTuple):
    """OLS and NNLS fits of one target on one basis, and the OLS R^2 against its head-shuffled
    null: `null_r2` `[permutations]`, `p_value` = P(null R^2 >= the real R^2)."""

    ols: Fit
    nnls: Fit
    null_r2: Float[np.ndarray, " permutations"]
    p_value: float


def null_tested_fit(target: Float[Array, "layers heads"],
                    basis: Float[Array, "tasks layers heads"], key: jax.Array, *,
                    num_permutations: int = 200) -> NullTestedFit:
    """Finding 2's test: `fit_combination` by OLS and NNLS, and `shuffled_fit_null` (with `key`)
    for the OLS R^2, compared by `specificity.p_value(..., alternative="greater")`."""
    ols, nnls_fit = (fit_combination(target, basis, method=m) for m in ("ols", "nnls"))
    null = shuffled_fit_null(target, basis, key, num_permutations=num_permutations)
    return NullTestedFit(ols=ols, nnls=nnls_fit, null_r2=null,
                         p_value=p_value(ols.r2, null, alternative="greater"))


class Movement(NamedTuple):
    """How far a pattern moved toward a goal pattern.

    distance_before, distance_after: ||before - goal||_F, ||after - goal||_F.
    relative_reduction: 1 - distance_after / distance_before (> 0: moved closer).
    alignment: cosine between the move (after - before) and the direction to the goal
      (goal - before); 1 = straight at it, 0 = unrelated, < 0 = away.
    """

    distance_before: float
    distance_after: float
    relative_reduction: float
    alignment: float


def movement_toward(before: Float[Array, "layers heads"], after: Float[Array, "layers heads"],
                    goal: Float[Array, "layers heads"]) -> Movement:
    """The reverse direction of Finding 2: after SFT on basic tasks, did the complex task's
    pattern (`before` -> `after`) move toward its fitted combination `goal`
    (e.g. `fit_combination(...).fitted` or `predict(fit, basic_patterns_after)`)?"""
    before, after, goal = (np.asarray(a, np.float64) for a in (before, after, goal))
    move, to_goal = (after - before).ravel(), (goal - before).ravel()
    d_before, d_after = np.linalg.norm(to_goal), np.linalg.norm(after - goal)
    cosine = move @ to_goal / max(np.linalg.norm(move) * d_before, 1e-300)
    return Movement(distance_before=float(d_before), distance_after=float(d_after),
                    relative_reduction=float(1.0 - d_after / d_before), alignment=float(cosine))
