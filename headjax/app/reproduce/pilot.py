"""The "pilot" stage: the short SFT on the target repeated over seeds, to measure what a powered
design needs (`headjax.app.reproduce.power`): seed-to-seed spread of accuracy and of the pattern
change, and the cost of a step, an evaluated example and a probe sample.

Per seed s of `power.pilot_seeds`: `targets.steps` SFT steps on `findings.target` (the targets
stage's run, data order and train seed s), the target's activation pattern on the fixed
`findings.probe_samples` probes (data seed `base.data.seed`, the same for every seed) at step 0,
mid-run and the final step, and accuracy on the targets stage's `targets.eval_samples` test
examples at mid-run and the final step. Saved per seed: one JSON line in `out_dir/pilot.jsonl`
(resume skips finished seeds)

    seed, steps, mid_step, scores_mid, scores_final (per example), eval_examples, probe_samples,
    eval_s (both evaluations), probe_s (the base recording's time per probe point, x 2 points),
    train_s (the training loop less those)

and `out_dir/pilot/s<seed>.npz` with the per-sample change of the target's scores from step 0,
`mid` and `final`, each `[probe samples, layers, heads]`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from headjax.app.experiment import probe_hook
from headjax.app.reproduce.findings_stage import seed_step_zero
from headjax.app.reproduce.grid import append_row, check_same, load_results
from headjax.app.reproduce.targets import (
    accuracy_scores,
    eval_examples,
    short_sft,
    short_sft_config,
)
from headjax.train.loop import Hooks
from headjax.train.patterns import (
    pattern_path,
    read_step,
    record_patterns,
    save_npz_atomically,
)

log = logging.getLogger(__name__)


def pilot_path(config: ml_collections.ConfigDict) -> Path:
    return Path(config.out_dir) / "pilot.jsonl"


def changes_path(config: ml_collections.ConfigDict, seed: int) -> Path:
    return Path(config.out_dir) / "pilot" / f"s{seed}.npz"


def _probes(config, tokenizer) -> dict:
    """The target's fixed probe batches (the findings stage's, data seed `base.data.seed`)."""
    c = short_sft_config(config, config.findings.target, config.base.data.seed, "")
    c.heads.tasks = (config.findings.target,)
    c.heads.samples = config.findings.probe_samples
    return probe_hook(c, tokenizer)


def pilot_seed(config, base_params, model_config, tokenizer, seed: int, probes: dict,
               base: Path, probe_point_s: float) -> dict:
    """One pilot seed: train, probe, evaluate; saves its pattern changes, returns its row."""
    target = config.findings.target
    run = short_sft_config(config, target, seed, Path(config.out_dir) / "pilot" / f"s{seed}")
    mid = max(1, run.train.steps // 2)
    run.heads.update(tasks=(target,), samples=config.findings.probe_samples, every=mid)
    seed_step_zero(run, base)
    examples = eval_examples(config, target)
    scores, eval_s = {}, [0.0]

    def evaluate(params, step):
        if step == mid:
            started = time.perf_counter()
            scores["mid"] = accuracy_scores(config, params, model_config, tokenizer, target,
                                            examples)
            eval_s[0] += time.perf_counter() - started
        return {}

    started = time.perf_counter()
    run.eval.every = mid
    params = short_sft(run, base_params, model_config, tokenizer,
                       hooks=Hooks(evaluate=evaluate, probes=probes))
    loop_s = time.perf_counter() - started
    loop_eval_s = eval_s[0]  # the mid-run evaluation, inside the loop's time
    evaluated_at = time.perf_counter()
    scores["final"] = accuracy_scores(config, params, model_config, tokenizer, target, examples)
    eval_s[0] += time.perf_counter() - evaluated_at
    per_sample = {step: read_step(pattern_path(run.run_dir, step))[1][target]
                  for step in (0, mid, run.train.steps)}
    save_npz_atomically(changes_path(config, seed), {
        "mid": per_sample[mid] - per_sample[0],
        "final": per_sample[run.train.steps] - per_sample[0]})
    probe_s = 2 * probe_point_s
    return {"key": f"s{seed}", "seed": seed, "steps": run.train.steps, "mid_step": mid,
            "scores_mid": scores["mid"], "scores_final": scores["final"],
            "train_s": loop_s - probe_s - loop_eval_s, "eval_s": eval_s[0],
            "probe_s": probe_s, "eval_examples": len(examples),
            "probe_samples": config.findings.probe_samples}


def base_pattern_file(config, base_params, model_config, probes) -> tuple[Path, float]:
    """`out_dir/pilot/base.npz`, the target's pattern at the base model recorded once, and the
    seconds that recording took (kept in `base_probe.json`)."""
    path = Path(config.out_dir) / "pilot" / "base.npz"
    timing = path.with_name("base_probe.json")
    if not path.exists() or not timing.exists():
        started = time.perf_counter()
        record_patterns(base_params, probes, model_config, path,
                        loss_kind=config.base.heads.loss_kind, write=jax.process_index() == 0)
        timing.write_text(json.dumps({"probe_s": time.perf_counter() - started}))
    return path, json.loads(timing.read_text())["probe_s"]


def run_pilot(config, base_params, model_config, tokenizer) -> dict[str, dict]:
    """Run every pilot seed not already in pilot.jsonl; returns {key: row} of all."""
    path = pilot_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = load_results(path)
    check_same(path, done, {"steps": config.targets.steps,
                            "probe_samples": config.findings.probe_samples,
                            "eval_examples": config.targets.eval_samples})
    probes = _probes(config, tokenizer)
    base, probe_point_s = base_pattern_file(config, base_params, model_config, probes)
    for seed in config.power.pilot_seeds:
        if f"s{seed}" in done:
            continue
        log.info("pilot: seed %d", seed)
        done[f"s{seed}"] = pilot_seed(config, base_params, model_config, tokenizer, seed,
                                      probes, base, probe_point_s)
        append_row(path, done[f"s{seed}"])
    return done


def load_changes(config, seeds) -> dict[str, np.ndarray]:
    """{"mid", "final"}: the pilot's per-sample pattern changes `[seeds, samples, layers,
    heads]`."""
    arrays = [np.load(changes_path(config, s)) for s in seeds]
    return {k: np.stack([a[k] for a in arrays]) for k in ("mid", "final")}

