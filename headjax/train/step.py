"""The jitted SFT train step: answer-token cross-entropy, optional micro-batch accumulation.

Gradient accumulation splits the batch into `grad_accum` micro-batches (rows i, i+A, i+2A, ...
so each device keeps its rows), sums their answer-token losses and gradients with `lax.scan`
and divides by the batch's answer-token count: the result equals the full-batch step.
Compute dtype and rematerialisation come from `ModelConfig.dtype` and `ModelConfig.remat`;
`loss_chunk > 0` projects onto the vocabulary that many positions at a time
(`headjax.model.loss.vocab_cross_entropy`).
In a LoRA run (`state.params` a `headjax.lora.LoraParams`) the gradient is taken with respect to
the adapters only, run unmerged inside the projections (y = x W + (alpha / r) (dropout(x) a) b,
`LoraParams.unmerged`), so no weight-shaped gradient of the frozen base is formed; the dropout
keys derive from the state's rng folded with the step and the micro-batch index.
`rounding="stochastic"` (with bf16 compute) rounds the trainable f32 weights to their bf16 copy
stochastically each step (`headjax.train.rounding`), keyed by the state's rng and the step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from headjax.lora import trainable, with_trainable
from headjax.model.config import ModelConfig
from headjax.model.loss import batch_token_losses
from headjax.train.rounding import ROUNDING_STREAM, ROUNDINGS, stochastic_view
from headjax.train.state import TrainState

StepFn = Callable[[TrainState, dict], tuple[TrainState, dict]]


def answer_token_count(batch: dict) -> jax.Array:
    """Answer tokens in `batch` (targets after position 0), f32[]."""
    return batch["loss_mask"][:, 1:].astype(jnp.float32).sum()


def input_token_count(batch: dict) -> jax.Array:
    """Non-padding tokens in `batch` (segment id != 0; every token without segment ids), f32[]."""
    if "segment_ids" in batch:
        return (batch["segment_ids"] != 0).astype(jnp.float32).sum()
    return jnp.asarray(batch["tokens"].size, jnp.float32)


def _micro_batches(batch: dict, grad_accum: int) -> dict:
    """`[batch, ...]` arrays as `[grad_accum, batch // grad_accum, ...]`, strided rows."""
    def split(x):
        rows = x.shape[0]
        if rows % grad_accum:
            raise ValueError(f"train.grad_accum={grad_accum} does not divide the batch of {rows}")
        return jnp.swapaxes(x.reshape(rows // grad_accum, grad_accum, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


ToModel = Callable[[Any, jax.Array], tuple[Any, Any]]


def summed_loss_and_grads(params: Any, batch: dict, config: ModelConfig,
                          grad_accum: int, to_model: ToModel | None = None,
                          loss_chunk: int = 0) -> tuple[jax.Array, Any]:
    """(sum of answer-token losses, its gradient w.r.t. `params`) over `batch`, in `grad_accum`
    micro-batches. to_model: (`params`, micro-batch index i32[]) -> (the model's params, its
    `forward` adapters or None); default: (`params`, None). loss_chunk: positions per
    vocabulary projection (0: all at once)."""
    def summed(p, micro, index):
        model, adapters = (p, None) if to_model is None else to_model(p, index)
        losses, _ = batch_token_losses(model, micro, config, adapters=adapters,
                                       chunk=loss_chunk)
        return losses.sum()

    grad_fn = jax.value_and_grad(summed)
    if grad_accum == 1:
        return grad_fn(params, batch, jnp.zeros((), jnp.int32))

    def body(carry, scanned):
        loss_sum, grads = carry
        micro_loss, micro_grads = grad_fn(params, *scanned)
        return (loss_sum + micro_loss, jax.tree.map(jnp.add, grads, micro_grads)), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (loss_sum, grads), _ = jax.lax.scan(
        body, (jnp.zeros((), jnp.float32), zeros),
        (_micro_batches(batch, grad_accum), jnp.arange(grad_accum, dtype=jnp.int32)))
    return loss_sum, grads


def lora_to_model(state: TrainState) -> ToModel | None:
    """`to_model` of a LoRA state (None otherwise): adapters `t` -> (base, unmerged adapters)
    with dropout keys from `state.rng` folded with the step and the micro-batch index."""
    if trainable(state.params) is state.params:
        return None
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

    def to_model(t, index):
        rng = jax.random.key_data(jax.random.fold_in(key, index))
        return with_trainable(state.params, t).unmerged(rng)

    return to_model


def stochastic_to_model(state: TrainState, to_model: ToModel | None) -> ToModel:
    """`to_model` that first rounds the trainable weights stochastically to bf16 values
    (`headjax.train.rounding.stochastic_view`, gradient straight through), with one key per step
    from `state.rng` (every micro-batch sees the same rounding), then applies `to_model`."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step),
                             ROUNDING_STREAM)

    def rounded(t, index):
        view = stochastic_view(t, key)
        return (view, None) if to_model is None else to_model(view, index)

    return rounded


def make_train_step(config: ModelConfig, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, *, grad_accum: int = 1,
                    loss_chunk: int = 0, rounding: str = "nearest") -> StepFn:
    """`step(state, batch) -> (state, metrics)`; metrics: loss, grad_norm, lr, tokens,
    answer_tokens (f32 scalars). `lr` is the rate this step applied. rounding: how the f32
    weights become the bf16 compute copy (`ROUNDINGS`; "stochastic" needs `config.dtype`
    bfloat16)."""
    if grad_accum < 1:
        raise ValueError(f"train.grad_accum: must be >= 1, got {grad_accum}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"train.rounding: {rounding!r} not in {ROUNDINGS}")
    if rounding == "stochastic" and config.dtype != "bfloat16":
        raise ValueError(f"train.rounding: 'stochastic' rounds to the bf16 compute copy; "
                         f"model.dtype is {config.dtype!r}")

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        count = jnp.maximum(answer_token_count(batch), 1.0)
        train = trainable(state.params)
        to_model = lora_to_model(state)
        if rounding == "stochastic":
            to_model = stochastic_to_model(state, to_model)
        loss_sum, grads = summed_loss_and_grads(train, batch, config, grad_accum, to_model,
                                                loss_chunk)
        grads = jax.tree.map(lambda g: g / count, grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, train)
        params = with_trainable(state.params, optax.apply_updates(train, updates))
        metrics = {"loss": loss_sum / count, "grad_norm": optax.tree.norm(grads),
                   "lr": jnp.asarray(schedule(state.step), jnp.float32),
                   "tokens": input_token_count(batch), "answer_tokens": answer_token_count(batch)}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return step


def jit_train_step(step: StepFn, state_shardings: Any, batch_shardings: Any,
                   metrics_sharding: Any) -> StepFn:
    """`step` compiled with explicit shardings; the incoming state's buffers are donated."""
    return jax.jit(step, in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, metrics_sharding), donate_argnums=(0,))
