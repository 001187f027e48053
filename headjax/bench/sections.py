"""The benchmark sections; each returns a JSON-ready dict of measured figures (seconds, MiB).

forward:  forward and forward+backward of the LM loss, headjax (jit) vs PyTorch eager and sdpa.
sft:      one full fine-tuning AdamW step; each framework in its own subprocess so that its peak
          resident memory is its own (`sft_worker`).
heads:    the activation pattern (`headjax.heads.head_scores`) over a task's samples vs plain
          forwards over the same samples vs the naive one-ablation-forward-per-head method.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from headjax.bench.models import SMOLLM2_135M, headjax_params, synthetic_batch, torch_model
from headjax.bench.timing import Timing, peak_rss_mib, time_eager, time_jitted
from headjax.heads.scores import head_scores
from headjax.model.loss import loss
from headjax.train.optimizer import make_optimizer
from headjax.train.state import create_state
from headjax.train.step import make_train_step

TORCH_ATTENTION = ("eager", "sdpa")


def _timing(t: Timing) -> dict:
    return dataclasses.asdict(t)


def _torch_labels(batch: dict):
    """PyTorch token ids and labels (-100 outside the answer; transformers shifts them)."""
    import torch

    tokens = torch.from_numpy(batch["tokens"]).long()
    labels = torch.where(torch.from_numpy(batch["loss_mask"]) > 0, tokens, -100)
    return tokens, labels


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
    tokens, labels = _torch_labels(synthetic_batch(config, batch_size, seq))
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


def sft_worker(framework: str, batch_size: int, seq: int, repeats: int) -> dict:
    """One AdamW full fine-tuning step in this process: timing, tokens/s, peak RSS."""
    config = SMOLLM2_135M
    params = headjax_params()
    batch = synthetic_batch(config, batch_size, seq)
    lr = 1e-5
    if framework == "headjax":
        schedule = optax.constant_schedule(lr)
        step = make_train_step(config, make_optimizer(schedule), schedule)
        state = create_state(params, make_optimizer(schedule), seed=0)
        del params
        batch = jax.tree.map(jnp.asarray, batch)
        timing = _sft_headjax(step, state, batch, repeats)
    elif framework.startswith("torch_"):
        import torch

        model = torch_model(params, config, framework.removeprefix("torch_")).train()
        del params
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        tokens, labels = _torch_labels(batch)

        def step():
            optimizer.zero_grad(set_to_none=True)
            model(tokens, labels=labels).loss.backward()
            optimizer.step()

        timing = time_eager(step, repeats=repeats)
    else:
        raise ValueError(f"sft_worker: unknown framework {framework!r}")
    return {"framework": framework, **_timing(timing),
            "tokens_per_s": batch_size * seq / timing.warm_s, "peak_rss_mib": peak_rss_mib()}


def _sft_headjax(step, state, batch, repeats: int) -> Timing:
    """The trainer's step, jitted with the state donated (as `headjax.train` runs it)."""
    import time

    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0,)).lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    runs = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        if i:
            runs.append(time.perf_counter() - start)
    return Timing(compile_s, float(np.median(runs)), tuple(runs))


def sft_section(batch_size: int, seq: int, repeats: int, frameworks=("headjax", "torch_sdpa")
                ) -> dict:
    """`sft_worker` for each framework, each in a fresh Python process."""
    results = {}
    for framework in frameworks:
        args = json.dumps([framework, batch_size, seq, repeats])
        code = ("import json, sys; from headjax.bench.sections import sft_worker; "
                "print(json.dumps(sft_worker(*json.loads(sys.argv[1]))))")
        done = subprocess.run([sys.executable, "-c", code, args], capture_output=True,
                              text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"sft_worker {framework} failed:\n{done.stderr[-4000:]}")
        results[framework] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def heads_section(num_samples: int, batch_size: int, seq: int, repeats: int,
                  ablation_heads: int) -> dict:
    """Activation pattern over `num_samples` samples vs forwards over the same samples.

    All batches share one shape, so each cost is a per-batch warm median times the number of
    batches. The naive method (one forward with a single head gated to 0 per head, plus the
    unablated forward) is timed on `ablation_heads` heads and extrapolated linearly to all.
    """
    config, params = SMOLLM2_135M, headjax_params()
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
        "batches": batches,
        "forward_total_s": forward.warm_s * batches,
        "pattern_total_s": pattern.warm_s * batches,
        "naive_total_s": per_head * (total_heads + 1) * batches,
        "naive_heads_timed": ablation_heads,
        "forward": _timing(forward), "pattern": _timing(pattern),
        "naive_per_forward_s": per_head,
    }
