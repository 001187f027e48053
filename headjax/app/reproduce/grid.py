"""Stage 2: the improvements against their baselines, budget x method x seed, resumable.

Every run fine-tunes the base model on `budget` training examples of the target task (data seed
= the run's seed) for ceil(epochs * budget / batch) steps, with the `guide` options its method
names (`headjax.app.guide`):

    plain           no guide: plain SFT on the few target samples
    heads_pattern   only the top `head_fraction` heads by the target's pattern are trained
    heads_random    as many random heads
    warm_pattern    warm start on the basic tasks mixed by the NNLS fit of the target's dAP on
                    theirs (the findings stage's dAPs), then the target samples
    warm_random     warm start on a random (Dirichlet) mixture, then the target samples
    joint_pattern   the pattern mixture and the target samples together, warm + target steps
    joint_random    a random mixture likewise
    select_pattern  data selection by pattern (`headjax.app.select`): the top `select_fraction`
                    of a pool of `select_pool_samples` examples per task of `select_pool`
                    (default: the basic and unrelated tasks) by the similarity of each one's
                    pattern to the target's, with the target samples, warm + target steps
    select_random   as many pool examples at random, likewise
    select_all      the whole pool, likewise
    lora_all        plain LoRA: rank-`lora_rank` adapters on the `lora_targets` projections, at
                    `lora_lr_scale` times the learning rate (as every lora_* run)
    lora_pattern    head-LoRA (`headjax.lora`) on the top `head_fraction` heads by the target's
                    pattern only, its rank set so its adapters hold about as many parameters as
                    lora_all's (`guide.lora_budget_rank`)
    lora_random     head-LoRA on as many random heads, likewise

Each finished run appends one JSON line to `out_dir/results.jsonl` (accuracy and held-out loss on
`eval_samples` test examples of the target, the pattern's move toward the full-SFT pattern,
trainable parameters, wall time); a run already there is skipped, a killed run restarts from
its own checkpoints. A pattern mixture whose NNLS weights are all zero is recorded as such (an
"error" row). Warm starts are shared across budgets (`out_dir/warm/<mixture>_s<seed>`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from headjax.app.experiment import train_phase_fn
from headjax.app.guide import NoPatternFitError, run_guided
from headjax.app.select import run_selected
from headjax.data import example_batches, get_task, probe_batches
from headjax.eval.accuracy import evaluate_accuracy
from headjax.heads import activation_pattern, movement_toward, sample_weights
from headjax.lora import model_params
from headjax.model.loss import per_sample_loss
from headjax.parallel.hardware import running_on

log = logging.getLogger(__name__)

BASE_KEY = "base"


def run_key(budget: int, method: str, seed: int) -> str:
    return f"n{budget}_{method}_s{seed}"


def target_steps(config: ml_collections.ConfigDict, budget: int) -> int:
    """Steps of the target phase: enough for `grid.epochs` passes over `budget` examples."""
    return math.ceil(config.grid.epochs * budget / config.base.train.batch_size)


def method_lr(config: ml_collections.ConfigDict, method: str) -> float:
    """The learning rate a grid method trains at: `grid.lora_lr_scale` times the base one for
    LoRA, the base one otherwise."""
    scale = config.grid.lora_lr_scale if method.startswith("lora_") else 1.0
    return config.base.train.lr * scale


def method_config(config: ml_collections.ConfigDict, budget: int, method: str, seed: int,
                  dap_path: str | Path) -> ml_collections.ConfigDict:
    """The run config of one grid cell (see the module docstring)."""
    c = config.base.copy_and_resolve_references()  # locked like `base`
    g = config.grid
    c.run_dir = str(Path(config.out_dir) / "grid" / run_key(budget, method, seed))
    c.data.tasks = (config.findings.target,)
    c.data.train_samples = budget
    c.data.seed = seed
    c.train.seed = seed
    c.train.steps = target_steps(config, budget)
    c.checkpoint.update(every=0, keep=1, export_final=False)
    c.guide.seed = seed
    c.train.lr = method_lr(config, method)
    kind, _, choice = method.partition("_")
    if kind == "lora":
        c.lora.update(enabled=True, targets=tuple(g.lora_targets), rank=g.lora_rank,
                      alpha=2.0 * g.lora_rank)
        if choice != "all":
            c.guide.update(heads=choice, head_fraction=g.head_fraction,
                           lora_budget_rank=g.lora_rank)
    elif kind == "heads":
        c.guide.update(heads=choice, head_fraction=g.head_fraction)
    elif kind in ("warm", "joint"):
        c.guide.update(mixture=choice, basis=tuple(config.findings.basic),
                       preliminary_samples=g.preliminary_samples,
                       patterns=str(dap_path) if choice == "pattern" else "")
        if kind == "warm":
            c.guide.update(schedule="warm_start", warm_steps=g.warm_steps,
                           warm_dir=str(Path(config.out_dir) / "warm" / f"{choice}_s{seed}"))
        else:
            c.guide.schedule = "joint"
            c.train.steps += g.warm_steps
    elif kind == "select":
        c.select.update(method=choice, pool=tuple(g.select_pool) or tuple(
            (*config.findings.basic, *config.findings.unrelated)),
            pool_samples=g.select_pool_samples, fraction=g.select_fraction,
            similarity=g.select_similarity, with_target=True, seed=seed)
        c.train.steps += g.warm_steps
    elif method != "plain":
        raise ValueError(f"config.grid.methods: unknown method {method!r}")
    c.train.warmup_steps = min(c.train.warmup_steps, c.train.steps)
    return c


@functools.partial(jax.jit, static_argnames="config")
def _losses(params, batch, config):
    return per_sample_loss(params, batch, config), sample_weights(batch) > 0


def evaluate_target(config: ml_collections.ConfigDict, params, model_config, tokenizer,
                    base_pattern: np.ndarray, goal_pattern: np.ndarray) -> dict:
    """Accuracy (greedy, task scorer) and mean held-out answer loss (nats/token, per sample) on
    the same `grid.eval_samples` test examples for every run, and the target's pattern on the
    findings probe set with its move from the base toward the full-SFT pattern."""
    b, target = config.base, config.findings.target
    examples = get_task(target).examples("test", config.grid.eval_samples, 0)
    accuracy = evaluate_accuracy(params, model_config, tokenizer, target, examples,
                                 max_new_tokens=b.eval.max_new_tokens,
                                 batch_size=b.eval.batch_size)
    losses = []
    for batch in example_batches(examples, tokenizer, batch_size=b.eval.batch_size,
                                 max_len=b.data.max_len, name="held-out loss"):
        loss, real = _losses(params, {k: jnp.asarray(v) for k, v in batch.items()},
                             model_config)
        losses += np.asarray(loss)[np.asarray(real)].tolist()
    probes = probe_batches(target, tokenizer, num_samples=config.findings.probe_samples,
                           batch_size=b.heads.batch_size, max_len=b.data.max_len,
                           seed=b.data.seed)
    pattern = activation_pattern(params, model_config, probes, progress=False).mean
    move = movement_toward(base_pattern, pattern, goal_pattern)
    return {"accuracy": accuracy.accuracy, "n_eval": accuracy.n,
            "heldout_loss": float(np.mean(losses)), "pattern": pattern.tolist(),
            "pattern_move": move._asdict()}


def load_results(path: Path) -> dict[str, dict]:
    """{run key: result} from results.jsonl (a torn last line, from a kill, is ignored)."""
    results = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: skipping a torn line", path)
                continue
            results[row["key"]] = row
    return results


def check_same(path: Path, rows: dict[str, dict], expected: dict) -> None:
    """Raise naming `path` when a finished row of it ran with settings other than `expected`
    ({row field: value}): resuming would mix designs."""
    stale = sorted(k for k, r in rows.items() if any(r.get(f) != v for f, v in expected.items()))
    if stale:
        raise ValueError(f"{path}: {stale} ran with other settings than {expected}; move the "
                         "file (and its folder) away to measure again")


def append_row(path: Path, row: dict) -> None:
    """Add `row` to a results .jsonl (the first process writes; every process keeps it in
    memory)."""
    if jax.process_index() != 0:
        return
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def run_grid(config: ml_collections.ConfigDict, base_params, model_config, tokenizer,
             base_pattern: np.ndarray, goal_pattern: np.ndarray, dap_path: Path,
             after_run: Callable[[], None] = lambda: None) -> dict:
    """Evaluate the base model once and run every missing grid cell, seed by seed (so a cut-short
    grid holds whole seeds), calling `after_run` after each row appended; returns all
    results."""
    path = Path(config.out_dir) / "results.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = load_results(path)
    stale = sorted(k for k, r in done.items()
                   if "lr" in r and not math.isclose(r["lr"], method_lr(config, r["method"])))
    if stale:  # rows of before this field have none, and ran at the base rate
        raise ValueError(f"{path}: {stale} ran at another learning rate than their method's "
                         "now (base.train.lr, grid.lora_lr_scale); move the file (and its "
                         "folder) away to measure again")
    evaluate = functools.partial(evaluate_target, config, model_config=model_config,
                                 tokenizer=tokenizer, base_pattern=base_pattern,
                                 goal_pattern=goal_pattern)

    def keep(row: dict) -> None:
        done[row["key"]] = row
        append_row(path, row)
        after_run()

    if BASE_KEY not in done:
        keep({"key": BASE_KEY, "budget": 0, "method": "base", "seed": -1,
              **evaluate(params=base_params), "trainable_parameters": 0, "steps": 0})
    train_phase = train_phase_fn(model_config, tokenizer, lambda c: None)
    for seed in config.grid.seeds:
        for budget in config.grid.budgets:
            for method in config.grid.methods:
                key = run_key(budget, method, seed)
                if key in done:
                    continue
                run = method_config(config, budget, method, seed, dap_path)
                log.info("grid: %s (%d steps)", key, run.train.steps)
                started = time.perf_counter()
                try:
                    run_phases = run_guided if run.select.method == "none" else run_selected
                    state, record = run_phases(run, base_params, model_config, tokenizer,
                                               train_phase)
                except NoPatternFitError as err:  # a result, not a crash: no mixture exists
                    log.warning("grid: %s: %s", key, err)
                    keep({"key": key, "budget": budget, "method": method, "seed": seed,
                          "error": str(err)})
                    continue
                keep({"key": key, "budget": budget, "method": method, "seed": seed,
                      "steps": run.train.steps, "lr": run.train.lr,
                      **evaluate(params=model_params(state.params)),
                      "trainable_parameters": record["trainable_parameters"],
                      "total_parameters": record["total_parameters"],
                      "mixture": record.get("weights"), "counts": record.get("counts"),
                      "selected": record.get("selected_per_task"),
                      "wall_s": time.perf_counter() - started, "machine": running_on()})
                shutil.rmtree(Path(run.run_dir) / "checkpoints", ignore_errors=True)
    return done
