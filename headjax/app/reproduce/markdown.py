"""The sections of docs/reproduction.md as Markdown lines, from the measures and the grid's
results; each "Against the paper" statement compares them with `PAPER` by the rule written beside
it."""

from __future__ import annotations

import os

import numpy as np

from headjax.app.reproduce.config import METHODS
from headjax.app.reproduce.findings import ablation_samples
from headjax.app.reproduce.grid import BASE_KEY
from headjax.app.reproduce.power import seeds_to_detect
from headjax.app.reproduce.seeds import HEADLINES, finding_verdict, over_seeds
from headjax.app.reproduce.statistics import mean_ci, paired, trainable, verdict

PAPER = {
    "gini": "Llama3-8B: Gini 0.50 -> 0.33 and CV 1.19 -> 0.71 after SFT (activation spreads)",
    "r2": "R^2 = 0.97 (GSM8K + CodeSearchNet -> SGSM), 0.95 (reasoning + programming -> "
          "Infinity Instruct)",
    "steps": "a sharp pattern change within the first ~200 SFT steps",
    "improvement": "MathBench, Llama3-8B: base 46.12, SFT 49.22, random preliminary mix 50.10, "
                   "a-weighted mix 52.33",
}


def _pm(mean: float, spread: float, digits: int) -> str:
    """`mean ± spread`, or the mean alone when the spread is undefined (one seed)."""
    return f"{mean:.{digits}f}" if np.isnan(spread) else f"{mean:.{digits}f} ± {spread:.{digits}f}"


def _fmt(mean, std, half, scale=1.0, digits=1) -> str:
    if np.isnan(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f} (CI ± {half * scale:.{digits}f})"


def _interval(r: dict) -> str:
    """` [low, high]` of an `over_seeds` entry's 95% t-interval; "" with one seed."""
    if np.isnan(r["half"]):
        return ""
    return f" [{r['mean'] - r['half']:.3g}, {r['mean'] + r['half']:.3g}]"


def _over_seeds_cells(h, r: dict) -> str:
    """The table cells "per seed | mean over seeds [95% t-interval] | null: mean, 95% point |
    verdict" of headline `h` from its `over_seeds` entry `r`."""
    over = ("1 seed: no interval over seeds" if len(r["values"]) < 2 else
            f"{r['mean']:.3g}{_interval(r)}")
    return (f"{', '.join(f'{v:.3g}' for v in r['values'])} | {over} | {h.null}: "
            f"{r['null_mean']:.3g}, {r['null_point']:.3g} | "
            f"{r['verdict'] if h.tested else 'reference only'}")


def seeds_md(config, measures, finding: str) -> list[str]:
    """`finding`'s ("finding1", ...) headline measures over SFT seeds beside seed 0's bootstrap
    interval over probes and the null, and the finding's verdict line (`reproduce.seeds`,
    `reproduce.verdicts`)."""
    per_seed = measures["seeds"]
    summary = over_seeds(per_seed)
    seeds = tuple(int(s) for s in sorted(per_seed, key=int))
    lines = [f"Over SFT seeds {', '.join(map(str, seeds))} (data order and train seed; the "
             "same probes; seed 0 is the run of the tables above):", "",
             "| measure | paper's side of the null | seed 0 [95% bootstrap over probes] | per "
             "seed | mean over seeds [95% t-interval] | null: mean, 95% point | verdict |",
             "|---|---|---|---|---|---|---|"]
    for h in (h for h in HEADLINES if h.finding == finding):
        r, first = summary[h.name], per_seed["0"][h.name]
        probe = f"{first['value']:.3g}"
        if "probe_ci" in first:
            probe += " [{:.3g}, {:.3g}]".format(*first["probe_ci"])
        label = h.label.replace("|", "\\|")  # a table cell
        lines.append(f"| {label} | {h.side} | {probe} | {_over_seeds_cells(h, r)} |")
    for h in (h for h in HEADLINES if h.finding == finding and h.goal_half > 0):
        r = summary[h.name]
        if np.isfinite(r["std"]):
            needed = (f"{r['seeds_for_goal']} seeds" if r["seeds_for_goal"] is not None
                      else "more than 1000 seeds")
            lines += ["", f"Power over seeds: the design aims at a half-width of "
                      f"{h.goal_half:g} on the {h.label.split(' (')[0]}. At the SD over these "
                      f"seeds ({r['std']:.3g}) the 95% t-interval's half-width is "
                      f"{r['half']:.3g}; {needed} would bring it to {h.goal_half:g}."]
    result, h = finding_verdict(finding, summary)
    lines += ["", f"**Verdict on `{config.base.model.pretrained}`: {result}** (read from: "
              f"{h.label}; {len(seeds)} seed{'s' if len(seeds) > 1 else ''}; the paper's side: "
              f"{h.side} the null's 95% point {summary[h.name]['null_point']:.3g}).", ""]
    return lines


def second_targets_md(config, measures) -> list[str]:
    """Finding 2 on each second target (`findings.second_targets`): its headlines over seeds
    beside the null and a verdict per measure (the rules above); nothing without second
    targets."""
    fits = measures.get("second_targets") or {}
    if not fits:
        return []
    f = config.findings
    headlines = tuple(h for h in HEADLINES if h.finding == "finding2")
    lines = [f"Second target{'s' if len(fits) > 1 else ''}: each trained alone on the same "
             f"seeds and settings and probed on its own {f.probe_samples} fixed probes; its dAP "
             f"fitted on the basic tasks' dAPs of the same seed ({', '.join(f.basic)}). Not in "
             "Finding 1, Finding 3 or the grid.", "",
             "| target | measure | per seed | mean over seeds [95% t-interval] | null: mean, "
             "95% point | verdict |", "|---|---|---|---|---|---|"]
    for target, per_seed in fits.items():
        summary = over_seeds(per_seed, headlines)
        for h in headlines:
            lines.append(f"| {target} | {h.label} | {_over_seeds_cells(h, summary[h.name])} |")
    return lines + [""]


def verdicts_per_model_md(studies, doc_dir) -> list[str]:
    """Each finding's verdict per model, side by side: `studies` is [(config, measures or None
    when that study has not been measured, its config file or "" for this report's)]; links
    are relative to `doc_dir`."""
    lines = ["## Verdicts per model", "",
             "Each finding's verdict measure over SFT seeds, mean [95% t-interval]: verdict "
             "(the rules above).", "",
             "| model | seeds, probes per task, pattern | Finding 1 | Finding 2 | Finding 3 | "
             "report |", "|---|---|---|---|---|---|"]
    for config, measures, path in studies:
        f = config.findings
        doc = os.path.relpath(config.doc, doc_dir)
        head = (f"| `{config.base.model.pretrained}` | {len(f.seeds)}, {f.probe_samples}, "
                f"{'raw' if f.normalization == 'none' else f.normalization} | ")
        if measures is None or "seeds" not in measures:
            command = (f"python scripts/reproduce.py --config {path} --stages "
                       "findings,measures,report")
            lines.append(head + f"not measured yet: `{command}` | | | [{doc}]({doc}) |")
            continue
        summary = over_seeds(measures["seeds"])
        cells = []
        for finding in ("finding1", "finding2", "finding3"):
            result, h = finding_verdict(finding, summary)
            r = summary[h.name]
            cells.append(f"{h.name} {r['mean']:.3g}{_interval(r)}: {result}")
        lines.append(head + " | ".join(cells) + f" | [{doc}]({doc}) |")
    return lines + [""]


def finding1_md(config, m) -> list[str]:
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
    lines += ["", "Ablation at the base model (mean loss increase in nats on "
              f"{ablation_samples(config)} probe samples of the task):",
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


def finding2_md(config, m) -> list[str]:
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


def finding3_md(config, m, cells, null: dict | None = None) -> list[str]:
    """Finding 3's table (`m`: measures["finding3"]), with the ratio of random changes as large
    as each task's SFT change beside SFT's when `null` (`findings.perturbation_null`) exists."""
    lines = ["## Finding 3: few parameters, large pattern shift", ""]
    if null:
        lines += [f"Null: the base model moved as far as each task's SFT moved it, in a random "
                  f"direction ({null['draws']} draws, patterns on {null['samples']} of the "
                  "task's probes): the ratio a change of that size gives when it follows no "
                  "gradient.", ""]
    lines += ["| task | ‖dθ‖/‖θ‖ | ‖dAP‖/‖AP‖ | ratio | random change's ratio | entries "
              "holding 90% of squared change | corr to base AP at probe steps | Spearman head "
              "dθ vs \\|dAP\\| |", "|---|---|---|---|---|---|---|---|"]
    for t, r in m.items():
        corr = ", ".join(f"{c:.2f}" for c in r["corr_to_base"])
        drawn = (", ".join(f"{v:.3g}" for v in null["tasks"][t]) if null
                 else "not measured")
        lines.append(f"| {t} | {r['param_change']:.2e} | {r['pattern_change']:.3f} | "
                     f"{r['ratio']:.0f} | {drawn} | {100 * r['concentration_90']:.1f}% | "
                     f"{corr} | {r['spearman_head_param_vs_pattern']:.3f} |")
    lines += ["", "Controlled: target SFT on few samples updating only some heads (grid runs); "
              "the target's AP move toward its full-SFT AP (relative reduction of the distance, "
              "mean ± std over seeds).", "",
              "| method | budget | trainable parameters | relative reduction | alignment |",
              "|---|---|---|---|---|"]
    for (method, budget), rows in sorted(cells.items()):
        if method not in ("plain", "heads_pattern", "heads_random"):
            continue
        red = mean_ci([r["pattern_move"]["relative_reduction"] for r in rows])
        ali = mean_ci([r["pattern_move"]["alignment"] for r in rows])
        lines.append(f"| {method} | {budget} | {trainable(rows):,} | "
                     f"{_pm(red[0], red[1], 3)} | {_pm(ali[0], ali[1], 3)} |")
    ratios = [r["ratio"] for r in m.values()]
    lines += ["", f"**Against the paper** ({PAPER['steps']}): relative pattern change is "
              f"{min(ratios):.0f}x to {max(ratios):.0f}x the relative parameter change, after "
              f"only {config.findings.steps} steps.", ""]
    return lines


def outside_design_md(config, cells) -> tuple[list[str], list[str]]:
    """(the methods of `cells` that `grid.methods` leaves out, in `METHODS` order; a line naming
    their seeds and budgets). Runs made with other `--config.grid.methods` into the same
    `out_dir` are results of the same settings (`grid.check_same`), so the report shows them."""
    ran = {m for m, _ in cells}
    extra = [m for m in METHODS if m not in config.grid.methods and m in ran]
    if not extra:
        return [], []
    runs = []
    for method in extra:
        budgets = sorted(b for m, b in cells if m == method)
        seeds = sorted({r["seed"] for b in budgets for r in cells[(method, b)]})
        runs.append(f"{method} (seed{'s' if len(seeds) > 1 else ''} "
                    f"{', '.join(map(str, seeds))} at "
                    f"{', '.join(map(str, budgets))} samples)")
    return extra, [f"Also shown: methods outside the design's `grid.methods`, run into the same "
                   f"folder with `--config.grid.methods`: {'; '.join(runs)}.", ""]


def improvement_md(config, results, cells) -> list[str]:
    base = results[BASE_KEY]
    extra, extra_md = outside_design_md(config, cells)
    ran = {m for m, _ in cells}
    methods = [m for m in config.grid.methods if m in ran] + extra
    budgets = sorted({b for _, b in cells})
    g = config.grid
    designed = len(g.budgets) * len(g.methods) * len(g.seeds)
    done = sum(r["seed"] in g.seeds for (method, budget), rows in cells.items()
               if method in g.methods and budget in g.budgets for r in rows)
    partial = ([] if done >= designed else
               [f"**A partial grid:** {done} of the design's {designed} runs (methods x "
                f"budgets x seeds = {len(g.methods)} x {len(g.budgets)} x {len(g.seeds)}) have "
                "been made; rerunning the grid stage makes the rest. Intervals below are over "
                "the seeds each cell has, pairs over the seeds both cells have.", ""])
    lines = ["## Improvements against their baselines", "", *partial, *extra_md,
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
            acc = mean_ci([r["accuracy"] for r in rows])
            loss = mean_ci([r["heldout_loss"] for r in rows])
            lines.append(f"| {method} | {budget} | {len(rows)} | {rows[0]['steps']} | "
                         f"{trainable(rows):,} | {_fmt(*acc, scale=100)} | "
                         f"{_fmt(*loss, digits=3)} |")
    p = config.power
    detect = f"{100 * p.detect:g} pp"
    lines += ["", "Paired by seed (method - baseline over the seeds both ran, mean ± 95% "
              "half-width; 'better' only when the interval excludes 0). The last column is the "
              f"power over seeds: how many seeds the SD of these differences needs to detect "
              f"{detect} of accuracy with power {p.power} at alpha {p.alpha} (`power.detect`).",
              "", "| method | baseline | budget | seeds | Δ accuracy (pp) | verdict (accuracy) "
              f"| Δ held-out loss | verdict (loss) | seeds to detect {detect} |",
              "|---|---|---|---|---|---|---|---|---|"]
    pairs = (("warm_pattern", "warm_random"), ("warm_pattern", "plain"),
             ("joint_pattern", "joint_random"), ("joint_pattern", "plain"),
             ("heads_pattern", "heads_random"), ("heads_pattern", "plain"),
             ("select_pattern", "select_random"), ("select_pattern", "select_all"),
             ("select_pattern", "plain"), ("lora_pattern", "lora_random"),
             ("lora_pattern", "lora_all"), ("lora_all", "plain"))
    for method, baseline in pairs:
        for budget in budgets:
            acc = paired(cells, method, baseline, budget, "accuracy")
            loss = paired(cells, method, baseline, budget, "heldout_loss")
            if acc.n:
                needed = ("" if np.isnan(acc.std) else
                          seeds_to_detect(acc.std ** 2, p.detect, p.alpha, p.power))
                lines.append(f"| {method} | {baseline} | {budget} | {acc.n} | "
                             f"{_pm(100 * acc.mean, 100 * acc.half, 1)} | "
                             f"{verdict(acc.mean, acc.half, 'higher')} | "
                             f"{_pm(loss.mean, loss.half, 3)} | "
                             f"{verdict(loss.mean, loss.half, 'lower')} | {needed} |")
    for field, name, higher, scale, digits in (("heldout_loss", "held-out loss", False, 1.0, 3),
                                               ("accuracy", "accuracy %", True, 100.0, 1)):
        lines += fewest_samples_md(cells, methods, budgets, field, name, higher, scale, digits)
    failed = sorted({r["error"] for r in results.values() if "error" in r})
    if failed:
        lines += ["", "Runs that could not be made: " + "; ".join(failed)]
    lines += ["", f"**Against the paper** ({PAPER['improvement']}): see the verdicts above; a "
              "'no clear difference' is reported as such.", ""]
    return lines + anchors_md(methods)


def fewest_samples_md(cells, methods, budgets, field: str, name: str, higher: bool,
                      scale: float, digits: int) -> list[str]:
    """For each method, the fewest target samples (of `budgets`) at which it reaches plain
    SFT's mean `field` at the largest budget (`higher`: higher is better, else lower): by its
    mean, and by its 95% t-interval over seeds, with its mean ± half-width per budget (times
    `scale`). [] when plain did not run there."""
    reference = cells.get(("plain", budgets[-1]), [])
    if not reference:
        return []
    goal = float(np.mean([r[field] for r in reference]))

    def first(values):
        reached = [b for b, v in values.items() if (v >= goal if higher else v <= goal)]
        return str(reached[0]) if reached else "none"

    lines = ["", f"Fewest target samples at which a method reaches plain SFT's mean {name} at "
             f"{budgets[-1]} samples ({scale * goal:.{digits}f}): the first budget whose mean "
             "reaches it, and the first whose 95% interval over seeds does (where only the "
             "interval reaches it, the grid cannot tell whether the method needs more samples).",
             ""]
    for method in methods:
        stats = {b: mean_ci([r[field] for r in cells[(method, b)]])
                 for b in budgets if cells.get((method, b))}
        edges = {b: m + (0.0 if np.isnan(h) else h if higher else -h)
                 for b, (m, _, h) in stats.items()}
        values = "; ".join(f"{b}: {_pm(scale * m, scale * h, digits)}"
                           for b, (m, _, h) in stats.items())
        lines.append(f"- {method}: mean {first({b: s[0] for b, s in stats.items()})}, "
                     f"interval {first(edges)} ({values})")
    return lines


ANCHORS = (
    # (the grid's methods an anchor speaks to, source, what it reports as its abstract gives it)
    (("warm_pattern", "joint_pattern"), "the paper (arXiv 2409.15820)", PAPER["improvement"]),
    (("select_pattern", "heads_pattern"), "P2D (arXiv 2605.21558)",
     "heads guide data selection and which parameters train: 10% of the heads on 10% of the "
     "data, +8.3 points over baselines, 7x faster end to end"),
    (("heads_pattern", "lora_pattern"), "ALPS (arXiv 2505.18799)",
     "training the ~10% of attention parameters in task-sensitive heads: +2% over baselines on "
     "three tasks"),
    (("heads_pattern", "lora_pattern"), "LoFiT (arXiv 2406.01563)",
     "3-10% of the heads fine-tuned: matches LoRA with 20-200x fewer parameters"),
    (("select_pattern",), "LESS (arXiv 2402.04333)",
     "gradient-based data selection: 5% of the data often beats the whole"),
)


def anchors_md(methods) -> list[str]:
    """The paper's table and the work that followed it, beside the grid rows each speaks to
    (`methods`: the grid's methods that ran; an anchor none of them tests is marked so)."""
    lines = ["**The anchors** (7-8B models and their own benchmarks, so a direction to compare, "
             "not a number to match):", "", "| source | reports | rows of this grid |",
             "|---|---|---|"]
    for speaks_to, source, reports in ANCHORS:
        ran = [m for m in speaks_to if m in methods]
        lines.append(f"| {source} | {reports} | "
                     f"{', '.join(ran) if ran else 'not in this grid: ' + ', '.join(speaks_to)} |")
    return lines + [""]
