"""docs/reproduction.md: the measures of the three findings and the grid, as tables, figures and
plain statements of where the results agree with the paper and where they do not.

Every number in the report is computed from `measures.json` and `results.jsonl`: statistics in
`reproduce.statistics`, figures in `reproduce.figures`, the sections in `reproduce.markdown`, whose
statements compare those numbers with the paper's reported figures (`markdown.PAPER`, Zhao et
al., arXiv 2409.15820) by fixed rules written next to each statement, so a re-run rewrites them.
This module writes the page and its figures.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import ml_collections

from headjax.app.reproduce.config import load_config_file, trained_tasks
from headjax.app.reproduce.figures import figures
from headjax.app.reproduce.findings_stage import findings_path
from headjax.app.reproduce.grid import BASE_KEY, method_lr
from headjax.app.reproduce.markdown import (
    finding1_md,
    finding2_md,
    finding3_md,
    improvement_md,
    second_targets_md,
    seeds_md,
    verdicts_per_model_md,
)
from headjax.app.reproduce.power_doc import power_doc_path
from headjax.app.reproduce.statistics import cells
from headjax.app.reproduce.verdicts import RULES
from headjax.heads import plots


def _findings_runs(config) -> list[tuple[float, str]]:
    """(seconds, machine) of every findings run (task x seed) from its run's summary.json;
    runs without one are left out."""
    out = []
    for task in trained_tasks(config):
        for seed in config.findings.seeds:
            path = findings_path(config, task, seed).with_suffix("") / "summary.json"
            if path.exists():
                summary = json.loads(path.read_text())
                out.append((summary["wall_time_s"], summary.get("machine", UNRECORDED)))
    return out


UNRECORDED = "a machine not recorded"


def wall_by_machine(runs: list[tuple[float, str]]) -> str:
    """"12 min on 1 x NVIDIA H100 80GB HBM3 + 40 min on 2 CPU cores" from (seconds, machine)
    pairs, machines in order of first appearance; "0 min" for none."""
    minutes: dict[str, float] = {}
    for seconds, machine in runs:
        minutes[machine] = minutes.get(machine, 0.0) + seconds / 60
    return " + ".join(f"{m:.0f} min on {machine}" for machine, m in minutes.items()) or "0 min"


def studies(config: ml_collections.ConfigDict, measures: dict) -> list[tuple]:
    """[(config, measures or None, config file)] of this study ("" for its file) and of each
    of `config.compare_configs`, whose measures are read from its `out_dir` if measured."""
    out = [(config, measures, "")]
    for path in config.compare_configs:
        other = load_config_file(path)
        saved = Path(other.out_dir) / "measures.json"
        out.append((other, json.loads(saved.read_text()) if saved.exists() else None, path))
    return out


def write_reproduction(config: ml_collections.ConfigDict, measures: dict, results: dict,
                       findings: dict, model_config) -> Path:
    """Write `config.doc` and its figures (into `<doc stem>/` beside it); returns the doc path."""
    doc = Path(config.doc)
    figures_dir = doc.with_suffix("")
    by_cell = cells(results)
    written = []
    for name, caption, fig in figures(config, measures, results, findings):
        plots.save(fig, figures_dir / name)
        written.append((name, caption))
    runs = [r for k, r in results.items() if k != BASE_KEY and "error" not in r]
    grid_wall = wall_by_machine([(r.get("wall_s", 0.0), r.get("machine", UNRECORDED))
                                 for r in runs])
    b, f, g = config.base, config.findings, config.grid
    lines = [
        "# Reproduction on SmolLM2-135M-Instruct" if "smollm2" in b.model.pretrained
        else f"# Reproduction on {b.model.pretrained}", "",
        f"Written by `python scripts/reproduce.py` on {datetime.date.today().isoformat()} "
        f"from `{config.out_dir}`"
        + (f" (its record: `{config.record_dir}`)" if config.record_dir else "")
        + f". Model: `{b.model.pretrained}` ({model_config.num_layers} "
        f"layers x {model_config.num_heads} heads), {b.model.dtype}.", "",
        "## Scale", "",
        f"- Findings: SFT on each of {', '.join(trained_tasks(config))} alone, seeds "
        f"{tuple(f.seeds)} (data order and train seed), {f.steps} steps x batch "
        f"{b.train.batch_size} over {f.train_samples} training examples, "
        f"lr {b.train.lr} ({b.train.schedule}); activation patterns on {f.probe_samples}"
        f" fixed test probes per task every {f.probe_every} steps, "
        + ("raw scores (as the paper)." if f.normalization == "none" else
           "each checkpoint's pattern divided by its total (`findings.normalization = "
           f"{f.normalization}`), so dAP is a rearrangement, not the scores' overall shrinking."),
        f"- Grid: target {f.target}, budgets {tuple(g.budgets)} training samples, "
        f"{g.epochs} epochs each, methods {', '.join(g.methods)}, seeds {tuple(g.seeds)}; "
        f"preliminary set {g.preliminary_samples} basic examples, warm start {g.warm_steps} "
        f"steps, head fraction {g.head_fraction}; "
        + (f"LoRA rank {g.lora_rank} on {', '.join(g.lora_targets)} at lr "
           f"{method_lr(config, 'lora_all'):g} ({g.lora_lr_scale:g} x the base); "
           if any(r["method"].startswith("lora_") for r in runs) else "")
        + f"evaluation on {g.eval_samples} test examples (greedy, {b.eval.max_new_tokens} new "
        "tokens).",
        f"- Wall time, by the machine each run ran on: findings training "
        f"{wall_by_machine(_findings_runs(config))}; "
        + (f"the {len(runs)} grid runs {grid_wall} (warm starts shared across budgets count in "
           "the first run that trained them; evaluation included)." if runs
           else "the grid has not run."), ""]
    power_doc = power_doc_path(config)
    if power_doc.exists():
        lines[-1:-1] = [f"- Target choice and power analysis: [{power_doc.name}]"
                        f"({os.path.relpath(power_doc, doc.parent)})."]
    lines += [RULES, ""]
    if config.compare_configs:
        lines += verdicts_per_model_md(studies(config, measures), doc.parent)
    lines += finding1_md(config, measures["finding1"]) + seeds_md(config, measures, "finding1")
    lines += (finding2_md(config, measures["finding2"]) + seeds_md(config, measures, "finding2")
              + second_targets_md(config, measures))
    lines += (finding3_md(config, measures["finding3"], by_cell, measures.get("finding3_null"))
              + seeds_md(config, measures, "finding3"))
    if BASE_KEY in results:
        lines += improvement_md(config, results, by_cell)
    else:
        lines += ["## Improvements against their baselines", "",
                  f"Not run yet: the grid stage has no results in `{config.out_dir}` "
                  "(`--stages grid,report` runs it and rewrites this page).", ""]
    if config.notes:
        notes = Path(config.notes)
        if not notes.is_file():
            raise FileNotFoundError(f"config.notes: no file {notes}")
        lines += [notes.read_text().rstrip(), ""]
    lines += ["## Figures", ""]
    for name, caption in written:
        lines += [f"{caption}:", "", f"![{caption}]({figures_dir.name}/{name})", ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines))
    return doc
