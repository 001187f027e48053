"""Data sources as tasks: Hugging Face datasets, dataset folders and data files.

A source is named by one string, usable wherever a task name is (`data.tasks`, `eval.tasks`,
...):
- `hf:NAME[:CONFIG][@SPLIT]`: `datasets.load_dataset(NAME, CONFIG, split=SPLIT)` (SPLIT
  defaults to "train"); a dataset in the local cache loads with `HF_DATASETS_OFFLINE=1`, and
  NAME may be a local dataset script or folder, as `load_dataset` accepts.
- a folder written by `save_to_disk` (`PATH` for a `Dataset`, `PATH@SPLIT` for a split of a
  `DatasetDict`, default "train"): `datasets.load_from_disk`.
- a data file, `.jsonl`, `.json`, `.parquet` or `.csv` (`headjax.data.files`).
Rows become examples by a field mapping (`Fields`: prompt and answer columns, or a messages
column of chats, `headjax.data.rows`), and the task splits them into train/test by question
hash like every task: the chosen SPLIT is the pool both come from.

With `streaming=True` the rows are read as a `datasets.IterableDataset` in their stored order
and never held in memory: `Task.stream` opens an `ExampleStream`, whose `state_dict()` is the
dataset's own resumable position (`IterableDataset.state_dict`), and training reads it on
(`headjax.data.streaming`). An empty source, a missing column or a malformed row raises one
ValueError naming the source and the field.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

from headjax.data.example import Example, Task, answer_grader, fixed_task
from headjax.data.files import FORMATS, file_task
from headjax.data.rows import DEFAULT_FIELDS, Fields, MalformedRowError, row_to_example

HF_PREFIX = "hf:"
GRADING_ROWS = 256  # rows of a stream whose answers decide grading="auto"


@dataclasses.dataclass(frozen=True)
class Source:
    """A parsed source name. kind: "hf" (path = dataset name), "folder" or "file"; split: the
    one named after "@" (None: "train" where the source has splits)."""

    kind: str
    path: str
    config: str | None = None
    split: str | None = None


def parse_source(name: str) -> Source | None:
    """The `Source` that `name` names, or None when it names none (a plain task name)."""
    if name.startswith(HF_PREFIX):
        rest, _, split = name[len(HF_PREFIX):].partition("@")
        path, _, config = rest.partition(":")
        if not path:
            raise ValueError(f"{name}: expected hf:NAME[:CONFIG][@SPLIT]")
        return Source("hf", path, config or None, split or None)
    if name.lower().endswith(tuple(FORMATS)):
        return Source("file", name)
    path, _, split = name.partition("@") if not Path(name).is_dir() else (name, "", "")
    if Path(path).is_dir():
        return Source("folder", path, None, split or None)
    return None


def is_source(name: str) -> bool:
    """Whether `name` names a data source rather than a registered task."""
    return parse_source(name) is not None


def _load(name: str, source: Source, streaming: bool):
    """The `datasets` Dataset (or IterableDataset when `streaming`) of `source`."""
    import datasets

    try:
        if source.kind == "hf":
            return datasets.load_dataset(source.path, source.config,
                                         split=source.split or "train", streaming=streaming)
        if source.kind == "file":
            if not Path(source.path).is_file():
                raise FileNotFoundError(f"task file {source.path} does not exist")
            return datasets.load_dataset(FORMATS[Path(source.path).suffix.lower()],
                                         data_files=source.path, split="train",
                                         streaming=streaming)
        loaded = datasets.load_from_disk(source.path)
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds for a bad source
        raise ValueError(f"{name}: cannot load the dataset; is it missing, empty or malformed? "
                         f"({type(err).__name__}: {err})") from err
    if isinstance(loaded, datasets.DatasetDict):
        if (source.split or "train") not in loaded:
            raise ValueError(f"{name}: no split {source.split or 'train'!r} (splits: "
                             f"{list(loaded)}); name one as PATH@SPLIT")
        loaded = loaded[source.split or "train"]
    elif source.split is not None:
        raise ValueError(f"{name}: {source.path} holds one dataset without splits; drop "
                         f"@{source.split}")
    return loaded.to_iterable_dataset() if streaming else loaded


class ExampleStream:
    """The examples of an `IterableDataset` in its order, with its resumable position."""

    def __init__(self, dataset, name: str, fields: Fields):
        self.dataset, self.name, self.fields = dataset, name, fields

    def __iter__(self) -> Iterator[Example]:
        for number, row in enumerate(self.dataset):
            try:
                yield row_to_example(row, self.name, self.fields)
            except MalformedRowError as error:
                raise MalformedRowError(f"{self.name}: streamed row {number}: {error}") from None

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict:
        """The position after the last row read (JSON-able)."""
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Continue after the row at which `state` was taken, on the next iteration."""
        self.dataset.load_state_dict(state)


def _examples(dataset: Iterable, name: str, fields: Fields) -> list[Example]:
    examples = []
    for number, row in enumerate(dataset):
        try:
            examples.append(row_to_example(row, name, fields))
        except MalformedRowError as error:
            raise MalformedRowError(f"{name}:row {number}: {error}") from None
    return examples


def source_task(name: str, *, fields: Fields = DEFAULT_FIELDS, streaming: bool = False,
                kind: str = "basic", grading: str = "auto") -> Task:
    """The task of the source `name` (module docstring), rows read by `fields`.

    grading: see `headjax.data.example.answer_grader`; for a stream "auto" looks at its first
    `GRADING_ROWS` rows.
    """
    source = parse_source(name)
    if source is None:
        raise ValueError(f"{name}: not a data source (hf:NAME, a dataset folder or a "
                         f"{'/'.join(FORMATS)} file)")
    answer_grader(grading, task=name)  # a wrong grading fails before anything is read
    if source.kind == "file" and not streaming:
        return file_task(name, source.path, kind=kind, grading=grading,
                         prompt_field=fields.prompt, answer_field=fields.answer,
                         messages_field=fields.messages)
    dataset = _load(name, source, streaming)
    if dataset.column_names is not None:
        fields.check_columns(dataset.column_names, name)
    if not streaming:
        if len(dataset) == 0:
            raise ValueError(f"{name}: the dataset has no rows")
        return fixed_task(name, kind, _examples(dataset, name, fields), grading)

    def open_stream() -> ExampleStream:
        return ExampleStream(_load(name, source, streaming=True), name, fields)

    head = list(itertools.islice(open_stream(), GRADING_ROWS))
    if not head:
        raise ValueError(f"{name}: the dataset has no rows")
    grade, extract = answer_grader(grading, [e.answer for e in head], task=name)
    return Task(name, kind, None, grade, extract, stream=open_stream)
