"""The paper's SFT improvements as trainer options (config section `guide`).

A target task with few training samples (`data.tasks = (target,)`, `data.train_samples = n`)
is learned with the help of plentiful basic-task data and the activation patterns:

  a. Pattern-guided data mixing, `guide.mixture = "pattern"`: the weights a_i of the basic
     tasks `guide.basis` are the non-negative least-squares fit of the target's pattern on
     theirs (`headjax.heads.fit_combination(method="nnls")`, intercept free), and the
     preliminary set holds N * a_i / sum_j a_j examples of basic task i (N =
     `guide.preliminary_samples`, rounded by largest remainder so the counts add up to N).
     Baselines: "uniform" (a_i = 1) and "random" (a ~ Dirichlet(1, ..., 1), seeded).
  c. Schedule, `guide.schedule`: "joint" trains `train.steps` steps on the preliminary set and
     the n target samples together (each drawn in proportion to its count); "warm_start" first
     trains `guide.warm_steps` steps on the preliminary set alone (a run of its own in
     `guide.warm_dir`), then `train.steps` steps on the n target samples.
  b. Head-targeted SFT, `guide.heads = "pattern"`: in the target phase only the parameters of
     the top `guide.head_fraction` heads by the target's activation pattern, measured on its n
     training samples at the model entering that phase, are updated (optimizer mask,
     `headjax.heads.head_parameter_mask`: q/o slices, the k/v group with `train.trainable_kv`,
     the layer's MLP with `guide.train_mlp`). Baseline: "random", as many heads drawn uniformly.
     With `lora.enabled` the chosen heads get head-LoRA adapters instead (`headjax.lora`: the
     `lora.targets` projections, restricted to those heads' slices); `guide.lora_budget_rank`
     sets their rank so the adapters hold about as many parameters as plain LoRA of that rank.

Patterns for (a): `guide.patterns` names an `.npz` of `[layers, heads]` arrays keyed by task
name (e.g. the SFT-induced changes dAP of `scripts/reproduce.py`, the paper's choice); empty =
the current model's activation patterns, computed at the start (the target on its n training
samples, each basic task on `guide.probe_samples` of its own training split).

The choices themselves (mixture weights, preliminary counts, head selection) are pure functions of
`headjax.heads.guidance`; this module reads the config, draws the examples and runs the phases.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from headjax.data import Example, example_batches, get_task
from headjax.heads.guidance import (
    GUIDE_SCHEDULES,
    HEAD_SELECTIONS,
    MIXTURES,
    NoPatternFitError,
    mixture_weights,
    preliminary_counts,
    select_heads,
)
from headjax.heads.param_change import head_parameter_mask
from headjax.heads.patterns import activation_pattern
from headjax.lora import lora_spec, model_params, trainable_count
from headjax.model.config import ModelConfig

log = logging.getLogger(__name__)

_BASIS_SEED_OFFSET = 1000  # basic-task examples are drawn with data.seed + offset + index
__all__ = ["GUIDE_SCHEDULES", "HEAD_SELECTIONS", "MIXTURES", "NoPatternFitError", "Phase",
           "basis_examples", "budget_rank", "guide_patterns", "mixture_weights", "plan_phases",
           "preliminary_counts", "run_guided", "select_heads", "target_examples"]


def target_examples(config: ml_collections.ConfigDict) -> list[Example]:
    """`data.train_samples` training examples of each of `data.tasks` (seed data.seed + index);
    none of a streamed task, which training reads on (`headjax.data.streaming`)."""
    examples = []
    for index, name in enumerate(config.data.tasks):
        task = get_task(name)
        if task.stream is None:
            examples += task.examples("train", config.data.train_samples, config.data.seed + index)
    return examples


def basis_examples(config: ml_collections.ConfigDict, counts: Sequence[int]) -> list[Example]:
    """`counts[i]` training examples of basic task `guide.basis[i]`."""
    examples = []
    for index, (task, count) in enumerate(zip(config.guide.basis, counts, strict=True)):
        examples += get_task(task).examples("train", int(count),
                                            config.data.seed + _BASIS_SEED_OFFSET + index)
    return examples


def _pattern_of(params, model_config: ModelConfig, examples: Sequence[Example], tokenizer,
                config: ml_collections.ConfigDict, name: str) -> np.ndarray:
    batches = example_batches(examples, tokenizer, batch_size=config.heads.batch_size,
                              max_len=config.data.max_len, name=name)
    return activation_pattern(params, model_config, batches, loss_kind=config.heads.loss_kind,
                              progress=False, rules=config.mesh.rules).mean


def guide_patterns(config: ml_collections.ConfigDict, params, model_config: ModelConfig,
                   tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(target pattern `[layers, heads]`, basis patterns `[tasks, layers, heads]`) for
    `guide.mixture = "pattern"`: read from `guide.patterns`, or computed (module docstring)."""
    target, basis = config.data.tasks[0], tuple(config.guide.basis)
    shape = (model_config.num_layers, model_config.num_heads)
    if config.guide.patterns:
        path = Path(config.guide.patterns)
        if not path.is_file():
            raise FileNotFoundError(f"config.guide.patterns: no file {path}")
        with np.load(path) as data:
            missing = [t for t in (target, *basis) if t not in data.files]
            if missing:
                raise ValueError(f"config.guide.patterns: {path} has no pattern for {missing} "
                                 f"(it holds {sorted(data.files)})")
            arrays = {t: np.asarray(data[t], np.float64) for t in (target, *basis)}
        wrong = {t: a.shape for t, a in arrays.items() if a.shape != shape}
        if wrong:
            raise ValueError(f"config.guide.patterns: {path}: shapes {wrong}, expected {shape}")
        return arrays[target], np.stack([arrays[t] for t in basis])
    own = _pattern_of(params, model_config, target_examples(config), tokenizer, config,
                      f"task {target!r} training samples")
    probes = [_pattern_of(params, model_config,
                          get_task(t).examples("train", config.guide.probe_samples,
                                               config.data.seed + _BASIS_SEED_OFFSET + i),
                          tokenizer, config, f"task {t!r} guide probe")
              for i, t in enumerate(basis)]
    return own, np.stack(probes)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One training run of a guided schedule: its config and examples."""

    name: str
    config: ml_collections.ConfigDict
    examples: list[Example]


def plan_phases(config: ml_collections.ConfigDict, preliminary: list[Example]) -> list[Phase]:
    """The runs of `guide.schedule`: one ("joint", or no mixture) or two ("warm_start")."""
    own = target_examples(config)
    if config.guide.mixture == "none":
        return [Phase("target", config, own)]
    if config.guide.schedule == "joint":
        return [Phase("target", config, preliminary + own)]
    warm = config.copy_and_resolve_references()  # locked like `config`
    warm.run_dir = config.guide.warm_dir or str(Path(config.run_dir) / "warm_start")
    warm.checkpoint.dir = ""
    warm.checkpoint.export_final = False
    warm.train.steps = config.guide.warm_steps
    warm.train.warmup_steps = min(config.train.warmup_steps, config.guide.warm_steps)
    warm.train.trainable_heads = ""
    warm.guide.heads = "all"
    return [Phase("warm_start", warm, preliminary), Phase("target", config, own)]


Trainer = Callable[[ml_collections.ConfigDict, Any, list[Example], Any, Any], Any]


def trainable_parameters(config: ml_collections.ConfigDict, model_config: ModelConfig,
                          total: int, mask: Any, heads: np.ndarray | None) -> int:
    """Trainable parameters of a phase: the adapters' (head-LoRA budget) in a LoRA run, else
    the mask's ones (all parameters without a mask)."""
    if config.lora.enabled:
        lora = config.lora
        return trainable_count(model_config, lora_spec(lora.rank, lora.alpha, lora.targets,
                                                       heads))
    return total if mask is None else int(sum(np.asarray(m).sum() for m in jax.tree.leaves(mask)))


def budget_rank(model_config: ModelConfig, targets, heads: np.ndarray, plain_rank: int) -> int:
    """The head-LoRA rank (>= 1) on `heads` whose adapter parameters come nearest to those of
    plain LoRA of rank `plain_rank` on every head (adapter counts grow linearly with rank)."""
    budget = trainable_count(model_config, lora_spec(plain_rank, 1.0, targets))
    per_rank = trainable_count(model_config, lora_spec(1, 1.0, targets, heads))
    return max(1, round(budget / max(per_rank, 1)))


def _with_lora_rank(config: ml_collections.ConfigDict, rank: int) -> ml_collections.ConfigDict:
    """`config` with `lora.rank = rank`; `lora.alpha` stays, so the scale alpha / rank follows
    the rank as in PEFT, and a checkpoint merges with the config's alpha as any LoRA run's
    (`headjax.lora.restored_model_params`)."""
    config = config.copy_and_resolve_references()
    config.lora.rank = rank
    return config


def run_guided(config: ml_collections.ConfigDict, params, model_config: ModelConfig, tokenizer,
               train_phase: Trainer, *, mask: Any = None, heads: np.ndarray | None = None,
               write: bool = True) -> tuple[Any, dict]:
    """Run the phases of `config.guide` (a plain run when every option is off).

    train_phase(phase config, params, examples, mask or None, heads or None) -> TrainState
      trains one phase (heads: head-LoRA heads of a LoRA run).
    mask: a parameter mask for the target phase when `guide.heads` is "all" (e.g. the one of
      `train.trainable_heads`); None trains every parameter.
    heads: the same for a LoRA run, bool `[layers, heads]` head-LoRA heads (None: every head).
    A phase after the first starts from the previous one's model (merged, in a LoRA run).
    Returns (the last phase's TrainState, the record written to `run_dir/guide.json`: mixture
    weights and counts per basic task, the trained heads, trainable and total parameters).
    """
    g = config.guide
    key = jax.random.key(g.seed)
    record: dict = {"mixture": g.mixture, "schedule": g.schedule, "heads": g.heads}
    preliminary: list[Example] = []
    if g.mixture != "none":
        target, basis = (guide_patterns(config, params, model_config, tokenizer)
                         if g.mixture == "pattern" else (None, None))
        weights = mixture_weights(g.mixture, g.basis, jax.random.fold_in(key, 0),
                                  target=target, basis=basis)
        counts = preliminary_counts(weights, g.preliminary_samples)
        record["weights"] = dict(zip(g.basis, weights.tolist(), strict=True))
        record["counts"] = dict(zip(g.basis, counts.tolist(), strict=True))
        log.info("guide: preliminary set %s", record["counts"])
        preliminary = basis_examples(config, counts)
    state = None
    for phase in plan_phases(config, preliminary):
        if state is not None:
            params = model_params(state.params)
        phase_mask, phase_heads = (mask, heads) if phase.name == "target" else (None, None)
        if phase.name == "target" and g.heads != "all":
            scores = (_pattern_of(params, model_config, target_examples(config), tokenizer,
                                  config, "guide head selection") if g.heads == "pattern"
                      else np.zeros((model_config.num_layers, model_config.num_heads)))
            phase_heads = select_heads(g.heads, scores, g.head_fraction,
                                       jax.random.fold_in(key, 1))
            if not config.lora.enabled:
                phase_mask = head_parameter_mask(model_config, phase_heads,
                                                 include_kv=config.train.trainable_kv,
                                                 include_mlp=g.train_mlp)
            record["trained_heads"] = np.argwhere(phase_heads).tolist()
            if config.lora.enabled and g.lora_budget_rank:
                rank = budget_rank(model_config, config.lora.targets, phase_heads,
                                   g.lora_budget_rank)
                phase = dataclasses.replace(phase, config=_with_lora_rank(phase.config, rank))
                record["lora_rank"] = rank
        state = train_phase(phase.config, params, phase.examples, phase_mask,
                            phase_heads if config.lora.enabled else None)
    leaves = jax.tree.leaves(model_params(state.params))
    record["total_parameters"] = int(sum(np.size(p) for p in leaves))
    record["trainable_parameters"] = trainable_parameters(  # of the target phase, the last one
        phase.config, model_config, record["total_parameters"], phase_mask, phase_heads)
    if write and jax.process_index() == 0:
        path = Path(config.run_dir) / "guide.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
    return state, record
