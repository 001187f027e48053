"""Data selection by activation pattern (the paper's second application), pure functions on arrays.

A pool of candidate examples x_1..x_M has per-sample patterns S_i[l, h] = |dL_i/dgate_{l,h}|
(`headjax.heads.scores.per_sample_head_scores`, all from one backward pass per batch); a target
task has the pattern P*[l, h]. Each candidate scores its similarity to the target over the
n = layers * heads entries flattened to vectors:

    cosine:   sim_i = <S_i, P*> / (||S_i|| ||P*||)
    pearson:  sim_i = <S_i - mean(S_i), P* - mean(P*)> / (||S_i - mean(S_i)|| ||P* - mean(P*)||)

(a zero vector, e.g. a constant pattern under "pearson", has no direction: its similarity is 0).
The top k = max(1, round(f * M)) candidates by sim_i are kept (`method="pattern"`, ties to the
lower pool index); baselines: k candidates uniformly at random without replacement
(`"random"`, seeded) and the whole pool (`"all"`).

The trainer option that uses them (config section `select`) is `headjax.app.select`.
"""

from __future__ import annotations

import jax
import numpy as np
from jaxtyping import Float, Int

SIMILARITIES = ("cosine", "pearson")
SELECTIONS = ("pattern", "random", "all")
SELECT_METHODS = ("none", *SELECTIONS)  # config select.method: "none" runs no selection


def fraction_count(fraction: float, total: int) -> int:
    """max(1, round(fraction * total)): how many of `total` items a fraction in (0, 1] keeps
    (Python's round, so an exact half goes to the even integer)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: {fraction} not in (0, 1]")
    if total <= 0:
        raise ValueError(f"total: need a positive count, got {total}")
    return max(1, round(fraction * total))


def pattern_similarity(per_sample: Float[np.ndarray, "samples layers heads"],
                       target: Float[np.ndarray, "layers heads"], kind: str = "pearson"
                       ) -> Float[np.ndarray, " samples"]:
    """sim_i of every sample's pattern to `target` over the flattened heads (module docstring),
    in float64; `kind` one of `SIMILARITIES`."""
    if kind not in SIMILARITIES:
        raise ValueError(f"similarity: {kind!r} not in {SIMILARITIES}")
    per_sample, target = np.asarray(per_sample, np.float64), np.asarray(target, np.float64)
    if per_sample.ndim != 3 or per_sample.shape[1:] != target.shape:
        raise ValueError(f"per_sample: shape {per_sample.shape} does not match the target's "
                         f"[layers, heads] = {target.shape}")
    vectors, goal = per_sample.reshape(len(per_sample), -1), target.ravel()
    if kind == "pearson":
        vectors = vectors - vectors.mean(axis=1, keepdims=True)
        goal = goal - goal.mean()
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(goal)
    dots = vectors @ goal
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def select_examples(method: str, pool_size: int, fraction: float, key: jax.Array, *,
                    scores: Float[np.ndarray, " samples"] | None = None
                    ) -> Int[np.ndarray, " chosen"]:
    """Pool indices to train on: "pattern" the `fraction_count(fraction, pool_size)` highest
    `scores` in descending order (ties to the lower index); "random" as many drawn uniformly
    without replacement with `key`, in ascending order; "all" every index."""
    if method == "all":
        return np.arange(pool_size)
    count = fraction_count(fraction, pool_size)
    if method == "pattern":
        if scores is None or np.shape(scores) != (pool_size,):
            raise ValueError(f"select.method='pattern': needs one score per pool example "
                             f"({pool_size}), got shape {np.shape(scores)}")
        return np.argsort(-np.asarray(scores, np.float64), kind="stable")[:count]
    if method == "random":
        return np.sort(np.asarray(jax.random.choice(key, pool_size, (count,), replace=False)))
    raise ValueError(f"select.method: {method!r} not in {SELECTIONS}")
