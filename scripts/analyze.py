"""Head activation pattern report for a training run or a list of checkpoints.

  python scripts/analyze.py --run_dir runs/x [--target gsm_symbolic --basis a,b] [--out dir]
  python scripts/analyze.py --checkpoints base_dir,ckpt_dir --tasks chain_sum,products --out out/

Writes report.json, PNG figures and report.md (see `headjax.heads.report`). A missing or empty
--run_dir, or a --target/--basis task the patterns lack, is reported in one line (exit status 2).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import numpy as np
from absl import app, flags

from headjax.app import cli
from headjax.data import probe_batches
from headjax.heads import activation_pattern, head_param_change, pattern_to_param_ratio, plots
from headjax.heads.report import analyze, figures, markdown
from headjax.train.patterns import load_run_patterns

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Training run directory holding patterns/step_XXXXXX.npz.")
flags.DEFINE_list("checkpoints", [], "Checkpoints (first = base) to score, instead of --run_dir.")
flags.DEFINE_list("tasks", [], "Probe tasks for --checkpoints.")
flags.DEFINE_integer("num_samples", 32, "Probe samples per task (--checkpoints).")
flags.DEFINE_integer("batch_size", 8, "Probe batch size (--checkpoints).")
flags.DEFINE_integer("max_len", 256, "Longest probe sequence in tokens (--checkpoints).")
flags.DEFINE_string("loss_kind", "sample_mean", "sample_mean | batch_mean (--checkpoints).")
flags.DEFINE_integer("k", 10, "Heads in a task's top-k set.")
flags.DEFINE_string("target", None, "Complex task to fit as a combination of --basis tasks.")
flags.DEFINE_list("basis", [], "Basic tasks for the combination fit.")
flags.DEFINE_string("out", None, "Output directory (default: run_dir/report).")


def score_checkpoints(paths, tasks):
    """(checkpoint indices, {task: [checkpoints, layers, heads]}, parameter-change measures)."""
    from headjax import load_pretrained

    patterns = {t: [] for t in tasks}
    for index, path in enumerate(paths):
        params, config, tokenizer = load_pretrained(path)
        for task in tasks:
            batches = probe_batches(task, tokenizer, num_samples=FLAGS.num_samples,
                                    batch_size=FLAGS.batch_size, max_len=FLAGS.max_len)
            patterns[task].append(activation_pattern(params, config, batches,
                                                     loss_kind=FLAGS.loss_kind).mean)
        if index == 0:
            base = params
    stacked = {t: np.stack(p) for t, p in patterns.items()}
    change = head_param_change(base, params)
    extra = {"param_change": {
        "head_combined": np.asarray(change.combined).tolist(),
        "pattern_to_param_ratio": {t: pattern_to_param_ratio(p[0], p[-1], base, params)
                                   for t, p in stacked.items()}}}
    return list(range(len(paths))), stacked, extra


def write_report(report: dict, patterns: Mapping[str, np.ndarray], out_dir: str | Path) -> Path:
    """Write report.json, the figures (PNG) and report.md showing them into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    drawn = figures(report, patterns)
    for name, fig in drawn.items():
        plots.save(fig, out / name)
    (out / "report.md").write_text(markdown(report, list(drawn)))
    return out


def user_error(flag: str, err: Exception | str) -> NoReturn:
    """Exit with status 2 and one line naming `flag` and the problem."""
    print(f"{flag}: {err}", file=sys.stderr)
    raise SystemExit(2)


def main(argv):
    del argv
    if bool(FLAGS.run_dir) == bool(FLAGS.checkpoints):
        raise app.UsageError("give exactly one of --run_dir or --checkpoints")
    if FLAGS.checkpoints and not FLAGS.tasks:
        raise app.UsageError("--checkpoints needs --tasks")
    if FLAGS.run_dir:
        try:
            steps, patterns = load_run_patterns(FLAGS.run_dir)
        except (FileNotFoundError, ValueError) as err:
            user_error("--run_dir", err)
        extra = {}
    else:
        steps, patterns, extra = score_checkpoints(FLAGS.checkpoints, FLAGS.tasks)
    if FLAGS.target is not None:
        missing = [t for t in (FLAGS.target, *FLAGS.basis) if t not in patterns]
        if missing or not FLAGS.basis:
            user_error("--target/--basis", f"unknown tasks {missing} or empty basis "
                                           f"(have {list(patterns)})")
    report = analyze(steps, patterns, k=FLAGS.k, target=FLAGS.target, basis=FLAGS.basis)
    report.update(extra)
    out = FLAGS.out or (Path(FLAGS.run_dir) / "report" if FLAGS.run_dir else None)
    if out is None:
        raise app.UsageError("--out is required with --checkpoints")
    print(f"report: {write_report(report, patterns, out) / 'report.md'}")


if __name__ == "__main__":
    cli.run(main)
