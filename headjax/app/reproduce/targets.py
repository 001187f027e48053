"""The "targets" stage: which candidate target task can the model learn, by measurement.

For each task of `targets.candidates`: accuracy of the base model on `targets.eval_samples` test
examples (seed 0), then a short SFT (`targets.steps` steps of the findings stage's trainer on
`findings.train_samples` training examples, data and train seed `targets.seed`) and accuracy on
the same examples. Each finished task appends one JSON line to `out_dir/targets.jsonl`:

    task, base_accuracy, sft_accuracy, gain, n_eval, steps, seed,
    base_scores, sft_scores   per-example scores, in the order of the test examples
    train_s, eval_s, wall_s   seconds (SFT alone, the two evaluations, the whole task)

A task already there is skipped. `pick_target` chooses the target: base and post-SFT accuracy
both inside `targets.accuracy_range`, and among those the largest gain (failing that, the
largest gain among tasks whose post-SFT accuracy is inside).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections

from headjax.app.experiment import train_batches
from headjax.app.guide import target_examples
from headjax.app.reproduce.config import seeded
from headjax.app.reproduce.grid import append_row, check_same, load_results
from headjax.data import get_task
from headjax.eval.accuracy import evaluate_accuracy
from headjax.lora import model_params
from headjax.train.trainer import train

log = logging.getLogger(__name__)


def targets_path(config: ml_collections.ConfigDict) -> Path:
    return Path(config.out_dir) / "targets.jsonl"


def short_sft_config(config: ml_collections.ConfigDict, task: str, seed: int,
                     run_dir: str | Path) -> ml_collections.ConfigDict:
    """The run config of the short SFT on `task`: the findings stage's run (`base` settings,
    `findings.train_samples`) for `targets.steps` steps, data order and train seed `seed`,
    without pattern probes."""
    c = config.base.copy_and_resolve_references()  # locked like `base`
    c.run_dir = str(run_dir)
    c.data.tasks = (task,)
    c.data.train_samples = config.findings.train_samples
    seeded(c, seed)
    c.train.steps = config.targets.steps
    c.train.warmup_steps = min(c.train.warmup_steps, c.train.steps)
    c.heads.every = 0
    c.checkpoint.update(every=0, keep=1, export_final=False)
    return c


def short_sft(run: ml_collections.ConfigDict, base_params, model_config, tokenizer, hooks=None):
    """Train `run` from `base_params`; the trained model's params (host arrays)."""
    state = train(run, model_config=model_config, params=base_params,
                  make_batches=train_batches(run, tokenizer, target_examples(run)), hooks=hooks)
    params = jax.device_get(model_params(state.params))
    shutil.rmtree(Path(run.run_dir) / "checkpoints", ignore_errors=True)
    return params


def eval_examples(config: ml_collections.ConfigDict, task: str):
    """The fixed `targets.eval_samples` test examples of `task` (seed 0)."""
    return get_task(task).examples("test", config.targets.eval_samples, 0)


def accuracy_scores(config, params, model_config, tokenizer, task: str, examples) -> list[float]:
    """Per-example scores (greedy, `base.eval` settings) of `params` on `examples`."""
    b = config.base.eval
    result = evaluate_accuracy(params, model_config, tokenizer, task, examples,
                               max_new_tokens=b.max_new_tokens, batch_size=b.batch_size)
    return list(result.scores)


def measure_target(config, base_params, model_config, tokenizer, task: str) -> dict:
    """One candidate's row (see the module docstring)."""
    t = config.targets
    started = time.perf_counter()
    examples = eval_examples(config, task)
    base_scores = accuracy_scores(config, base_params, model_config, tokenizer, task, examples)
    eval_s = time.perf_counter() - started
    run = short_sft_config(config, task, t.seed,
                           Path(config.out_dir) / "targets" / f"{task}_s{t.seed}")
    trained_at = time.perf_counter()
    params = short_sft(run, base_params, model_config, tokenizer)
    train_s = time.perf_counter() - trained_at
    evaluated_at = time.perf_counter()
    sft_scores = accuracy_scores(config, params, model_config, tokenizer, task, examples)
    eval_s += time.perf_counter() - evaluated_at
    base, sft = sum(base_scores) / len(base_scores), sum(sft_scores) / len(sft_scores)
    return {"key": task, "task": task, "base_accuracy": base, "sft_accuracy": sft,
            "gain": sft - base, "n_eval": len(examples), "steps": t.steps, "seed": t.seed,
            "base_scores": base_scores, "sft_scores": sft_scores, "train_s": train_s,
            "eval_s": eval_s, "wall_s": time.perf_counter() - started}


def run_targets(config, base_params, model_config, tokenizer, measure=measure_target
                ) -> dict[str, dict]:
    """Measure every candidate not already in targets.jsonl; returns {task: row} of all.
    `measure(config, base_params, model_config, tokenizer, task)` -> row."""
    path = targets_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = load_results(path)
    t = config.targets
    check_same(path, done, {"steps": t.steps, "seed": t.seed, "n_eval": t.eval_samples})
    for task in config.targets.candidates:
        if task in done:
            continue
        log.info("targets: %s", task)
        done[task] = measure(config, base_params, model_config, tokenizer, task)
        append_row(path, done[task])
    return done


RULES = ("base and post-SFT accuracy in range, largest gain",
         "no task has both in range: post-SFT accuracy in range, largest gain")


def pick_target(rows: Sequence[dict], accuracy_range: tuple[float, float]
                ) -> tuple[str | None, str | None]:
    """(task, rule): the task whose base and post-SFT accuracy both lie in `accuracy_range`
    (inclusive) with the largest gain (ties: the first listed); when none has both in range, the
    task whose post-SFT accuracy does, with the largest gain (`RULES[1]`); (None, None) when no
    post-SFT accuracy is in range."""
    low, high = accuracy_range

    def inside(value):
        return low <= value <= high

    for rule, keep in zip(RULES, (lambda r: inside(r["base_accuracy"]), lambda r: True),
                          strict=True):
        eligible = [r for r in rows if inside(r["sft_accuracy"]) and keep(r)]
        if eligible:
            return max(eligible, key=lambda r: r["gain"])["task"], rule
    return None, None


def targets_md(config: ml_collections.ConfigDict, rows: Sequence[dict]) -> list[str]:
    """The markdown table of the candidates and the chosen target, with the criterion."""
    t, b = config.targets, config.base
    low, high = t.accuracy_range
    chosen, rule = pick_target(rows, (low, high))
    lines = [
        "## Target choice", "",
        f"Each candidate: greedy accuracy ({b.eval.max_new_tokens} new tokens) on the same "
        f"{t.eval_samples} test examples before and after a short SFT ({t.steps} steps x batch "
        f"{b.train.batch_size} over {config.findings.train_samples} training examples, lr "
        f"{b.train.lr}, seed {t.seed}). Criterion: base and post-SFT accuracy both in "
        f"[{low:.2f}, {high:.2f}] (room to move in both directions), and among those the largest "
        "gain; if no task has both in range, the largest gain among those whose post-SFT "
        "accuracy is in range. Seconds are wall time as run (on a shared machine, other work "
        "may have run beside a task).", "",
        "| task | base accuracy | after SFT | gain | eligible | SFT s | eval s | wall s |",
        "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = (low <= r["base_accuracy"] <= high) and (low <= r["sft_accuracy"] <= high)
        name = f"**{r['task']}**" if r["task"] == chosen else r["task"]
        lines.append(f"| {name} | {r['base_accuracy']:.3f} | {r['sft_accuracy']:.3f} | "
                     f"{r['gain']:+.3f} | {'yes' if ok else 'no'} | {r['train_s']:.0f} | "
                     f"{r['eval_s']:.0f} | {r['wall_s']:.0f} |")
    lines += ["", f"Chosen target: **{chosen}** ({rule})." if chosen else
              "No candidate meets the criterion.", ""]
    return lines
