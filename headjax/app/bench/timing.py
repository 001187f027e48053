"""Wall-clock timing (compile separate from warm medians) and peak resident memory."""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from collections.abc import Callable

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
    """compile_s: seconds to trace and compile (0 for eager code); warm_s: median seconds of
    `len(runs_s)` post-compile, post-warm-up calls; flops: the compiled program's FLOPs by XLA's
    cost analysis (`compiled_flops`; None for eager code or where none is reported)."""

    compile_s: float
    warm_s: float
    runs_s: tuple[float, ...]
    flops: float | None = None


def compiled_flops(compiled) -> float | None:
    """FLOPs XLA's cost analysis counts for a compiled program (None where it reports none)."""
    costs = compiled.cost_analysis()
    if isinstance(costs, list | tuple):
        costs = costs[0] if costs else None
    flops = (costs or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_jitted(fn: Callable, *args, repeats: int) -> Timing:
    """Time `jax.jit(fn)(*args)`: ahead-of-time compile, one warm-up call, `repeats` runs."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    run = lambda: jax.block_until_ready(compiled(*args))
    run()
    runs = tuple(_seconds(run) for _ in range(repeats))
    return Timing(compile_s, statistics.median(runs), runs, compiled_flops(compiled))


def time_eager(fn: Callable[[], object], *, repeats: int) -> Timing:
    """Time a synchronous call (PyTorch CPU): one warm-up call, then `repeats` runs."""
    fn()
    runs = tuple(_seconds(fn) for _ in range(repeats))
    return Timing(0.0, statistics.median(runs), runs)


def peak_rss_mib() -> float:
    """High-water mark of this process's resident memory, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_device_mib() -> float | None:
    """High-water mark of the first device's memory, MiB, where the backend reports it (GPU,
    TPU); None otherwise (CPU: see `peak_rss_mib`)."""
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20
