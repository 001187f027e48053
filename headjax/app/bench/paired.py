"""The CPU SFT-step ratio measured fairly: headjax and PyTorch steps as interleaved pairs.

Each framework lives in its own persistent worker process (`serve`: set up and compile once, then
run one step per request), and the two workers take turns: pair i times one headjax step and one
PyTorch step back to back, in the order (headjax, torch) for even i and (torch, headjax) for odd i,
so that a slow minute of a shared machine lands on both sides of a pair and neither framework
always runs first. While one worker steps, the other waits on its input and uses no CPU. The
result is the median of the per-pair ratios (headjax seconds / PyTorch seconds) with its spread.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np

from headjax.app.bench.machine import cpu_description
from headjax.app.bench.sft import bench_config, sft_runner
from headjax.app.bench.timing import peak_rss_mib

_TAG = "BENCH "  # prefix of the worker's protocol lines (anything else on stdout is ignored)


def pair_orders(pairs: int) -> list[tuple[int, int]]:
    """Which side runs first in each pair: (0, 1) for even pairs, (1, 0) for odd ones."""
    return [(0, 1) if i % 2 == 0 else (1, 0) for i in range(pairs)]


def interleaved_pairs(first: Callable[[], float], second: Callable[[], float], pairs: int
                      ) -> list[tuple[float, float]]:
    """`pairs` samples (seconds of `first`, seconds of `second`), each side called once per pair
    in the order `pair_orders` gives. Each callable runs one step and returns its seconds."""
    if pairs < 1:
        raise ValueError(f"pairs: need at least 1, got {pairs}")
    sides = (first, second)
    samples = []
    for order in pair_orders(pairs):
        seconds = [0.0, 0.0]
        for side in order:
            seconds[side] = sides[side]()
        samples.append((seconds[0], seconds[1]))
    return samples


def ratio_statistics(samples: Sequence[tuple[float, float]]) -> dict:
    """Statistics of the per-pair ratios a / b of (a seconds, b seconds) samples.

    Returns {"pairs", "ratios" (in sample order), "median", "min", "max", "q1", "q3"} where q1/q3
    are the 25th/75th percentiles (numpy's linear interpolation).
    """
    if not samples:
        raise ValueError("ratio_statistics: no samples")
    ratios = np.array([a / b for a, b in samples], np.float64)
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return {"pairs": len(ratios), "ratios": ratios.tolist(), "median": float(median),
            "min": float(ratios.min()), "max": float(ratios.max()), "q1": float(q1),
            "q3": float(q3)}


def serve(framework: str, batch_size: int, seq: int, model_overrides: dict | None = None,
          stdin=None, stdout=None) -> None:
    """Worker loop: set up `framework`'s step, run one warm-up step, answer `ready`; then for each
    input line "step" run one step and answer its seconds, for "rss" answer the peak RSS (MiB);
    stop at end of input."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    run, compile_s = sft_runner(framework, bench_config(model_overrides), batch_size, seq)
    run()

    def answer(value) -> None:
        stdout.write(_TAG + json.dumps(value) + "\n")
        stdout.flush()

    answer({"ready": framework, "compile_s": compile_s})
    for line in stdin:
        command = line.strip()
        if command == "step":
            start = time.perf_counter()
            run()
            answer(time.perf_counter() - start)
        elif command == "rss":
            answer(peak_rss_mib())
        else:
            raise ValueError(f"serve: unknown command {command!r}")


class Worker:
    """A `serve` process for one framework; `request(command)` sends a line, returns the answer."""

    def __init__(self, framework: str, batch_size: int, seq: int, model_overrides: dict | None):
        code = ("import json, sys; from headjax.app.bench.paired import serve; "
                "serve(*json.loads(sys.argv[1]))")
        args = json.dumps([framework, batch_size, seq, model_overrides])
        self.framework = framework
        # A file, not a pipe: a full pipe would block the worker. Closed by `close`.
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.process = subprocess.Popen([sys.executable, "-c", code, args], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.ready = self._answer()

    def _answer(self):
        for line in self.process.stdout:
            if line.startswith(_TAG):
                return json.loads(line[len(_TAG):])
        self.process.wait()
        self.stderr.seek(0)
        raise RuntimeError(f"benchmark worker {self.framework} exited with "
                           f"{self.process.returncode}:\n{self.stderr.read()[-4000:]}")

    def request(self, command: str):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
        self.stderr.close()


def cpu_ratio_section(batch_size: int, seq: int, pairs: int, baseline: str = "torch_sdpa",
                      model_overrides: dict | None = None) -> dict:
    """headjax's SFT step / `baseline`'s over `pairs` interleaved pairs (module docstring).

    Returns the `ratio_statistics` under "ratio", the raw (headjax s, baseline s) samples, each
    worker's compile seconds and peak RSS, and the CPU (`cpu_description`).
    """
    if pairs < 5:
        raise ValueError(f"--pairs: need at least 5 for a median with a spread, got {pairs}")
    workers = []
    try:
        for framework in ("headjax", baseline):  # one after the other: set-ups do not overlap
            workers.append(Worker(framework, batch_size, seq, model_overrides))
        ours, theirs = workers
        samples = interleaved_pairs(lambda: ours.request("step"),
                                    lambda: theirs.request("step"), pairs)
        rss = {w.framework: w.request("rss") for w in workers}
    finally:
        for worker in workers:
            worker.close()
    return {"frameworks": ["headjax", baseline], "batch": batch_size, "seq": seq,
            "ratio": ratio_statistics(samples), "samples_s": samples,
            "median_s": {"headjax": float(np.median([a for a, _ in samples])),
                         baseline: float(np.median([b for _, b in samples]))},
            "compile_s": {w.framework: w.ready["compile_s"] for w in workers},
            "peak_rss_mib": rss, "cpu": cpu_description()}
