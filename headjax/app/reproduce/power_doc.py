"""`<doc>_power.md`: the target choice (targets.jsonl), the pilot's measured spreads and costs
(pilot.jsonl, pilot/s<seed>.npz) and the design search of `headjax.app.reproduce.power`, written
from those files alone; the report links it."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import ml_collections
import numpy as np

from headjax.app.reproduce.grid import load_results, method_config, target_steps
from headjax.app.reproduce.pilot import load_changes, pilot_path
from headjax.app.reproduce.power import (
    Costs,
    Study,
    choose,
    design_table,
    pattern_noise,
    two_way_components,
)
from headjax.app.reproduce.targets import targets_md, targets_path


def power_doc_path(config: ml_collections.ConfigDict) -> Path:
    doc = Path(config.doc)
    return doc.with_name(f"{doc.stem}_power.md")


def powered_grid(config: ml_collections.ConfigDict) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(methods, budgets) of the grid whose comparison the design powers: `power.grid_methods`
    and `power.grid_budgets`, each () meaning the grid's own."""
    p, g = config.power, config.grid
    return tuple(p.grid_methods) or tuple(g.methods), tuple(p.grid_budgets) or tuple(g.budgets)


def study_shape(config: ml_collections.ConfigDict, model_config, steps: int) -> Study:
    """The study's fixed shape under `config` with findings runs of `steps` steps and the grid of
    `powered_grid`."""
    f, g = config.findings, config.grid
    methods, budgets = powered_grid(config)
    grid_steps = 0
    for budget in budgets:
        for method in methods:
            grid_steps += method_config(config, budget, method, 0, "dap.npz").train.steps
    warm = sum(m.startswith("warm_") for m in methods) * g.warm_steps  # shared over budgets
    return Study(findings_tasks=1 + len(f.basic) + len(f.unrelated),
                 probe_points=max(1, -(-steps // f.probe_every)), probe_tasks=2,
                 grid_cells=len(budgets) * len(methods), grid_steps=grid_steps + warm,
                 heads=model_config.num_layers * model_config.num_heads, basis=len(f.basic),
                 r2=config.power.r2, second_targets=len(f.second_targets))


def measured(config, rows: list[dict]) -> tuple[Costs, dict, list]:
    """(costs, {steps: (seed_var, item_var)}, [PatternNoise]) from the pilot's rows and files."""
    timing = json.loads((Path(config.out_dir) / "pilot" / "base_probe.json").read_text())
    probes = rows[0]["probe_samples"]
    costs = Costs(step_s=float(np.mean([r["train_s"] / r["steps"] for r in rows])),
                  eval_example_s=float(np.mean([r["eval_s"] / (2 * r["eval_examples"])
                                                for r in rows])),
                  probe_sample_s=timing["probe_s"] / probes)
    changes = load_changes(config, [r["seed"] for r in rows])
    accuracy, noise = {}, []
    for moment, steps in (("mid", rows[0]["mid_step"]), ("final", rows[0]["steps"])):
        scores = np.array([r[f"scores_{moment}"] for r in rows], np.float64)
        seed_var, _, item_var = two_way_components(scores)
        accuracy[steps] = (seed_var, item_var)
        noise.append(pattern_noise(changes[moment], steps))
    return costs, accuracy, noise


def _pilot_md(config, rows, costs, accuracy, noise) -> list[str]:
    target = config.findings.target
    lines = ["## Pilot", "",
             f"{len(rows)} seeds of the short SFT on {target} (data order by seed; the same "
             f"{rows[0]['eval_examples']} test examples and {rows[0]['probe_samples']} fixed "
             "probes for every seed).", "",
             "| steps | accuracy per seed | SD over seeds | seed variance | seed x example "
             "variance | pattern: seed | probe | interaction | signal over heads |",
             "|---|---|---|---|---|---|---|---|---|"]
    for pn in noise:
        moment = "mid" if pn.steps == rows[0]["mid_step"] else "final"
        acc = [float(np.mean(r[f"scores_{moment}"])) for r in rows]
        seed_var, item_var = accuracy[pn.steps]
        lines.append(f"| {pn.steps} | {', '.join(f'{a:.3f}' for a in acc)} | "
                     f"{np.std(acc, ddof=1):.4f} | {seed_var:.2e} | {item_var:.3f} | "
                     f"{pn.seed:.2e} | {pn.probe:.2e} | {pn.interaction:.2e} | "
                     f"{pn.signal:.2e} |")
    lines += ["", f"Measured costs (this machine): {costs.step_s:.2f} s per SFT step (batch "
              f"{config.base.train.batch_size}), {costs.eval_example_s:.3f} s per evaluated "
              f"example ({config.base.eval.max_new_tokens} new tokens), "
              f"{costs.probe_sample_s:.3f} s per probe sample per recording.", ""]
    return lines


def _design_md(config, rows, study, noise) -> list[str]:
    p = config.power
    methods, budgets = powered_grid(config)
    best, why = choose(rows, p.r2_half_width, p.detect, p.cpu_hours)
    lines = ["## Power", "",
             f"Goals: Finding 2's R^2 within +-{p.r2_half_width} of its true value with 95% "
             f"probability (R^2 assumed {p.r2}, {study.heads} heads, {study.basis} basis tasks, "
             "signals distributed over heads like the pilot's dAP, the same noise ratio on the "
             "target and the basis tasks; the bound counts R^2's attenuation by noise) and a "
             f"{p.detect:.2f} accuracy difference detected with power {p.power} at alpha "
             f"{p.alpha} (paired by seed on the same test examples), within {p.cpu_hours} CPU "
             f"hours. The grid's seeds use the pilot's seed x example variance at "
             f"{noise[-1].steps} steps and the largest of its seed variances (a proxy: grid "
             "runs train on fewer examples, and a few pilot seeds cannot tell a small seed "
             f"variance from 0). {_grid_steps_md(config, noise[-1].steps)} "
             f"Cost: {study.findings_tasks} "
             f"findings tasks x seeds, {study.grid_cells} grid cells "
             f"({', '.join(methods)} at budgets {budgets}: {study.grid_steps} SFT steps) per "
             "grid seed.", "",
             "R^2 95% error bound by probes x findings seeds (rows: SFT steps):", "",
             "| steps | probes | " + " | ".join(f"{s} seed(s)" for s in p.findings_seeds) + " |",
             "|---|---|" + "---|" * len(p.findings_seeds)]
    for pn in noise:
        for probes in p.probes:
            cells = [next(r["r2_half_width"] for r in rows if r["steps"] == pn.steps and
                          r["probes"] == probes and r["findings_seeds"] == s)
                     for s in p.findings_seeds]
            lines.append(f"| {pn.steps} | {probes} | " + " | ".join(f"{c:.3f}" for c in cells)
                         + " |")
    steps = noise[-1].steps
    lines += ["", f"Detectable accuracy difference (and grid CPU hours at {p.probes[0]} probes) "
              f"by grid seeds x evaluation examples ({steps} steps' spread):", "",
              "| grid seeds | " + " | ".join(f"{n} examples" for n in p.eval_samples) + " |",
              "|---|" + "---|" * len(p.eval_samples)]
    for sg in p.grid_seeds:
        cells = [next(r for r in rows if r["steps"] == steps and r["probes"] == p.probes[0]
                      and r["findings_seeds"] == p.findings_seeds[0] and r["grid_seeds"] == sg
                      and r["eval_samples"] == n) for n in p.eval_samples]
        lines.append(f"| {sg} | " + " | ".join(f"{c['detectable']:.3f} ({c['grid_hours']:.1f} h)"
                                                for c in cells) + " |")
    lines += ["", "Not counted in the CPU hours: the measures stage (its ablation runs forward "
              "passes of every task's probes under about 11 head sets), the grid's held-out loss "
              "forward pass and the base model's evaluations.", "", f"**Design**: {why}."]
    if best:
        lines += ["", "| SFT steps | probes | findings seeds | grid seeds | eval examples | R^2 "
                  "error bound | detectable difference | CPU hours (findings + grid) |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| {best['steps']} | {best['probes']} | {best['findings_seeds']} | "
                  f"{best['grid_seeds']} | {best['eval_samples']} | {best['r2_half_width']:.3f} "
                  f"| {best['detectable']:.3f} | {best['findings_hours']:.1f} + "
                  f"{best['grid_hours']:.1f} = {best['hours']:.1f} |"]
    return lines + [""]


def _grid_steps_md(config, pilot_steps: int) -> str:
    """The powered grid's target steps per budget, and a caveat for those whose steps are not
    the `pilot_steps` the spread was measured at."""
    steps = {b: target_steps(config, b) for b in powered_grid(config)[1]}
    text = "Target steps of the powered grid: " + ", ".join(
        f"{s} at budget {b}" for b, s in steps.items()) + "."
    other = [b for b, s in steps.items() if s != pilot_steps]
    if other:
        text += (f" **Caveat:** budget{'s' if len(other) > 1 else ''} "
                 f"{', '.join(map(str, other))} train{'' if len(other) > 1 else 's'} other "
                 f"than the pilot's {pilot_steps} steps, so the spread (and whether SFT moves "
                 "the target at all) is the pilot's only by assumption.")
    return text


def design_rows(config, model_config, pilot_rows):
    """(design table rows, study shape, costs, accuracy components, pattern noise)."""
    costs, accuracy, noise = measured(config, pilot_rows)
    study = study_shape(config, model_config, noise[-1].steps)
    p = config.power
    # A few seeds cannot tell a small seed variance from 0: the design uses the largest of the
    # step counts' estimates.
    seed_var = max(v[0] for v in accuracy.values())
    cautious = {steps: (seed_var, item_var) for steps, (_, item_var) in accuracy.items()}
    rows = []
    for pn in noise:
        shape = study_shape(config, model_config, pn.steps)
        dap = load_changes(config, [r["seed"] for r in pilot_rows])[
            "mid" if pn.steps == pilot_rows[0]["mid_step"] else "final"].mean(axis=(0, 1))
        rows += design_table([pn], cautious, costs, shape, p.probes, p.findings_seeds,
                             p.grid_seeds, p.eval_samples, p.alpha, p.power, shape=dap)
    return rows, study, costs, accuracy, noise


def write_power_doc(config: ml_collections.ConfigDict, model_config) -> Path | None:
    """Write `<doc>_power.md` from whatever of targets.jsonl and pilot.jsonl exists; returns its
    path (None when neither does)."""
    targets = list(load_results(targets_path(config)).values())
    pilot = sorted(load_results(pilot_path(config)).values(), key=lambda r: r["seed"])
    if not targets and not pilot:
        return None
    lines = [f"# Target choice and power analysis: {config.base.model.pretrained}", "",
             f"Written by `python scripts/reproduce.py --stages targets,pilot,power` on "
             f"{datetime.date.today().isoformat()} from `{config.out_dir}`.", ""]
    if targets:
        lines += targets_md(config, targets)
    if len(pilot) >= 2:
        rows, study, costs, accuracy, noise = design_rows(config, model_config, pilot)
        lines += _pilot_md(config, pilot, costs, accuracy, noise)
        lines += _design_md(config, rows, study, noise)
    path = power_doc_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path
