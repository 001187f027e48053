"""The benchmark sections; each returns a JSON-ready dict of measured figures (seconds, MiB).

forward:  forward and forward+backward of the LM loss, headjax (jit) vs PyTorch eager and sdpa.
sft:      one full fine-tuning AdamW step; each framework in its own subprocess so that its peak
          resident memory is its own (`sft_worker`).
lora:     a LoRA step beside a full SFT step (headjax), each in its own subprocess (`sft_worker`).
heads:    the activation pattern (`headjax.heads.head_scores`) over a task's samples vs plain
          forwards over the same samples vs the naive one-ablation-forward-per-head method.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp

from headjax.app.bench.models import SMOLLM2_135M, headjax_params, synthetic_batch, torch_model
from headjax.app.bench.sft import LORA, bench_config, sft_runner, torch_labels
from headjax.app.bench.timing import Timing, peak_device_mib, peak_rss_mib, time_eager, time_jitted
from headjax.heads.scores import head_scores
from headjax.io.pretrained import read_model_config
from headjax.lora import lora_spec, trainable_count
from headjax.model.loss import loss
from headjax.model.transformer import param_shapes

TORCH_ATTENTION = ("eager", "sdpa")


def _timing(t: Timing) -> dict:
    return dataclasses.asdict(t)


def forward_section(batch_size: int, seq: int, repeats: int) -> dict:
    """Loss forward and forward+backward (grads w.r.t. all params): headjax vs PyTorch."""
    import torch

    config, params = SMOLLM2_135M, headjax_params()
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config, batch_size, seq))
    results = {
        "headjax": {
            "forward": _timing(time_jitted(lambda p, b: loss(p, b, config), params, batch,
                                           repeats=repeats)),
            "forward_backward": _timing(time_jitted(
                jax.value_and_grad(lambda p, b: loss(p, b, config)), params, batch,
                repeats=repeats)),
        }
    }
    tokens, labels = torch_labels(synthetic_batch(config, batch_size, seq))
    for impl in TORCH_ATTENTION:
        model = torch_model(params, config, impl)

        def fwd(model=model):
            with torch.no_grad():
                return model(tokens, labels=labels).loss

        def fwd_bwd(model=model):
            model.zero_grad(set_to_none=True)
            model(tokens, labels=labels).loss.backward()

        results[f"torch_{impl}"] = {"forward": _timing(time_eager(fwd, repeats=repeats)),
                                    "forward_backward": _timing(time_eager(fwd_bwd,
                                                                           repeats=repeats))}
        del model
    return results


def sft_worker(framework: str, batch_size: int, seq: int, repeats: int,
               model_overrides: dict | None = None, lora: dict | None = None) -> dict:
    """One AdamW SFT step (see `sft_runner`) in this process: timing, tokens/s, peak RSS and
    peak device memory (None where the backend does not report it, e.g. CPU)."""
    run, compile_s = sft_runner(framework, bench_config(model_overrides), batch_size, seq, lora)
    timing = time_eager(run, repeats=repeats)
    timing = Timing(compile_s, timing.warm_s, timing.runs_s)
    return {"framework": framework, **_timing(timing),
            "tokens_per_s": batch_size * seq / timing.warm_s, "peak_rss_mib": peak_rss_mib(),
            "peak_device_mib": peak_device_mib()}


def sft_section(batch_size: int, seq: int, repeats: int, frameworks=("headjax", "torch_sdpa"),
                model_overrides: dict | None = None, lora: dict | None = None) -> dict:
    """`sft_worker` for each framework, each in a fresh Python process."""
    results = {}
    for framework in frameworks:
        args = json.dumps([framework, batch_size, seq, repeats, model_overrides, lora])
        code = ("import json, sys; from headjax.app.bench.sections import sft_worker; "
                "print(json.dumps(sft_worker(*json.loads(sys.argv[1]))))")
        done = subprocess.run([sys.executable, "-c", code, args], capture_output=True,
                              text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"sft_worker {framework} failed:\n{done.stderr[-4000:]}")
        results[framework] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def lora_section(batch_size: int, seq: int, repeats: int, lora: dict | None = None,
                 model_overrides: dict | None = None) -> dict:
    """A full SFT step ("headjax") and a LoRA step ("headjax_lora", adapters per `lora`, default
    `headjax.app.bench.sft.LORA`), each in its own process, and the parameter counts trained."""
    lora = {**LORA, **(lora or {})}
    config = bench_config(model_overrides)
    spec = lora_spec(lora["rank"], lora["alpha"], lora["targets"], dropout=lora["dropout"])
    total = sum(math.prod(s) for s in jax.tree.leaves(
        param_shapes(config), is_leaf=lambda x: isinstance(x, tuple)))
    steps = sft_section(batch_size, seq, repeats, ("headjax", "headjax_lora"), model_overrides,
                        lora)
    return {"lora": lora, "trained_params": {"headjax": total,
                                             "headjax_lora": trainable_count(config, spec)},
            "steps": steps}


def heads_section(num_samples: int, batch_size: int, seq: int, repeats: int,
                  ablation_heads: int, model: str = "", model_overrides: dict | None = None
                  ) -> dict:
    """Activation pattern over `num_samples` samples vs forwards over the same samples.

    All batches share one shape, so each cost is a per-batch warm median times the number of
    batches. The naive method (one forward with a single head gated to 0 per head, plus the
    unablated forward) is timed on `ablation_heads` heads and extrapolated linearly to all.
    model: a model name or path `load_pretrained` accepts, whose architecture (read from its
    metadata, `read_model_config`) is timed with random float32 weights; "" is SmolLM2-135M's.
    model_overrides: ModelConfig fields to replace (e.g. answer_positions).
    """
    config = (read_model_config(model).replace(dtype="float32", param_dtype="float32")
              if model else SMOLLM2_135M).replace(**(model_overrides or {}))
    params = headjax_params(config)
    if num_samples % batch_size:
        raise ValueError(f"--head_samples {num_samples} not a multiple of --head_batch "
                         f"{batch_size}")
    batches = num_samples // batch_size
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config, batch_size, seq))
    forward = time_jitted(lambda p, b: loss(p, b, config), params, batch, repeats=repeats)
    pattern = time_jitted(lambda p, b: head_scores(p, b, config), params, batch,
                          repeats=repeats)
    ablated = jax.jit(lambda p, b, g: loss(p, b, config, g))
    heads = [(i // config.num_heads, i % config.num_heads) for i in range(ablation_heads)]
    gates = [jnp.ones((config.num_layers, config.num_heads)).at[h].set(0.0) for h in heads]
    jax.block_until_ready(ablated(params, batch, gates[0]))
    per_head = time_eager(lambda: [jax.block_until_ready(ablated(params, batch, g))
                                   for g in gates], repeats=repeats).warm_s / len(gates)
    total_heads = config.num_layers * config.num_heads
    return {
        "model": model or "smollm2-135m",
        "layers_heads": [config.num_layers, config.num_heads],
        "batches": batches,
        "forward_total_s": forward.warm_s * batches,
        "pattern_total_s": pattern.warm_s * batches,
        "naive_total_s": per_head * (total_heads + 1) * batches,
        "naive_heads_timed": ablation_heads,
        "forward": _timing(forward), "pattern": _timing(pattern),
        "naive_per_forward_s": per_head,
        "pattern_flops_x_forward": (pattern.flops / forward.flops
                                    if pattern.flops and forward.flops else None),
    }
