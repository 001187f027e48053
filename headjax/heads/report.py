"""The pattern report's content: the Findings' measures, its figures and its Markdown.

Input: per task, patterns at a sequence of steps `[steps, layers, heads]` (first = base, last =
final), e.g. a training run's step files (`headjax.train.patterns.load_run_patterns`) or patterns
of scored checkpoints. Pure: `analyze` returns a JSON-ready dict, `figures` matplotlib figures
and `markdown` the page text; `scripts/analyze.py` reads the inputs and writes the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import chex
import jax
import numpy as np
from matplotlib.figure import Figure

from headjax.heads import plots
from headjax.heads.combination import null_tested_fit
from headjax.heads.specificity import (
    activated_heads,
    coefficient_of_variation,
    gini,
    p_value,
    random_set_jaccard_null,
    task_overlap,
    top_k_share,
    trajectory,
)


def analyze(steps: Sequence[int], patterns: Mapping[str, np.ndarray], *, k: int = 10,
            target: str | None = None, basis: Sequence[str] = (), seed: int = 0,
            num_null: int = 200) -> dict:
    """All measures as a JSON-ready dict.

    Per task: trajectory (MSE / correlation to base and final), Gini and CV before/after,
    top-k share of |dAP|, the top-k activated heads. Per task pair: Jaccard of top-k |dAP| sets
    and Spearman of dAP, with a random-k-set null p-value for the Jaccard. With `target` and
    `basis`: OLS and NNLS fits of the target's dAP on the basis tasks' dAPs, and a head-shuffled
    null for the OLS R^2.
    """
    key = jax.random.key(seed)
    tasks = list(patterns)
    shape = next(iter(patterns.values())).shape[1:]
    chex.assert_rank(list(patterns.values()), 3)
    chex.assert_equal_shape(list(patterns.values()))
    chex.assert_axis_dimension(next(iter(patterns.values())), 0, len(steps))
    k = min(k, shape[0] * shape[1])
    change = {t: patterns[t][-1] - patterns[t][0] for t in tasks}
    report = {"steps": list(map(int, steps)), "k": k, "layers": shape[0], "heads": shape[1],
              "tasks": {}, "overlap": {}}
    for t in tasks:
        traj = trajectory(np.asarray(patterns[t], np.float32))
        top = np.argwhere(np.asarray(activated_heads(change[t], rule="top_k", k=k)))
        report["tasks"][t] = {
            "trajectory": {name: np.asarray(v).tolist() for name, v in traj._asdict().items()},
            "gini_before": float(gini(patterns[t][0])), "gini_after": float(gini(patterns[t][-1])),
            "cv_before": float(coefficient_of_variation(patterns[t][0])),
            "cv_after": float(coefficient_of_variation(patterns[t][-1])),
            "top_k_share_of_change": float(top_k_share(change[t], k)),
            "top_k_heads": top.tolist(),
        }
    null = random_set_jaccard_null(key, shape, k, num_draws=num_null)
    for i, a in enumerate(tasks):
        for b in tasks[i + 1:]:
            jac, rho = task_overlap(change[a], change[b], k=k)
            report["overlap"][f"{a} vs {b}"] = {
                "jaccard_top_k": float(jac), "spearman": float(rho),
                "jaccard_random_mean": float(np.mean(null)),
                "p_jaccard_above_random": p_value(float(jac), null, alternative="greater")}
    if target is not None:
        missing = [t for t in (target, *basis) if t not in patterns]
        if missing or not basis:
            raise ValueError(f"combination: unknown tasks {missing} or empty basis "
                             f"(have {tasks})")
        test = null_tested_fit(change[target], np.stack([change[b] for b in basis]), key,
                               num_permutations=num_null)
        report["combination"] = {
            "target": target, "basis": list(basis),
            **{m: {"weights": dict(zip(basis, f.weights.tolist(), strict=True)),
                   "intercept": f.intercept, "r2": f.r2}
               for m, f in (("ols", test.ols), ("nnls", test.nnls))},
            "shuffled_r2_mean": float(test.null_r2.mean()),
            "p_r2_above_shuffled": test.p_value}
    return report


def figures(report: dict, patterns: Mapping[str, np.ndarray]) -> dict[str, Figure]:
    """{file name: figure} of the report: final patterns, each task's before/after and
    trajectory, and the NNLS weights when the report has a combination."""
    steps = report["steps"]
    final = {t: p[-1] for t, p in patterns.items()}
    out = {"final_patterns.png": plots.pattern_heatmaps(final, shared_scale=False)}
    for t, p in patterns.items():
        out[f"change_{t}.png"] = plots.before_after(p[0], p[-1], title=t)
        curves = report["tasks"][t]["trajectory"]
        out[f"trajectory_{t}.png"] = plots.trajectory_curves(
            steps, {"corr to base": curves["corr_to_base"],
                    "corr to final": curves["corr_to_final"]}, ylabel="Pearson r", title=t)
    if "combination" in report:
        fit = report["combination"]["nnls"]
        out["combination_nnls.png"] = plots.bars(
            fit["weights"], ylabel="weight",
            title=f"NNLS fit of {report['combination']['target']}: R^2 = {fit['r2']:.3f}")
    return out


def markdown(report: dict, figure_names: Sequence[str]) -> str:
    """The report page: tables of the measures, then every figure by file name."""
    lines = [f"# Head activation pattern report (steps {report['steps'][0]}..{report['steps'][-1]},"
             f" top-k = {report['k']})", "",
             "| task | Gini before | Gini after | CV before | CV after | top-k share of change |",
             "|---|---|---|---|---|---|"]
    for t, r in report["tasks"].items():
        lines.append(f"| {t} | {r['gini_before']:.3f} | {r['gini_after']:.3f} | "
                     f"{r['cv_before']:.3f} | {r['cv_after']:.3f} | "
                     f"{r['top_k_share_of_change']:.3f} |")
    if report["overlap"]:
        lines += ["", "| tasks | Jaccard top-k | random mean | p | Spearman |",
                  "|---|---|---|---|---|"]
        for pair, r in report["overlap"].items():
            lines.append(f"| {pair} | {r['jaccard_top_k']:.3f} | {r['jaccard_random_mean']:.3f} | "
                         f"{r['p_jaccard_above_random']:.3f} | {r['spearman']:.3f} |")
    if "combination" in report:
        c = report["combination"]
        lines += ["", f"Combination of {c['target']} from {', '.join(c['basis'])}: "
                  f"OLS R^2 = {c['ols']['r2']:.3f}, NNLS R^2 = {c['nnls']['r2']:.3f}, "
                  f"head-shuffled mean R^2 = {c['shuffled_r2_mean']:.3f} "
                  f"(p = {c['p_r2_above_shuffled']:.3f})."]
    lines += [""] + [f"![{name}]({name})" for name in figure_names]
    return "\n".join(lines) + "\n"
