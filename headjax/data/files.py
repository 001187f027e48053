"""Tasks from local files: JSONL, JSON (a list of rows, or {"data": [...]}) and parquet.

A row is either `{"prompt": ..., "answer": ...}` (field names configurable; numeric answers are
turned into text) or a chat `{"messages": [{"role": "user", "content": ...}, {"role":
"assistant", "content": ...}]}`, optionally opening with a system turn (kept as
`metadata["system"]`, rendered before the prompt by `headjax.data.tokenize`). A malformed row
raises one error naming the file and the line (JSONL) or row (JSON, parquet); with
`skip_malformed=True` it is skipped and counted instead. Parquet is read through `datasets`;
JSON and JSONL are parsed line by line so errors can point at the line. The file task splits
rows into train/test by the same question hash as every task.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from headjax.data.example import Example, Task, answer_grader

log = logging.getLogger(__name__)

FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}


class MalformedRowError(ValueError):
    """A row of a task file lacks a field, has a wrong type or is not valid JSON."""


@dataclasses.dataclass(frozen=True)
class LoadedExamples:
    """examples: the well-formed rows; skipped: ["path:line: problem"] of skipped rows."""

    examples: tuple[Example, ...]
    skipped: tuple[str, ...]


def _rows(path: Path) -> Iterator[tuple[str, object]]:
    """(location "path:line N" / "path:row N", parsed row or the JSON error) per row."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; expected one of "
                         f"{sorted(FORMATS)}")
    if kind == "jsonl":
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield f"{path}:line {number}", _parse(line.rstrip("\r\n"))
    elif kind == "json":
        data = _parse(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise MalformedRowError(f"{path}: expected a JSON list of rows or {{\"data\": [...]}}")
        for number, row in enumerate(data):
            yield f"{path}:row {number}", row
    else:
        import datasets

        table = datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
        for number, row in enumerate(table):
            yield f"{path}:row {number}", row


def _parse(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        return error


def _text(row: dict, field: str) -> str:
    value = row.get(field)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise MalformedRowError(f"field {field!r} must be text, got {value!r}")
    if not str(value).strip():
        raise MalformedRowError(f"field {field!r} is empty")
    return str(value)


def row_to_example(row: object, task: str, prompt_field: str = "prompt",
                   answer_field: str = "answer") -> Example:
    """The `Example` of one parsed row (see the module docstring for the accepted shapes)."""
    if isinstance(row, json.JSONDecodeError):
        raise MalformedRowError(f"invalid JSON ({row.msg} at column {row.colno})")
    if not isinstance(row, dict):
        raise MalformedRowError(f"expected an object, got {type(row).__name__}")
    if row.get("messages") is not None:
        messages = row["messages"]
        if not isinstance(messages, list):
            raise MalformedRowError(f"messages must be a list, got {type(messages).__name__}")
        roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
        if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
            raise MalformedRowError(f"messages must be an optional system turn, one user turn "
                                    f"and one assistant turn, got roles {roles}")
        system = {"system": _text(messages[0], "content")} if len(messages) == 3 else {}
        return Example(_text(messages[-2], "content"), _text(messages[-1], "content"), task,
                       system)
    return Example(_text(row, prompt_field), _text(row, answer_field), task, {})


def load_examples(path: str | Path, task: str, *, prompt_field: str = "prompt",
                  answer_field: str = "answer", skip_malformed: bool = False) -> LoadedExamples:
    """The examples of a JSONL/JSON/parquet file; malformed rows raise `MalformedRowError`
    naming file and line/row, or are skipped and listed with `skip_malformed=True`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    examples, skipped = [], []
    for location, row in _rows(path):
        try:
            examples.append(row_to_example(row, task, prompt_field, answer_field))
        except MalformedRowError as error:
            if not skip_malformed:
                raise MalformedRowError(f"{location}: {error}") from None
            skipped.append(f"{location}: {error}")
    if not examples:
        raise ValueError(f"{path}: no usable rows ({len(skipped)} malformed)")
    return LoadedExamples(tuple(examples), tuple(skipped))


def file_task(name: str, path: str | Path, *, kind: str = "basic", grading: str = "auto",
              prompt_field: str = "prompt", answer_field: str = "answer",
              skip_malformed: bool = False) -> Task:
    """A task over the rows of `path`, split by question hash like every task.

    grading: "text" (answer text equal ignoring case), "number" (last number equal) or "auto"
    ("number" when every answer is a number, else "text"). Each draw is a seeded permutation of
    all rows, so a split's examples are distinct until it runs out. Skipped malformed rows are
    logged with their count.
    """
    answer_grader(grading, task=name)  # a wrong grading fails before the file is read
    loaded = load_examples(path, name, prompt_field=prompt_field, answer_field=answer_field,
                           skip_malformed=skip_malformed)
    if loaded.skipped:
        log.warning("task %r: skipped %d malformed rows of %s, first: %s", name,
                    len(loaded.skipped), path, loaded.skipped[0])
    rows = loaded.examples
    grade, extract = answer_grader(grading, [e.answer for e in rows], task=name)

    def draw(seed: int, count: int) -> list[Example]:
        return [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]

    return Task(name, kind, draw, grade, extract)
