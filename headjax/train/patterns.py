"""The pattern store: head activation patterns on disk, one home for their paths, keys and files.

A training run records its fixed probe sets' patterns at `run_dir/patterns/step_{step:06d}.npz`:

    <task>                [layers, heads]            the paper's AP over the probe samples
    per_sample/<task>     [samples, layers, heads]   per-sample scores (samples with answers)

Other files (e.g. a reproduction's per-task findings) keep a task's per-sample scores at a named
moment under `per_sample/<task>@<moment>` (`per_sample_key(task, moment)`), each
`[samples, layers, heads]`. Every file is written atomically (`save_npz_atomically`).

Files written before this layout held the per-sample scores under `<task>.per_sample` (`[samples,
...]` in run files, `[2, samples, ...]` = step 0 and final in findings files); `load_arrays`
reads them under the names above.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import numpy as np

from headjax.heads.patterns import activation_pattern
from headjax.model.config import ModelConfig
from headjax.parallel import DEFAULT_RULES
from headjax.parallel.rules import Rules

PER_SAMPLE = "per_sample/"
_LEGACY_SUFFIX = ".per_sample"
_LEGACY_MOMENTS = ("base", "final")  # the two entries of a legacy findings file's per-sample key
_STEP_FILE = re.compile(r"^step_(\d+)\.npz$")


def pattern_path(run_dir: str | Path, step: int) -> Path:
    """`run_dir/patterns/step_{step:06d}.npz`."""
    return Path(run_dir) / "patterns" / f"step_{step:06d}.npz"


def per_sample_key(task: str, moment: str | None = None) -> str:
    """Key of `task`'s per-sample scores: `per_sample/<task>` or `per_sample/<task>@<moment>`."""
    return f"{PER_SAMPLE}{task}" + (f"@{moment}" if moment else "")


def task_of(key: str) -> str:
    """The task a key belongs to (`<task>`, `per_sample/<task>` or `per_sample/<task>@m`)."""
    return key.removeprefix(PER_SAMPLE).split("@")[0]


def save_npz_atomically(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """`np.savez` to a temporary file renamed into place (named per process: in a multi-host run
    every process may write the same arrays, and the last rename wins)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{jax.process_index()}.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of the `.npz` at `path`, legacy per-sample keys renamed (module docstring)."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    for key in [k for k in arrays if k.endswith(_LEGACY_SUFFIX)]:
        task, value = key.removesuffix(_LEGACY_SUFFIX), arrays.pop(key)
        if value.ndim == 4:  # [2, samples, layers, heads]: step 0 and final of a findings run
            arrays.update({per_sample_key(task, m): v
                           for m, v in zip(_LEGACY_MOMENTS, value, strict=True)})
        else:
            arrays[per_sample_key(task)] = value
    return arrays


def split_step(arrays: Mapping[str, np.ndarray]
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """({task: AP `[layers, heads]`}, {task: per-sample `[samples, layers, heads]`}) of a step
    file's arrays."""
    means = {k: v for k, v in arrays.items() if not k.startswith(PER_SAMPLE)}
    per_sample = {task_of(k): v for k, v in arrays.items() if k.startswith(PER_SAMPLE)}
    return means, per_sample


def read_step(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """`split_step` of the step file at `path`."""
    return split_step(load_arrays(path))


def run_steps(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every `run_dir/patterns/step_XXXXXX.npz`, by step."""
    folder = Path(run_dir) / "patterns"
    return sorted((int(m.group(1)), path) for path in folder.glob("*.npz")
                  if (m := _STEP_FILE.match(path.name)))


def load_run_patterns(run_dir: str | Path) -> tuple[list[int], dict[str, np.ndarray]]:
    """(steps, {task: `[steps, layers, heads]`}) from a run's step files.

    Raises FileNotFoundError naming `run_dir` when it is missing or holds no step file, and
    ValueError naming the file whose tasks differ from the first step's.
    """
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"{run_dir}: no such folder")
    files = run_steps(run_dir)
    if not files:
        raise FileNotFoundError(f"{run_dir}: no patterns/step_XXXXXX.npz in this folder")
    per_step = [read_step(path)[0] for _, path in files]
    tasks = list(per_step[0])
    for (step, path), arrays in zip(files, per_step, strict=True):
        if sorted(arrays) != sorted(tasks):
            raise ValueError(f"{path}: tasks {sorted(arrays)} differ from step {files[0][0]}'s "
                             f"{sorted(tasks)} (step {step})")
    return [s for s, _ in files], {t: np.stack([a[t] for a in per_step]) for t in tasks}


def record_patterns(params, probes: Mapping[str, Sequence[dict]], config: ModelConfig,
                    path: Path, *, loss_kind: str = "sample_mean", write: bool = True,
                    rules: Rules = DEFAULT_RULES) -> dict[str, np.ndarray]:
    """Score every probe task (`headjax.heads.activation_pattern`, rows sharded over the params'
    mesh by `rules`) and save its AP and per-sample scores to the step file `path` (module
    docstring). Returns the patterns {task: AP}."""
    arrays, patterns = {}, {}
    for task, batches in probes.items():
        result = activation_pattern(params, config, batches, loss_kind=loss_kind, progress=False,
                                    rules=rules)
        patterns[task] = arrays[task] = result.mean
        arrays[per_sample_key(task)] = result.per_sample
    if write:
        save_npz_atomically(path, arrays)
    return patterns
