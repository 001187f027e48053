"""Stage 1: SFT on each task alone with every task probed, and the paper's three findings.

For each task t of (target, *basic, *unrelated): `findings.steps` SFT steps on
`findings.train_samples` examples of t, the activation patterns of t and of the target recorded
on their fixed probe sets at steps 0, `probe_every`, ..., final (step 0, the base model, is scored
once for all tasks: `out_dir/findings/base_patterns.npz`). Saved per task t
(`out_dir/findings/<t>.npz`):

    steps                   [steps]
    <u>                     [steps, layers, heads]    AP of probe task u (t, target) along t's run
    per_sample/<u>@base     [samples, layers, heads]  u's per-sample scores at step 0
    per_sample/<u>@final    [samples, layers, heads]  u's per-sample scores at the final step
    head_change             [layers, heads]   relative Frobenius change of each head's q/k/v/o
    param_change            scalar            ||d theta|| / ||theta||
    concentration           scalar            fraction of entries holding 90% of squared change

(keys and files of `headjax.train.patterns`). t's own change is
dAP_t = AP_t(final of run t) - AP_t(step 0).
"""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path

import jax
import ml_collections
import numpy as np

from headjax.app.experiment import probe_hook, train_batches
from headjax.app.guide import target_examples
from headjax.app.reproduce.config import findings_tasks
from headjax.data import probe_batches
from headjax.heads import (
    ablation_effects,
    activated_heads,
    change_concentration,
    fit_combination,
    head_param_change,
    held_out_fit,
    label_permutation_null,
    movement_toward,
    null_tested_fit,
    p_value,
    random_head_sets,
    relative_param_change,
    relative_pattern_change,
    spearman,
    top_k_share,
    trajectory,
)
from headjax.heads.report import analyze
from headjax.lora import model_params
from headjax.train.loop import Hooks
from headjax.train.patterns import (
    load_arrays,
    load_run_patterns,
    pattern_path,
    per_sample_key,
    read_step,
    record_patterns,
    save_npz_atomically,
    task_of,
)
from headjax.train.trainer import train

log = logging.getLogger(__name__)


def findings_run_config(config: ml_collections.ConfigDict, task: str) -> ml_collections.ConfigDict:
    """The run config of task `task`'s SFT in the findings stage."""
    c = config.base.copy_and_resolve_references()  # locked like `base`
    f = config.findings
    c.run_dir = str(Path(config.out_dir) / "findings" / task)
    c.data.tasks = (task,)
    c.data.train_samples = f.train_samples
    c.train.steps = f.steps
    c.train.warmup_steps = min(c.train.warmup_steps, f.steps)
    c.heads.tasks = tuple(dict.fromkeys((task, f.target)))
    c.heads.samples = f.probe_samples
    c.heads.every = f.probe_every
    c.checkpoint.update(every=0, keep=1, export_final=False)
    return c


def findings_path(config: ml_collections.ConfigDict, task: str) -> Path:
    return Path(config.out_dir) / "findings" / f"{task}.npz"


def base_patterns(config: ml_collections.ConfigDict, base_params, model_config,
                  tokenizer) -> Path:
    """`out_dir/findings/base_patterns.npz`: every findings task's AP (and per-sample scores) at
    the base model, computed once."""
    path = Path(config.out_dir) / "findings" / "base_patterns.npz"
    if not path.exists():
        every = findings_run_config(config, config.findings.target)
        every.heads.tasks = findings_tasks(config)
        record_patterns(base_params, probe_hook(every, tokenizer), model_config, path,
                        loss_kind=every.heads.loss_kind, write=jax.process_index() == 0)
    return path


def seed_step_zero(run: ml_collections.ConfigDict, base: Path) -> None:
    """Write the run's step-0 patterns (its probe tasks) from the base patterns."""
    step_zero = pattern_path(run.run_dir, 0)
    if step_zero.exists():
        return
    arrays = {k: v for k, v in load_arrays(base).items() if task_of(k) in run.heads.tasks}
    save_npz_atomically(step_zero, arrays)


def run_findings(config: ml_collections.ConfigDict, base_params, model_config, tokenizer) -> None:
    """Train and probe every findings task not already saved (resumable per task and, inside a
    task's run, from its checkpoints). `base_params`: host (numpy) arrays."""
    base = base_patterns(config, base_params, model_config, tokenizer)
    for task in findings_tasks(config):
        path = findings_path(config, task)
        if path.exists():
            continue
        run = findings_run_config(config, task)
        seed_step_zero(run, base)
        log.info("findings: SFT on %s", task)
        state = train(run, model_config=model_config, params=base_params,
                      make_batches=train_batches(run, tokenizer, target_examples(run)),
                      hooks=Hooks(probes=probe_hook(run, tokenizer)))
        after = jax.device_get(model_params(state.params))
        steps, patterns = load_run_patterns(run.run_dir)
        arrays = {"steps": np.asarray(steps), **patterns}
        for moment, step in (("base", steps[0]), ("final", steps[-1])):
            per_sample = read_step(pattern_path(run.run_dir, step))[1]
            arrays.update({per_sample_key(u, moment): per_sample[u] for u in patterns})
        arrays["head_change"] = np.asarray(head_param_change(base_params, after).combined)
        arrays["param_change"] = np.asarray(relative_param_change(base_params, after))
        arrays["concentration"] = np.asarray(change_concentration(base_params, after))
        save_npz_atomically(path, arrays)
        shutil.rmtree(Path(run.run_dir) / "checkpoints", ignore_errors=True)


def load_findings(config: ml_collections.ConfigDict) -> dict[str, dict[str, np.ndarray]]:
    """{task: its saved arrays} for every findings task."""
    return {task: load_arrays(findings_path(config, task)) for task in findings_tasks(config)}


def own_change(findings: dict, task: str) -> np.ndarray:
    """dAP of `task` under its own SFT, `[layers, heads]`."""
    return findings[task][task][-1] - findings[task][task][0]


def _per_sample_change(findings: dict, task: str) -> np.ndarray:
    arrays = findings[task]
    return arrays[per_sample_key(task, "final")] - arrays[per_sample_key(task, "base")]


def bootstrap_changes(findings: dict, tasks, draws: int, seed: int) -> np.ndarray:
    """`[draws, tasks, layers, heads]` dAPs of `tasks`, each the mean per-sample change over a
    resample (with replacement) of that task's probe samples: the sampling spread of dAP."""
    rng = np.random.default_rng(seed)
    out = []
    for t in tasks:
        per_sample = _per_sample_change(findings, t)
        n = len(per_sample)
        out.append(per_sample[rng.integers(0, n, (draws, n))].mean(axis=1))
    return np.stack(out, axis=1)


def interval(values) -> list[float]:
    """Central 95% percentile interval [low, high] of `values`."""
    return np.percentile(np.asarray(values), [2.5, 97.5]).tolist()


def finding1(config, findings: dict, base_params, model_config, tokenizer) -> dict:
    """Task-specific heads: the per-task and per-pair measures of `headjax.heads.report.analyze`
    on each task's own run (Gini/CV before and after, top-k share of dAP, Jaccard of top-k sets
    against random sets, Spearman), plus a bootstrap interval of the top-k share, the
    shuffled-task-label null of the Jaccard, and the ablation check."""
    k, draws = config.findings.k, config.findings.null_draws
    tasks = findings_tasks(config)
    own = {t: findings[t][t] for t in tasks}
    shared = analyze(findings[tasks[0]]["steps"].tolist(), own, k=k, num_null=draws)
    per_task, pairs = shared["tasks"], shared["overlap"]
    resampled = bootstrap_changes(findings, tasks, draws, seed=0)
    shares = jax.vmap(functools.partial(top_k_share, k=k))
    for i, t in enumerate(tasks):
        per_task[t]["top_k_share_ci"] = interval(shares(resampled[:, i]))
        per_task[t]["uniform_top_k_share"] = k / own_change(findings, t).size
    key = jax.random.key(0)
    for index, (pair, overlap) in enumerate(pairs.items()):
        a, b = pair.split(" vs ")
        shuffled = label_permutation_null(_per_sample_change(findings, a),
                                          _per_sample_change(findings, b),
                                          jax.random.fold_in(key, index), k=k,
                                          num_permutations=draws)
        overlap["jaccard_shuffled_mean"] = float(np.mean(shuffled.jaccard))
        overlap["p_jaccard_below_shuffled"] = p_value(
            overlap["jaccard_top_k"], np.asarray(shuffled.jaccard), alternative="less")
    return {"tasks": per_task, "pairs": pairs,
            "ablation": _ablation(config, findings, base_params, model_config, tokenizer)}


def _ablation(config, findings, base_params, model_config, tokenizer) -> dict:
    """Per task: mean loss increase (nats) on its probes at the base model when ablating its own
    top-k heads, each other task's top-k (mean over tasks) and k random heads (mean of 5)."""
    k, tasks = config.findings.k, findings_tasks(config)
    shape = (model_config.num_layers, model_config.num_heads)
    tops = {t: np.asarray(activated_heads(own_change(findings, t), k=k)) for t in tasks}
    randoms = np.asarray(random_head_sets(jax.random.key(1), shape, k, 5))
    out = {}
    for t in tasks:
        sets = {"own": tops[t], **{f"other:{u}": tops[u] for u in tasks if u != t},
                **{f"random:{i}": r for i, r in enumerate(randoms)}}
        batches = probe_batches(t, tokenizer, num_samples=config.findings.probe_samples,
                                batch_size=config.base.heads.batch_size,
                                max_len=config.base.data.max_len, seed=config.base.data.seed)
        effects = ablation_effects(base_params, model_config, batches, sets)
        out[t] = {"own": effects["own"],
                  "other": float(np.mean([v for n, v in effects.items() if n[:6] == "other:"])),
                  "random": float(np.mean([v for n, v in effects.items() if n[:7] == "random:"]))}
    return out


def _fits(target: np.ndarray, basis: list[np.ndarray], names, key, draws) -> dict:
    test = null_tested_fit(target, np.stack(basis), key, num_permutations=draws)
    n, p = target.size, len(basis)
    return {"basis": list(names), "r2_ols": test.ols.r2, "r2_nnls": test.nnls.r2,
            "adjusted_r2_ols": 1 - (1 - test.ols.r2) * (n - 1) / (n - p - 1),
            "weights_ols": dict(zip(names, test.ols.weights.tolist(), strict=True)),
            "weights_nnls": dict(zip(names, test.nnls.weights.tolist(), strict=True)),
            "shuffled_r2_mean": float(test.null_r2.mean()),
            "p_above_shuffled": test.p_value}


def finding2(config, findings: dict) -> dict:
    """Complex = combination of basic: fits of the target's dAP on the basic tasks' dAPs (OLS,
    NNLS, head-shuffled null), on the unrelated tasks' dAPs, a held-out split-half fit, and the
    reverse direction (does SFT on a basic task move the target's pattern toward the target's
    own post-SFT pattern?)."""
    f = config.findings
    key = jax.random.key(2)
    target = own_change(findings, f.target)
    out = {"basic": _fits(target, [own_change(findings, t) for t in f.basic], f.basic,
                          key, f.null_draws)}
    if f.unrelated:
        out["unrelated"] = _fits(target, [own_change(findings, t) for t in f.unrelated],
                                 f.unrelated, key, f.null_draws)
    resampled = bootstrap_changes(findings, (f.target, *f.basic), f.null_draws, seed=2)
    out["basic"]["r2_ols_ci"] = interval([fit_combination(r[0], r[1:]).r2 for r in resampled])
    held = held_out_fit(_per_sample_change(findings, f.target),
                        [_per_sample_change(findings, t) for t in f.basic], key)
    out["held_out"] = {"r2_fit_half": held.fit.r2, "r2_held_out_half": held.r2_held_out}
    own_after = findings[f.target][f.target][-1]
    out["reverse"] = {}
    for t in (*f.basic, *f.unrelated):
        move = movement_toward(findings[t][f.target][0], findings[t][f.target][-1], own_after)
        out["reverse"][t] = move._asdict()
    return out


def finding3(config, findings: dict) -> dict:
    """Few parameters, large pattern shift: relative parameter and pattern change, their ratio,
    the concentration of the parameter change, the trajectory of the pattern over steps, and
    whether the heads whose parameters moved most are those whose pattern moved most."""
    out = {}
    for t in findings_tasks(config):
        arrays = findings[t]
        own = arrays[t]
        pattern_rel = relative_pattern_change(own[0], own[-1])
        traj = trajectory(own.astype(np.float32))
        out[t] = {"param_change": float(arrays["param_change"]),
                  "pattern_change": pattern_rel,
                  "ratio": pattern_rel / float(arrays["param_change"]),
                  "concentration_90": float(arrays["concentration"]),
                  "steps": arrays["steps"].tolist(),
                  "corr_to_base": np.asarray(traj.corr_to_base).tolist(),
                  "corr_to_final": np.asarray(traj.corr_to_final).tolist(),
                  "spearman_head_param_vs_pattern": float(spearman(
                      arrays["head_change"], np.abs(own[-1] - own[0])))}
    return out

