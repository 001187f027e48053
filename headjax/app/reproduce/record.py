"""The study's record: the small files a reproduction's report is computed from, kept in a folder
that outlives the machine (`config.record_dir`, under version control) and put back into
`out_dir` before the next call, which then resumes from them.

Recorded, by path relative to `out_dir`:

    measures.json                       the measures (derived: rewritten by the measures stage)
    results.jsonl, targets.jsonl,       one JSON row per finished grid run, candidate target,
    pilot.jsonl                         pilot seed (keyed by "key")
    pilot/s<seed>.npz                   the pilot's per-sample arrays
    findings/base_patterns.npz          every task's pattern at the base model
    findings/[s<seed>/]<task>.npz       each findings run's arrays (`findings_stage`)
    findings/[s<seed>/]<task>/summary.json   its wall time and machine

Not recorded: checkpoints, per-step pattern files, grid run folders (their rows are in
results.jsonl), the compilation cache and `findings/dap.npz` (written from seed 0's runs at every
call). A findings run's per-sample scores at step 0 (`per_sample/<u>@base`) are the base
patterns' (`per_sample/<u>` of base_patterns.npz), so the record keeps them once, there, and
`restore` puts them back: a restored run holds the arrays it was saved with.

Nothing is lost either way. `restore` never replaces a file of `out_dir`: it writes the files
`out_dir` lacks and adds the rows and arrays its files lack. `save` adds to the record the same
way, and replaces only measures.json and run summaries (derived, or written once per run). A row
(same key) or an array (same name) that differs between the two is a conflict, named with both
paths, that stops the call before the model loads (`check`). The record names the `out_dir` it
records (`record.json`), so another study's calls cannot write into it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np

from headjax.app.reproduce.grid import load_results
from headjax.train.patterns import (
    PER_SAMPLE,
    load_arrays,
    per_sample_key,
    save_npz_atomically,
    task_of,
)

BASE_PATTERNS = Path("findings") / "base_patterns.npz"
_ROWS = ("results.jsonl", "targets.jsonl", "pilot.jsonl")
_NOT_RECORDED = ("dap.npz", "base_patterns_added.npz")
_MARK = "record.json"


def record_dir(config: ml_collections.ConfigDict) -> Path | None:
    """`config.record_dir` as a path, or None when the study keeps no record ("")."""
    return Path(config.record_dir) if config.record_dir else None


def recorded_paths(root: Path) -> list[Path]:
    """The recorded files under `root` (an `out_dir` or a record), relative to it, in a fixed
    order: base_patterns.npz before the findings runs that lean on it."""
    found = [Path(name) for name in ("measures.json", *_ROWS) if (root / name).is_file()]
    for pattern in ("pilot/s*.npz", str(BASE_PATTERNS), "findings/*.npz", "findings/s*/*.npz",
                    "findings/*/summary.json", "findings/s*/*/summary.json"):
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root)
            if path.is_file() and rel.name not in _NOT_RECORDED and rel not in found:
                found.append(rel)
    return found


def _is_base_copy(key: str, array: np.ndarray, base: dict[str, np.ndarray]) -> bool:
    """True for a run's `per_sample/<u>@base` equal to the base patterns' `per_sample/<u>`."""
    if not (key.startswith(PER_SAMPLE) and key.endswith("@base")):
        return False
    kept = base.get(per_sample_key(task_of(key)))
    return kept is not None and kept.shape == array.shape and np.array_equal(kept, array)


def _recorded_arrays(rel: Path, arrays: dict, base: dict) -> dict[str, np.ndarray]:
    """A findings run's arrays as recorded: without the per-sample scores at step 0 that
    base_patterns.npz holds."""
    if rel == BASE_PATTERNS or rel.parts[0] != "findings":
        return arrays
    return {k: v for k, v in arrays.items() if not _is_base_copy(k, v, base)}


def _restored_arrays(rel: Path, arrays: dict, base: dict) -> dict[str, np.ndarray]:
    """A recorded findings run's arrays with its per-sample scores at step 0 put back from the
    base patterns (for every probe task the run holds a final per-sample array of)."""
    if rel == BASE_PATTERNS or rel.parts[0] != "findings":
        return arrays
    out = dict(arrays)
    for key in arrays:
        if key.startswith(PER_SAMPLE) and key.endswith("@final"):
            base_key = per_sample_key(task_of(key), "base")
            if base_key not in out and per_sample_key(task_of(key)) in base:
                out[base_key] = base[per_sample_key(task_of(key))]
    return out


def _conflict(local: Path, kept: Path, what: str) -> ValueError:
    return ValueError(f"{local}: {what} differs from the record's {kept}; move one of them away "
                      "(or set --config.record_dir='' to leave the record alone)")


def _check_arrays(local: Path, kept: Path, kept_arrays: dict) -> None:
    local_arrays = load_arrays(local)
    for key, value in kept_arrays.items():
        if key in local_arrays and not (local_arrays[key].shape == value.shape
                                        and np.array_equal(local_arrays[key], value)):
            raise _conflict(local, kept, f"array {key}")


def _check_rows(local: Path, kept: Path) -> None:
    local_rows = load_results(local)
    for key, row in load_results(kept).items():
        if key in local_rows and local_rows[key] != row:
            raise _conflict(local, kept, f"row {key}")


def check(config: ml_collections.ConfigDict) -> None:
    """Raise naming the file when the record belongs to another `out_dir` or holds a row or
    array that differs from `out_dir`'s (reads only)."""
    root = record_dir(config)
    if root is None or not root.exists():
        return
    mark = root / _MARK
    if mark.exists():
        recorded = json.loads(mark.read_text())["out_dir"]
        if recorded != config.out_dir:
            raise ValueError(f"config.record_dir: {root} records {recorded}, not "
                             f"config.out_dir {config.out_dir}; name another record_dir "
                             "(or '' for none)")
    out = Path(config.out_dir)
    base = load_arrays(root / BASE_PATTERNS) if (root / BASE_PATTERNS).exists() else {}
    for rel in recorded_paths(root):
        local, kept = out / rel, root / rel
        if not local.exists():
            continue
        if rel.name in _ROWS:
            _check_rows(local, kept)
        elif rel.suffix == ".npz":
            _check_arrays(local, kept, _restored_arrays(rel, load_arrays(kept), base))


def restore(config: ml_collections.ConfigDict) -> list[Path]:
    """Put into `out_dir` the record's files it lacks, and the rows and arrays its files lack;
    returns the paths written (relative to `out_dir`). Raises as `check` does first."""
    root = record_dir(config)
    check(config)
    if root is None or not root.exists():
        return []
    out, written = Path(config.out_dir), []
    base = {}
    for rel in recorded_paths(root):
        if rel == BASE_PATTERNS:
            base = load_arrays(root / rel)
        if _merge(root / rel, out / rel, functools.partial(_restored_arrays, rel, base=base),
                  replace=False):
            written.append(rel)
    return written


def save(config: ml_collections.ConfigDict) -> list[Path]:
    """Write into the record `out_dir`'s recorded files it lacks, and the rows and arrays its
    files lack (findings runs without the step-0 per-sample scores base_patterns.npz holds);
    measures.json and run summaries as `out_dir` has them. Returns the paths written (relative
    to the record). Raises as `check` does first."""
    root = record_dir(config)
    if root is None:
        return []
    check(config)
    out, written = Path(config.out_dir), []
    root.mkdir(parents=True, exist_ok=True)
    (root / _MARK).write_text(json.dumps({"out_dir": config.out_dir}) + "\n")
    base = load_arrays(out / BASE_PATTERNS) if (out / BASE_PATTERNS).exists() else {}
    for rel in recorded_paths(out):
        if _merge(out / rel, root / rel, functools.partial(_recorded_arrays, rel, base=base),
                  replace=True):
            written.append(rel)
    return written


def _merge(source: Path, dest: Path, convert, replace: bool) -> bool:
    """Bring `source`'s content into `dest` (`check`ed to agree wherever both hold it): a .jsonl
    gains the rows it lacks, an .npz the arrays it lacks (`source`'s through `convert`), any other
    file becomes `source`'s copy where `dest` lacks it or, with `replace`, differs. Written
    atomically; returns whether `dest` changed."""
    if source.suffix == ".npz":
        arrays = convert(load_arrays(source))
        if dest.exists():
            kept = load_arrays(dest)
            if all(k in kept for k in arrays):
                return False
            arrays = {**kept, **arrays}
        save_npz_atomically(dest, arrays)
        return True
    if source.name in _ROWS:  # finished rows only: a torn last line (a kill's) is left out
        kept = load_results(dest)
        added = [row for key, row in load_results(source).items() if key not in kept]
        if dest.exists() and not added:
            return False
        text = "".join(json.dumps(row) + "\n" for row in (*kept.values(), *added))  # append_row's
    else:
        text = source.read_text()
        if dest.exists() and (not replace or dest.read_text() == text):
            return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp{jax.process_index()}")  # per process, as npz
    tmp.write_text(text)
    tmp.replace(dest)
    return True
