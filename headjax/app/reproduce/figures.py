"""The reproduction's figures from the findings and the measures (each a matplotlib `Figure` of
`headjax.heads.plots`)."""

from __future__ import annotations

from collections.abc import Mapping

import ml_collections
import numpy as np
from matplotlib.figure import Figure

from headjax.app.reproduce.config import findings_tasks
from headjax.app.reproduce.findings import own_change
from headjax.app.reproduce.grid import BASE_KEY
from headjax.app.reproduce.statistics import cells, mean_ci
from headjax.heads import plots


def figures(config: ml_collections.ConfigDict, measures: dict, results: Mapping[str, dict],
            findings: dict) -> list[tuple[str, str, Figure]]:
    """(file name, caption, figure) of every figure of the reproduction page."""
    tasks = findings_tasks(config)
    target = config.findings.target
    figs: list[tuple[str, str, Figure]] = []
    changes = {t: own_change(findings, t) for t in tasks}
    figs.append(("dap_heatmaps.png", "dAP (after - before own SFT), shared colour scale",
                 plots.pattern_heatmaps(changes, cmap="RdBu_r", label="dAP", symmetric=True)))
    figs.append(("target_before_after.png", f"{target}: AP before / after its SFT",
                 plots.before_after(findings[target][target][0], findings[target][target][-1],
                                    title=target)))
    fit = measures["finding2"]["basic"]
    figs.append(("nnls_weights.png", "NNLS weights of the target's dAP on the basic dAPs",
                 plots.bars(fit["weights_nnls"], ylabel="weight",
                            title=f"{target}: NNLS R^2 = {fit['r2_nnls']:.3f}")))
    figs.append(("param_vs_pattern.png", f"{target}: per-head parameter change vs |dAP|",
                 plots.scatter(findings[target]["head_change"], np.abs(changes[target]),
                               xlabel="relative change of the head's q/k/v/o",
                               ylabel="|dAP|", title=target)))
    f3 = measures["finding3"]
    steps = f3[target]["steps"]
    figs.append(("trajectory.png", "Correlation of each task's AP with its base AP over SFT",
                 plots.trajectory_curves(steps, {t: f3[t]["corr_to_base"] for t in tasks},
                                         ylabel="Pearson r to step 0")))
    ablation = measures["finding1"]["ablation"]
    figs.append(("ablation.png", "Loss increase when ablating top-k heads (base model)",
                 plots.grouped_bars(ablation, ("own", "other", "random"),
                                    ylabel="loss increase (nats)")))
    by_cell = cells(results)
    if by_cell:
        for field, label, name in (("accuracy", "accuracy", "improvement_accuracy.png"),
                                   ("heldout_loss", "held-out loss (nats/token)",
                                    "improvement_loss.png")):
            figs.append((name, f"{label} vs target samples, mean ± 95% CI over seeds",
                         _curves(by_cell, results[BASE_KEY][field], field, label)))
    return figs


def _curves(by_cell, base_value, field, label) -> Figure:
    """Per method: the mean of `field` over seeds against the budget, with 95% t-intervals,
    starting from the base model's value at budget 0."""
    series = {}
    for method in sorted({m for m, _ in by_cell}):
        budgets = sorted(b for m, b in by_cell if m == method)
        stats_ = [mean_ci([r[field] for r in by_cell[(method, b)]]) for b in budgets]
        series[method] = ([0, *budgets], [base_value] + [s[0] for s in stats_],
                          [0.0] + [0.0 if np.isnan(s[2]) else s[2] for s in stats_])
    return plots.errorbar_curves(series, xlabel="target training samples", ylabel=label)


