"""`headjax.app.experiment.run` end to end on a tiny native model with a hermetic tokenizer and
a synthetic task: the run directory gets metrics, eval completions, head patterns, checkpoints,
a summary and a final model that `load_pretrained` reads back.

Bad input tried: `train.trainable_heads` holding an array of the wrong shape.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from helpers_tasks import concatenated, digit_task, tiny_run_config

from headjax.app.experiment import run
from headjax.io.pretrained import load_pretrained

TASK = "echo_digits"


@pytest.fixture(scope="module", autouse=True)
def echo_task():
    digit_task(TASK, concatenated)


def _config(model_dir, run_dir):
    return tiny_run_config(model_dir, run_dir, (TASK,))


def test_run_writes_the_run_directory(tiny_model_dir, tmp_path):
    state = run(_config(tiny_model_dir, tmp_path))
    assert int(state.step) == 3
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").open()]
    assert steps == [0, 1, 2, 3, 3]  # eval at 0, train steps, eval at 3
    for step in (0, 3):
        rows = [json.loads(line) for line in (tmp_path / "eval" / f"step_{step:06d}.jsonl").open()]
        assert len(rows) == 4 and {"prompt", "answer", "completion", "score"} <= set(rows[0])
        with np.load(tmp_path / "patterns" / f"step_{step:06d}.npz") as patterns:
            assert patterns[TASK].shape == (2, 4)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3"]
    assert set(json.loads((tmp_path / "summary.json").read_text())["accuracy"]) == {"0", "3"}
    params, _, tokenizer = load_pretrained(str(tmp_path / "final_model"))
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert tokenizer is not None


def test_trainable_heads_of_the_wrong_shape_are_named(tiny_model_dir, tmp_path):
    np.save(tmp_path / "heads.npy", np.ones((3, 3), bool))
    config = _config(tiny_model_dir, tmp_path / "run")
    config.train.trainable_heads = str(tmp_path / "heads.npy")
    with pytest.raises(ValueError, match=r"train.trainable_heads: .* shape \(3, 3\), expected"):
        run(config)
