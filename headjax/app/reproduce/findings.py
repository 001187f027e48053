"""The paper's three findings measured from the findings stage's arrays
(`headjax.app.reproduce.findings_stage`: {task: arrays} of one seed's runs). t's own change is
dAP_t = AP_t(final of run t) - AP_t(step 0).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from headjax.app.reproduce.config import findings_tasks
from headjax.data import probe_batches
from headjax.heads import (
    ablation_effects,
    activated_heads,
    activation_pattern,
    fit_combination,
    held_out_fit,
    label_permutation_null,
    movement_toward,
    null_tested_fit,
    p_value,
    random_head_sets,
    random_relative_perturbation,
    relative_pattern_change,
    spearman,
    top_k_share,
    trajectory,
)
from headjax.heads.report import analyze
from headjax.train.patterns import per_sample_key


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
    """Task-specific heads: `task_specificity` and the ablation check."""
    return {**task_specificity(config, findings),
            "ablation": _ablation(config, findings, base_params, model_config, tokenizer)}


def task_specificity(config, findings: dict) -> dict:
    """Finding 1 without the ablation: the per-task and per-pair measures of
    `headjax.heads.report.analyze` on each task's own run (Gini/CV before and after, top-k share
    of dAP, Jaccard of top-k sets against random sets, Spearman), plus a bootstrap interval of the
    top-k share, the shuffled-task-label null of the Jaccard, and under "summary" the mean over
    tasks of the top-k share (with its bootstrap interval and the uniform share) and the mean
    over pairs of the Jaccard (with its shuffled-label null: the mean over pairs of each draw,
    its mean and 5% point)."""
    k, draws = config.findings.k, config.findings.null_draws
    tasks = findings_tasks(config)
    own = {t: findings[t][t] for t in tasks}
    shared = analyze(findings[tasks[0]]["steps"].tolist(), own, k=k, num_null=draws)
    per_task, pairs = shared["tasks"], shared["overlap"]
    resampled = bootstrap_changes(findings, tasks, draws, seed=0)
    shares = jax.vmap(functools.partial(top_k_share, k=k))
    drawn_shares = []
    for i, t in enumerate(tasks):
        drawn_shares.append(np.asarray(shares(resampled[:, i])))
        per_task[t]["top_k_share_ci"] = interval(drawn_shares[-1])
        per_task[t]["uniform_top_k_share"] = k / own_change(findings, t).size
    key = jax.random.key(0)
    null_jaccards = []
    for index, (pair, overlap) in enumerate(pairs.items()):
        a, b = pair.split(" vs ")
        shuffled = label_permutation_null(_per_sample_change(findings, a),
                                          _per_sample_change(findings, b),
                                          jax.random.fold_in(key, index), k=k,
                                          num_permutations=draws)
        null_jaccards.append(np.asarray(shuffled.jaccard))
        overlap["jaccard_shuffled_mean"] = float(np.mean(shuffled.jaccard))
        overlap["p_jaccard_below_shuffled"] = p_value(
            overlap["jaccard_top_k"], np.asarray(shuffled.jaccard), alternative="less")
    null_mean = np.mean(null_jaccards, axis=0)  # [draws]: the mean over pairs of each draw
    summary = {
        "top_k_share_mean": float(np.mean([r["top_k_share_of_change"]
                                           for r in per_task.values()])),
        "top_k_share_mean_ci": interval(np.mean(drawn_shares, axis=0)),
        "uniform_top_k_share": float(np.mean([r["uniform_top_k_share"]
                                              for r in per_task.values()])),
        "jaccard_mean": float(np.mean([r["jaccard_top_k"] for r in pairs.values()])),
        "jaccard_shuffled_mean": float(null_mean.mean()),
        "jaccard_shuffled_p05": float(np.percentile(null_mean, 5))}
    return {"tasks": per_task, "pairs": pairs, "summary": summary}


def ablation_samples(config) -> int:
    """Probe samples per task the ablation check scores (drawn like the probes, data seed
    `base.data.seed`): `findings.ablation_samples`, at most `findings.probe_samples` (0: all)."""
    f = config.findings
    return min(f.ablation_samples or f.probe_samples, f.probe_samples)


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
        batches = probe_batches(t, tokenizer, num_samples=ablation_samples(config),
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
            "shuffled_r2_p95": float(np.percentile(test.null_r2, 95)),
            "p_above_shuffled": test.p_value}


def combination_fit(config, findings: dict, target: str) -> dict:
    """Finding 2's core for `target` (`findings.target` or a second target): the fit of its dAP
    on the basic tasks' dAPs (OLS, NNLS, head-shuffled null: "basic") and a held-out split-half
    fit ("held_out"), from one seed's runs (`findings` holds the basic tasks' and `target`'s)."""
    f = config.findings
    key = jax.random.key(2)
    basic = _fits(own_change(findings, target), [own_change(findings, t) for t in f.basic],
                  f.basic, key, f.null_draws)
    held = held_out_fit(_per_sample_change(findings, target),
                        [_per_sample_change(findings, t) for t in f.basic], key)
    return {"basic": basic,
            "held_out": {"r2_fit_half": held.fit.r2, "r2_held_out_half": held.r2_held_out}}


def finding2(config, findings: dict) -> dict:
    """Complex = combination of basic: `combination_fit` of the target, with a bootstrap
    interval of its R^2 over probes, the fit on the unrelated tasks' dAPs, and the reverse
    direction (does SFT on a basic task move the target's pattern toward the target's own
    post-SFT pattern?)."""
    f = config.findings
    out = combination_fit(config, findings, f.target)
    if f.unrelated:
        out["unrelated"] = _fits(own_change(findings, f.target),
                                 [own_change(findings, t) for t in f.unrelated], f.unrelated,
                                 jax.random.key(2), f.null_draws)
    resampled = bootstrap_changes(findings, (f.target, *f.basic), f.null_draws, seed=2)
    out["basic"]["r2_ols_ci"] = interval([fit_combination(r[0], r[1:]).r2 for r in resampled])
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


def perturbation_null(config, findings: dict, base_params, model_config, tokenizer) -> dict:
    """Finding 3's null: the pattern/parameter ratio of a change as large as SFT's that follows
    no gradient. Per task t and draw d: the base model moved by t's relative parameter change
    (seed 0's run) in a random direction (`random_relative_perturbation`, key 3 folded with t's
    index and d), its pattern and the base model's on t's first `findings.perturbation_samples`
    probes (the same probes, `findings.normalization` applied), and their relative change over
    the relative parameter change. For small changes the ratio does not depend on the change's
    size, so it is the null of every seed. Returns {"tasks": {t: [ratio per draw]},
    "mean_per_draw": [mean over tasks of each draw], "draws", "samples"}."""
    f = config.findings
    samples = min(f.perturbation_samples, f.probe_samples)
    key, out = jax.random.key(3), {}
    for index, t in enumerate(findings_tasks(config)):
        batches = probe_batches(t, tokenizer, num_samples=samples,
                                batch_size=config.base.heads.batch_size,
                                max_len=config.base.data.max_len, seed=config.base.data.seed)

        def pattern(params, batches=batches):
            return activation_pattern(params, model_config, batches, progress=False,
                                      normalization=f.normalization).mean

        before, relative = pattern(base_params), float(findings[t]["param_change"])
        out[t] = []
        for draw in range(f.perturbation_draws):
            moved = random_relative_perturbation(
                base_params, relative, jax.random.fold_in(jax.random.fold_in(key, index), draw))
            out[t].append(relative_pattern_change(before, pattern(moved)) / relative)
    return {"tasks": out, "mean_per_draw": np.mean(list(out.values()), axis=0).tolist(),
            "draws": f.perturbation_draws, "samples": samples}
