"""Fixed probe batches of one task, the inputs of its head activation pattern.

The probe set is a deterministic function of (task, split, num_samples, seed, tokenizer,
max_len): the task's first `num_samples` examples of `split` for `seed`, chat-templated with
answer-only loss masks (`tokenize_example`), in order, `batch_size` per batch. Each batch is
padded to the smallest of `buckets` (default `default_buckets(max_len)`) holding its longest
example, and the last batch is filled up with padding rows (segment id 0, loss mask 0), so the
pattern computation compiles few shapes and padding rows carry no weight.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from headjax.data.batching import bucket_length, default_buckets, pack_rows
from headjax.data.example import Example, Task
from headjax.data.tasks import get_task
from headjax.data.tokenize import tokenize_examples

log = logging.getLogger(__name__)


def example_batches(examples: Sequence[Example], tokenizer, *, batch_size: int, max_len: int,
                    buckets: Sequence[int] | None = None, name: str = "examples"
                    ) -> list[dict[str, np.ndarray]]:
    """`examples` in order as fixed batches in the batch convention (`tokens i32[batch_size,
    bucket]`, `loss_mask`, `segment_ids`, `positions`, `task_ids` 0 on tokens and -1 on
    padding), the last one filled up with padding rows. Examples longer than `max_len` tokens
    are left out (logged with their count, under `name`)."""
    if batch_size <= 0:
        raise ValueError(f"{name}: batch_size must be positive, got {batch_size}")
    tokenized, _, dropped = tokenize_examples(examples, tokenizer, max_len)
    if not tokenized:
        raise ValueError(f"{name}: none of {len(examples)} examples fits max_len={max_len}")
    if dropped:
        log.warning("%s: %d of %d examples exceed max_len=%d and are left out", name, dropped,
                    len(examples), max_len)
    buckets = tuple(buckets) if buckets else default_buckets(max_len)
    batches = []
    for start in range(0, len(tokenized), batch_size):
        chunk = tokenized[start:start + batch_size]
        rows = [[(example, 0)] for example in chunk] + [[]] * (batch_size - len(chunk))
        length = bucket_length(max(len(e["tokens"]) for e in chunk), buckets)
        batches.append(pack_rows(rows, length, tokenizer.pad_token_id))
    return batches


def probe_batches(task: str | Task, tokenizer, *, num_samples: int, batch_size: int,
                  max_len: int, split: str = "test", seed: int = 0,
                  buckets: Sequence[int] | None = None) -> list[dict[str, np.ndarray]]:
    """The probe set of `task` (see the module docstring) as `example_batches`."""
    task = get_task(task) if isinstance(task, str) else task
    return example_batches(task.examples(split, num_samples, seed), tokenizer,
                           batch_size=batch_size, max_len=max_len, buckets=buckets,
                           name=f"task {task.name!r} probe")
