"""Tasks from local data files: JSONL, JSON (a list of rows, or {"data": [...]}), parquet, CSV.

Each row is read by `headjax.data.rows.row_to_example` with a field mapping (prompt/answer
columns, or a messages column holding a chat). A malformed row raises one error naming the file
and the line (JSONL) or row (JSON, parquet, CSV); with `skip_malformed=True` it is skipped and
counted instead. Parquet and CSV are read through `datasets`; JSON and JSONL are parsed line by
line so errors can point at the line. The file task splits rows into train/test by the same
question hash as every task.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from headjax.data.example import Example, Task, answer_grader, fixed_task
from headjax.data.rows import Fields, MalformedRowError, row_to_example

log = logging.getLogger(__name__)

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclasses.dataclass(frozen=True)
class LoadedExamples:
    """examples: the well-formed rows; skipped: ["path:line: problem"] of skipped rows."""

    examples: tuple[Example, ...]
    skipped: tuple[str, ...]


def _rows(path: Path) -> Iterator[tuple[str, object]]:
    """(location "path:line N" / "path:row N", parsed row or the JSON error) per row."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; expected one of "
                         f"{sorted(FORMATS)}")
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield f"{path}:line {number}", _parse(line.rstrip("\r\n"))
    elif suffix == ".json":
        data = _parse(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise MalformedRowError(f"{path}: expected a JSON list of rows or {{\"data\": [...]}}")
        for number, row in enumerate(data):
            yield f"{path}:row {number}", row
    else:
        import datasets

        read = datasets.Dataset.from_parquet if suffix == ".parquet" else datasets.Dataset.from_csv
        table = read(str(path), keep_in_memory=True)
        for number, row in enumerate(table):
            yield f"{path}:row {number}", row


def _parse(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        return error


def load_examples(path: str | Path, task: str, *, prompt_field: str = "prompt",
                  answer_field: str = "answer", messages_field: str = "messages",
                  skip_malformed: bool = False) -> LoadedExamples:
    """The examples of a JSONL/JSON/parquet/CSV file; malformed rows raise `MalformedRowError`
    naming file and line/row, or are skipped and listed with `skip_malformed=True`."""
    path, fields = Path(path), Fields(prompt_field, answer_field, messages_field)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    examples, skipped = [], []
    for location, row in _rows(path):
        try:
            examples.append(row_to_example(row, task, fields))
        except MalformedRowError as error:
            if not skip_malformed:
                raise MalformedRowError(f"{location}: {error}") from None
            skipped.append(f"{location}: {error}")
    if not examples:
        raise ValueError(f"{path}: no usable rows ({len(skipped)} malformed)")
    return LoadedExamples(tuple(examples), tuple(skipped))


def file_task(name: str, path: str | Path, *, kind: str = "basic", grading: str = "auto",
              prompt_field: str = "prompt", answer_field: str = "answer",
              messages_field: str = "messages", skip_malformed: bool = False) -> Task:
    """A task over the rows of `path` (`headjax.data.example.fixed_task`).

    grading: "text" (answer text equal ignoring case), "number" (last number equal) or "auto"
    ("number" when every answer is a number, else "text"). Skipped malformed rows are logged
    with their count.
    """
    answer_grader(grading, task=name)  # a wrong grading fails before the file is read
    loaded = load_examples(path, name, prompt_field=prompt_field, answer_field=answer_field,
                           messages_field=messages_field, skip_malformed=skip_malformed)
    if loaded.skipped:
        log.warning("task %r: skipped %d malformed rows of %s, first: %s", name,
                    len(loaded.skipped), path, loaded.skipped[0])
    return fixed_task(name, kind, loaded.examples, grading)
