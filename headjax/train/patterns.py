"""Head activation patterns of fixed probe batches, saved as one `.npz` per training step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import numpy as np

from headjax.heads.scores import per_sample_head_scores, sample_weights
from headjax.model.config import ModelConfig

_per_sample_scores = jax.jit(per_sample_head_scores, static_argnames=("config", "loss_kind"))


def probe_scores(params, batches: Sequence[dict], config: ModelConfig, *,
                 loss_kind: str = "sample_mean") -> tuple[np.ndarray, np.ndarray]:
    """(pattern f32[layers, heads], per-sample scores f32[samples, layers, heads]).

    The pattern is the mean of the per-sample scores over samples with answer tokens, i.e. the
    paper's activation pattern over all probe samples.
    """
    scores, weights = [], []
    for batch in batches:
        scores.append(np.asarray(_per_sample_scores(params, batch, config, loss_kind=loss_kind)))
        weights.append(np.asarray(sample_weights(batch)))
    per_sample = np.concatenate(scores)
    w = np.concatenate(weights)
    pattern = np.einsum("blh,b->lh", per_sample, w) / max(w.sum(), 1.0)
    return pattern.astype(np.float32), per_sample.astype(np.float32)


def pattern_path(run_dir: str | Path, step: int) -> Path:
    """`run_dir/patterns/step_{step:06d}.npz`."""
    return Path(run_dir) / "patterns" / f"step_{step:06d}.npz"


def record_patterns(params, probes: Mapping[str, Sequence[dict]], config: ModelConfig,
                    path: Path, *, loss_kind: str = "sample_mean", write: bool = True
                    ) -> dict[str, np.ndarray]:
    """Score every probe task and save `{task}: [layers, heads]` and
    `{task}.per_sample: [samples, layers, heads]` to `path`. Returns the patterns."""
    arrays, patterns = {}, {}
    for task, batches in probes.items():
        pattern, per_sample = probe_scores(params, batches, config, loss_kind=loss_kind)
        patterns[task] = arrays[task] = pattern
        arrays[f"{task}.per_sample"] = per_sample
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    return patterns

