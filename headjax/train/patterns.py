"""Head activation patterns of fixed probe batches, saved as one `.npz` per training step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import numpy as np

from headjax.heads.patterns import activation_pattern
from headjax.model.config import ModelConfig


def pattern_path(run_dir: str | Path, step: int) -> Path:
    """`run_dir/patterns/step_{step:06d}.npz`."""
    return Path(run_dir) / "patterns" / f"step_{step:06d}.npz"


def save_npz_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez` to a temporary file renamed into place (named per process: in a multi-host run
    every process may write the same arrays, and the last rename wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{jax.process_index()}.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def record_patterns(params, probes: Mapping[str, Sequence[dict]], config: ModelConfig,
                    path: Path, *, loss_kind: str = "sample_mean", write: bool = True
                    ) -> dict[str, np.ndarray]:
    """Score every probe task (`headjax.heads.activation_pattern`) and save `{task}: [layers,
    heads]` (the paper's AP over the probe samples) and `{task}.per_sample: [samples, layers,
    heads]` (samples with answer tokens only) to `path`. Returns the patterns."""
    arrays, patterns = {}, {}
    for task, batches in probes.items():
        result = activation_pattern(params, config, batches, loss_kind=loss_kind, progress=False)
        patterns[task] = arrays[task] = result.mean
        arrays[f"{task}.per_sample"] = result.per_sample
    if write:
        save_npz_atomically(path, arrays)
    return patterns
