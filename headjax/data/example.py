"""An example, a task and how its answers are graded.

A task yields `Example(prompt, answer, task, metadata)`: `prompt` is the user message, `answer`
the bare target text (the SFT target, followed by the template's end-of-turn token). Splits are
disjoint by construction: a question belongs to `test` iff a hash of its text (`Example.key`)
falls in the test bucket (`TEST_FRACTION` of the question space), so no seed or size can leak a
test question into training. Test examples are also de-duplicated by question text.

Grading (`answer_grader`, the one dispatch every task source uses): after the task's `extract`
has cut the final answer out of the model's text, "number" scores exact numeric equality of the
last number, "text" equal text ignoring case, "auto" picks "number" when every answer is a
number, else "text".
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from headjax.data.answers import extract_answer, extract_number

SPLITS = ("train", "test")
KINDS = ("basic", "complex")
TEST_FRACTION = 0.2
GRADINGS = ("number", "text", "auto")
_CHUNK = 256  # candidates drawn per generator call
_MAX_DRAW_FACTOR = 50  # give up after drawing this many times the requested examples


@dataclasses.dataclass(frozen=True)
class Example:
    """One task instance: user prompt, bare target answer, task name, task-specific metadata.

    messages: for a multi-turn chat, every turn before the final answer ({"role", "content"};
      roles system, user, assistant, tool); `prompt` is then the last user turn's text. Empty
      for a single-turn example, whose turns are `metadata["system"]` (if any) and `prompt`.
    """

    prompt: str
    answer: str
    task: str
    metadata: dict = dataclasses.field(default_factory=dict)
    messages: tuple[dict[str, str], ...] = ()

    @property
    def key(self) -> str:
        """The text that decides the split and test de-duplication: the prompt, or for a
        multi-turn chat the whole conversation before the answer."""
        if not self.messages:
            return self.prompt
        return "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in self.messages)


@dataclasses.dataclass(frozen=True)
class Task:
    """A named task.

    draw: (seed, count) -> candidate examples, about `count` of them and at least one (any split;
      `examples` filters them); None for a streamed task.
    grade: (example, extracted answer text) -> score in [0, 1].
    extract: model output text -> final answer text.
    stream: for a dataset read as a stream, () -> a fresh iterable of its examples in a fixed
      order with a resumable position (`headjax.data.sources.ExampleStream`); `examples` then
      takes the first examples of the split in that order (the seed is not used) and training
      reads it on (`headjax.data.streaming`).
    """

    name: str
    kind: str
    draw: Callable[[int, int], list[Example]] | None
    grade: Callable[[Example, str], float]
    extract: Callable[[str], str] = extract_answer
    stream: Callable[[], Iterable[Example]] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if (self.draw is None) == (self.stream is None):
            raise ValueError(f"task {self.name!r}: give exactly one of draw and stream")

    def examples(self, split: str, n: int, seed: int) -> list[Example]:
        """`n` examples of `split` ("train" or "test"), a deterministic function of `seed`."""
        if split not in SPLITS:
            raise ValueError(f"task {self.name!r}: split must be one of {SPLITS}, got {split!r}")
        if n < 0:
            raise ValueError(f"task {self.name!r}: n must be >= 0, got {n}")
        if n == 0:
            return []
        chosen: list[Example] = []
        seen: set[str] = set()
        drawn = 0
        for candidate in self._candidates(split, seed):
            drawn += 1
            if drawn > _MAX_DRAW_FACTOR * max(n, _CHUNK):
                raise ValueError(f"task {self.name!r}: found only {len(chosen)} of {n} distinct "
                                 f"{split} examples in {drawn - 1} draws; the task is too small")
            if split_of(candidate.key) != split:
                continue
            if split == "test":
                if candidate.key in seen:
                    continue
                seen.add(candidate.key)
            chosen.append(candidate)
            if len(chosen) == n:
                return chosen
        raise ValueError(f"task {self.name!r}: found only {len(chosen)} of {n} distinct {split} "
                         f"examples in the whole stream; the task is too small")

    def _candidates(self, split: str, seed: int) -> Iterator[Example]:
        if self.stream is not None:
            yield from self.stream()
            return
        for round_ in itertools.count():
            candidates = self.draw(_derived_seed(seed, SPLITS.index(split), round_), _CHUNK)
            if not candidates:
                raise ValueError(f"task {self.name!r}: draw returned no examples")
            yield from candidates

    def score(self, example: Example, model_answer_text: str) -> float:
        """Score in [0, 1] of the model's output text for `example` (rounded to 1e-9, as
        graders computing ratios can return 0.9999999999999999 for an exact answer)."""
        return round(float(self.grade(example, self.extract(model_answer_text))), 9)


def split_of(prompt: str) -> str:
    """The split a prompt belongs to: "test" for a `TEST_FRACTION` hash bucket, else "train"."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "little") / 2**64 < TEST_FRACTION else "train"


def _derived_seed(seed: int, split_index: int, round_: int) -> int:
    return int(np.random.SeedSequence([seed, split_index, round_]).generate_state(1)[0])


def numbers_equal(expected: str, answer: str) -> float:
    """1.0 if both texts parse as the same number (relative tolerance 1e-9), else 0.0."""
    try:
        return float(math.isclose(float(expected), float(answer), rel_tol=1e-9, abs_tol=1e-12))
    except ValueError:
        return 0.0


def texts_equal(expected: str, answer: str) -> float:
    """1.0 if the texts are equal ignoring case and surrounding whitespace, else 0.0."""
    return float(expected.strip().lower() == answer.strip().lower())


def is_number(text: str) -> bool:
    """Whether `text` parses as a float."""
    try:
        float(text)
    except ValueError:
        return False
    return True


_GRADERS = {"number": (numbers_equal, extract_number), "text": (texts_equal, extract_answer)}


def answer_grader(grading: str, answers: Sequence[str] = (), *, task: str = "?"
                  ) -> tuple[Callable[[Example, str], float], Callable[[str], str]]:
    """(grade, extract) of `grading` (one of `GRADINGS`; "auto" looks at `answers`)."""
    if grading not in GRADINGS:
        raise ValueError(f"task {task!r}: grading must be one of {GRADINGS}, got {grading!r}")
    if grading == "auto":
        grading = "number" if answers and all(is_number(a) for a in answers) else "text"
    equal, extract = _GRADERS[grading]
    return (lambda example, answer: equal(example.answer, answer)), extract


def fixed_task(name: str, kind: str, examples: Sequence[Example], grading: str = "auto"
               ) -> Task:
    """A task over a fixed list of `examples`, split by `Example.key` like every task; each draw
    is a seeded permutation of all of them, so a split's examples are distinct until it runs
    out. grading: see `answer_grader` ("auto" looks at every answer)."""
    rows = tuple(examples)
    grade, extract = answer_grader(grading, [e.answer for e in rows], task=name)

    def draw(seed: int, count: int) -> list[Example]:
        return [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]

    return Task(name, kind, draw, grade, extract)
