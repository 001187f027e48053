"""Metrics sinks: a JSONL file in the run directory and TensorBoard events when available."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Append `{"step": s, **scalars}` lines to `run_dir/metrics.jsonl`; mirror them to
    TensorBoard (`run_dir/tensorboard`) when tensorboardX is installed. No-op when disabled
    (every process but the first, in a multi-process run).

    resume_step: when resuming, records after this step (written by the interrupted run past its
    last checkpoint) are dropped so that every step appears once; the kept ones are `earlier`.
    """

    def __init__(self, run_dir: str | Path, *, enabled: bool = True,
                 resume_step: int | None = None):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        self.earlier: list[dict[str, Any]] = []
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            records = [json.loads(line) for line in self.path.read_text().splitlines()
                       if line.strip()]
            self.earlier = [r for r in records if r["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.earlier))
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            return
        self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def scalars(self, prefix: str) -> dict[int, dict[str, Any]]:
        """{step: {name after `prefix`: value}} of the `earlier` records' keys under `prefix`."""
        found: dict[int, dict[str, Any]] = {}
        for record in self.earlier:
            for key, value in record.items():
                if key.startswith(prefix):
                    found.setdefault(record["step"], {})[key.removeprefix(prefix)] = value
        return found

    def write(self, step: int, scalars: dict[str, Any]) -> None:
        """Record `scalars` (floats; non-finite values are written as strings) at `step`."""
        if not self.enabled:
            return
        values = {k: float(v) for k, v in scalars.items()}
        record = {"step": step, **{k: v if math.isfinite(v) else str(v)
                                   for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
