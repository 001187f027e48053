"""Ahead-of-time plan of a run: compile its programs for the target mesh from abstract shapes.

`plan` lowers and compiles, for the mesh a run config asks for (on simulated CPU devices or a
TPU topology's compile-only devices), the exact train step, the head-pattern step (one probe
batch) and the evaluation's generation (one batch of `data.max_len`-token prompts), from
`jax.ShapeDtypeStruct`s carrying the run's shardings (no weight is read; the probe and prompt
batches padded and sharded over the batch axes as `headjax.parallel.shard_rows` does), and reads
per device:
  parameter and optimizer-state bytes  each array's shard shape x its itemsize,
  temporary bytes                      `compiled.memory_analysis().temp_size_in_bytes`,
  collectives                          all-reduce / reduce-scatter / all-gather / all-to-all /
                                       collective-permute ops in the compiled HLO (a static
                                       count: one inside the layer loop runs once per layer),
and per step the FLOPs: XLA's cost analysis of the step lowered with the layers unrolled (a
scanned loop's body would be counted once), beside the model's 6 N T + attention estimate
(`ModelConfig.flops_per_token`). Peak per device = arguments + outputs - donated + temporaries.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding

from headjax.eval.generate import generate
from headjax.heads.patterns import batch_scores_program
from headjax.model.config import ModelConfig
from headjax.model.transformer import param_axes, param_shapes
from headjax.parallel import (
    batch_multiple,
    batch_spec,
    frozen_rules,
    padded_rows,
    replicated,
    replicated_params,
)
from headjax.parallel.hardware import CHIPS, GIB
from headjax.train.step import jit_train_step
from headjax.train.trainer import (
    TrainSetup,
    abstract_params,
    model_config_for_training,
    state_shardings,
    train_setup,
)

COLLECTIVES = ("all-reduce", "reduce-scatter", "all-gather", "all-to-all", "collective-permute")
MFU = 0.4


@dataclasses.dataclass(frozen=True)
class ProgramPlan:
    """One compiled program, bytes per device; `batch_sharding`: the PartitionSpec its batch
    argument (the second) was compiled for."""

    name: str
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    collectives: dict[str, int]
    batch_sharding: str = ""

    @property
    def peak_bytes(self) -> int:
        """Arguments + outputs not written over donated arguments + temporaries."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes


@dataclasses.dataclass(frozen=True)
class Plan:
    """The run's plan on `devices` devices: per-device state, programs and FLOPs per step."""

    model: ModelConfig
    mesh: dict[str, int]
    devices: int
    tokens_per_step: int
    num_params: int
    param_bytes: int
    opt_state_bytes: int
    total_state_bytes: int
    programs: tuple[ProgramPlan, ...]
    step_flops: float
    model_flops: float
    replicated: dict[str, str]

    @property
    def peak_bytes(self) -> int:
        """The largest program's per-device peak."""
        return max(p.peak_bytes for p in self.programs)

    def fits(self, chip_name: str) -> bool:
        return self.peak_bytes <= CHIPS[chip_name].memory_gib * GIB

    def step_seconds(self, chip_name: str, mfu: float = MFU) -> float:
        """Train step time when the step's FLOPs run at `mfu` of the chips' peak."""
        return self.step_flops / (self.devices * CHIPS[chip_name].peak_flops * mfu)


def count_collectives(hlo_text: str) -> dict[str, int]:
    """Collective ops (sync or async start) in compiled HLO text, by kind."""
    found = re.findall(r"\b(" + "|".join(COLLECTIVES) + r")(?:-start)?\(", hlo_text)
    return {kind: found.count(kind) for kind in COLLECTIVES}


def _per_device_bytes(abstract: Any, shardings: Any) -> int:
    """Bytes one device holds of `abstract` arrays laid out by `shardings`."""
    def one(x, sharding):
        shard = sharding.shard_shape(x.shape)
        return int(jnp.dtype(x.dtype).itemsize * (1 if not shard else _prod(shard)))

    return sum(jax.tree.leaves(jax.tree.map(one, abstract, shardings)))


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for n in shape:
        out *= int(n)
    return out


def _with_shardings(abstract: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract, shardings)


def abstract_batch(rows: int, seq: int, sharding: NamedSharding) -> dict:
    """A training batch's `ShapeDtypeStruct`s, every field of `headjax.model.loss.Batch`."""
    ints = jax.ShapeDtypeStruct((rows, seq), jnp.int32, sharding=sharding)
    return {"tokens": ints, "loss_mask": jax.ShapeDtypeStruct((rows, seq), jnp.float32,
                                                              sharding=sharding),
            "segment_ids": ints, "positions": ints}


def _program(name: str, compiled) -> ProgramPlan:
    memory = compiled.memory_analysis()
    batch = jax.tree.leaves(compiled.input_shardings[0][1])[0]
    return ProgramPlan(name, int(memory.argument_size_in_bytes),
                       int(memory.output_size_in_bytes), int(memory.alias_size_in_bytes),
                       int(memory.temp_size_in_bytes), count_collectives(compiled.as_text()),
                       str(batch.spec))


def _internal_batch(rows: int, seq: int, rules, mesh) -> tuple[int, NamedSharding]:
    """(rows padded as `headjax.parallel.shard_rows` pads them, their sharding) of an internal
    `[rows, seq]` batch (probe batch, evaluation prompts)."""
    rows = padded_rows(rows, batch_multiple(rules, mesh))
    return rows, NamedSharding(mesh, batch_spec((rows, seq), rules, mesh))


def _step_flops(config: ml_collections.ConfigDict, model_config: ModelConfig, setup_args: dict,
                state, state_sh, batch) -> float:
    """XLA's FLOP count of the train step with layers unrolled, no micro-batch or loss-chunk
    loop (loops are counted once by cost analysis; unrolled they give the same work)."""
    flat = config.copy_and_resolve_references()
    flat.train.grad_accum, flat.train.loss_chunk = 1, 0
    unrolled = model_config.replace(scan_layers=False)
    setup = train_setup(flat, unrolled, **setup_args)
    lowered = jax.jit(setup.step, in_shardings=(state_sh, batch["tokens"].sharding)).lower(
        state, batch)
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def _compile_train(config: ml_collections.ConfigDict, model_config: ModelConfig,
                   devices: Sequence[Any] | None):
    """(setup, abstract state with shardings, its shardings, abstract batch, ProgramPlan) of
    the run's train step; `model_config` already carries the run's numerics."""
    setup: TrainSetup = train_setup(config, model_config, devices=devices)
    mesh = setup.mesh
    state, state_sh = state_shardings(abstract_params(model_config), model_config,
                                      setup.optimizer, config.train.seed, mesh, setup.rules)
    abstract_state = _with_shardings(state, state_sh)
    rows, seq = config.train.batch_size, config.data.max_len
    batch = abstract_batch(rows, seq,
                           NamedSharding(mesh, batch_spec((rows, seq), setup.rules, mesh)))
    batch_sh = jax.tree.map(lambda x: x.sharding, batch)
    train = jit_train_step(setup.step, state_sh, batch_sh, replicated(mesh))
    program = _program("train step", train.lower(abstract_state, batch).compile())
    return setup, abstract_state, state_sh, batch, program


def plan(config: ml_collections.ConfigDict, model_config: ModelConfig, *,
         devices: Sequence[Any] | None = None) -> Plan:
    """Compile the run's train step, head-pattern step and eval forward for its mesh on
    `devices` (default: all) from abstract shapes, and measure them (see the module docstring).

    `model_config` gives the shape; the run's numerics (`model.*`) are applied here (evaluation
    runs as loaded: compute in `model.param_dtype`). Raises ValueError naming both numbers when
    the batch or the model cannot shard on the mesh.
    """
    dtype = config.model.param_dtype
    eval_config = model_config.replace(dtype=dtype, param_dtype=dtype)
    model_config = model_config_for_training(model_config, config)
    setup, state, state_sh, batch, train = _compile_train(config, model_config, devices)
    mesh, seq = setup.mesh, config.data.max_len
    probe_rows, probe_sharding = _internal_batch(config.heads.batch_size, seq, setup.rules, mesh)
    probe = abstract_batch(probe_rows, seq, probe_sharding)
    eval_rows, eval_sharding = _internal_batch(config.eval.batch_size, seq, setup.rules, mesh)

    pattern_step = batch_scores_program(model_config, config.heads.loss_kind, mesh,
                                        frozen_rules(setup.rules))

    def evaluate(p, prompts, mask):
        return generate(p, eval_config, prompts, mask,
                        max_new_tokens=config.eval.max_new_tokens).tokens

    prompts = jax.ShapeDtypeStruct((eval_rows, seq), jnp.int32, sharding=eval_sharding)
    mask = jax.ShapeDtypeStruct(prompts.shape, jnp.bool_, sharding=eval_sharding)
    programs = (train,
                _program("head-pattern step",
                         pattern_step.lower(state.params, probe).compile()),
                _program("eval generation",
                         jax.jit(evaluate).lower(state.params, prompts, mask).compile()))
    tokens = config.train.batch_size * seq
    return Plan(
        model=model_config, mesh=dict(mesh.shape), devices=mesh.size, tokens_per_step=tokens,
        num_params=model_config.num_params(),
        param_bytes=_per_device_bytes(state.params, state_sh.params),
        opt_state_bytes=_per_device_bytes(state.opt_state, state_sh.opt_state),
        total_state_bytes=_per_device_bytes(state, state_sh), programs=programs,
        step_flops=_step_flops(config, model_config, {"devices": devices}, state, state_sh,
                               batch),
        model_flops=model_config.flops_per_token(seq) * tokens,
        replicated=replicated_params(param_axes(model_config), param_shapes(model_config),
                                     setup.rules, mesh))


KNOBS = (("train.opt_state_dtype", ("float32", "bfloat16")), ("train.loss_chunk", (0, 128)),
         ("model.remat", ("none", "full")), ("model.dtype", ("float32", "bfloat16")))


def knob_savings(config: ml_collections.ConfigDict, model_config: ModelConfig, *,
                 devices: Sequence[Any] | None = None) -> list[tuple[str, Any, int, int]]:
    """Per-device (state bytes, train-step peak bytes) of the run as configured and with each
    memory knob of `KNOBS` (off, on) switched, one at a time: to "on" where the run has it
    off, else to "off". Rows (dotted key, value, state bytes, peak bytes), the run as
    configured first."""
    def measure(c):
        m = model_config_for_training(model_config, c)
        _, state, state_sh, _, train = _compile_train(c, m, devices)
        return _per_device_bytes(state, state_sh), train.peak_bytes

    rows = [("as configured", "", *measure(config))]
    for key, value, changed in switched_knobs(config):
        rows.append((key, value, *measure(changed)))
    return rows


def switched_knobs(config: ml_collections.ConfigDict
                   ) -> list[tuple[str, Any, ml_collections.ConfigDict]]:
    """(dotted key, its new value, a copy of `config` with that one knob of `KNOBS` switched)
    per knob. Switching to float32 compute also sets `train.rounding` to nearest (stochastic
    rounding is to a bf16 copy)."""
    out = []
    for key, (off, on) in KNOBS:
        section, name = key.split(".")
        changed = config.copy_and_resolve_references()
        changed[section][name] = on if config[section][name] == off else off
        if changed.model.dtype != "bfloat16":
            changed.train.rounding = "nearest"
        out.append((key, changed[section][name], changed))
    return out


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def format_plan(p: Plan, knobs: Sequence[tuple] = ()) -> str:
    """The plan as text: per-device state, programs with their collectives, FLOPs per step,
    replicated parameters, the chips it fits with the step time at 40% MFU, knob savings."""
    m = p.model
    mesh = " x ".join(f"{axis} {size}" for axis, size in p.mesh.items())
    lines = [f"dry run: {p.num_params / 1e9:.3f} B parameters ({m.num_layers} layers, d_model "
             f"{m.d_model}, vocab {m.vocab_size}; {m.dtype} compute, {m.param_dtype} params, "
             f"remat {m.remat}) on {p.devices} devices (mesh {mesh}), {p.tokens_per_step} "
             f"tokens per step",
             f"per device: parameters {_gib(p.param_bytes)} GiB, optimizer state "
             f"{_gib(p.opt_state_bytes)} GiB, whole train state {_gib(p.total_state_bytes)} GiB",
             "| program | arguments GiB | temporaries GiB | peak GiB | "
             + " | ".join(COLLECTIVES) + " |",
             "|---" * (4 + len(COLLECTIVES)) + "|"]
    for prog in p.programs:
        lines.append(f"| {prog.name} | {_gib(prog.argument_bytes)} | {_gib(prog.temp_bytes)} | "
                     f"{_gib(prog.peak_bytes)} | "
                     + " | ".join(str(prog.collectives[k]) for k in COLLECTIVES) + " |")
    lines.append(f"FLOPs per train step: {p.step_flops:.3e} compiled (XLA cost analysis, all "
                 f"devices), {p.model_flops:.3e} by 6 x params x tokens + attention")
    lines.append("replicated where a dimension does not divide: "
                 + ("; ".join(f"{k} ({v})" for k, v in p.replicated.items()) or "nothing"))
    lines += ["", "| chip | memory GiB | fits | step time at 40% MFU |", "|---|---|---|---|"]
    for key, c in CHIPS.items():
        lines.append(f"| {key} ({c.name}) | {c.memory_gib:g} | "
                     f"{'yes' if p.fits(key) else 'no'} | {p.step_seconds(key):.3g} s |")
    if knobs:
        lines += ["", "| knob | value | train state GiB | train step peak GiB |",
                  "|---|---|---|---|"]
        lines += [f"| {key} | {value} | {_gib(state)} | {_gib(peak)} |"
                  for key, value, state, peak in knobs]
    return "\n".join(lines)
