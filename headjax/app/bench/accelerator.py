"""The accelerator benchmark: a Llama-class SFT step in bf16 on one chip, and what head patterns
cost there.

    sft:        the trainer's AdamW step (f32 master weights, `config.dtype` compute): seconds,
                tokens/s, FLOPs per step and utilisation of the chip's peak bf16 rate, once per
                attention implementation ("xla" einsum, "fused" `jax.nn.dot_product_attention`),
                and with bf16 compute once more with the master weights rounded stochastically
                (`train.rounding="stochastic"`, `config.attention_impl`).
    pattern:    `headjax.heads.head_scores` (forward + gate-only backward) as a multiple of the
                loss forward on the same batch.
    tracking:   `headjax.train.loop.run_loop` for N steps without probes and with probes at the
                default `heads.*` cadence; the share of wall time spent recording patterns.

FLOPs per step: "model" = `ModelConfig.flops_per_token` x tokens (6 N + attention, the PaLM count
behind MFU); "compiled" = XLA's `cost_analysis` of the compiled step. It is only reported for
unrolled layers (`scan_layers=False`: it counts a `lax.scan` body once) and not on GPUs, where it
leaves out the matrix products XLA hands to cuBLAS (measured on an H100, 2026-11-27: 8.2 TFLOP for
the Llama-1B step below, whose matrix products alone are 32 TFLOP).
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from headjax.app.bench.machine import peak_flops, utilization
from headjax.app.bench.models import headjax_params, synthetic_batch
from headjax.app.bench.sft import compiled_train_step, train_state
from headjax.app.bench.timing import compiled_flops, time_eager, time_jitted
from headjax.heads.scores import head_scores
from headjax.model.config import ModelConfig
from headjax.model.loss import loss
from headjax.train.config import default_config
from headjax.train.loop import Hooks, run_loop
from headjax.train.patterns import record_patterns, run_steps

# Llama-3.2-1B's shape (1.24 B parameters, tied embeddings), bf16 compute on f32 weights.
LLAMA_1B = ModelConfig(vocab_size=128256, d_model=2048, num_layers=16, num_heads=32,
                       num_kv_heads=8, head_dim=64, ffn_dim=8192, rope_theta=500000.0,
                       norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=131072,
                       dtype="bfloat16", param_dtype="float32", scan_layers=False)
ATTENTION_IMPLS = ("xla", "fused")
STOCHASTIC = "stochastic rounding"  # the bf16 step again with `train.rounding="stochastic"`


class Prepared(NamedTuple):
    """A random model's trainer state, a batch and the trainer's step compiled for them."""

    state: object
    batch: dict
    step: object
    compile_s: float


def prepare_sft(config: ModelConfig, batch_size: int, seq: int, rounding: str = "nearest"
                ) -> Prepared:
    """Random weights, AdamW state and batch for `config`, and the step (with `rounding` of the
    bf16 compute copy) compiled for them."""
    state = train_state(headjax_params(config))
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config, batch_size, seq))
    step, compile_s = compiled_train_step(config, state, batch, rounding)
    return Prepared(state, batch, step, compile_s)


def sft_figures(config: ModelConfig, prepared: Prepared, repeats: int, peak: float | None
                ) -> tuple[dict, Prepared]:
    """(warm seconds of the prepared step, tokens/s, FLOPs, MFU; the prepared step with its
    state advanced)."""
    holder = [prepared.state]

    def run() -> None:
        holder[0], metrics = prepared.step(holder[0], prepared.batch)
        jax.block_until_ready(metrics)

    timing = time_eager(run, repeats=repeats)
    batch_size, seq = prepared.batch["tokens"].shape
    tokens = batch_size * seq
    model_flops = config.flops_per_token(seq) * tokens
    counted = not config.scan_layers and jax.devices()[0].platform != "gpu"
    cost = compiled_flops(prepared.step) if counted else None
    figures = {"attention_impl": config.attention_impl, "compile_s": prepared.compile_s,
               "warm_s": timing.warm_s, "runs_s": list(timing.runs_s),
               "tokens_per_s": tokens / timing.warm_s, "model_flops": model_flops,
               "compiled_flops": cost, "mfu": utilization(model_flops, timing.warm_s, peak),
               "hfu": utilization(cost, timing.warm_s, peak) if cost else None}
    return figures, prepared._replace(state=holder[0])


def pattern_figures(config: ModelConfig, batch_size: int, seq: int, repeats: int) -> dict:
    """`head_scores` vs the loss forward on one batch: warm seconds and their ratio."""
    params = headjax_params(config)
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config, batch_size, seq))
    forward = time_jitted(lambda p, b: loss(p, b, config), params, batch, repeats=repeats)
    pattern = time_jitted(lambda p, b: head_scores(p, b, config), params, batch, repeats=repeats)
    return {"forward_s": forward.warm_s, "pattern_s": pattern.warm_s,
            "x_forward": pattern.warm_s / forward.warm_s,
            "compile_s": {"forward": forward.compile_s, "pattern": pattern.compile_s}}


def tracking_figures(config: ModelConfig, prepared: Prepared, steps: int, probe_seq: int
                     ) -> dict:
    """`run_loop` for `steps` steps of the prepared step without and with probe patterns at the
    default cadence.

    The probes are the default `heads.samples` samples in batches of `heads.batch_size`
    (sequence length `probe_seq`), recorded at step 0, every `heads.every` steps and the final
    step as in training. Reports the step files written, both wall times, the share of the
    tracked run spent recording ((with - without) / with), and the steady share one recording
    adds per `heads.every` steps (recording s / (recording s + heads.every x step s)).
    """
    defaults = default_config()
    every, samples, probe_batch = (defaults.heads.every, defaults.heads.samples,
                                   defaults.heads.batch_size)
    probe = jax.tree.map(jnp.asarray, synthetic_batch(config, probe_batch, probe_seq, seed=1))
    probes = {"probe": [probe] * max(1, samples // probe_batch)}
    state, batch = prepared.state, prepared.batch
    record = lambda: record_patterns(state.params, probes, config, None, write=False)
    record_s = time_eager(record, repeats=1).warm_s  # compiled by its warm-up call
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, hooks, length in (("warm-up", Hooks(), 1), ("without", Hooks(), steps),
                                    ("with", Hooks(probes=probes), steps)):
            run_config = default_config()
            run_config.run_dir = f"{tmp}/{name}"
            run_config.train.steps = length
            state = state.replace(step=jnp.zeros_like(state.step))  # a run from step 0
            start = time.perf_counter()
            state = run_loop(run_config, config, state, prepared.step, itertools.repeat(batch),
                             lambda b: b, None, hooks)
            jax.block_until_ready(state.params)
            walls[name] = time.perf_counter() - start
        recordings = len(run_steps(f"{tmp}/with"))
    step_s = walls["without"] / steps
    return {"steps": steps, "every": every, "probe_samples": samples, "recordings": recordings,
            "wall_without_s": walls["without"], "wall_with_s": walls["with"],
            "share": (walls["with"] - walls["without"]) / walls["with"],
            "record_s": record_s, "steady_share": record_s / (record_s + every * step_s)}


def accelerator_section(config: ModelConfig, batch_size: int, seq: int, repeats: int,
                        tracking_steps: int, probe_seq: int, peak: float | None = None,
                        progress: Callable[[str, dict], None] = lambda part, figures: None
                        ) -> dict:
    """Every figure of the module docstring for `config` on `jax.devices()[0]`.

    peak: the chip's peak FLOP/s; None = `machine.peak_flops` of the device kind (MFU is None
    for a chip not in the table). An attention implementation whose step fails to compile or run
    is reported as {"error": ...} (and tracking as None when it is `config.attention_impl`'s).
    progress(part, figures) is called as each part is measured ("sft/xla", "sft/fused",
    "tracking", "pattern"), so that a run stopped by a time limit still shows what it measured.
    """
    device = jax.devices()[0]
    peak = peak if peak is not None else peak_flops(device.device_kind)
    sft, tracking = {}, None
    variants = [(impl, impl, "nearest") for impl in ATTENTION_IMPLS]
    if config.dtype == "bfloat16":
        variants.append((f"{config.attention_impl}, {STOCHASTIC}", config.attention_impl,
                         "stochastic"))
    for name, impl, rounding in variants:  # one model state on the device at a time
        impl_config = config.replace(attention_impl=impl)
        try:
            sft[name], prepared = sft_figures(
                impl_config, prepare_sft(impl_config, batch_size, seq, rounding), repeats, peak)
        except Exception as error:  # noqa: BLE001 - one failing kernel must not lose the run
            sft[name] = {"attention_impl": impl, "error": f"{type(error).__name__}: {error}"}
            progress(f"sft/{name}", sft[name])
            continue
        progress(f"sft/{name}", sft[name])
        if name == config.attention_impl:
            tracking = tracking_figures(impl_config, prepared, tracking_steps, probe_seq)
            progress("tracking", tracking)
        del prepared
    pattern = pattern_figures(config, batch_size, seq, repeats)
    progress("pattern", pattern)
    return {
        "device_kind": device.device_kind, "platform": device.platform, "peak_flops": peak,
        "params": config.num_params(), "dtype": config.dtype, "batch": batch_size, "seq": seq,
        "attention_impl": config.attention_impl, "probe_seq": probe_seq,
        "sft": sft,
        "pattern": pattern,
        "tracking": tracking,
    }
