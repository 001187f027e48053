"""Task registry: named example generators with disjoint train/test splits and a scorer.

Built-in tasks come from reasoning-gym (`reasoning_gym.create_dataset`); their prompt is
`f"{question}\n\nGive only the final answer."` so answers stay short. Numeric tasks score exact
numeric equality, `spell_backward` exact text and `word_sorting` the dataset's own
`score_answer` (`headjax.data.example` holds `Example`, `Task` and the grading). Multi-step
arithmetic tasks at a set difficulty (`_VARIANTS`: mixed_arithmetic, chain_sum_3,
decimal_chain_sum, simple_equations) are candidate complex targets. `register_task` adds
more; a task name that is a data source (`headjax.data.sources`) is loaded on first use.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from headjax.data.answers import extract_answer
from headjax.data.example import Example, Task, answer_grader
from headjax.data.rows import DEFAULT_FIELDS, Fields
from headjax.data.sources import is_source, source_task

INSTRUCTION = "Give only the final answer."

_REGISTRY: dict[str, Task] = {}
_FROM_SOURCES: set[str] = set()  # registered names that were loaded from data sources


def register_task(task: Task, *, overwrite: bool = False) -> Task:
    """Add `task` to the registry under `task.name`; returns it."""
    if task.name in _REGISTRY and not overwrite:
        raise ValueError(f"task {task.name!r} is already registered (pass overwrite=True)")
    _REGISTRY[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task called `name`. A name that is a data source (`hf:NAME[:CONFIG]
    [@SPLIT]`, a dataset folder or a .jsonl/.json/.parquet/.csv file, `headjax.data.sources`)
    is loaded on first use with the default field names and registered under that name, so
    configs can list data sources next to built-in tasks."""
    if name not in _REGISTRY and is_source(name):
        register_task(source_task(name))
        _FROM_SOURCES.add(name)
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(list_tasks())}")
    return _REGISTRY[name]


def register_sources(names: Sequence[str], *, fields: Fields = DEFAULT_FIELDS,
                     streaming: bool = False) -> list[str]:
    """Load and register the tasks of those `names` that are data sources, their rows read by
    `fields` and streamed when `streaming` (replacing tasks loaded from the same source before;
    a name registered otherwise, e.g. a built-in task, stays that task); returns their names."""
    sources = [name for name in dict.fromkeys(names)
               if (name not in _REGISTRY or name in _FROM_SOURCES) and is_source(name)]
    for name in sources:
        register_task(source_task(name, fields=fields, streaming=streaming), overwrite=True)
        _FROM_SOURCES.add(name)
    return sources


def list_tasks(kind: str | None = None) -> list[str]:
    """Sorted names of the registered tasks, optionally only those of `kind`."""
    return sorted(n for n, t in _REGISTRY.items() if kind is None or t.kind == kind)


def with_instruction(question: str) -> str:
    """The user prompt for `question`: the question and the short final-answer instruction."""
    return f"{question.rstrip()}\n\n{INSTRUCTION}"


GRADINGS = ("number", "text", "reasoning_gym")


def reasoning_gym_task(name: str, kind: str, *, grading: str = "reasoning_gym",
                       dataset_kwargs: dict | None = None, task_name: str | None = None) -> Task:
    """A task backed by the reasoning-gym dataset `name`, built with `dataset_kwargs` (its
    difficulty settings) and registered as `task_name` (default `name`).

    grading: "number": 1 iff the last number of the model's answer equals the answer;
      "text": 1 iff the answer text matches ignoring case; "reasoning_gym": the dataset's own
      `score_answer` (which gives partial credit on some tasks, e.g. per matching character).
    """
    if grading not in GRADINGS:
        raise ValueError(f"task {name!r}: grading must be one of {GRADINGS}, got {grading!r}")
    grade, extract = (None, extract_answer) if grading == "reasoning_gym" else answer_grader(
        grading, task=name)
    kwargs = dict(dataset_kwargs or {})
    task_name = task_name or name

    @functools.lru_cache(maxsize=4)
    def dataset(seed: int, size: int):
        import reasoning_gym

        return reasoning_gym.create_dataset(name, size=size, seed=seed, **kwargs)

    def draw(seed: int, count: int) -> list[Example]:
        return [Example(with_instruction(entry["question"]), str(entry["answer"]), task_name,
                        {"question": entry["question"], "source": entry["metadata"]})
                for entry in dataset(seed, count)]

    def score_answer(example: Example, answer: str) -> float:
        entry = {"question": example.metadata["question"], "answer": example.answer,
                 "metadata": example.metadata["source"]}
        return float(dataset(0, 1).score_answer(answer=answer, entry=entry))

    return Task(task_name, kind, draw, grade or score_answer, extract)


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


# Multi-step arithmetic at a set difficulty, composing the basic arithmetic tasks (candidate
# complex targets a small model can learn): (task name, reasoning-gym dataset, its settings).
_VARIANTS: tuple[tuple[str, str, dict], ...] = (
    ("mixed_arithmetic", "basic_arithmetic",  # 3 one-digit terms, + - *: sums and products
     {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1,
      "operators": ("+", "-", "*"), "allow_parentheses": False, "allow_negation": False}),
    ("chain_sum_3", "chain_sum",  # 3 terms of 1-2 digits
     {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 2}),
    ("decimal_chain_sum", "decimal_chain_sum",  # 2-3 terms of 1-2 digits, 1 decimal place
     {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2,
      "min_decimal_places": 1, "max_decimal_places": 1}),
    ("simple_equations", "simple_equations",  # a*x + b = c, values 1-20
     {"min_terms": 2, "max_terms": 2, "min_value": 1, "max_value": 20}),
)


def _register_builtins(specs: Iterable[tuple[str, str, str]]) -> None:
    for name, kind, grading in specs:
        register_task(reasoning_gym_task(name, kind, grading=grading))
    for name, dataset, settings in _VARIANTS:
        register_task(reasoning_gym_task(dataset, "complex", grading="number",
                                         dataset_kwargs=settings, task_name=name))


_register_builtins(_BUILTINS)
