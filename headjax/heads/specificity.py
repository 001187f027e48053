"""Finding 1: SFT selectively activates task-specific heads.

Measures (all on `[layers, heads]` patterns, flattened over heads where a formula needs a vector
x of n = layers * heads entries):

    change              dAP = AP_after - AP_before
    trajectory          MSE(AP_t, AP_0), MSE(AP_t, AP_T), Pearson r(AP_t, AP_0), r(AP_t, AP_T)
    Gini                G(x) = sum_i sum_j |x_i - x_j| / (2 n^2 mean(x))
                             = 2 sum_i i x_(i) / (n sum x) - (n + 1) / n   (x sorted, i = 1..n)
    CV                  std(x) / mean(x)   (population std)
    top-k share         sum of the k largest |dAP| / sum |dAP|
    activated heads     "top_k": the k heads with the largest score;
                        "zscore": heads whose score > mean + z * std over all heads
                        (score = |dAP| by default, dAP itself with `signed=True`)
    overlap             Jaccard |A & B| / |A | B| of two head sets; Spearman rank correlation
    nulls               random k-head sets; task labels shuffled across the pooled samples
    causal check        loss(gates = 1 - set) - loss(gates = 1), per head set
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from headjax.heads.scores import sample_weights
from headjax.model.config import ModelConfig
from headjax.model.loss import model_inputs, per_sample_loss
from headjax.model.transformer import Params

THRESHOLD_RULES = ("top_k", "zscore")


def pattern_change(before: Float[Array, "layers heads"], after: Float[Array, "layers heads"]
                   ) -> Float[Array, "layers heads"]:
    """dAP = after - before."""
    return jnp.asarray(after) - jnp.asarray(before)


def mse(a: Float[Array, "*batch layers heads"], b: Float[Array, "layers heads"]
        ) -> Float[Array, "*batch"]:
    """Mean squared difference over heads."""
    return jnp.mean((jnp.asarray(a) - jnp.asarray(b)) ** 2, axis=(-2, -1))


def pearson(a: Float[Array, "*batch layers heads"], b: Float[Array, "layers heads"]
            ) -> Float[Array, "*batch"]:
    """Pearson correlation of the flattened patterns."""
    a = jnp.asarray(a).reshape(*jnp.shape(a)[:-2], -1)
    b = jnp.asarray(b).reshape(-1)
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean()
    return (a @ b) / jnp.sqrt((a ** 2).sum(axis=-1) * (b ** 2).sum())


class Trajectory(NamedTuple):
    """Per-step similarity of a pattern trajectory to its first (base) and last (final) pattern,
    each `[steps]`."""

    mse_to_base: Float[Array, " steps"]
    mse_to_final: Float[Array, " steps"]
    corr_to_base: Float[Array, " steps"]
    corr_to_final: Float[Array, " steps"]


@jax.jit
def trajectory(patterns: Float[Array, "steps layers heads"]) -> Trajectory:
    """MSE and Pearson correlation of every step's pattern to the base and the final pattern."""
    base, final = patterns[0], patterns[-1]
    return Trajectory(mse(patterns, base), mse(patterns, final),
                      pearson(patterns, base), pearson(patterns, final))


@jax.jit
def gini(pattern: Float[Array, "..."]) -> Float[Array, ""]:
    """Gini coefficient of the flattened non-negative `pattern` (0 = uniform, -> 1 = one head)."""
    x = jnp.sort(jnp.ravel(pattern))
    n = x.shape[0]
    ranks = jnp.arange(1, n + 1, dtype=x.dtype)
    return 2.0 * jnp.sum(ranks * x) / (n * jnp.sum(x)) - (n + 1.0) / n


@jax.jit
def coefficient_of_variation(pattern: Float[Array, "..."]) -> Float[Array, ""]:
    """std / mean of the flattened `pattern` (population std)."""
    return jnp.std(pattern) / jnp.mean(pattern)


@functools.partial(jax.jit, static_argnames="k")
def top_k_share(change: Float[Array, "..."], k: int) -> Float[Array, ""]:
    """Fraction of the total |change| carried by the k heads with the largest |change|."""
    magnitude = jnp.abs(jnp.ravel(change))
    if not 0 < k <= magnitude.size:
        raise ValueError(f"k: {k} must be in 1..{magnitude.size} (layers * heads)")
    return jax.lax.top_k(magnitude, k)[0].sum() / magnitude.sum()


def activated_heads(change: Float[Array, "layers heads"], *, rule: str = "top_k", k: int = 10,
                    z: float = 2.0, signed: bool = False) -> Bool[Array, "layers heads"]:
    """Heads a task activates, as a boolean `[layers, heads]` mask.

    rule "top_k": the k heads with the largest score (ties broken by flat index);
    rule "zscore": heads whose score exceeds mean + z * std of all heads' scores.
    The score is |change| (a head moved either way), or the signed change with `signed=True`
    (only heads whose pattern grew).
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"rule: {rule!r} not in {THRESHOLD_RULES}")
    change = jnp.asarray(change)
    score = change if signed else jnp.abs(change)
    if rule == "zscore":
        return score > score.mean() + z * score.std()
    if not 0 < k <= score.size:
        raise ValueError(f"k: {k} must be in 1..{score.size} (layers * heads)")
    flat = jnp.zeros(score.size, bool).at[jax.lax.top_k(score.ravel(), k)[1]].set(True)
    return flat.reshape(score.shape)


def jaccard(a: Bool[Array, "..."], b: Bool[Array, "..."]) -> Float[Array, ""]:
    """|a & b| / |a | b| of two head masks (0 when both are empty)."""
    a, b = jnp.asarray(a, bool), jnp.asarray(b, bool)
    union = jnp.sum(a | b)
    return jnp.where(union > 0, jnp.sum(a & b) / jnp.maximum(union, 1), 0.0)


def _average_ranks(x: Float[Array, " n"]) -> Float[Array, " n"]:
    """1-based ranks, ties given their average rank (as scipy.stats.rankdata)."""
    less = jnp.sum(x[None, :] < x[:, None], axis=1)
    equal = jnp.sum(x[None, :] == x[:, None], axis=1)
    return less + (equal + 1) / 2.0


def spearman(a: Float[Array, "..."], b: Float[Array, "..."]) -> Float[Array, ""]:
    """Spearman rank correlation of two flattened patterns (ties: average ranks). O(n^2) memory
    in the number of heads n, i.e. ~1M entries for a 32 x 32 model."""
    ra = _average_ranks(jnp.ravel(jnp.asarray(a)))
    rb = _average_ranks(jnp.ravel(jnp.asarray(b)))
    return pearson(ra.reshape(1, -1), rb.reshape(1, -1))


def p_value(observed: float, null: Float[Array, " draws"], *, alternative: str = "less"
            ) -> float:
    """Permutation p-value (1 + #{null as extreme as observed}) / (1 + draws).

    alternative "less": small statistics are extreme (e.g. overlap lower than chance);
    "greater": large ones are.
    """
    null = np.asarray(null)
    if alternative == "less":
        extreme = np.sum(null <= observed)
    elif alternative == "greater":
        extreme = np.sum(null >= observed)
    else:
        raise ValueError(f"alternative: {alternative!r} not in ('less', 'greater')")
    return float((1 + extreme) / (1 + null.size))


@functools.partial(jax.jit, static_argnames=("shape", "k", "num_draws"))
def random_head_sets(key: jax.Array, shape: tuple[int, int], k: int, num_draws: int
                     ) -> Bool[Array, "draws layers heads"]:
    """`num_draws` uniformly random sets of k distinct heads, as masks `[draws, layers, heads]`."""
    n = shape[0] * shape[1]
    scores = jax.random.uniform(key, (num_draws, n))
    ranks = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
    return (ranks < k).reshape(num_draws, *shape)


def random_set_jaccard_null(key: jax.Array, shape: tuple[int, int], k: int, *,
                            num_draws: int = 1000) -> Float[Array, " draws"]:
    """Jaccard overlap of two independent random k-head sets, `num_draws` times: the overlap
    expected of two tasks whose top-k heads have nothing to do with each other."""
    key_a, key_b = jax.random.split(key)
    a = random_head_sets(key_a, shape, k, num_draws)
    b = random_head_sets(key_b, shape, k, num_draws)
    return jax.vmap(jaccard)(a, b)


class OverlapNull(NamedTuple):
    """Overlap statistics under shuffled task labels, each `[permutations]`."""

    jaccard: Float[Array, " permutations"]
    spearman: Float[Array, " permutations"]


def _overlap(mean_a, mean_b, k):
    top_a = activated_heads(mean_a, rule="top_k", k=k)
    top_b = activated_heads(mean_b, rule="top_k", k=k)
    return jaccard(top_a, top_b), spearman(mean_a, mean_b)


@functools.partial(jax.jit, static_argnames=("k", "num_permutations"))
def label_permutation_null(per_sample_a: Float[Array, "samples_a layers heads"],
                           per_sample_b: Float[Array, "samples_b layers heads"],
                           key: jax.Array, *, k: int, num_permutations: int = 1000
                           ) -> OverlapNull:
    """Shuffle task labels across the pooled samples of tasks a and b (keeping group sizes),
    recompute both mean patterns and their overlap (Jaccard of top-k |mean| sets, Spearman).

    Use per-sample patterns, or per-sample changes (after_i - before_i on the same probes). If the
    two tasks load the same heads, the observed overlap looks like these draws; task-specific
    heads give an observed Jaccard / Spearman below most of them (`p_value(..., "less")`).
    """
    pooled = jnp.concatenate([per_sample_a, per_sample_b])
    n_a = per_sample_a.shape[0]

    def one(perm_key):
        order = jax.random.permutation(perm_key, pooled.shape[0])
        shuffled = pooled[order]
        return _overlap(shuffled[:n_a].mean(0), shuffled[n_a:].mean(0), k)

    jac, rho = jax.lax.map(one, jax.random.split(key, num_permutations))
    return OverlapNull(jaccard=jac, spearman=rho)


def task_overlap(mean_a: Float[Array, "layers heads"], mean_b: Float[Array, "layers heads"], *,
                 k: int) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(Jaccard of the two top-k |pattern| head sets, Spearman rank correlation)."""
    return _overlap(jnp.asarray(mean_a), jnp.asarray(mean_b), k)


@functools.partial(jax.jit, static_argnames="config")
def _set_losses(params: Params, batch: dict, config: ModelConfig,
                gates: Float[Array, "sets layers heads"]):
    def one(g):
        return per_sample_loss(params, batch, config, g)

    return jax.lax.map(one, gates), sample_weights(batch)


def ablation_effects(params: Params, config: ModelConfig, batches: Iterable[dict],
                     head_sets: Mapping[str, Bool[Array, "layers heads"]]) -> dict[str, float]:
    """Mean per-sample loss increase (nats) when each head set is ablated (gates = 0 on the set).

    effect[name] = mean_i [L_i(gates = 1 - set) - L_i(gates = 1)], over samples with answer
    tokens, L_i the sample's own mean answer-token cross-entropy. Typical sets: a task's top-k
    heads, another task's top-k, k random heads (`random_head_sets`).
    """
    names = list(head_sets)
    shape = (config.num_layers, config.num_heads)
    masks = []
    for name in names:
        mask = np.asarray(head_sets[name], bool)
        if mask.shape != shape:
            raise ValueError(f"head_sets[{name!r}]: shape {mask.shape}, expected {shape}")
        masks.append(mask)
    gates = jnp.asarray(np.stack([np.ones(shape, np.float32)]
                                 + [1.0 - m.astype(np.float32) for m in masks]))
    total, count = np.zeros(len(names)), 0.0
    for batch in batches:
        arrays = jax.tree.map(jnp.asarray, model_inputs(batch))
        losses, weights = _set_losses(params, arrays, config, gates)
        increase = np.asarray(losses[1:] - losses[0]) * np.asarray(weights)
        total += increase.sum(axis=1)
        count += float(np.asarray(weights).sum())
    if count == 0:
        raise ValueError("batches: no sample with answer tokens (loss_mask is empty everywhere)")
    return {name: float(v / count) for name, v in zip(names, total, strict=True)}
