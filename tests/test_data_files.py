"""Task files: JSONL/JSON/parquet rows, chat messages, malformed rows named or skipped."""

from __future__ import annotations

import json

import datasets
import pytest

from headjax.data import get_task, split_of
from headjax.data.files import MalformedRowError, file_task, load_examples

ROWS = [{"prompt": f"what is {i} + {i}?", "answer": str(2 * i)} for i in range(60)]


def write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "json_data", "parquet", "csv", "messages"])
def test_every_format_loads_the_same_examples(tmp_path, fmt):
    if fmt == "jsonl":
        path = write_jsonl(tmp_path / "t.jsonl", [json.dumps(r) for r in ROWS])
    elif fmt == "json":
        (path := tmp_path / "t.json").write_text(json.dumps(ROWS))
    elif fmt == "json_data":
        (path := tmp_path / "t.json").write_text(json.dumps({"data": ROWS}))
    elif fmt == "parquet":
        datasets.Dataset.from_list(ROWS).to_parquet(str(path := tmp_path / "t.parquet"))
    elif fmt == "csv":
        datasets.Dataset.from_list(ROWS).to_csv(str(path := tmp_path / "t.csv"), index=False)
    else:
        chats = [{"messages": [{"role": "user", "content": r["prompt"]},
                               {"role": "assistant", "content": r["answer"]}]} for r in ROWS]
        path = write_jsonl(tmp_path / "t.jsonl", [json.dumps(c) for c in chats])
    loaded = load_examples(path, "sums")
    assert [(e.prompt, e.answer, e.task) for e in loaded.examples] == [
        (r["prompt"], r["answer"], "sums") for r in ROWS]
    assert loaded.skipped == ()


def test_custom_fields_and_numeric_answers(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", ['{"question": "how many legs 2?", "target": 8}'])
    loaded = load_examples(path, "legs", prompt_field="question", answer_field="target")
    assert (loaded.examples[0].prompt, loaded.examples[0].answer) == ("how many legs 2?", "8")


BAD_LINES = [
    ('{"prompt": "a", "answer": "1"', "invalid JSON"),
    ('{"prompt": "a"}', "field 'answer' must be text, got None"),
    ('{"prompt": "  ", "answer": "1"}', "field 'prompt' is empty"),
    ('{"prompt": ["a"], "answer": "1"}', "field 'prompt' must be text"),
    ('[1, 2]', "expected an object, got list"),
    ('{"messages": [{"role": "assistant", "content": "1"}]}',
     r"messages must hold turns with roles in .*, at least one user turn, and end with an "
     r"assistant turn; got roles \['assistant'\]"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "1"}]}',
     r"messages must hold .*; got roles \['user', 'bot'\]"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}',
     "field 'content' is empty"),
    ('{"messages": "hi"}', "messages must be a list, got str"),
]


@pytest.mark.parametrize("bad, problem", BAD_LINES)
def test_malformed_row_error_names_file_and_line(tmp_path, bad, problem):
    good = json.dumps(ROWS[0])
    path = write_jsonl(tmp_path / "bad.jsonl", [good, "", good, bad, good])
    with pytest.raises(MalformedRowError, match=f"bad.jsonl:line 4: {problem}"):
        load_examples(path, "t")


def test_malformed_rows_can_be_skipped_and_counted(tmp_path):
    lines = [json.dumps(r) for r in ROWS[:3]] + [bad for bad, _ in BAD_LINES]
    loaded = load_examples(write_jsonl(tmp_path / "mixed.jsonl", lines), "t",
                           skip_malformed=True)
    assert len(loaded.examples) == 3 and len(loaded.skipped) == len(BAD_LINES)
    assert loaded.skipped[0].endswith("mixed.jsonl:line 4: invalid JSON (Expecting ',' "
                                      "delimiter at column 30)")
    (path := tmp_path / "rows.json").write_text(json.dumps([ROWS[0], {"answer": "1"}]))
    with pytest.raises(MalformedRowError, match="rows.json:row 1: field 'prompt'"):
        load_examples(path, "t")


def test_bad_paths_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl does not exist"):
        load_examples(tmp_path / "missing.jsonl", "t")
    (txt := tmp_path / "t.txt").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        load_examples(txt, "t")


def test_file_task_splits_by_question_and_scores(tmp_path):
    path = write_jsonl(tmp_path / "sums.jsonl", [json.dumps(r) for r in ROWS])
    task = file_task("sums", path, grading="number")
    n_test = sum(split_of(r["prompt"]) == "test" for r in ROWS)
    test = task.examples("test", n_test, seed=0)
    train = task.examples("train", 60 - n_test, seed=0)
    assert sorted(e.prompt for e in test + train) == sorted(r["prompt"] for r in ROWS)
    assert task.score(test[0], f"It is {test[0].answer}.") == 1.0
    assert task.score(test[0], "It is 1000.") == 0.0
    with pytest.raises(ValueError, match="too small"):
        task.examples("test", n_test + 1, seed=0)


def test_auto_grading_is_numeric_only_when_every_answer_is_a_number(tmp_path):
    numeric = file_task("n", write_jsonl(tmp_path / "n.jsonl", [json.dumps(r) for r in ROWS]))
    example = numeric.examples("train", 1, seed=0)[0]
    assert numeric.score(example, f"so it is {example.answer}.0 in total") == 1.0
    words = [{"prompt": f"spell {i} backward", "answer": str(i)[::-1] + "x"} for i in range(40)]
    text = file_task("w", write_jsonl(tmp_path / "w.jsonl", [json.dumps(r) for r in words]))
    example = text.examples("train", 1, seed=0)[0]
    assert text.score(example, f"Answer: {example.answer.upper()}") == 1.0
    assert text.score(example, f"{example.answer} and more") == 0.0


def test_skipped_rows_of_a_file_task_are_logged_with_their_count(tmp_path, caplog):
    lines = [json.dumps(r) for r in ROWS] + ['{"prompt": "a"}', "not json"]
    path = write_jsonl(tmp_path / "some_bad.jsonl", lines)
    with caplog.at_level("WARNING", logger="headjax.data.files"):
        file_task("some_bad", path, skip_malformed=True)
    assert "skipped 2 malformed rows" in caplog.text and "some_bad.jsonl:line 61" in caplog.text


def test_a_task_file_path_is_a_task_name(tmp_path):
    path = write_jsonl(tmp_path / "by_path.jsonl", [json.dumps(r) for r in ROWS])
    task = get_task(str(path))
    assert task.name == str(path) and get_task(str(path)) is task
    assert {e.prompt for e in task.examples("train", 5, seed=0)} <= {r["prompt"] for r in ROWS}
    with pytest.raises(FileNotFoundError, match="missing.jsonl does not exist"):
        get_task(str(tmp_path / "missing.jsonl"))


def test_a_chat_row_may_open_with_a_system_turn(tmp_path):
    chat = {"messages": [{"role": "system", "content": "Be terse."},
                         {"role": "user", "content": "what is 2 + 2?"},
                         {"role": "assistant", "content": "4"}]}
    (example,) = load_examples(write_jsonl(tmp_path / "s.jsonl", [json.dumps(chat)]), "t").examples
    assert (example.prompt, example.answer, example.metadata) == (
        "what is 2 + 2?", "4", {"system": "Be terse."})
