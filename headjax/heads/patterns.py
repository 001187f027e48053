"""Activation patterns of a task: the paper's AP streamed over probe batches, normalisations and
bootstrap confidence intervals.

For probe samples x_1..x_N with per-sample scores S_i[l, h] = |dL_i/dgate_{l,h}|
(`scores.per_sample_head_scores`), the pattern is

    AP[l, h] = (1/N) * sum_i S_i[l, h]                                   (paper, Equation 2)

Samples without answer tokens (`scores.sample_weights` = 0, e.g. padding rows) are left out of
N. Normalisations (named options, `NORMALIZATIONS`, applied to the mean pattern):

    "none"        AP as is (the paper's raw pattern, default)
    "layer_l2"    AP[l, h] / ||AP[l, :]||_2           (bertology's per-layer normalisation)
    "minmax"      (AP - min AP) / (max AP - min AP)   (bertology's global min-max)
    "sum_to_one"  AP / sum_{l,h} AP                    (a distribution over heads)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, Float
from tqdm.auto import tqdm

from headjax.heads.scores import per_sample_head_scores, sample_weights
from headjax.model.config import ModelConfig
from headjax.model.loss import model_inputs
from headjax.model.transformer import Params
from headjax.parallel import (
    DEFAULT_RULES,
    frozen_rules,
    gather_rows,
    params_mesh,
    shard_rows,
    with_activation_sharding,
)
from headjax.parallel.rules import Rules

NORMALIZATIONS = ("none", "layer_l2", "minmax", "sum_to_one")
_TINY = 1e-20


class PatternResult(NamedTuple):
    """A task's activation pattern.

    mean: `[layers, heads]` AP, normalised as requested.
    per_sample: `[samples, layers, heads]` raw S_i of every probe sample with answer tokens, in
      batch order (never normalised, so that resampling and held-out splits start from it).
    """

    mean: Float[np.ndarray, "layers heads"]
    per_sample: Float[np.ndarray, "samples layers heads"]


def normalize_pattern(pattern: Float[Array, "*batch layers heads"], normalization: str = "none"
                      ) -> Float[Array, "*batch layers heads"]:
    """Apply one of `NORMALIZATIONS` to each `[layers, heads]` pattern (jittable)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization: {normalization!r} not in {NORMALIZATIONS}")
    pattern = jnp.asarray(pattern)
    if normalization == "none":
        return pattern
    if normalization == "layer_l2":
        norms = jnp.sqrt(jnp.sum(pattern ** 2, axis=-1, keepdims=True))
        return pattern / (norms + _TINY)
    if normalization == "minmax":
        low = pattern.min(axis=(-2, -1), keepdims=True)
        high = pattern.max(axis=(-2, -1), keepdims=True)
        return (pattern - low) / (high - low + _TINY)
    return pattern / (pattern.sum(axis=(-2, -1), keepdims=True) + _TINY)


def _batch_scores(params: Params, batch: dict, *, config: ModelConfig, loss_kind: str
                  ) -> tuple[Float[Array, "batch layers heads"], Float[Array, " batch"]]:
    return (per_sample_head_scores(params, batch, config, loss_kind=loss_kind),
            sample_weights(batch))


@functools.lru_cache(maxsize=32)
def batch_scores_program(config: ModelConfig, loss_kind: str, mesh: Mesh | None = None,
                         rules: tuple = ()) -> Callable:
    """The jitted per-batch step of `activation_pattern`: (params, batch) -> (per-sample scores
    `[batch, layers, heads]`, sample weights `[batch]`). With a `mesh`, traced with activations
    pinned by `rules` (`frozen_rules`) as the train step is (`with_activation_sharding`)."""
    fn = functools.partial(_batch_scores, config=config, loss_kind=loss_kind)
    return jax.jit(fn if mesh is None else with_activation_sharding(fn, mesh, rules))


def activation_pattern(params: Params, config: ModelConfig, batches: Iterable[dict], *,
                       loss_kind: str = "sample_mean", normalization: str = "none",
                       progress: bool = True, total: int | None = None,
                       rules: Rules = DEFAULT_RULES) -> PatternResult:
    """Stream `batches` (batch convention of `headjax.model.loss`), one backward pass per batch.

    Only each batch's `model_inputs` are passed to the model (a batch may carry other fields,
    e.g. task names). Params may be sharded: the per-batch function (`batch_scores_program`) is
    jitted and follows their shardings, each batch's rows are sharded over the mesh's `batch`
    rule axes of `rules` (`headjax.parallel.shard_rows`: padded with copies of the last row
    without answer tokens, left out of the pattern) and activations pinned by `rules`. `total`
    sizes the progress bar when `batches` has no length.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization: {normalization!r} not in {NORMALIZATIONS}")
    mesh = params_mesh(params)
    step = batch_scores_program(config, loss_kind, mesh, frozen_rules(rules))
    kept = []
    for batch in tqdm(batches, total=total, disable=not progress, desc="activation pattern"):
        arrays = model_inputs(batch)
        rows = len(arrays["tokens"])
        arrays = (jax.tree.map(jnp.asarray, arrays) if mesh is None
                  else shard_rows(arrays, mesh, rules, zero=("loss_mask",)))
        scores, weights = gather_rows(step(params, arrays), rows)
        kept.append(scores[weights > 0])
    if not kept or sum(len(s) for s in kept) == 0:
        raise ValueError("batches: no sample with answer tokens (loss_mask is empty everywhere)")
    per_sample = np.concatenate(kept).astype(np.float32)
    mean = np.asarray(normalize_pattern(per_sample.mean(axis=0), normalization))
    return PatternResult(mean=mean, per_sample=per_sample)


class ConfidenceInterval(NamedTuple):
    """Percentile bootstrap interval of the (normalised) mean pattern, each `[layers, heads]`."""

    low: Float[Array, "layers heads"]
    high: Float[Array, "layers heads"]


@functools.partial(jax.jit, static_argnames=("num_resamples", "normalization"))
def bootstrap_ci(per_sample: Float[Array, "samples layers heads"], key: jax.Array, *,
                 num_resamples: int = 1000, confidence: float = 0.95,
                 normalization: str = "none") -> ConfidenceInterval:
    """Percentile bootstrap over samples: resample N of the N samples with replacement, take the
    mean pattern, normalise it, repeat `num_resamples` times; the interval is the central
    `confidence` mass of those means, per head."""
    n = per_sample.shape[0]
    idx = jax.random.randint(key, (num_resamples, n), 0, n)
    counts = jnp.zeros((num_resamples, n), per_sample.dtype)
    counts = counts.at[jnp.arange(num_resamples)[:, None], idx].add(1.0)
    means = normalize_pattern(jnp.einsum("rn,nlh->rlh", counts, per_sample) / n, normalization)
    tail = (1.0 - confidence) / 2.0
    low, high = jnp.quantile(means, jnp.stack([tail, 1.0 - tail]), axis=0)
    return ConfidenceInterval(low=low, high=high)
