"""The findings' headline measures per SFT seed (`findings.seeds`), their means and 95%
t-intervals over seeds, and each finding's verdict (`headjax.app.reproduce.verdicts`).

A headline measure is a scalar read from one seed's measures (`findings.finding1/2/3` on that
seed's runs), with its null read from the same measures: for each seed, `read_headlines` gives
{name: {"value", "null_mean", "null_point"}} (`null_point`: the null's one-sided 95% point on the
paper's side, or the fixed reference value). Over seeds (`over_seeds`), the value's mean and
t-interval (`statistics.mean_ci`), the null's mean and 95% point averaged over seeds, and the
verdict of the interval against that point.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from headjax.app.reproduce.findings import (
    combination_fit,
    finding2,
    finding3,
    task_specificity,
)
from headjax.app.reproduce.findings_stage import load_findings
from headjax.app.reproduce.statistics import mean_ci, seeds_for_half_width
from headjax.app.reproduce.verdicts import verdict


@dataclasses.dataclass(frozen=True)
class Headline:
    """A finding's headline measure: `name` in `read_headlines`, its text, the null's text, the
    paper's side of the null ("above"/"below"), whether the finding's verdict is read from it
    (the first tested measure of a finding decides its verdict line), and the half-width the
    study's design aims its interval over seeds at (0: none)."""

    finding: str
    name: str
    label: str
    null: str
    side: str
    tested: bool = True
    goal_half: float = 0.0


HEADLINES = (
    Headline("finding1", "jaccard", "Jaccard of top-k dAP sets, mean over task pairs",
             "shuffled task labels", "below"),
    Headline("finding1", "top_k_share", "top-k share of |dAP|, mean over tasks",
             "uniform share k / heads (a reference: top-k sets hold at least it)", "above",
             tested=False),
    Headline("finding2", "r2", "R^2 (OLS) of the target's dAP on the basic tasks' dAPs",
             "head-shuffled fits", "above", goal_half=0.05),
    Headline("finding2", "r2_held_out", "held-out R^2 (weights fitted on the other half of "
             "the probes)", "0 (no prediction)", "above"),
    Headline("finding3", "ratio", "relative pattern change / relative parameter change, mean "
             "over tasks", "a random change as large as SFT's (mean over tasks; 1 without "
             "`findings.perturbation_draws`)", "above"),
)


def read_headlines(measures: dict) -> dict[str, dict]:
    """{name: {"value", "null_mean", "null_point"} (+ "probe_ci" where a bootstrap over probe
    samples exists)} from one seed's {"finding1", "finding2", "finding3"} measures."""
    f1, f2, f3 = (measures[f"finding{i}"] for i in (1, 2, 3))
    s = f1["summary"]
    return {
        "jaccard": {"value": s["jaccard_mean"], "null_mean": s["jaccard_shuffled_mean"],
                    "null_point": s["jaccard_shuffled_p05"]},
        "top_k_share": {**_fixed(s["top_k_share_mean"], s["uniform_top_k_share"]),
                        "probe_ci": s["top_k_share_mean_ci"]},
        **fit_headlines(f2),
        "ratio": _ratio_headline(np.mean([r["ratio"] for r in f3.values()]),
                                 measures.get("finding3_null")),
    }


def _fixed(value, null) -> dict:
    return {"value": float(value), "null_mean": null, "null_point": null}


def fit_headlines(fit: dict) -> dict[str, dict]:
    """Finding 2's headlines ("r2", "r2_held_out") from a `combination_fit` (or `finding2`,
    whose bootstrap interval over probes comes along)."""
    basic = fit["basic"]
    r2 = {"value": basic["r2_ols"], "null_mean": basic["shuffled_r2_mean"],
          "null_point": basic["shuffled_r2_p95"]}
    if "r2_ols_ci" in basic:
        r2["probe_ci"] = basic["r2_ols_ci"]
    return {"r2": r2, "r2_held_out": _fixed(fit["held_out"]["r2_held_out_half"], 0.0)}


def _ratio_headline(value: float, null: dict | None) -> dict:
    """Finding 3's headline against `findings.perturbation_null`'s draws (mean over draws and
    the largest, the draws' mean over tasks), or against 1 without them."""
    draws = (null or {}).get("mean_per_draw") or [1.0]
    return {"value": float(value), "null_mean": float(np.mean(draws)),
            "null_point": float(np.max(draws))}


def seed_headlines(config: ml_collections.ConfigDict, measures: dict) -> dict[str, dict]:
    """{str(seed): `read_headlines`} for every seed of `findings.seeds`: seed 0's from
    `measures` (its full measures), the others' from their runs (`findings_stage`)."""
    out = {}
    for seed in config.findings.seeds:
        if seed == 0:
            out["0"] = read_headlines(measures)
            continue
        findings = load_findings(config, seed)
        out[str(seed)] = read_headlines({"finding1": task_specificity(config, findings),
                                         "finding2": finding2(config, findings),
                                         "finding3": finding3(config, findings),
                                         "finding3_null": measures.get("finding3_null")})
    return out


def second_target_headlines(config: ml_collections.ConfigDict) -> dict[str, dict[str, dict]]:
    """{target: {str(seed): `fit_headlines`}} for every `findings.second_targets` target and
    `findings.seeds` seed: `combination_fit` of the target's dAP on the basic tasks' dAPs of the
    same seed's runs."""
    f = config.findings
    return {target: {str(seed): fit_headlines(combination_fit(
        config, load_findings(config, seed, (*f.basic, target)), target)) for seed in f.seeds}
        for target in f.second_targets}


def over_seeds(per_seed: dict[str, dict[str, dict]],
               headlines: tuple[Headline, ...] = HEADLINES) -> dict[str, dict]:
    """{name: {"values" (seed order), "seeds", "mean", "std", "half" (95% t half-width; NaN with
    one seed), "null_mean", "null_point" (means over seeds), "verdict", "seeds_for_goal" (seeds
    that would bring the half-width to the headline's `goal_half` at this SD; None without a goal
    or a spread)}} for every headline of `headlines` (each seed's entry holds at least those)."""
    seeds = sorted(per_seed, key=int)
    out = {}
    for h in headlines:
        rows = [per_seed[s][h.name] for s in seeds]
        values = [r["value"] for r in rows]
        mean, std, half = mean_ci(values)
        null_point = float(np.mean([r["null_point"] for r in rows]))
        needed = (seeds_for_half_width(std, h.goal_half)
                  if h.goal_half > 0 and np.isfinite(std) else None)
        out[h.name] = {"values": values, "seeds": [int(s) for s in seeds], "mean": mean,
                       "std": std, "half": half, "seeds_for_goal": needed,
                       "null_mean": float(np.mean([r["null_mean"] for r in rows])),
                       "null_point": null_point,
                       "verdict": verdict(mean, half, null_point, h.side)}
    return out


def finding_verdict(finding: str, summary: dict[str, dict]) -> tuple[str, Headline]:
    """The verdict of `finding` ("finding1", ...) and the measure it is read from: the first
    tested headline of that finding (`summary`: `over_seeds`)."""
    h = next(h for h in HEADLINES if h.finding == finding and h.tested)
    return summary[h.name]["verdict"], h

