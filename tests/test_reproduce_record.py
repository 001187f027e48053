"""The study's record (`headjax.app.reproduce.record`) on hand-made result files: what a fresh
machine gets back is what was saved, array for array and row for row; the record keeps the
step-0 per-sample scores once; neither side loses a row, an array or a file; a conflict is named.

Bad input tried: a row and an array that differ between `out_dir` and the record, a record of
another `out_dir`.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from headjax.app.reproduce import record
from headjax.app.reproduce.config import default_reproduce_config
from headjax.train.patterns import load_arrays, save_npz_atomically


def _config(tmp_path):
    c = default_reproduce_config()
    c.out_dir = str(tmp_path / "runs")
    c.record_dir = str(tmp_path / "record")
    return c


def _rows(*rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def study(tmp_path):
    """A study's out_dir as the stages leave it: base patterns, two findings runs of seed 0 and
    one of seed 1, run folders, grid rows (with a torn last line), measures, and files that are
    not recorded."""
    rng = np.random.default_rng(0)
    runs = tmp_path / "runs"
    base = {"a": rng.normal(size=(1, 2, 3)), "per_sample/a": rng.normal(size=(4, 2, 3)),
            "b": rng.normal(size=(1, 2, 3)), "per_sample/b": rng.normal(size=(4, 2, 3))}
    save_npz_atomically(runs / "findings" / "base_patterns.npz", base)
    for folder, task in (("findings", "a"), ("findings", "b"), ("findings/s1", "a")):
        arrays = {"steps": np.array([0, 2]), task: rng.normal(size=(2, 2, 3)),
                  f"per_sample/{task}@base": base[f"per_sample/{task}"],
                  f"per_sample/{task}@final": rng.normal(size=(4, 2, 3)),
                  "param_change": np.float32(1e-3)}
        save_npz_atomically(runs / folder / f"{task}.npz", arrays)
        (runs / folder / task / "patterns").mkdir(parents=True)
        (runs / folder / task / "patterns" / "step_000002.npz").write_bytes(b"not recorded")
        (runs / folder / task / "summary.json").write_text('{"wall_time_s": 3.0}\n')
    save_npz_atomically(runs / "findings" / "dap.npz", {"a": np.zeros(3)})
    (runs / "results.jsonl").write_text(_rows({"key": "base", "accuracy": 0.1},
                                              {"key": "n4_plain_s0", "accuracy": 0.2})
                                        + '{"key": "n4_pl')
    (runs / "measures.json").write_text('{"finding1": {}}\n')
    (runs / "compilation_cache").mkdir()
    (runs / "compilation_cache" / "x").write_bytes(b"not recorded")
    return _config(tmp_path)


def _all_arrays(root):
    return {str(p.relative_to(root)): load_arrays(p) for p in sorted(root.rglob("*.npz"))
            if "patterns" not in p.parts}


def test_a_fresh_machine_gets_back_what_was_saved(study, tmp_path):
    runs, kept = tmp_path / "runs", tmp_path / "record"
    saved = record.save(study)
    assert sorted(map(str, saved)) == sorted([
        "measures.json", "results.jsonl", "findings/base_patterns.npz", "findings/a.npz",
        "findings/b.npz", "findings/s1/a.npz", "findings/a/summary.json",
        "findings/b/summary.json", "findings/s1/a/summary.json"])
    assert not (kept / "findings" / "dap.npz").exists()
    assert not list(kept.rglob("patterns")) and not (kept / "compilation_cache").exists()
    # the step-0 per-sample scores are kept once, in the base patterns
    assert sorted(load_arrays(kept / "findings" / "a.npz")) == [
        "a", "param_change", "per_sample/a@final", "steps"]
    assert record.save(study) == []  # nothing changed: nothing written

    before = _all_arrays(runs)
    shutil.move(runs, tmp_path / "old_runs")  # a fresh machine: the record alone
    record.restore(study)
    after = _all_arrays(runs)
    del before["findings/dap.npz"]
    assert sorted(after) == sorted(before)
    for name, arrays in before.items():
        assert sorted(after[name]) == sorted(arrays), name
        for key, value in arrays.items():
            assert after[name][key].dtype == value.dtype
            np.testing.assert_array_equal(after[name][key], value)
    # the torn line (a kill's) is not carried over; finished rows are
    assert (runs / "results.jsonl").read_text() == _rows({"key": "base", "accuracy": 0.1},
                                                         {"key": "n4_plain_s0", "accuracy": 0.2})
    assert (runs / "findings" / "s1" / "a" / "summary.json").read_text() == (
        '{"wall_time_s": 3.0}\n')
    assert record.restore(study) == []


def test_neither_side_loses_rows_arrays_or_files(study, tmp_path):
    runs, kept = tmp_path / "runs", tmp_path / "record"
    record.save(study)
    # the record gains a row elsewhere; out_dir gains another and its own measures
    with (kept / "results.jsonl").open("a") as f:
        f.write(_rows({"key": "n4_plain_s1", "accuracy": 0.3}))
    (runs / "results.jsonl").write_text(_rows({"key": "base", "accuracy": 0.1},
                                              {"key": "n4_plain_s2", "accuracy": 0.4}))
    (runs / "measures.json").write_text('{"finding1": {"new": 1}}\n')
    (runs / "findings" / "b.npz").unlink()
    record.restore(study)
    keys = [json.loads(line)["key"] for line in (runs / "results.jsonl").read_text().splitlines()]
    assert keys == ["base", "n4_plain_s2", "n4_plain_s0", "n4_plain_s1"]
    assert json.loads((runs / "measures.json").read_text()) == {"finding1": {"new": 1}}
    assert (runs / "findings" / "b.npz").exists()
    record.save(study)
    keys = [json.loads(line)["key"] for line in (kept / "results.jsonl").read_text().splitlines()]
    assert sorted(keys) == ["base", "n4_plain_s0", "n4_plain_s1", "n4_plain_s2"]
    assert json.loads((kept / "measures.json").read_text()) == {"finding1": {"new": 1}}
    # a base pattern added to out_dir joins the record's file, which keeps its other arrays
    base = load_arrays(runs / "findings" / "base_patterns.npz")
    save_npz_atomically(runs / "findings" / "base_patterns.npz",
                        {"c": np.ones((1, 2, 3)), **{k: v for k, v in base.items() if k != "b"}})
    record.save(study)
    assert sorted(load_arrays(kept / "findings" / "base_patterns.npz")) == [
        "a", "b", "c", "per_sample/a", "per_sample/b"]


def test_a_step_zero_unlike_the_base_patterns_is_kept(study, tmp_path):
    path = tmp_path / "runs" / "findings" / "b.npz"
    arrays = load_arrays(path)
    arrays["per_sample/b@base"] = arrays["per_sample/b@base"] + 1.0
    save_npz_atomically(path, arrays)
    record.save(study)
    kept = load_arrays(tmp_path / "record" / "findings" / "b.npz")
    np.testing.assert_array_equal(kept["per_sample/b@base"], arrays["per_sample/b@base"])


def test_conflicts_and_another_studys_record_are_named(study, tmp_path):
    runs = tmp_path / "runs"
    record.save(study)
    (runs / "results.jsonl").write_text(_rows({"key": "n4_plain_s0", "accuracy": 0.25}))
    with pytest.raises(ValueError, match=r"results.jsonl: row n4_plain_s0 differs from the "
                                         r"record's .*record/results.jsonl; move one"):
        record.restore(study)
    (runs / "results.jsonl").unlink()
    arrays = load_arrays(runs / "findings" / "s1" / "a.npz")
    arrays["per_sample/a@final"] = arrays["per_sample/a@final"] * 2
    save_npz_atomically(runs / "findings" / "s1" / "a.npz", arrays)
    with pytest.raises(ValueError, match=r"s1/a.npz: array per_sample/a@final differs"):
        record.save(study)
    other = _config(tmp_path)
    other.out_dir = str(tmp_path / "runs_sum_to_one")
    with pytest.raises(ValueError, match=r"config.record_dir: .*record records .*runs, not "
                                         r"config.out_dir .*runs_sum_to_one"):
        record.check(other)
    other.record_dir = ""
    assert record.save(other) == [] and record.restore(other) == []
