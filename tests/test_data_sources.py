"""Data sources as tasks: `hf:` names, dataset folders and data files, field mappings, streams.

Every dataset is built locally (`save_to_disk`, data files, a local dataset folder with configs
named in its README, loaded by `hf:PATH:CONFIG@SPLIT`) and the Hub is switched off, so nothing
downloads. Bad inputs tried: a missing column, an empty dataset, an unknown split, an
unreachable Hub name, a malformed chat row in a stream.
"""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
from helpers_tokenizer import chatml_tokenizer

from headjax.data import (
    Batcher,
    Example,
    Fields,
    get_task,
    parse_source,
    register_sources,
    source_task,
    split_of,
    tokenize_example,
)

ROWS = [{"q": f"what is {i} + {i}?", "a": str(2 * i)} for i in range(60)]
FIELDS = Fields(prompt="q", answer="a")
CHATS = [{"turns": [{"role": "user", "content": f"what is {i} + {i}?"},
                    {"role": "assistant", "content": str(2 * i)},
                    {"role": "user", "content": "and 1 + 1?"},
                    {"role": "assistant", "content": "2"}]} for i in range(40)]
HUB_README = """---
configs:
- config_name: sums
  data_files:
  - split: train
    path: sums/train.jsonl
  - split: test
    path: sums/test.jsonl
- config_name: chats
  data_files:
  - split: train
    path: chats/train.jsonl
---
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No Hub access, and `datasets`' cache under tmp_path."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def hub_folder(tmp_path):
    """A local dataset folder with two configs, as `load_dataset` reads a Hub repository."""
    root = tmp_path / "hub"
    _jsonl(root / "sums" / "train.jsonl", ROWS)
    _jsonl(root / "sums" / "test.jsonl", ROWS[:10])
    _jsonl(root / "chats" / "train.jsonl", CHATS)
    (root / "README.md").write_text(HUB_README)
    return root


def _pairs(task, split="train", n=10):
    return [(e.prompt, e.answer) for e in task.examples(split, n, seed=0)]


def test_source_names_are_parsed(tmp_path):
    assert parse_source("hf:org/name") == parse_source("hf:org/name")
    hf = parse_source("hf:org/name:cfg@validation")
    assert (hf.kind, hf.path, hf.config, hf.split) == ("hf", "org/name", "cfg", "validation")
    assert parse_source("hf:org/name@test").config is None
    assert parse_source("basic_arithmetic") is None and parse_source("x.csv").kind == "file"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "d"))
    assert parse_source(f"{tmp_path}/d@train").split == "train"
    with pytest.raises(ValueError, match="expected hf:NAME"):
        parse_source("hf:")


def test_hf_name_config_and_split_load_through_load_dataset(hub_folder):
    sums = source_task(f"hf:{hub_folder}:sums", fields=FIELDS)
    assert set(_pairs(sums, n=20)) <= {(r["q"], r["a"]) for r in ROWS}
    assert sums.score(sums.examples("train", 1, seed=0)[0], "it is 1000") == 0.0
    small = source_task(f"hf:{hub_folder}:sums@test", fields=FIELDS)
    n_train = sum(split_of(r["q"]) == "train" for r in ROWS[:10])
    assert sorted(_pairs(small, n=n_train)) == sorted(
        (r["q"], r["a"]) for r in ROWS[:10] if split_of(r["q"]) == "train")
    with pytest.raises(ValueError, match=r"sums@test: no column 'prompt'"):
        get_task(f"hf:{hub_folder}:sums@test")  # loaded on first use, default field names
    chats = source_task(f"hf:{hub_folder}:chats", fields=Fields(messages="turns"))
    (example,) = chats.examples("train", 1, seed=0)
    assert example.answer == "2" and [m["role"] for m in example.messages] == [
        "user", "assistant", "user"]


def test_dataset_folders_and_data_files_give_the_same_task(tmp_path):
    table = datasets.Dataset.from_list(ROWS)
    table.save_to_disk(str(tmp_path / "flat"))
    datasets.DatasetDict({"train": table.select(range(5)), "extra": table}).save_to_disk(
        str(tmp_path / "dict"))
    table.to_csv(str(tmp_path / "rows.csv"), index=False)
    _jsonl(tmp_path / "rows.jsonl", ROWS)
    names = [str(tmp_path / "flat"), f"{tmp_path / 'dict'}@extra", str(tmp_path / "rows.csv"),
             str(tmp_path / "rows.jsonl")]
    pairs = [_pairs(source_task(name, fields=FIELDS), n=30) for name in names]
    assert all(p == pairs[0] for p in pairs)
    for name in names:
        streamed = source_task(name, fields=FIELDS, streaming=True).stream()
        assert [(e.prompt, e.answer) for e in streamed] == [(r["q"], r["a"]) for r in ROWS]
    assert register_sources(["basic_arithmetic", names[0]], fields=FIELDS) == [names[0]]
    assert _pairs(get_task(names[0]), n=30) == pairs[0]
    with pytest.raises(ValueError, match="no column 'prompt'"):  # registered again, new fields
        register_sources([names[0]])


def test_a_folder_named_like_a_registered_task_leaves_the_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    datasets.Dataset.from_list(ROWS).save_to_disk("basic_arithmetic")
    assert register_sources(["basic_arithmetic"], fields=FIELDS) == []
    assert get_task("basic_arithmetic").draw is not None


def test_a_missing_column_names_the_source_and_the_field(tmp_path):
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"d: no column 'prompt' \(columns: \['q', 'a'\]\); "
                                         r"name the columns with data.prompt_field"):
        source_task(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"d: no column 'answer'"):
        source_task(str(tmp_path / "d"), fields=Fields(prompt="q"))


def test_empty_sources_unknown_splits_and_unreachable_names_are_one_value_error(tmp_path):
    empty = datasets.Dataset.from_dict({"prompt": [], "answer": []})
    empty.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match="saved: cannot load the dataset; is it missing, empty"):
        source_task(str(tmp_path / "saved"))
    (tmp_path / "e").mkdir()
    empty.to_parquet(str(tmp_path / "e" / "train.parquet"))
    with pytest.raises(ValueError, match="hf:.*e: cannot load the dataset; is it missing, empty"):
        source_task(f"hf:{tmp_path / 'e'}")
    with pytest.raises(ValueError, match="hf:.*e: the dataset has no rows"):
        source_task(f"hf:{tmp_path / 'e'}", streaming=True)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty.jsonl: no usable rows"):
        source_task(str(tmp_path / "empty.jsonl"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(
        str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"dd@dev: no split 'dev' \(splits: \['train'\]\)"):
        source_task(f"{tmp_path / 'dd'}@dev", fields=FIELDS)
    with pytest.raises(ValueError, match="hf:nobody/nothing: cannot load the dataset"):
        source_task("hf:nobody/nothing")


def test_a_malformed_row_names_the_source_and_the_row(tmp_path):
    rows = [{"prompt": "what is 1?", "answer": "1"}, {"prompt": "what is 2?", "answer": " "}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "m"))
    with pytest.raises(ValueError, match=r"m:row 1: field 'answer' is empty"):
        source_task(str(tmp_path / "m"))
    with pytest.raises(ValueError, match=r"m: streamed row 1: field 'answer' is empty"):
        source_task(str(tmp_path / "m"), streaming=True)  # its first rows are read at once


def test_a_stream_gives_the_examples_of_the_loaded_dataset_in_order(hub_folder):
    name = f"hf:{hub_folder}:sums"
    streamed = source_task(name, fields=FIELDS, streaming=True)
    assert streamed.draw is None and [(e.prompt, e.answer) for e in streamed.stream()] == [
        (r["q"], r["a"]) for r in ROWS]
    test = [(r["q"], r["a"]) for r in ROWS if split_of(r["q"]) == "test"]
    assert _pairs(streamed, "test", n=3) == test[:3]
    with pytest.raises(ValueError, match="in the whole stream; the task is too small"):
        streamed.examples("test", len(test) + 1, seed=0)


def _batcher(stream_tasks, *, packing=False, state=None, weights=None, fixed=()):
    tokenizer = chatml_tokenizer()
    streams = {t.name: t.stream for t in stream_tasks}
    kwargs = {"streams": streams}
    if state is not None:
        return Batcher.from_state(json.loads(json.dumps(state)), list(fixed), tokenizer, **kwargs)
    return Batcher(list(fixed), tokenizer, batch_size=4, max_len=40, packing=packing, seed=3,
                   weights=weights, **kwargs)


@pytest.mark.parametrize("packing", [False, True])
def test_a_streamed_task_trains_on_its_train_split_in_order_epoch_after_epoch(tmp_path,
                                                                              packing):
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "d"))
    task = source_task(str(tmp_path / "d"), fields=FIELDS, streaming=True)
    batcher = _batcher([task], packing=packing)
    train = [r for r in ROWS if split_of(r["q"]) == "train"]
    index = {tuple(tokenize_example(Example(r["q"], r["a"], "t"), chatml_tokenizer(), 40)[
        "tokens"]): i for i, r in enumerate(ROWS)}
    seen = []
    while len(seen) < 2 * len(train) + 3:
        batch = next(batcher)
        for row, segments in zip(batch["tokens"], batch["segment_ids"], strict=True):
            for segment in range(1, segments.max() + 1):
                seen.append(index[tuple(row[segments == segment])])
    assert [ROWS[i] for i in seen[:2 * len(train)]] == train + train


@pytest.mark.parametrize("packing", [False, True])
def test_streaming_resume_is_bit_identical_to_an_uninterrupted_stream(tmp_path, packing):
    table = datasets.Dataset.from_list(ROWS)
    for shards in range(3):  # three shard files: positions cross shard and epoch boundaries
        table.shard(3, shards, contiguous=True).to_json(str(tmp_path / f"part{shards}.jsonl"))
    (tmp_path / "README.md").write_text("---\nconfigs:\n- config_name: all\n  data_files:\n"
                                        "  - split: train\n    path: part*.jsonl\n---\n")
    streamed = source_task(f"hf:{tmp_path}:all", fields=FIELDS, streaming=True)
    fixed = get_task("basic_arithmetic").examples("train", 8, seed=0)
    weights = {streamed.name: 3.0, "basic_arithmetic": 1.0}
    reference = _batcher([streamed], packing=packing, weights=weights, fixed=fixed)
    want = [next(reference) for _ in range(30)]
    for stop in (1, 7, 19):
        first = _batcher([streamed], packing=packing, weights=weights, fixed=fixed)
        got = [next(first) for _ in range(stop)]
        state = first.state_dict()
        resumed = _batcher([streamed], state=state, fixed=fixed)
        got += [next(resumed) for _ in range(30 - stop)]
        for a, b in zip(want, got, strict=True):
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert reference.state_dict()["streams"][streamed.name]["epoch"] >= 1


def test_streamed_tasks_mixed_with_others_need_weights(tmp_path):
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "d"))
    task = source_task(str(tmp_path / "d"), fields=FIELDS, streaming=True)
    fixed = get_task("basic_arithmetic").examples("train", 8, seed=0)
    with pytest.raises(ValueError, match="have no example count to mix by; give data.weights"):
        _batcher([task], fixed=fixed)
