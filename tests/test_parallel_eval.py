"""Evaluation prompts and probe batches sharded over the params' mesh (8 host devices in a
subprocess, `eval_worker.py`): greedy generation token for token and head scores within 1e-5 of
one device, batches the mesh does not divide padded, and the compiled programs (and the dry
run's) taking their batch sharded over data x fsdp; the answer-positions loss (its gather and
scatter kept on each row's devices) on a mesh equal to one device.

Also two `jax.distributed` processes (mesh data=2), each holding half of every batch.

Bad inputs tried: none (every batch size is padded, never refused).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jax.sharding import AbstractMesh

from headjax.parallel import DEFAULT_RULES, batch_multiple, pad_rows, padded_rows
from tests.test_parallel import run_processes, worker_env

WORKER = Path(__file__).with_name("eval_worker.py")
MESHES = ("data2_fsdp2_tensor2", "fsdp8")
SHARDED = {"data2_fsdp2_tensor2": "P(('data', 'fsdp'), None)", "fsdp8": "P('fsdp', None)"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "results.json"
    subprocess.run([sys.executable, str(WORKER), "mesh", str(out)], check=True, timeout=400,
                   env=worker_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"))
    return json.loads(out.read_text())


def test_rows_pad_to_the_batch_axes_with_copies_of_the_last_row():
    mesh = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"))
    assert batch_multiple(DEFAULT_RULES, mesh) == 4
    assert batch_multiple((("batch", "data"),), mesh) == 2
    assert [padded_rows(n, 4) for n in (1, 4, 5, 8)] == [4, 4, 8, 8]
    batch = {"tokens": np.arange(6).reshape(3, 2), "loss_mask": np.ones((3, 2))}
    padded = pad_rows(batch, 4, zero=("loss_mask",))
    np.testing.assert_array_equal(padded["tokens"], [[0, 1], [2, 3], [4, 5], [4, 5]])
    np.testing.assert_array_equal(padded["loss_mask"][3:], 0)
    np.testing.assert_array_equal(padded["loss_mask"][:3], 1)
    assert pad_rows(batch, 3)["tokens"].shape == (3, 2)


@pytest.mark.parametrize("mesh", MESHES)
def test_sharded_greedy_generation_equals_one_device(results, mesh):
    """5 prompts (padded to 8 rows on both meshes) and 8: the same tokens, lengths and text."""
    generation = results[mesh]["generation"]
    for rows in (5, 8):
        reference, got = generation[f"tokens_{rows}"]
        assert np.shape(reference) == (rows, 10)
        assert got == reference
        assert generation[f"lengths_{rows}"][1] == generation[f"lengths_{rows}"][0]
        assert generation[f"text_{rows}"][1] == generation[f"text_{rows}"][0]
        assert generation[f"prompt_spec_{rows}"] == SHARDED[mesh]


@pytest.mark.parametrize("mesh", MESHES)
def test_sharded_head_scores_equal_one_device(results, mesh):
    """Probe batches of 8 and 6 rows (6 padded), one padding row each: 12 scored samples."""
    for loss_kind, diff in results[mesh]["patterns"].items():
        assert diff["samples"] == [12, 12], loss_kind
        assert diff["scale"] > 1e-4, loss_kind  # the scores are not all zero
        assert diff["per_sample"] < 1e-5 and diff["mean"] < 1e-5, (loss_kind, diff)


@pytest.mark.parametrize("mesh", MESHES)
def test_compiled_programs_take_their_batch_sharded(results, mesh):
    compiled = results[mesh]["compiled"]
    assert compiled["scores"] == [SHARDED[mesh]] * 4
    assert compiled["generate"] == [SHARDED[mesh]] * 2


def test_dry_run_lowers_probe_and_eval_with_the_sharded_batch(results):
    assert results["dry_run"] == {"train step": SHARDED["data2_fsdp2_tensor2"],
                                  "head-pattern step": SHARDED["data2_fsdp2_tensor2"],
                                  "eval generation": SHARDED["data2_fsdp2_tensor2"]}


@pytest.mark.parametrize("mesh", MESHES)
def test_answer_position_loss_on_a_mesh_equals_one_device(results, mesh):
    assert results[mesh]["answer_positions"] < 1e-5


def test_answer_position_loss_moves_only_gradients_when_data_parallel(results):
    """Per-row gather and scatter: no all-gather or all-to-all, only gradient all-reduces."""
    collectives = results["answer_position_collectives"]
    assert collectives["all-gather"] == collectives["all-to-all"] == 0, collectives
    assert collectives["all-reduce"] > 0, collectives


def test_two_processes_evaluate_and_probe_like_one(tmp_path):
    """Two `jax.distributed` CPU processes, mesh data=2: each process holds half the rows (a
    probe batch of 5 padded to 6), results gathered from both equal one device's."""
    eval_worker = run_processes(WORKER, [tmp_path / f"p{i}.json" for i in range(2)], timeout=300)
    import jax

    from headjax.model import init, tiny_config

    config = tiny_config()
    reference = eval_worker.multiprocess_results(init(jax.random.key(0), config), config)
    assert len(reference["per_sample"]) == 4 + 7  # the padding row of each batch left out
    for i in range(2):
        got = json.loads((tmp_path / f"p{i}.json").read_text())
        assert got["texts"] == reference["texts"]
        np.testing.assert_allclose(got["per_sample"], reference["per_sample"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["mean"], reference["mean"], atol=1e-5, rtol=0)
