"""The reproduction end to end: findings stage, grid, measures and the report; on request the
target choice ("targets"), the pilot seeds ("pilot") and the design search ("power")."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import jax
import ml_collections

from headjax.app.reproduce import record
from headjax.app.reproduce.config import findings_tasks, trained_tasks, validate_reproduce
from headjax.app.reproduce.findings import (
    finding1,
    finding2,
    finding3,
    own_change,
    perturbation_null,
)
from headjax.app.reproduce.findings_stage import findings_digest, load_findings, run_findings
from headjax.app.reproduce.grid import load_results, run_grid
from headjax.app.reproduce.pilot import run_pilot
from headjax.app.reproduce.power_doc import write_power_doc
from headjax.app.reproduce.seeds import second_target_headlines, seed_headlines
from headjax.app.reproduce.targets import run_targets
from headjax.parallel import maybe_initialize
from headjax.train.patterns import save_npz_atomically

log = logging.getLogger(__name__)
STAGES = ("targets", "findings", "measures", "grid", "pilot", "power", "report")
DEFAULT_STAGES = ("findings", "measures", "grid", "report")  # the study itself
# findings settings seed 0's measures do not read, or that are checked apart (`measures_lack_*`)
_SETTINGS_CHECKED_APART = ("seeds", "second_targets", "perturbation_draws",
                           "perturbation_samples")


def write_dap(config: ml_collections.ConfigDict, findings: dict) -> Path:
    """`out_dir/findings/dap.npz`: each findings task's own dAP `[layers, heads]` in seed 0's runs
    (the patterns file of the pattern-guided mixture, `guide.patterns`)."""
    path = Path(config.out_dir) / "findings" / "dap.npz"
    save_npz_atomically(path, {t: own_change(findings, t) for t in findings_tasks(config)})
    return path


def measures_inputs(config: ml_collections.ConfigDict, findings: dict) -> dict:
    """What seed 0's measures (Findings 1-3) are computed from, in JSON types: the `findings`
    settings (but `_SETTINGS_CHECKED_APART`), the model, the probes' batching and data seed, and
    `findings_digest` of seed 0's arrays (`findings`, `load_findings`'). measures.json records
    it under "inputs"; the "measures" stage measures again only when it differs."""
    inputs = {"findings": {k: v for k, v in config.findings.to_dict().items()
                           if k not in _SETTINGS_CHECKED_APART},
              "model": config.base.model.pretrained,
              "probe_batch_size": config.base.heads.batch_size,
              "max_len": config.base.data.max_len, "data_seed": config.base.data.seed,
              "findings_digest": findings_digest(findings)}
    return json.loads(json.dumps(inputs))


def measures_from_other_inputs(config: ml_collections.ConfigDict, measures: dict,
                               findings: dict) -> bool:
    """True when `measures` (measures.json's) record inputs (`measures_inputs`) other than
    `config`'s and `findings`' now; measures written before inputs were recorded are taken as
    current by the report and measured again by the "measures" stage."""
    recorded = measures.get("inputs")
    return recorded is not None and recorded != measures_inputs(config, findings)


def measures_lack_seeds(config: ml_collections.ConfigDict, measures: dict) -> bool:
    """True when `measures` (measures.json's) hold other seeds' headline measures than
    `findings.seeds` (seeds added since): the report stage then reads the headlines of every
    seed again (from their runs) and keeps seed 0's measures and the null."""
    per_seed = measures.get("seeds", {})
    return sorted(per_seed) != sorted(str(s) for s in config.findings.seeds)


def measures_lack_second_targets(config: ml_collections.ConfigDict, measures: dict) -> bool:
    """True when `measures` (measures.json's) hold other second targets' fits, or other seeds'
    fits, than `findings.second_targets` x `findings.seeds`: the report stage then fits them
    again from their runs."""
    seeds = sorted(str(s) for s in config.findings.seeds)
    recorded = measures.get("second_targets", {})
    return (sorted(recorded) != sorted(config.findings.second_targets)
            or any(sorted(per_seed) != seeds for per_seed in recorded.values()))


def measures_lack_null(config: ml_collections.ConfigDict, measures: dict) -> bool:
    """True when `measures` (measures.json's) hold no Finding 3 null of
    `findings.perturbation_draws` draws on `perturbation_samples` probes (or hold one that is no
    longer configured): the report stage then measures the null alone and keeps the other
    measures."""
    f = config.findings
    null = measures.get("finding3_null")
    if not f.perturbation_draws:
        return null is not None
    return null is None or (null["draws"], null["samples"]) != (
        f.perturbation_draws, min(f.perturbation_samples, f.probe_samples))


def check_inputs(config: ml_collections.ConfigDict, stages=DEFAULT_STAGES) -> None:
    """Raise naming the key, stage, task or file that stops a reproduction from starting, before
    the model is loaded."""
    from headjax.app.experiment import check_inputs as check_run_inputs
    from headjax.data import get_task

    validate_reproduce(config)
    record.check(config)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"--stages: unknown {unknown}; known {STAGES}")
    check_run_inputs(config.base)
    for task in (*trained_tasks(config), *config.targets.candidates):
        get_task(task)
    if "targets" in stages and not config.targets.candidates:
        raise ValueError("config.targets.candidates: name the tasks the targets stage measures")
    path = Path(config.out_dir) / "measures.json"
    if "report" in stages and "measures" not in stages and path.exists():
        try:
            findings = load_findings(config)
        except FileNotFoundError:  # the findings stage writes them; `reproduce` checks again
            return
        _check_current(config, json.loads(path.read_text()), findings, path)


def _check_current(config, measures: dict, findings: dict, path: Path) -> None:
    if measures_from_other_inputs(config, measures, findings):
        raise ValueError(f"{path}: measured on other findings runs or settings than now; "
                         "add the measures stage (--stages measures,report)")


def reproduce(config: ml_collections.ConfigDict, stages=DEFAULT_STAGES) -> Path | None:
    """Run the requested `stages` in `STAGES` order (each resumes what an earlier call left):
    "targets" (candidate targets before and after a short SFT -> targets.jsonl), "findings"
    (SFT per task and seed, patterns), "measures" (the three findings' measures on seed 0's runs
    and the headline measures of every seed -> measures.json, from the findings alone; kept
    when measures.json records the same `measures_inputs`), "grid"
    (the improvements), "pilot" (short SFT on the target over seeds -> pilot.jsonl), "power"
    (the design search -> `<doc>_power.md`, also written after "targets")
    and "report" (docs, from measures.json and results.jsonl). With `config.record_dir`, the
    record's files are put back into `out_dir` first and `out_dir`'s saved into it after every
    findings run and grid row and at the end, whether the stages finished or not
    (`reproduce.record`). Returns the report's path when "report" ran."""
    check_inputs(config, stages)
    d = config.base.distributed  # before anything asks JAX for its process index
    maybe_initialize(d.mode, d.coordinator_address, d.num_processes, d.process_id)
    restored = record.restore(config)
    if restored:
        log.info("record: %d files from %s", len(restored), config.record_dir)
    try:
        return _run_stages(config, stages)
    finally:
        save_record(config)


def save_record(config: ml_collections.ConfigDict) -> None:
    """`record.save` on the first process when the study keeps a record."""
    if config.record_dir and jax.process_index() == 0:
        log.info("record: %d files into %s", len(record.save(config)), config.record_dir)


def _run_stages(config: ml_collections.ConfigDict, stages) -> Path | None:
    from headjax.io.pretrained import load_pretrained

    params, model_config, tokenizer = load_pretrained(config.base.model.pretrained,
                                                      dtype=config.base.model.param_dtype)
    base_params = jax.device_get(params)
    del params
    if "targets" in stages:
        run_targets(config, base_params, model_config, tokenizer)
    if "pilot" in stages:
        run_pilot(config, base_params, model_config, tokenizer)
    if {"targets", "pilot", "power"} & set(stages) and jax.process_index() == 0:
        log.info("design: %s", write_power_doc(config, model_config))
    if not {"findings", "measures", "grid", "report"} & set(stages):
        return None
    if "findings" in stages:
        run_findings(config, base_params, model_config, tokenizer,
                     after_run=functools.partial(save_record, config))
    findings = load_findings(config)
    dap_path = write_dap(config, findings)
    target = findings[config.findings.target][config.findings.target]
    measures_path = Path(config.out_dir) / "measures.json"
    measures, add_null, add_seeds = None, False, False
    if {"measures", "report"} & set(stages) and measures_path.exists():
        measures = json.loads(measures_path.read_text())
        if "measures" not in stages:
            _check_current(config, measures, findings, measures_path)
        elif measures.get("inputs") != measures_inputs(config, findings):  # or none recorded
            measures = None
    if {"measures", "report"} & set(stages) and measures is None:
        log.info("measures: Findings 1-3 on seed 0's runs")
        measures = {"inputs": measures_inputs(config, findings),
                    "finding1": finding1(config, findings, base_params, model_config, tokenizer),
                    "finding2": finding2(config, findings),
                    "finding3": finding3(config, findings)}
        add_null = add_seeds = True
    elif measures is not None:  # measured before the null or with other seeds: add what lacks
        add_null = measures_lack_null(config, measures)
        add_seeds = add_null or measures_lack_seeds(config, measures)  # headlines read the null
    if add_null:
        measures.pop("finding3_null", None)
        if config.findings.perturbation_draws:
            measures["finding3_null"] = perturbation_null(config, findings, base_params,
                                                          model_config, tokenizer)
    if add_seeds:
        measures["seeds"] = seed_headlines(config, measures)
    if measures is not None and (add_seeds or measures_lack_second_targets(config, measures)):
        measures["second_targets"] = second_target_headlines(config)  # they read the seeds
        text = json.dumps(measures, indent=2)
        if jax.process_index() == 0:
            measures_path.write_text(text)
        measures = json.loads(text)  # the report reads the measures as written (JSON types)
    if "grid" in stages:
        run_grid(config, base_params, model_config, tokenizer, target[0], target[-1], dap_path,
                 after_run=functools.partial(save_record, config))
    if "report" not in stages or jax.process_index() != 0:
        return None
    from headjax.app.reproduce.report import write_reproduction

    results = load_results(Path(config.out_dir) / "results.jsonl")
    return write_reproduction(config, measures, results, findings, model_config)
