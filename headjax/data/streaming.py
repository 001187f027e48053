"""The training examples of a streamed task, read in stream order with a resumable position.

A streamed task (`Task.stream`, `headjax.data.sources`) is never held in memory: `StreamPool`
reads it on, keeps the examples of the train split (by question hash, like every task) that fit
`max_len` tokens, tokenizes each when it is first needed and starts the stream again for the
next epoch. Pick k of the task is its k-th kept example. The position after pick k is
(epoch, the dataset's own `state_dict()` right after that example's row), so a batcher resumed
from it reads the identical examples on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from headjax.data.example import split_of
from headjax.data.tokenize import ExampleTooLongError, tokenize_example

log = logging.getLogger(__name__)


class StreamPool:
    """The `Batcher`'s pool of one streamed task (module docstring).

    open_stream: () -> a fresh `ExampleStream` (iterable of examples with `set_epoch`,
      `state_dict` and `load_state_dict`).
    """

    def __init__(self, name: str, open_stream: Callable, tokenizer, max_len: int):
        self.name, self._open, self._tokenizer, self._max_len = (name, open_stream, tokenizer,
                                                                 max_len)
        self.index = 0  # the pick whose example is cached or read next
        self.dropped = 0  # examples over max_len skipped so far
        self._position: tuple[int, dict | None] = (0, None)  # after pick index - 1
        self._epoch = 0
        self._stream = self._iterator = None
        self._from_start, self._kept_in_epoch = True, 0
        self._cached: tuple[dict, tuple[int, dict]] | None = None

    def example(self, pick: int) -> dict:
        """The tokenized example of `pick` (the current pick, or the one after it)."""
        self._consume_until(pick)
        if self._cached is None:
            self._cached = self._read()
        return self._cached[0]

    def _consume_until(self, pick: int) -> None:
        if pick < self.index or pick > self.index + 1:
            raise ValueError(f"data: task {self.name!r} is streamed in order; pick {pick} "
                             f"requested at pick {self.index}")
        if pick == self.index + 1:
            if self._cached is None:
                raise ValueError(f"data: task {self.name!r}: pick {self.index} was never read")
            self._position = self._cached[1]
            self._cached = None
            self.index = pick

    def _open_epoch(self, state: dict | None) -> None:
        self._from_start, self._kept_in_epoch = state is None, 0
        self._stream = self._open()
        self._stream.set_epoch(self._epoch)
        if state is not None:
            self._stream.load_state_dict(state)
        self._iterator = iter(self._stream)

    def _read(self) -> tuple[dict, tuple[int, dict]]:
        """The next kept example and the position after its row."""
        if self._iterator is None:
            self._epoch, state = self._position
            self._open_epoch(state)
        while True:
            example = next(self._iterator, None)
            if example is None:
                if self._from_start and self._kept_in_epoch == 0:
                    raise ValueError(f"data: task {self.name!r}: no example of the train split "
                                     f"fits max_len={self._max_len} tokens in the whole stream")
                self._epoch += 1
                self._open_epoch(None)
                continue
            state = self._stream.state_dict()
            if split_of(example.key) != "train":
                continue
            try:
                tokenized = tokenize_example(example, self._tokenizer, self._max_len)
            except ExampleTooLongError:
                self.dropped += 1
                if self.dropped in (1, 1000):
                    log.warning("data: task %r: a streamed example exceeds max_len=%d tokens "
                                "and is skipped (%d so far)", self.name, self._max_len,
                                self.dropped)
                continue
            self._kept_in_epoch += 1
            return tokenized, (self._epoch, state)

    def state_dict(self, picks: int) -> dict:
        """JSON-able position after `picks` picks (the batcher's count for this task)."""
        self._consume_until(picks)
        epoch, state = self._position
        return {"picks": self.index, "epoch": epoch, "dataset": state}

    def load_state_dict(self, state: Mapping) -> None:
        """Continue after the pick at which `state_dict` was taken."""
        self.index = int(state["picks"])
        self._position = (int(state["epoch"]), state["dataset"])
        self._stream = self._iterator = self._cached = None
