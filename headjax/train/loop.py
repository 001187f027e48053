"""The training loop: steps, metrics, periodic evaluation, head patterns and checkpoints.

Per step: next batch from a resumable iterator (anything with `__next__` and `state_dict()`),
the jitted step, metrics to JSONL/TensorBoard and the progress bar. Every `checkpoint.every`
steps the state and the iterator's `state_dict()` are saved; every `eval.every` steps accuracy per
task is measured; every `heads.every` steps (and at step 0 and the final step) the head activation
pattern of each probe task is written to `run_dir/patterns/step_{step:06d}.npz` (a step whose
file exists, e.g. after a resume, is not scored again: the state at a step determines it); at
the end `run_dir/summary.json` holds the wall time and the accuracies of the run (those measured
before a resume included, read back from metrics.jsonl). A LoRA run is measured on its merged
weights (`headjax.lora.model_params`). A
non-finite loss stops the run with `TrainingDivergedError` and saves nothing more, so the newest
checkpoint is the last good state.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
from tqdm.auto import tqdm

from headjax.lora import model_params
from headjax.model.config import ModelConfig
from headjax.parallel.hardware import running_on
from headjax.train.checkpoint import Checkpointer
from headjax.train.metrics import MetricsWriter
from headjax.train.patterns import pattern_path, record_patterns
from headjax.train.state import TrainState

log = logging.getLogger(__name__)
ACCURACY_PREFIX = "eval/accuracy/"


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite."""


@dataclasses.dataclass
class Hooks:
    """Optional measurements during training.

    evaluate: (params, step) -> {task: accuracy in [0, 1]}.
    probes: {task: fixed list of probe batches} for head activation patterns.
    """

    evaluate: Callable[[Any, int], Mapping[str, float]] | None = None
    probes: Mapping[str, Sequence[dict]] | None = None


def _due(step: int, every: int, final: int) -> bool:
    """Measure at step 0 (the base model), every `every` steps and at the final step."""
    return step in (0, final) or (every > 0 and step % every == 0)


def run_loop(config: ml_collections.ConfigDict, model_config: ModelConfig, state: TrainState,
             step_fn: Callable, batches: Iterator[dict], put_batch: Callable[[dict], dict],
             checkpointer: Checkpointer | None, hooks: Hooks | None = None) -> TrainState:
    """Train from `state.step` to `config.train.steps`; returns the final state.

    put_batch: numpy batch -> global device batch (see `headjax.parallel.global_batch`).
    """
    hooks = hooks or Hooks()
    run_dir = Path(config.run_dir)
    total = config.train.steps
    first_process = jax.process_index() == 0
    start = int(state.step)
    writer = MetricsWriter(run_dir, enabled=first_process, resume_step=start or None)
    accuracies: dict[int, dict[str, float]] = writer.scalars(ACCURACY_PREFIX)
    started_run = time.perf_counter()

    def measure(step: int, params: Any) -> None:
        if hooks.evaluate is not None and _due(step, config.eval.every, total):
            accuracy = accuracies[step] = dict(hooks.evaluate(params, step))
            writer.write(step, {f"{ACCURACY_PREFIX}{task}": acc for task, acc in accuracy.items()})
            log.info("step %d accuracy %s", step, {t: round(a, 4) for t, a in accuracy.items()})
        path = pattern_path(run_dir, step)
        if hooks.probes and _due(step, config.heads.every, total) and not path.exists():
            record_patterns(params, hooks.probes, model_config, path,
                            loss_kind=config.heads.loss_kind, write=first_process,
                            rules=config.mesh.rules)

    if start == 0:
        measure(0, model_params(state.params))
    last_saved = checkpointer.steps()[-1] if checkpointer and checkpointer.steps() else None
    progress = tqdm(total=total, initial=start, desc="train", disable=not first_process,
                    dynamic_ncols=True)
    for step in range(start + 1, total + 1):
        started = time.perf_counter()
        state, metrics = step_fn(state, put_batch(next(batches)))
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        metrics["step_time_s"] = time.perf_counter() - started
        if not math.isfinite(metrics["loss"]):
            writer.write(step, metrics)
            writer.close()
            if checkpointer is not None:
                checkpointer.wait()
            where = (f"the last good checkpoint is step {last_saved} in {checkpointer.directory}"
                     if last_saved is not None else "no checkpoint was saved")
            raise TrainingDivergedError(
                f"loss is {metrics['loss']} at step {step} (lr {metrics['lr']:.3g}, grad norm "
                f"{metrics['grad_norm']:.3g}); stopping: {where}")
        if step % config.train.log_every == 0 or step == total:
            writer.write(step, metrics)
        progress.update(1)
        progress.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
        if checkpointer is not None and _due(step, config.checkpoint.every, total):
            checkpointer.save(step, state, {"data": batches.state_dict(), "step": step})
            last_saved = step
        if _due(step, config.eval.every, total) or _due(step, config.heads.every, total):
            measure(step, model_params(state.params))
    progress.close()
    if checkpointer is not None:
        checkpointer.wait()
    writer.close()
    if first_process:
        summary = {"steps": total, "resumed_from": start, "wall_time_s": time.perf_counter()
                   - started_run, "machine": running_on(),
                   "accuracy": {str(s): a for s, a in sorted(accuracies.items())}}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return state
