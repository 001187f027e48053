"""docs/reproduction.md: the measures of the three findings and the grid, as tables, figures and
plain statements of where the results agree with the paper and where they do not.

Every number in the report is computed here from `measures.json` and `results.jsonl`; the
statements compare those numbers with the paper's reported figures (`PAPER`, Zhao et al.,
arXiv 2409.15820) by fixed rules written next to each statement, so a re-run rewrites them.
"""

from __future__ import annotations

import datetime
import json
import operator
import os
from collections.abc import Mapping
from pathlib import Path

import jax
import ml_collections
import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from headjax.heads import plots
from headjax.reproduce.config import findings_tasks
from headjax.reproduce.findings import own_change
from headjax.reproduce.grid import BASE_KEY

PAPER = {
    "gini": "Llama3-8B: Gini 0.50 -> 0.33 and CV 1.19 -> 0.71 after SFT (activation spreads)",
    "r2": "R^2 = 0.97 (GSM8K + CodeSearchNet -> SGSM), 0.95 (reasoning + programming -> "
          "Infinity Instruct)",
    "steps": "a sharp pattern change within the first ~200 SFT steps",
    "improvement": "MathBench, Llama3-8B: base 46.12, SFT 49.22, random preliminary mix 50.10, "
                   "a-weighted mix 52.33",
}


def _mean_ci(values) -> tuple[float, float, float]:
    """(mean, std, 95% t-interval half-width) of `values`."""
    v = np.asarray(values, np.float64)
    if v.size < 2:
        return float(v.mean()), float("nan"), float("nan")
    std = float(v.std(ddof=1))
    return float(v.mean()), std, float(stats.t.ppf(0.975, v.size - 1) * std / np.sqrt(v.size))


def _pm(mean: float, spread: float, digits: int) -> str:
    """`mean ± spread`, or the mean alone when the spread is undefined (one seed)."""
    return f"{mean:.{digits}f}" if np.isnan(spread) else f"{mean:.{digits}f} ± {spread:.{digits}f}"


def _fmt(mean, std, half, scale=1.0, digits=1) -> str:
    if np.isnan(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f} (CI ± {half * scale:.{digits}f})"


def _trainable(rows) -> int:
    """Mean trainable parameters over seeds (pattern-chosen heads differ by seed under GQA)."""
    return round(float(np.mean([r["trainable_parameters"] for r in rows])))


def _cells(results: Mapping[str, dict]) -> dict[tuple[str, int], list[dict]]:
    cells: dict[tuple[str, int], list[dict]] = {}
    for key, row in results.items():
        if key != BASE_KEY and "error" not in row:
            cells.setdefault((row["method"], row["budget"]), []).append(row)
    return cells


def _paired(cells, method, baseline, budget, field) -> tuple[float, float, int]:
    """Mean and 95% half-width of method - baseline on `field`, paired by seed."""
    a = {r["seed"]: r[field] for r in cells.get((method, budget), [])}
    b = {r["seed"]: r[field] for r in cells.get((baseline, budget), [])}
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    if not diffs:
        return float("nan"), float("nan"), 0
    mean, _, half = _mean_ci(diffs)
    return mean, half, len(diffs)


def _verdict(mean: float, half: float, better: str) -> str:
    """'better'/'worse' when the 95% interval excludes 0, else 'no clear difference'."""
    if np.isnan(half) or abs(mean) <= half:
        return "no clear difference"
    improved = mean > 0 if better == "higher" else mean < 0
    return "better" if improved else "worse"


def _figures(config, measures, results, findings, out: Path) -> list[tuple[str, str]]:
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
                 _grouped_bars(ablation, ("own", "other", "random"), "loss increase (nats)")))
    cells = _cells(results)
    if cells:
        for field, label, name in (("accuracy", "accuracy", "improvement_accuracy.png"),
                                   ("heldout_loss", "held-out loss (nats/token)",
                                    "improvement_loss.png")):
            figs.append((name, f"{label} vs target samples, mean ± 95% CI over seeds",
                         _curves(cells, results[BASE_KEY][field], field, label)))
    written = []
    for name, caption, fig in figs:
        plots.save(fig, out / name)
        written.append((name, caption))
    return written


def _grouped_bars(values: Mapping[str, Mapping[str, float]], groups, ylabel) -> Figure:
    fig = Figure(figsize=(1.6 * len(values) + 2, 3.5), layout="constrained")
    ax = fig.subplots()
    names = list(values)
    width = 0.8 / len(groups)
    for i, group in enumerate(groups):
        ax.bar(np.arange(len(names)) + i * width, [values[n][group] for n in names], width,
               label=group)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20)
    ax.set_ylabel(ylabel)
    ax.legend()
    return fig


def _curves(cells, base_value, field, label) -> Figure:
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for method in sorted({m for m, _ in cells}):
        budgets = sorted(b for m, b in cells if m == method)
        stats_ = [_mean_ci([r[field] for r in cells[(method, b)]]) for b in budgets]
        ax.errorbar([0, *budgets], [base_value] + [s[0] for s in stats_],
                    yerr=[0.0] + [0.0 if np.isnan(s[2]) else s[2] for s in stats_],
                    marker="o", capsize=3, label=method)
    ax.set_xlabel("target training samples")
    ax.set_ylabel(label)
    ax.legend(fontsize=8)
    return fig


def _finding1_md(config, m) -> list[str]:
    k = config.findings.k
    lines = ["## Finding 1: SFT activates task-specific heads", "",
             f"Each task's own change dAP after {config.findings.steps} SFT steps; top-k = {k} "
             "heads by |dAP|.", "",
             "| task | Gini before | Gini after | CV before | CV after | top-k share of \\|dAP\\| "
             "[95% bootstrap over probes] | uniform share |", "|---|---|---|---|---|---|---|"]
    for t, r in m["tasks"].items():
        low, high = r["top_k_share_ci"]
        lines.append(f"| {t} | {r['gini_before']:.3f} | {r['gini_after']:.3f} | "
                     f"{r['cv_before']:.3f} | {r['cv_after']:.3f} | "
                     f"{r['top_k_share_of_change']:.3f} "
                     f"[{low:.3f}, {high:.3f}] | {r['uniform_top_k_share']:.3f} |")
    lines += ["", "| task pair | Jaccard of top-k dAP sets | random sets | shuffled labels | "
              "p (below shuffled) | Spearman of dAP |", "|---|---|---|---|---|---|"]
    for pair, r in m["pairs"].items():
        lines.append(f"| {pair} | {r['jaccard_top_k']:.3f} | {r['jaccard_random_mean']:.3f} | "
                     f"{r['jaccard_shuffled_mean']:.3f} | {r['p_jaccard_below_shuffled']:.3f} | "
                     f"{r['spearman']:.3f} |")
    lines += ["", "Ablation at the base model (mean loss increase in nats on the task's probes):",
              "", "| task | own top-k | other tasks' top-k (mean) | k random (mean of 5) |",
              "|---|---|---|---|"]
    for t, r in m["ablation"].items():
        lines.append(f"| {t} | {r['own']:.4f} | {r['other']:.4f} | {r['random']:.4f} |")
    shares = [r["top_k_share_of_change"] / r["uniform_top_k_share"]
              for r in m["tasks"].values()]
    gini_down = sum(r["gini_after"] < r["gini_before"] for r in m["tasks"].values())
    specific = sum(r["p_jaccard_below_shuffled"] < 0.05 for r in m["pairs"].values())
    own_max = sum(r["own"] > max(r["other"], r["random"]) for r in m["ablation"].values())
    n = len(m["tasks"])
    lines += ["", "**Against the paper.** "
              f"Concentration: the top-{k} heads carry {min(shares):.1f}x to {max(shares):.1f}x "
              f"their uniform share of |dAP|. Gini fell after SFT for {gini_down} of {n} tasks "
              f"(paper, {PAPER['gini']}). Task specificity: {specific} of {len(m['pairs'])} task "
              "pairs have top-k sets overlapping less than under shuffled task labels (p < 0.05)."
              f" Ablating a task's own top-k heads costs it more loss than other tasks' top-k and "
              f"random heads for {own_max} of {n} tasks.", ""]
    return lines


def _fit_row(name, fit) -> str:
    weights = ", ".join(f"{t} {w:.2f}" for t, w in fit["weights_nnls"].items())
    return (f"| {name} | {fit['r2_ols']:.3f} | {fit['adjusted_r2_ols']:.3f} | "
            f"{fit['r2_nnls']:.3f} | {fit['shuffled_r2_mean']:.3f} | {fit['p_above_shuffled']:.3f}"
            f" | {weights} |")


def _finding2_md(config, m) -> list[str]:
    target = config.findings.target
    lines = ["## Finding 2: the complex task's pattern change combines the basic tasks'", "",
             f"Fit of {target}'s dAP over all heads (one observation per head).", "",
             "| basis | R^2 OLS | adjusted R^2 | R^2 NNLS | head-shuffled R^2 | p | NNLS weights |",
             "|---|---|---|---|---|---|---|", _fit_row("basic tasks", m["basic"])]
    if "unrelated" in m:
        lines.append(_fit_row("unrelated tasks", m["unrelated"]))
    h = m["held_out"]
    lines += ["", f"Held out: fitted on half of each task's probe samples, R^2 = "
              f"{h['r2_fit_half']:.3f}; the same weights on the other half: R^2 = "
              f"{h['r2_held_out_half']:.3f}.", "",
              f"Reverse direction: SFT on each other task alone, and how {target}'s AP moved "
              f"relative to its own post-SFT AP.", "",
              "| SFT on | distance before | after | relative reduction | alignment (cosine) |",
              "|---|---|---|---|---|"]
    for t, r in m["reverse"].items():
        lines.append(f"| {t} | {r['distance_before']:.3g} | {r['distance_after']:.3g} | "
                     f"{r['relative_reduction']:.3f} | {r['alignment']:.3f} |")
    basic = m["basic"]
    low, high = basic["r2_ols_ci"]
    lines += ["", f"**Against the paper** ({PAPER['r2']}): here R^2 = {basic['r2_ols']:.3f} "
              f"[{low:.3f}, {high:.3f}, 95% bootstrap over probe samples] with the basic tasks "
              f"(head-shuffled {basic['shuffled_r2_mean']:.3f}, p = "
              f"{basic['p_above_shuffled']:.3f})"
              + (f", {m['unrelated']['r2_ols']:.3f} with the unrelated tasks" if "unrelated" in m
                 else "") + f", held-out {h['r2_held_out_half']:.3f}.", ""]
    return lines


def _finding3_md(config, m, cells) -> list[str]:
    lines = ["## Finding 3: few parameters, large pattern shift", "",
             "| task | ‖dθ‖/‖θ‖ | ‖dAP‖/‖AP‖ | ratio | entries holding 90% of "
             "squared change | corr to base AP at probe steps | Spearman head dθ vs \\|dAP\\| |",
             "|---|---|---|---|---|---|---|"]
    for t, r in m.items():
        corr = ", ".join(f"{c:.2f}" for c in r["corr_to_base"])
        lines.append(f"| {t} | {r['param_change']:.2e} | {r['pattern_change']:.3f} | "
                     f"{r['ratio']:.0f} | {100 * r['concentration_90']:.1f}% | {corr} | "
                     f"{r['spearman_head_param_vs_pattern']:.3f} |")
    lines += ["", "Controlled: target SFT on few samples updating only some heads (grid runs); "
              "the target's AP move toward its full-SFT AP (relative reduction of the distance, "
              "mean ± std over seeds).", "",
              "| method | budget | trainable parameters | relative reduction | alignment |",
              "|---|---|---|---|---|"]
    for (method, budget), rows in sorted(cells.items()):
        if method not in ("plain", "heads_pattern", "heads_random"):
            continue
        red = _mean_ci([r["pattern_move"]["relative_reduction"] for r in rows])
        ali = _mean_ci([r["pattern_move"]["alignment"] for r in rows])
        lines.append(f"| {method} | {budget} | {_trainable(rows):,} | "
                     f"{_pm(red[0], red[1], 3)} | {_pm(ali[0], ali[1], 3)} |")
    ratios = [r["ratio"] for r in m.values()]
    lines += ["", f"**Against the paper** ({PAPER['steps']}): relative pattern change is "
              f"{min(ratios):.0f}x to {max(ratios):.0f}x the relative parameter change, after "
              f"only {config.findings.steps} steps.", ""]
    return lines


def _improvement_md(config, results, cells) -> list[str]:
    base = results[BASE_KEY]
    methods = [m for m in config.grid.methods if any(k[0] == m for k in cells)]
    budgets = sorted({b for _, b in cells})
    lines = ["## Improvements against their baselines", "",
             f"Target {config.findings.target}; base model: accuracy "
             f"{100 * base['accuracy']:.1f}% and held-out loss {base['heldout_loss']:.3f} "
             f"nats/token on the same {base['n_eval']} test examples. Mean ± std over seeds "
             "(95% t-interval); accuracy in %.", "",
             "| method | budget | seeds | steps | trainable parameters | accuracy % | "
             "held-out loss |", "|---|---|---|---|---|---|---|"]
    for method in methods:
        for budget in budgets:
            rows = cells.get((method, budget), [])
            if not rows:
                continue
            acc = _mean_ci([r["accuracy"] for r in rows])
            loss = _mean_ci([r["heldout_loss"] for r in rows])
            lines.append(f"| {method} | {budget} | {len(rows)} | {rows[0]['steps']} | "
                         f"{_trainable(rows):,} | {_fmt(*acc, scale=100)} | "
                         f"{_fmt(*loss, digits=3)} |")
    lines += ["", "Paired by seed (method - baseline; 'better' only when the 95% interval "
              "excludes 0):", "", "| method | baseline | budget | Δ accuracy (pp) | Δ held-out "
              "loss | verdict (loss) |", "|---|---|---|---|---|---|"]
    pairs = (("warm_pattern", "warm_random"), ("warm_pattern", "plain"),
             ("joint_pattern", "joint_random"), ("joint_pattern", "plain"),
             ("heads_pattern", "heads_random"), ("heads_pattern", "plain"))
    for method, baseline in pairs:
        for budget in budgets:
            acc, acc_half, n = _paired(cells, method, baseline, budget, "accuracy")
            loss, loss_half, _ = _paired(cells, method, baseline, budget, "heldout_loss")
            if n:
                lines.append(f"| {method} | {baseline} | {budget} | "
                             f"{_pm(100 * acc, 100 * acc_half, 1)} | {_pm(loss, loss_half, 3)} | "
                             f"{_verdict(loss, loss_half, 'lower')} |")
    reference = cells.get(("plain", budgets[-1]), [])
    for field, name, reaches in (("heldout_loss", "held-out loss", operator.le),
                                 ("accuracy", "accuracy", operator.ge)):
        if not reference:
            break

        def mean(rows, field=field):
            return float(np.mean([r[field] for r in rows]))

        goal = mean(reference)
        lines += ["", f"Fewest target samples at which a method's mean {name} reaches plain "
                  f"SFT's at {budgets[-1]} samples ({goal:.3f}):", ""]
        for method in methods:
            reached = [b for b in budgets
                       if cells.get((method, b)) and reaches(mean(cells[(method, b)]), goal)]
            lines.append(f"- {method}: {reached[0] if reached else 'not within the grid'}")
    failed = sorted({r["error"] for r in results.values() if "error" in r})
    if failed:
        lines += ["", "Runs that could not be made: " + "; ".join(failed)]
    lines += ["", f"**Against the paper** ({PAPER['improvement']}): see the verdicts above; a "
              "'no clear difference' is reported as such.", ""]
    return lines


def _findings_wall(config, task: str) -> float:
    """Seconds the findings run of `task` took (its run's summary.json), 0 if unknown."""
    path = Path(config.out_dir) / "findings" / task / "summary.json"
    return json.loads(path.read_text())["wall_time_s"] if path.exists() else 0.0


def _machine() -> str:
    """`N CPU cores` or the accelerator's kind, for the wall-time statement."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"{os.cpu_count()} CPU cores"
    return f"{jax.device_count()} x {device.device_kind}"


def write_reproduction(config: ml_collections.ConfigDict, measures: dict, results: dict,
                       findings: dict, model_config) -> Path:
    """Write `config.doc` and its figures (into `<doc stem>/` beside it); returns the doc path."""
    doc = Path(config.doc)
    figures_dir = doc.with_suffix("")
    cells = _cells(results)
    figures = _figures(config, measures, results, findings, figures_dir)
    runs = [r for k, r in results.items() if k != BASE_KEY and "error" not in r]
    wall = sum(r.get("wall_s", 0.0) for r in runs)
    findings_wall = sum(_findings_wall(config, t) for t in findings_tasks(config))
    b, f, g = config.base, config.findings, config.grid
    lines = [
        "# Reproduction on SmolLM2-135M-Instruct" if "smollm2" in b.model.pretrained
        else f"# Reproduction on {b.model.pretrained}", "",
        f"Written by `python scripts/reproduce.py` on {datetime.date.today().isoformat()} "
        f"from `{config.out_dir}`. Model: `{b.model.pretrained}` ({model_config.num_layers} "
        f"layers x {model_config.num_heads} heads), {b.model.dtype}.", "",
        "## Scale", "",
        f"- Findings: SFT on each of {', '.join(findings_tasks(config))} alone, "
        f"{f.steps} steps x batch {b.train.batch_size} over {f.train_samples} training "
        f"examples, lr {b.train.lr} ({b.train.schedule}); activation patterns on {f.probe_samples}"
        f" fixed test probes per task every {f.probe_every} steps.",
        f"- Grid: target {f.target}, budgets {tuple(g.budgets)} training samples, "
        f"{g.epochs} epochs each, methods {', '.join(g.methods)}, seeds {tuple(g.seeds)}; "
        f"preliminary set {g.preliminary_samples} basic examples, warm start {g.warm_steps} "
        f"steps, head fraction {g.head_fraction}; evaluation on {g.eval_samples} test examples"
        f" (greedy, {b.eval.max_new_tokens} new tokens).",
        f"- Wall time on {_machine()}: findings training {findings_wall / 60:.0f} min, the "
        f"{len(runs)} grid runs {wall / 60:.0f} min (warm starts shared across budgets count in "
        "the first run that trained them; evaluation included).", ""]
    lines += _finding1_md(config, measures["finding1"])
    lines += _finding2_md(config, measures["finding2"])
    lines += _finding3_md(config, measures["finding3"], cells)
    if BASE_KEY in results:
        lines += _improvement_md(config, results, cells)
    if config.notes:
        notes = Path(config.notes)
        if not notes.is_file():
            raise FileNotFoundError(f"config.notes: no file {notes}")
        lines += [notes.read_text().rstrip(), ""]
    lines += ["## Figures", ""]
    for name, caption in figures:
        lines += [f"{caption}:", "", f"![{caption}]({figures_dir.name}/{name})", ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines))
    return doc
