"""Statistics of the reproduction's grid: seed means with t-intervals, paired differences and
their verdicts, grid cells by (method, budget)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from scipy import stats

from headjax.app.reproduce.grid import BASE_KEY


def mean_ci(values) -> tuple[float, float, float]:
    """(mean, std, 95% t-interval half-width) of `values`."""
    v = np.asarray(values, np.float64)
    if v.size < 2:
        return float(v.mean()), float("nan"), float("nan")
    std = float(v.std(ddof=1))
    return float(v.mean()), std, t_half_width(std, v.size)


def t_half_width(std: float, n: int) -> float:
    """Half-width of the 95% t-interval of a mean over `n` values whose SD is `std`."""
    return float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n))


def seeds_for_half_width(std: float, half: float, most: int = 1000) -> int | None:
    """The fewest seeds n >= 2 whose 95% t-interval half-width (`t_half_width`) is at most
    `half`, for a measure whose SD over seeds is `std`; None beyond `most`."""
    for n in range(2, most + 1):
        if t_half_width(std, n) <= half:
            return n
    return None


def trainable(rows) -> int:
    """Mean trainable parameters over seeds (pattern-chosen heads differ by seed under GQA)."""
    return round(float(np.mean([r["trainable_parameters"] for r in rows])))


def cells(results: Mapping[str, dict]) -> dict[tuple[str, int], list[dict]]:
    """{(method, budget): the rows of its runs over seeds}, failed runs and the base left out."""
    out: dict[tuple[str, int], list[dict]] = {}
    for key, row in results.items():
        if key != BASE_KEY and "error" not in row:
            out.setdefault((row["method"], row["budget"]), []).append(row)
    return out


class Paired(NamedTuple):
    """Method - baseline on one field over the seeds both ran: mean, SD over seeds, 95%
    t-interval half-width, seeds."""
    mean: float
    std: float
    half: float
    n: int


def paired(by_cell, method, baseline, budget, field) -> Paired:
    """Method - baseline on `field`, paired by seed (`by_cell`: the output of `cells`)."""
    a = {r["seed"]: r[field] for r in by_cell.get((method, budget), [])}
    b = {r["seed"]: r[field] for r in by_cell.get((baseline, budget), [])}
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    if not diffs:
        return Paired(float("nan"), float("nan"), float("nan"), 0)
    return Paired(*mean_ci(diffs), len(diffs))


def verdict(mean: float, half: float, better: str) -> str:
    """'better'/'worse' when the 95% interval excludes 0, else 'no clear difference'."""
    if np.isnan(half) or abs(mean) <= half:
        return "no clear difference"
    improved = mean > 0 if better == "higher" else mean < 0
    return "better" if improved else "worse"
