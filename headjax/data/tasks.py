"""Task registry: named example generators with disjoint train/test splits and a scorer.

A task yields `Example(prompt, answer, task, metadata)`: `prompt` is the user message, for
built-in tasks `f"{question}\n\nGive only the final answer."` so answers stay short; `answer` is
the bare target text (the SFT target, followed by the template's end-of-turn token). Splits
are disjoint by construction: a question belongs to `test` iff a hash of its text falls in the
test bucket (`TEST_FRACTION` of the question space), so no seed or size can leak a test
question into training. Test examples are also de-duplicated by question text.

Built-in tasks come from reasoning-gym (`reasoning_gym.create_dataset`); after `extract_answer`
has cut the final answer out of the model's text, numeric tasks score exact numeric equality,
`spell_backward` exact text and `word_sorting` the dataset's own `score_answer`. `register_task`
adds more (see `headjax.data.files` for JSONL/JSON/parquet tasks).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from headjax.data.answers import extract_answer, extract_number

SPLITS = ("train", "test")
KINDS = ("basic", "complex")
TEST_FRACTION = 0.2
INSTRUCTION = "Give only the final answer."
_CHUNK = 256  # candidates drawn per generator call
_MAX_DRAW_FACTOR = 50  # give up after drawing this many times the requested examples


@dataclasses.dataclass(frozen=True)
class Example:
    """One task instance: user prompt, bare target answer, task name, task-specific metadata."""

    prompt: str
    answer: str
    task: str
    metadata: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Task:
    """A named task.

    draw: (seed, count) -> candidate examples, about `count` of them and at least one (any split;
      `examples` filters them).
    grade: (example, extracted answer text) -> score in [0, 1].
    extract: model output text -> final answer text.
    """

    name: str
    kind: str
    draw: Callable[[int, int], list[Example]]
    grade: Callable[[Example, str], float]
    extract: Callable[[str], str] = extract_answer

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")

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
            if split_of(candidate.prompt) != split:
                continue
            if split == "test":
                if candidate.prompt in seen:
                    continue
                seen.add(candidate.prompt)
            chosen.append(candidate)
            if len(chosen) == n:
                return chosen
        raise AssertionError("the candidate stream is endless")

    def _candidates(self, split: str, seed: int) -> Iterator[Example]:
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


_REGISTRY: dict[str, Task] = {}


def register_task(task: Task, *, overwrite: bool = False) -> Task:
    """Add `task` to the registry under `task.name`; returns it."""
    if task.name in _REGISTRY and not overwrite:
        raise ValueError(f"task {task.name!r} is already registered (pass overwrite=True)")
    _REGISTRY[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task called `name`. A name that is a path ending in .jsonl, .json or
    .parquet is loaded on first use as a basic file task (`headjax.data.files.file_task`) and
    registered under that name, so configs can list task files next to built-in tasks."""
    if name not in _REGISTRY:
        from headjax.data.files import FORMATS, file_task

        if name.lower().endswith(tuple(FORMATS)):
            register_task(file_task(name, name))
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(list_tasks())}")
    return _REGISTRY[name]


def list_tasks(kind: str | None = None) -> list[str]:
    """Sorted names of the registered tasks, optionally only those of `kind`."""
    return sorted(n for n, t in _REGISTRY.items() if kind is None or t.kind == kind)


def with_instruction(question: str) -> str:
    """The user prompt for `question`: the question and the short final-answer instruction."""
    return f"{question.rstrip()}\n\n{INSTRUCTION}"


def numbers_equal(expected: str, answer: str) -> float:
    """1.0 if both texts parse as the same number (relative tolerance 1e-9), else 0.0."""
    try:
        return float(math.isclose(float(expected), float(answer), rel_tol=1e-9, abs_tol=1e-12))
    except ValueError:
        return 0.0


def texts_equal(expected: str, answer: str) -> float:
    """1.0 if the texts are equal ignoring case and surrounding whitespace, else 0.0."""
    return float(expected.strip().lower() == answer.strip().lower())


GRADINGS = ("number", "text", "reasoning_gym")


def reasoning_gym_task(name: str, kind: str, *, grading: str = "reasoning_gym",
                       dataset_kwargs: dict | None = None) -> Task:
    """A task backed by the reasoning-gym dataset `name`.

    grading: "number": 1 iff the last number of the model's answer equals the answer;
      "text": 1 iff the answer text matches ignoring case; "reasoning_gym": the dataset's own
      `score_answer` (which gives partial credit on some tasks, e.g. per matching character).
    """
    if grading not in GRADINGS:
        raise ValueError(f"task {name!r}: grading must be one of {GRADINGS}, got {grading!r}")
    kwargs = dict(dataset_kwargs or {})

    @functools.lru_cache(maxsize=4)
    def dataset(seed: int, size: int):
        import reasoning_gym

        return reasoning_gym.create_dataset(name, size=size, seed=seed, **kwargs)

    def draw(seed: int, count: int) -> list[Example]:
        return [Example(with_instruction(entry["question"]), str(entry["answer"]), name,
                        {"question": entry["question"], "source": entry["metadata"]})
                for entry in dataset(seed, count)]

    def grade(example: Example, answer: str) -> float:
        if grading == "number":
            return numbers_equal(example.answer, answer)
        if grading == "text":
            return texts_equal(example.answer, answer)
        entry = {"question": example.metadata["question"], "answer": example.answer,
                 "metadata": example.metadata["source"]}
        return float(dataset(0, 1).score_answer(answer=answer, entry=entry))

    return Task(name, kind, draw, grade,
                extract_number if grading == "number" else extract_answer)


_BUILTINS: tuple[tuple[str, str, str], ...] = (
    # (reasoning-gym dataset, kind, grading); each draws 200 examples in < 0.1 s.
    ("basic_arithmetic", "basic", "number"),
    ("chain_sum", "basic", "number"),
    ("products", "basic", "number"),
    ("word_sorting", "basic", "reasoning_gym"),
    ("leg_counting", "basic", "number"),
    ("spell_backward", "basic", "text"),
    ("letter_counting", "basic", "number"),
    ("count_bits", "basic", "number"),
    ("gcd", "basic", "number"),
    ("lcm", "basic", "number"),
    ("gsm_symbolic", "complex", "number"),
)


def _register_builtins(specs: Iterable[tuple[str, str, str]]) -> None:
    for name, kind, grading in specs:
        register_task(reasoning_gym_task(name, kind, grading=grading))


_register_builtins(_BUILTINS)
