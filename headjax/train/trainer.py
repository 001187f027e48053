"""Set up and run training from a validated config: mesh, shardings, optimizer, state, resume."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from headjax.lora import (
    LoraParams,
    init_adapters,
    lora_spec,
    params_axes,
    trainable,
    with_rank_rule,
)
from headjax.model.config import EXECUTION_FIELDS, ModelConfig
from headjax.model.loss import model_inputs
from headjax.model.transformer import param_shapes
from headjax.parallel import (
    batch_shardings,
    batch_spec,
    global_batch,
    like_params,
    make_mesh,
    param_shardings,
    replicated,
    with_activation_sharding,
)
from headjax.train.checkpoint import Checkpointer, abstract_tree
from headjax.train.config import validate
from headjax.train.loop import Hooks, run_loop
from headjax.train.optimizer import make_optimizer, make_schedule
from headjax.train.state import TrainState, create_state
from headjax.train.step import StepFn, jit_train_step, make_train_step

log = logging.getLogger(__name__)

BatchFactory = Callable[[dict | None], Iterator[dict]]


def model_config_for_training(model_config: ModelConfig, config: ml_collections.ConfigDict
                              ) -> ModelConfig:
    """`model_config` with the run's numerics: each of `EXECUTION_FIELDS` (dtype, param dtype,
    remat, attention, scan, answer positions) from the config's `model` section."""
    return model_config.replace(**{name: config.model[name] for name in EXECUTION_FIELDS})


def checkpoint_dir(config: ml_collections.ConfigDict) -> Path:
    """`checkpoint.dir`, or `run_dir/checkpoints` when empty."""
    return Path(config.checkpoint.dir or Path(config.run_dir) / "checkpoints")


def lora_params(config: ml_collections.ConfigDict, model_config: ModelConfig, params: Any,
                heads: np.ndarray | None = None) -> Any:
    """`params` wrapped with fresh adapters (`train.seed`) when `lora.enabled`, else unchanged.

    heads: bool `[layers, heads]` for head-LoRA (adapters on these heads only), or None.
    """
    if not config.lora.enabled:
        if heads is not None:
            raise ValueError("config.lora.enabled: head-LoRA heads given to a run without LoRA")
        return params
    spec = lora_spec(config.lora.rank, config.lora.alpha, config.lora.targets, heads,
                     config.lora.dropout)
    adapters = init_adapters(jax.random.key(config.train.seed), model_config, spec)
    return LoraParams(base=params, adapters=adapters, spec=spec)


def abstract_params(model_config: ModelConfig) -> Any:
    """The params as `jax.ShapeDtypeStruct`s in `model_config.param_dtype` (nothing allocated)."""
    dtype = jnp.dtype(model_config.param_dtype)
    return jax.tree.map(lambda shape: jax.ShapeDtypeStruct(shape, dtype),
                        param_shapes(model_config), is_leaf=lambda x: isinstance(x, tuple))


def state_shardings(params: Any, model_config: ModelConfig, optimizer, seed: int, mesh: Mesh,
                    rules) -> tuple[TrainState, Any]:
    """(abstract step-0 TrainState, its shardings by the logical-axis `rules` on `mesh`).

    `params`: the model's params or a `headjax.lora.LoraParams`, concrete or abstract
    (`abstract_params`); adapters shard like the weights they adapt, the optimizer state like
    the trainable part. A weight matrix that cannot shard on `mesh` raises
    (`headjax.parallel.param_shardings`).
    """
    shapes = jax.tree.map(lambda p: tuple(p.shape), params)
    params_sh = param_shardings(params_axes(params, model_config), shapes,
                                with_rank_rule(rules), mesh)
    abstract = jax.eval_shape(lambda p: create_state(p, optimizer, seed), params)
    state_sh = like_params(abstract, trainable(params_sh), mesh).replace(params=params_sh)
    return abstract, state_sh


def sharded_state(params: Any, model_config: ModelConfig, optimizer, seed: int, mesh,
                  rules) -> tuple[TrainState, Any]:
    """(step-0 TrainState placed on `mesh` by the logical-axis `rules`, its shardings).

    `params` are the model's params or a `headjax.lora.LoraParams` (`state_shardings`).
    """
    _, state_sh = state_shardings(params, model_config, optimizer, seed, mesh, rules)
    dtype = jnp.dtype(model_config.param_dtype)
    params = jax.device_put(jax.tree.map(lambda p: jnp.asarray(p, dtype), params),
                            state_sh.params)

    def create(p):
        return create_state(p, optimizer, seed)

    return jax.jit(create, out_shardings=state_sh)(params), state_sh


class TrainSetup(NamedTuple):
    """What a run's config builds before any weight is read: mesh, rules, schedule, optimizer
    and the (unjitted) step, which pins activations to the mesh (`constrain`)."""

    mesh: Mesh
    rules: tuple
    schedule: optax.Schedule
    optimizer: optax.GradientTransformation
    step: StepFn


def train_setup(config: ml_collections.ConfigDict, model_config: ModelConfig, *,
                mask: Any = None, devices: Any = None) -> TrainSetup:
    """The mesh (over `devices`, default all), optimizer and step that `config` asks for.

    Raises ValueError naming both numbers when the global batch or its micro-batches cannot be
    split over the mesh's batch axes.
    """
    t = config.train
    mesh = make_mesh({"data": config.mesh.data, "fsdp": config.mesh.fsdp,
                      "tensor": config.mesh.tensor}, devices)
    rules = tuple(tuple(rule) for rule in config.mesh.rules)
    for rows, what in ((t.batch_size, "train.batch_size"),
                       (t.batch_size // t.grad_accum, "train.batch_size / train.grad_accum")):
        try:
            batch_spec((rows,), rules, mesh)
        except ValueError as err:
            raise ValueError(f"config.{what}: {err}") from None
    schedule = make_schedule(t.schedule, t.lr, t.steps, t.warmup_steps, t.end_lr_fraction)
    mu_dtype = None if t.opt_state_dtype == model_config.param_dtype else t.opt_state_dtype
    optimizer = make_optimizer(schedule, weight_decay=t.weight_decay, grad_clip=t.grad_clip,
                               b1=t.b1, b2=t.b2, mask=mask, mu_dtype=mu_dtype)
    step = make_train_step(model_config, optimizer, schedule, grad_accum=t.grad_accum,
                           loss_chunk=t.loss_chunk, rounding=t.rounding)
    return TrainSetup(mesh, rules, schedule, optimizer,
                      with_activation_sharding(step, mesh, rules))


def train(config: ml_collections.ConfigDict, *, model_config: ModelConfig, params: Any,
          make_batches: BatchFactory, hooks: Hooks | None = None, mask: Any = None,
          heads: np.ndarray | None = None) -> TrainState:
    """Train `params` per `config` (resuming from the newest good checkpoint in the run).

    make_batches: iterator state dict (None = from the start) -> iterator of numpy batches in the
      batch convention, `[train.batch_size, seq]` each, with a `state_dict()` method; keys
      other than the `Batch` fields (e.g. task names) are ignored.
    mask: optional 0/1 parameter mask (see `headjax.train.optimizer.make_optimizer`); not with
      `lora.enabled`.
    heads: with `lora.enabled`, bool `[layers, heads]`: head-LoRA on these heads only.
    With `lora.enabled` the state's params are a `headjax.lora.LoraParams` (the base frozen,
    adapters from `train.seed`) and the optimizer holds the adapters' state only.
    """
    validate(config)
    if config.lora.enabled and mask is not None:
        raise ValueError("config.lora.enabled: a LoRA run takes its heads as head-LoRA heads, "
                         "not as a parameter mask")
    t = config.train
    model_config = model_config_for_training(model_config, config)
    mesh, rules, _, optimizer, step_fn = train_setup(config, model_config, mask=mask)
    params = lora_params(config, model_config, params, heads)
    state, state_sh = sharded_state(params, model_config, optimizer, t.seed, mesh, rules)
    del params

    checkpointer = Checkpointer(checkpoint_dir(config), keep=config.checkpoint.keep,
                                async_save=config.checkpoint.async_save)
    restored = checkpointer.restore_latest(abstract_tree(state, state_sh))
    iterator_state = None
    if restored is not None:
        step, state, extra = restored
        iterator_state = extra["data"]
        log.info("resuming from step %d in %s", step, checkpointer.directory)
    batches = make_batches(iterator_state)

    def put_batch(batch: dict) -> dict:
        rows = batch["tokens"].shape[0]
        if rows != t.batch_size:
            raise ValueError(f"data: a batch has {rows} rows but train.batch_size is "
                             f"{t.batch_size}")
        arrays = model_inputs(batch)
        return global_batch(arrays, batch_shardings(arrays, rules, mesh))

    compiled: dict = {}

    def sharded_step(state: TrainState, batch: dict):
        shardings = {key: value.sharding for key, value in batch.items()}
        signature = tuple(sorted((key, str(s.spec)) for key, s in shardings.items()))
        if signature not in compiled:
            compiled[signature] = jit_train_step(step_fn, state_sh, shardings, replicated(mesh))
        return compiled[signature](state, batch)

    try:
        return run_loop(config, model_config, state, sharded_step, batches, put_batch,
                        checkpointer, hooks)
    finally:
        checkpointer.close()
