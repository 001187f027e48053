"""Training on a streamed dataset folder: a run stopped at a checkpoint and resumed equals one
that ran through, bit for bit (the stream position travels in the checkpoint's data state)."""

from __future__ import annotations

import datasets
import jax
import numpy as np
import pytest
from helpers_tasks import tiny_run_config

from headjax.app.experiment import run
from headjax.train import Checkpointer

ROWS = [{"prompt": f"what is {i} + {i % 7}?", "answer": str(i + i % 7)} for i in range(60)]


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "sums"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    return str(path)


def _config(model_dir, run_dir, source, steps):
    c = tiny_run_config(model_dir, run_dir, (source,))
    c.data.streaming = True
    c.train.update(steps=steps, schedule="constant")
    c.checkpoint.update(every=2, keep=3, async_save=False, export_final=False)
    return c


def test_a_resumed_streaming_run_equals_an_uninterrupted_one(tiny_model_dir, tmp_path, source):
    through = run(_config(tiny_model_dir, tmp_path / "through", source, steps=6))
    run(_config(tiny_model_dir, tmp_path / "stopped", source, steps=2))
    resumed = run(_config(tiny_model_dir, tmp_path / "stopped", source, steps=6))
    assert int(resumed.step) == int(through.step) == 6
    for a, b in zip(jax.tree.leaves(through.params), jax.tree.leaves(resumed.params),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    states = []
    for run_dir in ("through", "stopped"):
        checkpointer = Checkpointer(tmp_path / run_dir / "checkpoints", async_save=False)
        states.append(checkpointer.restore(6, None)[1]["data"])
        checkpointer.close()
    assert states[0] == states[1] and states[0]["streams"][source]["picks"] == 6 * 4


def test_a_source_with_a_missing_column_fails_before_the_model_loads(tmp_path, source):
    config = tiny_run_config(tmp_path / "no_model_here", tmp_path / "run", (source,))
    config.data.prompt_field = "question"
    with pytest.raises(ValueError, match=r"sums: no column 'question' \(columns: \['prompt', "
                                         r"'answer'\]\); name the columns with data.prompt_field"):
        run(config)
