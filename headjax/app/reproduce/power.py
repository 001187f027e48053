"""Power analysis of the reproduction: which design (probe samples, SFT steps, seeds, evaluation
examples) gets Finding 2's R^2 interval and the improvements comparison to a wanted precision
within a CPU budget, from variances and costs measured in a pilot. Pure functions of numbers.

Accuracy (improvements). A run's score on test example i is x_si = mu + a_s + b_i + e_si (seed
effect a, variance `seed_var`; example effect b; seed x example interaction e, `item_var`).
Two methods compared paired by seed and on the same n test examples: the mean difference over S
seeds has variance 2 (seed_var + item_var / n) / S (b cancels), so a difference delta is detected
with power 1 - beta at two-sided level alpha (normal approximation) when

    S >= 2 (seed_var + item_var / n) (z_{1-alpha/2} + z_{1-beta})^2 / delta^2.

Pattern change (Finding 2). A head's change on probe p after a run of seed s is
c_sph = mu_h + a_sh + b_ph + e_sph; the design's dAP (mean over S seeds and the same P probes)
has noise variance seed/S + probe/P + interaction/(S P) per head, against `signal` (the variance
of the true dAP over heads). The R^2 error bound at that noise ratio comes from `r2_half_width`
(Monte Carlo of the fit under noise of that ratio on the target and the basis; the bound counts
the attenuation of R^2 by noise as well as its spread).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats


def two_way_components(x: np.ndarray) -> tuple[float, float, float]:
    """Variance components (rows, columns, interaction) of a two-way table without replication
    (`x`: `[rows, columns]`, or `[rows, columns, ...]` averaged over the trailing axes after
    estimation), by the ANOVA expected mean squares; negative estimates are set to 0."""
    x = np.asarray(x, np.float64)
    r, c = x.shape[:2]
    grand = x.mean(axis=(0, 1))
    row, col = x.mean(axis=1), x.mean(axis=0)
    ms_row = c * ((row - grand) ** 2).sum(axis=0) / (r - 1)
    ms_col = r * ((col - grand) ** 2).sum(axis=0) / (c - 1)
    resid = x - row[:, None] - col[None, :] + grand
    ms_res = (resid ** 2).sum(axis=(0, 1)) / ((r - 1) * (c - 1))
    rows = np.maximum((ms_row - ms_res) / c, 0.0)
    cols = np.maximum((ms_col - ms_res) / r, 0.0)
    return float(np.mean(rows)), float(np.mean(cols)), float(np.mean(ms_res))


def z_sum(alpha: float, power: float) -> float:
    """z_{1-alpha/2} + z_{power}."""
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def seeds_to_detect(pair_var: float, delta: float, alpha: float = 0.05,
                    power: float = 0.8) -> int:
    """Seeds S of a comparison paired by seed whose per-seed difference has variance
    `pair_var` that detect a mean difference `delta` (module docstring), at least 2."""
    return max(2, math.ceil(pair_var * (z_sum(alpha, power) / delta) ** 2))


def seeds_needed(seed_var: float, item_var: float, n_eval: int, delta: float,
                 alpha: float = 0.05, power: float = 0.8) -> int:
    """Seeds S of the paired comparison detecting `delta` (module docstring), from the
    variance components of one run's accuracy."""
    return seeds_to_detect(2 * (seed_var + item_var / n_eval), delta, alpha, power)


def detectable(seed_var: float, item_var: float, n_eval: int, seeds: int,
               alpha: float = 0.05, power: float = 0.8) -> float:
    """The accuracy difference detected with `power` by `seeds` paired seeds."""
    return z_sum(alpha, power) * math.sqrt(2 * (seed_var + item_var / n_eval) / seeds)


def _standard(values: np.ndarray) -> np.ndarray:
    return (values - values.mean(0)) / values.std(0)


def r2_half_width(noise_ratio: float, r2: float, heads: int, basis: int,
                  shape: np.ndarray | None = None, draws: int = 400, seed: int = 0) -> float:
    """95% error bound of the OLS R^2 (with intercept) of a target on `basis` regressors over
    `heads` observations: the 95th percentile of |R^2 observed - r2| when target and regressors
    carry independent noise of variance `noise_ratio` times their signal's (so attenuation of
    R^2 by noise counts, not only its spread). The true signals are fixed (one draw: regressors
    and the target's unexplained part drawn from `shape`'s values, standardised and permuted,
    e.g. a measured dAP for its heavy tails, or standard normal; the unexplained part is
    orthogonal to the regressors, so the true R^2 is exactly `r2`); the spread is over the noise
    alone, like a bootstrap over probes and seeds."""
    rng = np.random.default_rng(seed)

    def signal(columns):
        if shape is None:
            return rng.standard_normal((heads, columns))
        values = np.resize(np.asarray(shape, np.float64).ravel(), heads)
        return np.stack([rng.permutation(values) for _ in range(columns)], axis=1)

    x = _standard(signal(basis))
    ones = np.ones((heads, 1))
    rest = signal(1)[:, 0]
    design0 = np.concatenate([ones, x], axis=1)
    rest = rest - design0 @ np.linalg.lstsq(design0, rest, rcond=None)[0]
    fit = x.sum(1)
    y = _standard(fit) * math.sqrt(r2) + _standard(rest) * math.sqrt(1 - r2)
    scale = math.sqrt(noise_ratio)
    ys = y + scale * rng.standard_normal((draws, heads))
    xs = x + scale * rng.standard_normal((draws, heads, basis))
    design = np.concatenate([np.ones((draws, heads, 1)), xs], axis=2)
    beta = np.linalg.solve(np.einsum("dhi,dhj->dij", design, design),
                           np.einsum("dhi,dh->di", design, ys)[..., None])[..., 0]
    resid = ys - np.einsum("dhi,di->dh", design, beta)
    r2s = 1 - (resid ** 2).sum(1) / ((ys - ys.mean(1, keepdims=True)) ** 2).sum(1)
    return float(np.percentile(np.abs(r2s - r2), 95))


@dataclasses.dataclass(frozen=True)
class PatternNoise:
    """Per-head variance components of the pattern change after `steps` SFT steps (mean over
    heads): seed, probe, interaction, and the signal variance over heads."""

    steps: int
    seed: float
    probe: float
    interaction: float
    signal: float

    def noise(self, seeds: int, probes: int) -> float:
        return self.seed / seeds + self.probe / probes + self.interaction / (seeds * probes)


def pattern_noise(changes: np.ndarray, steps: int) -> PatternNoise:
    """`PatternNoise` from per-sample changes `[seeds, probes, layers, heads]` (fixed probes)."""
    c = np.asarray(changes, np.float64)
    s, p = c.shape[:2]
    seed, probe, inter = two_way_components(c.reshape(s, p, -1))
    dap = c.mean(axis=(0, 1)).ravel()
    noise = seed / s + probe / p + inter / (s * p)
    return PatternNoise(steps, seed, probe, inter, max(float(dap.var(ddof=1)) - noise, 1e-12))


@dataclasses.dataclass(frozen=True)
class Costs:
    """Measured seconds: one SFT step (the configured batch), one evaluated test example, one
    probe sample at one recording."""

    step_s: float
    eval_example_s: float
    probe_sample_s: float


@dataclasses.dataclass(frozen=True)
class Study:
    """The study's fixed shape: findings tasks, probe recordings per findings run (besides the
    shared base), probe tasks per findings run, grid cells (methods x budgets) and their SFT
    steps per seed, heads and basis tasks of the fit, the R^2 assumed, and the second targets
    (`findings.second_targets`: one more findings run per seed each, probed on itself only)."""

    findings_tasks: int
    probe_points: int
    probe_tasks: int
    grid_cells: int
    grid_steps: int
    heads: int
    basis: int
    r2: float
    second_targets: int = 0


def cpu_hours(costs: Costs, study: Study, probes: int, steps: int, findings_seeds: int,
              grid_seeds: int, n_eval: int) -> tuple[float, float]:
    """(findings, grid) CPU hours of a design."""
    c, st = costs, study

    def tasks_seconds(tasks: int, probe_tasks: int) -> float:
        """Seconds of `tasks` findings tasks, each run per seed and probed on `probe_tasks`
        tasks at every recording, plus its base pattern."""
        per_run = steps * c.step_s + st.probe_points * probe_tasks * probes * c.probe_sample_s
        return tasks * (findings_seeds * per_run + probes * c.probe_sample_s)

    findings = (tasks_seconds(st.findings_tasks, st.probe_tasks)
                + tasks_seconds(st.second_targets, 1))
    grid = grid_seeds * (st.grid_steps * c.step_s
                         + st.grid_cells * (n_eval * c.eval_example_s + probes * c.probe_sample_s))
    return findings / 3600, grid / 3600


def design_table(noise: Sequence[PatternNoise], accuracy: dict[int, tuple[float, float]],
                 costs: Costs, study: Study, probes: Iterable[int], findings_seeds: Iterable[int],
                 grid_seeds: Iterable[int], n_evals: Iterable[int], alpha: float = 0.05,
                 power: float = 0.8, shape: np.ndarray | None = None) -> list[dict]:
    """Every design over the given choices and the measured step counts: its predicted R^2
    half-width, detectable accuracy difference and CPU hours. `accuracy`: {steps: (seed_var,
    item_var)}; `noise`: one `PatternNoise` per measured step count; `shape`: the signals'
    distribution for `r2_half_width`."""
    rows = []
    for pn in noise:
        seed_var, item_var = accuracy[pn.steps]
        for p, sf in itertools.product(probes, findings_seeds):
            half = r2_half_width(pn.noise(sf, p) / pn.signal, study.r2, study.heads, study.basis,
                                 shape)
            for sg, n in itertools.product(grid_seeds, n_evals):
                hours = cpu_hours(costs, study, p, pn.steps, sf, sg, n)
                rows.append({"steps": pn.steps, "probes": p, "findings_seeds": sf,
                             "grid_seeds": sg, "eval_samples": n, "r2_half_width": half,
                             "detectable": detectable(seed_var, item_var, n, sg, alpha, power),
                             "findings_hours": hours[0], "grid_hours": hours[1],
                             "hours": hours[0] + hours[1]})
    return rows


def choose(rows: Sequence[dict], half_width: float, delta: float, budget_hours: float
           ) -> tuple[dict | None, str]:
    """The cheapest design meeting both goals within the budget, and why; else None and the
    closest the budget allows (least of the two goals' shortfalls, relative)."""
    meets = [r for r in rows if r["r2_half_width"] <= half_width and r["detectable"] <= delta]
    fitting = [r for r in meets if r["hours"] <= budget_hours]
    if fitting:
        return min(fitting, key=lambda r: r["hours"]), "meets both goals within the budget"
    affordable = [r for r in rows if r["hours"] <= budget_hours]
    if not affordable:
        return None, "no design considered fits the budget"
    best = min(affordable, key=lambda r: max(r["r2_half_width"] / half_width,
                                             r["detectable"] / delta))
    cheapest = min(meets, key=lambda r: r["hours"]) if meets else None
    why = "no design meets both goals within the budget; the closest within it"
    if cheapest:
        why += f" (the cheapest meeting both takes {cheapest['hours']:.1f} CPU hours)"
    return best, why
