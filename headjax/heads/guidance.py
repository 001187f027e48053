"""Pattern-guided choices of the paper's SFT improvements, pure functions on arrays.

    mixture weights     a = NNLS fit of the target's pattern on the basic tasks' patterns,
                        normalised to sum 1 ("pattern"); baselines "uniform", "random" (Dirichlet)
    preliminary counts  N * a_i / sum_j a_j, rounded by largest remainder to add up to N
    head selection      the top round(f * layers * heads) heads by a pattern, or as many at random

The training options that use them (config section `guide`) are in `headjax.app.guide`; errors
name the config field the value comes from.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import numpy as np
from jaxtyping import Bool, Float

from headjax.heads.combination import fit_combination
from headjax.heads.selection import fraction_count

MIXTURES = ("none", "uniform", "random", "pattern")
HEAD_SELECTIONS = ("all", "pattern", "random")
GUIDE_SCHEDULES = ("joint", "warm_start")  # run by headjax.app.guide.plan_phases


class NoPatternFitError(ValueError):
    """The NNLS weights of every basic task are zero: no mixture follows from the patterns."""


def mixture_weights(kind: str, tasks: Sequence[str], key: jax.Array, *,
                    target: Float[np.ndarray, "layers heads"] | None = None,
                    basis: Float[np.ndarray, "tasks layers heads"] | None = None
                    ) -> Float[np.ndarray, " tasks"]:
    """Non-negative weights `[tasks]` summing to 1 for the preliminary set.

    kind "uniform": 1/T each; "random": a draw from Dirichlet(1, ..., 1) (uniform on the simplex)
    with `key`; "pattern": the NNLS weights of `target` on `basis`, normalised (an error when
    they are all zero: no basic task's pattern helps explain the target's).
    """
    if kind == "uniform":
        weights = np.ones(len(tasks))
    elif kind == "random":
        weights = np.asarray(jax.random.dirichlet(key, np.ones(len(tasks))), np.float64)
    elif kind == "pattern":
        if target is None or basis is None:
            raise ValueError("guide.mixture='pattern': needs the target's and the basis patterns")
        weights = np.asarray(fit_combination(target, basis, method="nnls").weights)
        if not weights.sum() > 0:
            raise NoPatternFitError(f"guide.mixture='pattern': the NNLS weights of the basis "
                                    f"{tuple(tasks)} are all zero; no basic task's pattern "
                                    f"fits the target's")
    else:
        raise ValueError(f"guide.mixture: {kind!r} not in {MIXTURES[1:]}")
    return weights / weights.sum()


def preliminary_counts(weights: Float[np.ndarray, " tasks"], total: int) -> np.ndarray:
    """Integer counts `[tasks]` adding up to `total`, proportional to `weights` (the paper's
    N * a_i / sum_j a_j), rounded by largest remainder (ties to the lower index)."""
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 1 or (weights < 0).any() or not weights.sum() > 0:
        raise ValueError(f"weights: need non-negative weights with a positive sum, got {weights}")
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:total - counts.sum()]] += 1
    return counts


def select_heads(kind: str, scores: Float[np.ndarray, "layers heads"], fraction: float,
                 key: jax.Array) -> Bool[np.ndarray, "layers heads"]:
    """The `round(fraction * layers * heads)` (at least 1) heads to train: the highest `scores`
    ("pattern", ties to the lower flat index) or a uniform random set ("random", `key`)."""
    scores = np.asarray(scores)
    chex.assert_rank(scores, 2)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"guide.head_fraction: {fraction} not in (0, 1]")
    count = fraction_count(fraction, scores.size)
    if kind == "pattern":
        chosen = np.argsort(-scores.ravel(), kind="stable")[:count]
    elif kind == "random":
        chosen = np.asarray(jax.random.choice(key, scores.size, (count,), replace=False))
    else:
        raise ValueError(f"guide.heads: {kind!r} not in {HEAD_SELECTIONS[1:]}")
    mask = np.zeros(scores.size, bool)
    mask[chosen] = True
    return mask.reshape(scores.shape)
