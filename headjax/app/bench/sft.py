"""One AdamW SFT step, ready to run repeatedly: headjax's trainer step (full fine-tuning, or LoRA
as "headjax_lora") or transformers PyTorch's, on the same model and batch
(`headjax.app.bench.models`).

`sft_runner` does all the set-up (weights, optimizer state, compilation) and returns a callable
that runs one synchronous step, so a caller can time steps one at a time (`headjax.app.bench.paired`
alternates them between two processes) or in a row (`sft_worker`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from headjax.app.bench.models import SMOLLM2_135M, headjax_params, synthetic_batch, torch_model
from headjax.lora import LoraParams, init_adapters, lora_spec
from headjax.model.config import ModelConfig
from headjax.train.optimizer import make_optimizer
from headjax.train.state import create_state
from headjax.train.step import make_train_step

LEARNING_RATE = 1e-5
LORA = {"rank": 8, "alpha": 16.0, "targets": ["q", "k", "v", "o", "gate", "up", "down"],
        "dropout": 0.0}  # the "headjax_lora" step's adapters unless told otherwise


def bench_config(overrides: dict | None = None) -> ModelConfig:
    """SMOLLM2_135M with `overrides` (field -> value, e.g. a tiny size for tests) applied."""
    return SMOLLM2_135M.replace(**(overrides or {}))


def torch_labels(batch: dict):
    """PyTorch token ids and labels (-100 outside the answer; transformers shifts them)."""
    import torch

    tokens = torch.from_numpy(batch["tokens"]).long()
    labels = torch.where(torch.from_numpy(batch["loss_mask"]) > 0, tokens, -100)
    return tokens, labels


def compiled_train_step(config: ModelConfig, state, batch: dict, rounding: str = "nearest"):
    """(the trainer's step jitted with the state donated and compiled for `state`/`batch`,
    compile seconds). rounding: `train.rounding` of the bf16 compute copy."""
    schedule = optax.constant_schedule(LEARNING_RATE)
    step = make_train_step(config, make_optimizer(schedule), schedule, rounding=rounding)
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0,)).lower(state, batch).compile()
    return compiled, time.perf_counter() - start


def stepping(compiled, state, batch: dict) -> Callable[[], None]:
    """Run `compiled` (a train step that donates its state, `compiled_train_step`) once on
    `batch` and wait for it, carrying the state from call to call, starting at `state`."""
    holder = [state]

    def run() -> None:
        holder[0], metrics = compiled(holder[0], batch)
        jax.block_until_ready(metrics)

    return run


def train_state(params, seed: int = 0):
    """The trainer's initial state (AdamW at `LEARNING_RATE`) for `params`."""
    return create_state(params, make_optimizer(optax.constant_schedule(LEARNING_RATE)), seed=seed)


def lora_train_state(params, config: ModelConfig, lora: dict, seed: int = 0):
    """The trainer's initial LoRA state: `params` frozen, fresh adapters per `lora` (rank, alpha,
    targets, dropout; see `LORA`), AdamW on the adapters only."""
    spec = lora_spec(lora["rank"], lora["alpha"], lora["targets"], dropout=lora["dropout"])
    adapters = init_adapters(jax.random.key(seed), config, spec)
    return train_state(LoraParams(params, adapters, spec), seed=seed)


def sft_runner(framework: str, config: ModelConfig, batch_size: int, seq: int,
               lora: dict | None = None) -> tuple[Callable[[], None], float]:
    """(run one SFT step and wait for it, compile seconds) for "headjax", "headjax_lora" (adapters
    per `lora`, default `LORA`) or "torch_<attention>"."""
    params = headjax_params(config)
    batch = synthetic_batch(config, batch_size, seq)
    if framework in ("headjax", "headjax_lora"):
        state = (train_state(params) if framework == "headjax"
                 else lora_train_state(params, config, {**LORA, **(lora or {})}))
        del params
        batch = jax.tree.map(jnp.asarray, batch)
        compiled, compile_s = compiled_train_step(config, state, batch)
        return stepping(compiled, state, batch), compile_s
    if framework.startswith("torch_"):
        import torch

        model = torch_model(params, config, framework.removeprefix("torch_")).train()
        del params
        optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
        tokens, labels = torch_labels(batch)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            model(tokens, labels=labels).loss.backward()
            optimizer.step()

        return step, 0.0
    raise ValueError(f"sft_runner: unknown framework {framework!r}")
