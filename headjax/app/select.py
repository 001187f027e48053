"""Data selection by activation pattern as a trainer option (config section `select`).

The paper's second application: from a pool of candidate examples, train on those whose own
activation pattern is closest to the target task's.

  pool       `select.pool_samples` training examples of each task of `select.pool` (seed
             data.seed + 2000 + index), less those longer than `data.max_len` (which training
             could not use either)
  target     P*, the activation pattern of the target (`data.tasks = (target,)`) on its
             `data.train_samples` training examples at the model entering training
  scores     sim_i of every pool example's per-sample pattern S_i to P* over heads,
             `select.similarity` "cosine" or "pearson" (`headjax.heads.selection`)
  selection  `select.method`: "pattern" the top `select.fraction` of the pool by sim_i;
             baselines "random" (as many, seeded by `select.seed`) and "all" (the whole pool)
  training   `train.steps` steps on the selected examples only; with `select.with_target` the
             target's own training examples join them (each example drawn alike)

`run_dir/selection.json` records the method, similarity, fraction, pool size per task, and each
chosen example's pool index, task and score (scores for "pattern" only: the baselines need no
backward pass). The choices are pure functions of `headjax.heads.selection`; this module reads
the config, draws and scores the pool and runs the training.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from headjax.app.guide import Trainer, target_examples, trainable_parameters
from headjax.data import Example, example_batches, get_task, tokenize_examples
from headjax.heads.patterns import PatternResult, activation_pattern
from headjax.heads.selection import (
    SELECT_METHODS,
    SIMILARITIES,
    pattern_similarity,
    select_examples,
)
from headjax.model.config import ModelConfig

log = logging.getLogger(__name__)

_POOL_SEED_OFFSET = 2000  # pool examples are drawn with data.seed + offset + index
__all__ = ["SELECT_METHODS", "SIMILARITIES", "choose_examples", "pool_examples", "pool_scores",
           "run_selected"]


def pool_examples(config: ml_collections.ConfigDict, tokenizer) -> list[Example]:
    """The candidate pool: `select.pool_samples` training examples of each `select.pool` task,
    in task order, keeping those that fit `data.max_len` tokens."""
    examples = []
    for index, task in enumerate(config.select.pool):
        examples += get_task(task).examples("train", config.select.pool_samples,
                                            config.data.seed + _POOL_SEED_OFFSET + index)
    _, kept, dropped = tokenize_examples(examples, tokenizer, config.data.max_len)
    if dropped:
        log.warning("select: %d of %d pool examples exceed data.max_len=%d and are left out",
                    dropped, len(examples), config.data.max_len)
    if not kept:
        raise ValueError(f"config.select.pool: none of the {len(examples)} pool examples fits "
                         f"data.max_len={config.data.max_len}")
    return [examples[i] for i in kept]


def _patterns(params, model_config: ModelConfig, examples: Sequence[Example], tokenizer,
              config: ml_collections.ConfigDict, name: str) -> PatternResult:
    batches = example_batches(examples, tokenizer, batch_size=config.heads.batch_size,
                              max_len=config.data.max_len, name=name)
    return activation_pattern(params, model_config, batches, loss_kind=config.heads.loss_kind,
                              progress=False, rules=config.mesh.rules)


def pool_scores(config: ml_collections.ConfigDict, params, model_config: ModelConfig, tokenizer,
                pool: Sequence[Example]) -> np.ndarray:
    """sim_i `[pool]` of each pool example's per-sample pattern to the target's pattern on its
    training examples (`select.similarity`), one backward pass per batch of each."""
    target = _patterns(params, model_config, target_examples(config), tokenizer, config,
                       f"task {config.data.tasks[0]!r} training samples").mean
    per_sample = _patterns(params, model_config, pool, tokenizer, config,
                           "select pool").per_sample
    if len(per_sample) != len(pool):  # every fitting example has answer tokens
        raise ValueError(f"config.select.pool: {len(pool) - len(per_sample)} pool examples "
                         f"have no answer tokens to score")
    return pattern_similarity(per_sample, target, config.select.similarity)


def choose_examples(config: ml_collections.ConfigDict, params, model_config: ModelConfig,
                    tokenizer) -> tuple[list[Example], dict]:
    """(the chosen pool examples, the record of `run_dir/selection.json`)."""
    s = config.select
    pool = pool_examples(config, tokenizer)
    scores = (pool_scores(config, params, model_config, tokenizer, pool)
              if s.method == "pattern" else None)
    chosen = select_examples(s.method, len(pool), s.fraction, jax.random.key(s.seed),
                             scores=scores)
    record = {"method": s.method, "similarity": s.similarity, "fraction": s.fraction,
              "seed": s.seed, "with_target": s.with_target, "pool_size": len(pool),
              "pool": dict(Counter(e.task for e in pool)), "selected": len(chosen),
              "selected_per_task": dict(Counter(pool[i].task for i in chosen)),
              "examples": [{"index": int(i), "task": pool[i].task,
                            "score": None if scores is None else float(scores[i])}
                           for i in chosen]}
    if scores is not None:
        record["pool_score_mean"] = float(scores.mean())
    log.info("select: %d of %d pool examples (%s): %s", len(chosen), len(pool), s.method,
             record["selected_per_task"])
    return [pool[i] for i in chosen], record


def run_selected(config: ml_collections.ConfigDict, params, model_config: ModelConfig,
                 tokenizer, train_phase: Trainer, *, mask: Any = None,
                 heads: np.ndarray | None = None, write: bool = True) -> tuple[Any, dict]:
    """Choose the examples of `config.select` and train on them (module docstring).

    train_phase(config, params, examples, mask or None, heads or None) -> TrainState trains the
      run (mask and heads as in `headjax.app.guide.run_guided`).
    Returns (its TrainState, the record written to `run_dir/selection.json`).
    """
    examples, record = choose_examples(config, params, model_config, tokenizer)
    if config.select.with_target:
        examples = examples + target_examples(config)
    record["total_parameters"] = int(sum(np.size(p) for p in jax.tree.leaves(params)))
    record["trainable_parameters"] = trainable_parameters(config, model_config,
                                                         record["total_parameters"], mask, heads)
    if write and jax.process_index() == 0:  # before training: a cut-short run keeps its choice
        path = Path(config.run_dir) / "selection.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
    return train_phase(config, params, examples, mask, heads), record
