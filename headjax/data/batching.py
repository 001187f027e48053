"""Padded or packed numpy batches over a weighted task mixture, deterministic and resumable.

Batch convention (see `headjax.model.loss`): `tokens i32[batch, seq]`, `loss_mask f32[batch, seq]`,
`segment_ids i32[batch, seq]` (1, 2, ... per example in a row, 0 = padding), `positions
i32[batch, seq]` (restarting at 0 in each segment, 0 on padding), plus `task_ids i32[batch, seq]`
(index into `Batcher.task_names` per token, -1 on padding).

The example stream is a pure function of the seed and two counters: draw d picks a task by the
mixture weights, and the k-th pick of a task takes its example `perm_e[k % n]` from a fresh
permutation per epoch e = k // n. So `state_dict()` is a few integers and `from_state` resumes the
identical stream. A streamed task (`streams`) is not held in memory: its k-th pick is its k-th
training example in stream order (`headjax.data.streaming.StreamPool`), and the state adds the
stream's position.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from headjax.data.example import Example
from headjax.data.streaming import StreamPool
from headjax.data.tokenize import tokenize_examples

log = logging.getLogger(__name__)

_CHOICE_BLOCK = 4096  # task choices drawn per RNG block
_STATE_VERSION = 1


def default_buckets(max_len: int, smallest: int = 16) -> tuple[int, ...]:
    """Padded lengths: powers of two from `smallest` below `max_len`, then `max_len` itself."""
    buckets, length = [], smallest
    while length < max_len:
        buckets.append(length)
        length *= 2
    return (*buckets, max_len)


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= `length`."""
    for bucket in sorted(buckets):
        if bucket >= length:
            return bucket
    raise ValueError(f"data: a sequence of {length} tokens exceeds the largest bucket "
                     f"{max(buckets)}")


def pack_rows(rows: Sequence[Sequence[tuple[dict, int]]], length: int, pad_id: int
              ) -> dict[str, np.ndarray]:
    """A batch of `len(rows)` rows of `length` tokens; each row holds the listed
    (tokenized example, task id) segments back to back, then padding."""
    shape = (len(rows), length)
    batch = {"tokens": np.full(shape, pad_id, np.int32),
             "loss_mask": np.zeros(shape, np.float32),
             "segment_ids": np.zeros(shape, np.int32),
             "positions": np.zeros(shape, np.int32),
             "task_ids": np.full(shape, -1, np.int32)}
    for row, segments in enumerate(rows):
        start = 0
        for segment, (example, task_id) in enumerate(segments, start=1):
            end = start + len(example["tokens"])
            if end > length:
                raise ValueError(f"data: row {row} needs {end} tokens but the batch has {length}")
            batch["tokens"][row, start:end] = example["tokens"]
            batch["loss_mask"][row, start:end] = example["loss_mask"]
            batch["segment_ids"][row, start:end] = segment
            batch["positions"][row, start:end] = np.arange(end - start)
            batch["task_ids"][row, start:end] = task_id
            start = end
    return batch


def _dropped_per_task(examples: Sequence[Example], kept: Sequence[int]) -> dict[str, int]:
    """{task: number of its examples not in `kept`}, only tasks that lost some."""
    kept_set = set(kept)
    return dict(collections.Counter(e.task for i, e in enumerate(examples) if i not in kept_set))


def _fingerprint(examples: Sequence[Example], streams: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for e in examples:
        digest.update(f"{e.task}\x00{e.key}\x00{e.answer}\x01".encode())
    for name in sorted(streams):
        digest.update(f"{name}\x02".encode())
    return digest.hexdigest()[:16]


class Batcher:
    """Infinite iterator of numpy batches `[batch_size, seq]` over `examples`.

    weights: {task: mixture weight}; default proportional to each task's example count.
    packing: False pads each batch to the smallest of `buckets` (default `default_buckets`)
      holding its longest example; True packs examples greedily into rows of `max_len` tokens.
    Examples longer than `max_len` tokens are dropped (logged); `num_dropped` counts them and
    `dropped_per_task` counts them per task (of `examples`; a stream counts its own).
    streams: {task: () -> a fresh `ExampleStream`} of streamed tasks (examples of these tasks in
      `examples` are ignored); with more than one task, `weights` must name them.
    """

    def __init__(self, examples: Sequence[Example], tokenizer, *, batch_size: int, max_len: int,
                 packing: bool = False, seed: int = 0, weights: Mapping[str, float] | None = None,
                 buckets: Sequence[int] | None = None,
                 streams: Mapping[str, Callable] | None = None):
        if batch_size <= 0 or max_len <= 0:
            raise ValueError(f"data: batch_size and max_len must be positive, got {batch_size} "
                             f"and {max_len}")
        self.batch_size, self.max_len, self.packing, self.seed = batch_size, max_len, packing, seed
        self.buckets = tuple(sorted(buckets)) if buckets else default_buckets(max_len)
        if self.buckets[-1] < max_len:
            raise ValueError(f"data: the largest bucket {self.buckets[-1]} is below max_len "
                             f"{max_len}")
        streams = dict(streams or {})
        examples = [e for e in examples if e.task not in streams]
        self.fingerprint = _fingerprint(examples, tuple(streams))
        tokenized, kept, self.num_dropped = tokenize_examples(examples, tokenizer, max_len)
        self.dropped_per_task = _dropped_per_task(examples, kept)
        for task, dropped in self.dropped_per_task.items():
            log.warning("data: task %r: %d of its examples exceed max_len=%d tokens and are "
                        "dropped", task, dropped, max_len)
        self.task_names = tuple(sorted({examples[i].task for i in kept} | set(streams)))
        if not self.task_names:
            raise ValueError(f"data: none of the {len(examples)} examples fits in max_len "
                             f"{max_len} tokens")
        self._pool = {t: [x for x, i in zip(tokenized, kept, strict=True) if examples[i].task == t]
                      for t in self.task_names if t not in streams}
        self._streams = {t: StreamPool(t, open_stream, tokenizer, max_len)
                         for t, open_stream in streams.items()}
        self.mixture = self._mixture(weights)
        self.pad_id = tokenizer.pad_token_id
        self.draws = 0
        self.picks = dict.fromkeys(self.task_names, 0)
        self._choice_block = functools.lru_cache(maxsize=2)(self._choice_block)
        self._epoch_order = functools.lru_cache(maxsize=2 * len(self.task_names))(
            self._epoch_order)

    def _mixture(self, weights: Mapping[str, float] | None) -> dict[str, float]:
        """{task: unnormalised weight}; stored as given so a resumed batcher normalises the
        same numbers into bit-identical sampling probabilities."""
        if weights is None:
            if self._streams and len(self.task_names) > 1:
                raise ValueError(f"data: streamed tasks {sorted(self._streams)} have no example "
                                 f"count to mix by; give data.weights")
            return {t: float(len(self._pool[t])) if t in self._pool else 1.0
                    for t in self.task_names}
        unknown = sorted(set(weights) - set(self.task_names))
        if unknown:
            too_long = {t: self.dropped_per_task[t] for t in unknown if t in self.dropped_per_task}
            raise ValueError(f"data: weights name tasks without examples: {unknown}"
                             + (f" (all examples over max_len={self.max_len} tokens: {too_long})"
                                if too_long else ""))
        mixture = {t: float(weights.get(t, 0.0)) for t in self.task_names}
        if min(mixture.values()) < 0 or sum(mixture.values()) <= 0:
            raise ValueError(f"data: mixture weights must be non-negative with a positive sum, "
                             f"got {mixture}")
        return mixture

    def _probabilities(self) -> np.ndarray:
        w = np.array([self.mixture[t] for t in self.task_names], np.float64)
        return w / w.sum()

    def _choice_block(self, block: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 0, block])
        return rng.choice(len(self.task_names), size=_CHOICE_BLOCK, p=self._probabilities())

    def _epoch_order(self, task_id: int, epoch: int) -> np.ndarray:
        size = len(self._pool[self.task_names[task_id]])
        return np.random.default_rng([self.seed, 1, task_id, epoch]).permutation(size)

    def _task_of_draw(self, draw: int) -> int:
        return int(self._choice_block(draw // _CHOICE_BLOCK)[draw % _CHOICE_BLOCK])

    def _example_of_pick(self, task_id: int, pick: int) -> dict:
        if self.task_names[task_id] in self._streams:
            return self._streams[self.task_names[task_id]].example(pick)
        pool = self._pool[self.task_names[task_id]]
        epoch, index = divmod(pick, len(pool))
        return pool[self._epoch_order(task_id, epoch)[index]]

    def _peek(self) -> tuple[dict, int]:
        task_id = self._task_of_draw(self.draws)
        return self._example_of_pick(task_id, self.picks[self.task_names[task_id]]), task_id

    def _advance(self, task_id: int) -> None:
        self.draws += 1
        self.picks[self.task_names[task_id]] += 1

    def _take(self) -> tuple[dict, int]:
        example, task_id = self._peek()
        self._advance(task_id)
        return example, task_id

    def __iter__(self) -> Batcher:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if not self.packing:
            rows = [[self._take()] for _ in range(self.batch_size)]
            longest = max(len(row[0][0]["tokens"]) for row in rows)
            return pack_rows(rows, bucket_length(longest, self.buckets), self.pad_id)
        rows = []
        for _ in range(self.batch_size):
            row = [self._take()]
            used = len(row[0][0]["tokens"])
            while used + len((candidate := self._peek())[0]["tokens"]) <= self.max_len:
                self._advance(candidate[1])
                row.append(candidate)
                used += len(candidate[0]["tokens"])
            rows.append(row)
        return pack_rows(rows, self.max_len, self.pad_id)

    def state_dict(self) -> dict:
        """JSON-serialisable position in the stream plus the settings that define it."""
        state = {"version": _STATE_VERSION, "draws": self.draws, "picks": dict(self.picks),
                 "seed": self.seed, "batch_size": self.batch_size, "max_len": self.max_len,
                 "packing": self.packing, "buckets": list(self.buckets),
                 "weights": dict(self.mixture), "fingerprint": self.fingerprint}
        if self._streams:
            state["streams"] = {t: pool.state_dict(self.picks[t])
                                for t, pool in self._streams.items()}
        return state

    @classmethod
    def from_state(cls, state: Mapping, examples: Sequence[Example], tokenizer,
                   streams: Mapping[str, Callable] | None = None) -> Batcher:
        """The batcher of `state_dict()` over the same `examples` and `streams`, continuing
        where it was."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"data: iterator state version {state.get('version')!r}, expected "
                             f"{_STATE_VERSION}")
        batcher = cls(examples, tokenizer, batch_size=state["batch_size"],
                      max_len=state["max_len"], packing=state["packing"], seed=state["seed"],
                      weights=state["weights"], buckets=state["buckets"], streams=streams)
        if batcher.fingerprint != state["fingerprint"]:
            raise ValueError("data: the examples differ from those the iterator state was saved "
                             "with (fingerprint mismatch); resume with the same tasks, "
                             "train_samples and seed")
        batcher.draws = int(state["draws"])
        batcher.picks = {t: int(state["picks"].get(t, 0)) for t in batcher.task_names}
        for task, pool in batcher._streams.items():
            pool.load_state_dict(state["streams"][task])
        return batcher
