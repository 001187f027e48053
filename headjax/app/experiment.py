"""A config-driven run: load the pretrained model, build data, eval and probe hooks, train.

This is the glue between the packages (io, data, eval, heads) and `headjax.train.train`, so the
entry-point scripts stay a few lines long and a notebook can call `run(config)` too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np

from headjax.data import Example
from headjax.parallel import maybe_initialize
from headjax.train.config import validate
from headjax.train.loop import Hooks
from headjax.train.state import TrainState
from headjax.train.trainer import BatchFactory, train

log = logging.getLogger(__name__)


def load_model(config: ml_collections.ConfigDict):
    """(params, model config, tokenizer) of `model.pretrained`."""
    from headjax.io.pretrained import load_pretrained

    return load_pretrained(config.model.pretrained, dtype=config.model.param_dtype)


def start_processes(config: ml_collections.ConfigDict) -> bool:
    """Start multi-process JAX per the `distributed` section (before any device is used)."""
    d = config.distributed
    return maybe_initialize(d.mode, d.coordinator_address, d.num_processes, d.process_id)


def check_inputs(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` if a run of it can start: valid values (`validate`), every task it names known
    (data files read and checked), the model source and any input file present. Raises naming
    the key or file, before anything heavy (the model) is loaded."""
    from headjax.data import get_task
    from headjax.io.pretrained import locate

    validate(config)
    register_data_sources(config)
    for task in dict.fromkeys(task_names(config)):
        get_task(task)
    locate(config.model.pretrained)
    for key in ("train.trainable_heads", "guide.patterns"):
        section, name = key.split(".")
        path = config[section][name]
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"config.{key}: {path}: no such file")
    return config


def train_batches(config: ml_collections.ConfigDict, tokenizer, examples: Sequence[Example]
                  ) -> BatchFactory:
    """Factory of resumable training batch iterators (`headjax.data.Batcher`) over `examples`
    and the streamed tasks of `data.tasks`, mixed by `data.weights` over `data.tasks` when given
    (default: in proportion to each task's example count)."""
    from headjax.data import Batcher, get_task

    tasks = tuple(config.data.tasks)
    weights = dict(zip(tasks, config.data.weights, strict=True)) if config.data.weights else None
    streams = {t: get_task(t).stream for t in tasks if get_task(t).stream is not None}

    def make(state: dict | None):
        if state is not None:
            return Batcher.from_state(state, examples, tokenizer, streams=streams)
        return Batcher(examples, tokenizer, batch_size=config.train.batch_size,
                       max_len=config.data.max_len, packing=config.data.packing,
                       seed=config.data.seed, weights=weights, streams=streams)

    return make


def task_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Every task name a run of `config` reads: trained, evaluated, probed, guide basis and
    selection pool."""
    return (*config.data.tasks, *config.eval.tasks, *config.heads.tasks, *config.guide.basis,
            *config.select.pool)


def register_data_sources(config: ml_collections.ConfigDict) -> list[str]:
    """Load the data sources among the run's task names (`headjax.data.sources`) with the
    `data.*_field` mapping, streamed when `data.streaming`; returns their names."""
    from headjax.data import Fields, register_sources

    d = config.data
    return register_sources(task_names(config), fields=Fields(d.prompt_field, d.answer_field,
                                                 d.messages_field), streaming=d.streaming)


def accuracy_hook(config: ml_collections.ConfigDict, model_config, tokenizer
                  ) -> Callable[[object, int], Mapping[str, float]]:
    """(params, step) -> {task: accuracy} over `eval.samples` held-out examples per eval task.

    Each evaluation's completions go to `run_dir/eval/step_XXXXXX.jsonl` (task, prompt, answer,
    completion, score), so a rising or falling accuracy can be read example by example.
    """
    from headjax.eval.accuracy import evaluate_accuracy

    tasks = tuple(config.eval.tasks) or tuple(config.data.tasks)

    def evaluate(params, step: int) -> dict[str, float]:
        results = [evaluate_accuracy(params, model_config, tokenizer, task,
                                     num_samples=config.eval.samples,
                                     max_new_tokens=config.eval.max_new_tokens,
                                     batch_size=config.eval.batch_size, seed=config.data.seed,
                                     rules=config.mesh.rules)
                   for task in tasks]
        if jax.process_index() == 0:
            write_completions(Path(config.run_dir) / "eval" / f"step_{step:06d}.jsonl", results)
        return {result.task: float(result.accuracy) for result in results}

    return evaluate


def write_completions(path: Path, results) -> None:
    """One JSON line per evaluated example of each `AccuracyResult` in `results`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for result in results:
            for example, completion, score in zip(result.examples, result.completions,
                                                  result.scores, strict=True):
                f.write(json.dumps({"task": result.task, "prompt": example.prompt,
                                    "answer": example.answer, "completion": completion,
                                    "score": score}) + "\n")


def probe_hook(config: ml_collections.ConfigDict, tokenizer) -> dict[str, list[dict]]:
    """Fixed probe batches per probe task (`heads.tasks`, default `data.tasks`)."""
    from headjax.data import probe_batches

    tasks = tuple(config.heads.tasks) or tuple(config.data.tasks)
    return {task: probe_batches(task, tokenizer, num_samples=config.heads.samples,
                                batch_size=config.heads.batch_size, max_len=config.data.max_len,
                                seed=config.data.seed) for task in tasks}


def trainable_heads(config: ml_collections.ConfigDict, model_config) -> np.ndarray | None:
    """The bool `[layers, heads]` array of `train.trainable_heads`, or None (all heads)."""
    if not config.train.trainable_heads:
        return None
    heads = np.load(config.train.trainable_heads)
    if heads.shape != (model_config.num_layers, model_config.num_heads):
        raise ValueError(f"config.train.trainable_heads: {config.train.trainable_heads} holds "
                         f"shape {heads.shape}, expected [layers, heads] = "
                         f"{(model_config.num_layers, model_config.num_heads)}")
    return heads.astype(bool)


def parameter_mask(config: ml_collections.ConfigDict, model_config):
    """The head-targeted parameter mask of `train.trainable_heads`, or None (train all)."""
    heads = trainable_heads(config, model_config)
    if heads is None:
        return None
    from headjax.heads.param_change import head_parameter_mask

    return head_parameter_mask(model_config, heads, include_kv=config.train.trainable_kv)


def default_hooks(config: ml_collections.ConfigDict, model_config, tokenizer) -> Hooks:
    """Accuracy per eval task and head patterns per probe task, as the config asks."""
    return Hooks(evaluate=accuracy_hook(config, model_config, tokenizer),
                 probes=probe_hook(config, tokenizer))


def train_phase_fn(model_config, tokenizer,
                   make_hooks: Callable[[ml_collections.ConfigDict], Hooks | None]):
    """(phase config, params, examples, mask, heads) -> TrainState: one `train` run, for
    `headjax.app.guide.run_guided`."""

    def train_phase(phase_config, params, examples, mask, heads=None) -> TrainState:
        return train(phase_config, model_config=model_config, params=params,
                     make_batches=train_batches(phase_config, tokenizer, examples),
                     hooks=make_hooks(phase_config), mask=mask, heads=heads)

    return train_phase


def run(config: ml_collections.ConfigDict, model: tuple | None = None) -> TrainState:
    """Check `config` (`check_inputs`), start multi-process JAX if needed, and train with eval
    and probes, through the phases of the `guide` section (one plain run when it is off),
    or on the examples chosen by the `select` section.

    model: (params, model config, tokenizer) of `load_model(config)` called after
      `start_processes(config)`, or None to do both here.
    """
    from headjax.app.guide import run_guided
    from headjax.app.select import run_selected

    check_inputs(config)
    if model is None:
        start_processes(config)
        model = load_model(config)
    params, model_config, tokenizer = model
    train_phase = train_phase_fn(model_config, tokenizer,
                                 lambda c: default_hooks(c, model_config, tokenizer))
    run_phases = run_guided if config.select.method == "none" else run_selected
    if config.lora.enabled:
        state, _ = run_phases(config, params, model_config, tokenizer, train_phase,
                              heads=trainable_heads(config, model_config))
    else:
        state, _ = run_phases(config, params, model_config, tokenizer, train_phase,
                              mask=parameter_mask(config, model_config))
    if config.checkpoint.export_final:
        export_final(config, state, model_config, tokenizer)
    return state


def export_final(config: ml_collections.ConfigDict, state: TrainState, model_config,
                 tokenizer) -> Path | None:
    """Write the trained params as `run_dir/final_model` (a native model directory that
    `load_pretrained` and `scripts/analyze.py --checkpoints` read; merged in a LoRA run, which
    also writes its adapters as the PEFT folder `run_dir/final_adapter`); None when skipped."""
    from headjax.io.native import save_native
    from headjax.lora import LoraParams, model_params
    from headjax.lora.export import export_peft

    path = Path(config.run_dir) / "final_model"
    if jax.process_count() > 1:
        log.warning("final model export skipped in a multi-process run; use the checkpoints")
        return None
    if path.exists():
        log.warning("%s exists (a finished run was resumed); not overwriting it", path)
        return None
    save_native(str(path), jax.device_get(model_params(state.params)), model_config, tokenizer)
    log.info("final model written to %s", path)
    if isinstance(state.params, LoraParams):
        export_peft(str(path.with_name("final_adapter")), state.params,
                    base_model=config.model.pretrained)
        log.info("LoRA adapters written to %s", path.with_name("final_adapter"))
    return path


def planned_model_config(config: ml_collections.ConfigDict):
    """The model's shape for a dry run: `model.pretrained`'s metadata (no weight read), or the
    `model.architecture` preset when the checkpoint is not on this machine."""
    from headjax.io.pretrained import read_model_config
    from headjax.model.presets import ARCHITECTURES, architecture

    try:
        return read_model_config(config.model.pretrained)
    except (FileNotFoundError, ModuleNotFoundError) as err:
        if not config.model.architecture:
            raise FileNotFoundError(
                f"config.model.pretrained: {err}; to plan without the checkpoint set "
                f"config.model.architecture to one of {tuple(ARCHITECTURES)}") from None
    return architecture(config.model.architecture)


def dry_run(config: ml_collections.ConfigDict, *, devices: int = 0, chip: str = "",
            knobs: bool = False):
    """(report text, fits, plan) of `headjax.app.dry_run.plan` for `config` on `devices` devices:
    a `chip` TPU slice's compile-only devices when libtpu is installed, else simulated CPU
    devices (JAX must not have started yet). devices=0: the mesh's product of sizes. `fits`
    is whether the plan fits `chip` (True without one). knobs: also compile the train step
    with each memory knob switched."""
    import math

    from headjax.app.dry_run import format_plan, knob_savings, plan
    from headjax.parallel import hardware

    validate(config)
    if chip:
        hardware.chip(chip)
    sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
    if devices <= 0:
        if -1 in sizes:
            raise ValueError("--devices: the mesh has an axis of -1 (fill the devices); name "
                             "the device count")
        devices = math.prod(sizes)
    if chip and hardware.CHIPS[chip].tpu and hardware.has_libtpu():
        device_list = hardware.tpu_devices(chip, devices)
    else:
        hardware.simulate_cpu_devices(devices)
        device_list = jax.devices()[:devices]
    model_config = planned_model_config(config)
    result = plan(config, model_config, devices=device_list)
    rows = knob_savings(config, model_config, devices=device_list) if knobs else ()
    return format_plan(result, rows), (result.fits(chip) if chip else True), result
