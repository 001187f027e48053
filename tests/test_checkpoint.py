"""Checkpoints: exact resume after SIGKILL, corrupt-step fallback, restore into shardings.

Bad inputs tried: a step directory whose files were overwritten with garbage (restore falls back
to the previous step with a warning and quarantines it), a leftover temporary directory of an
interrupted save (ignored), keep=0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from headjax.train import Checkpointer, abstract_tree, create_state, make_optimizer
from headjax.train.checkpoint import restore_params

WORKER = Path(__file__).with_name("train_worker.py")
ROOT = WORKER.parent.parent
STEPS = 10


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return env


def _loop(run_dir: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), "loop", str(run_dir), str(STEPS),
                             str(delay)], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out.decode()[-3000:]


def _steps_on_disk(run_dir: Path) -> list[int]:
    ckpt = run_dir / "checkpoints"
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.exists() else []


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = _loop(uninterrupted, 0.0)
    victim = _loop(killed, 1.0)  # 7 s from step 3 to the end: the kill lands mid-run, loaded or not
    deadline = time.time() + 150
    while not any(step >= 3 for step in _steps_on_disk(killed)):
        assert victim.poll() is None, victim.communicate()[0].decode()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert max(_steps_on_disk(killed)) < STEPS
    assert not (killed / "final_params.npz").exists()
    _finish(_loop(killed, 0.0))
    _finish(reference)
    want, got = np.load(uninterrupted / "final_params.npz"), np.load(killed / "final_params.npz")
    assert want.files == got.files
    for key in want.files:
        assert np.array_equal(want[key].view(np.uint32), got[key].view(np.uint32)), key
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == list(range(1, STEPS + 1))  # steps past the last checkpoint logged once


@pytest.fixture(scope="module")
def small_state(tiny):
    import optax

    config, params = tiny
    return create_state(params, make_optimizer(optax.constant_schedule(1e-3)), 0)


def _shardings(tree):
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda _: device, tree)


def _truncate_arrays(step_dir):
    """Cut every array data file of a saved step in half (the metadata stays readable)."""
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _one_warning_line(caplog, step: int) -> str:
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage()[:200] for r in warnings]
    line = warnings[0].getMessage()
    assert "\n" not in line and len(line) < 400, line
    assert f"checkpoint step {step}" in line and "unreadable" in line
    return line


def test_corrupt_latest_step_falls_back_with_warning(tmp_path, small_state, caplog):
    ckpt = Checkpointer(tmp_path, keep=3, async_save=False)
    bumped = small_state.replace(step=small_state.step + 7)
    ckpt.save(1, small_state, {"data": {"index": 1}})
    ckpt.save(2, bumped, {"data": {"index": 2}})
    _truncate_arrays(tmp_path / "2")
    (tmp_path / "3.orbax-checkpoint-tmp-123").mkdir()  # an interrupted save's leftovers
    with caplog.at_level(logging.WARNING):
        step, state, extra = ckpt.restore_latest(abstract_tree(small_state,
                                                               _shardings(small_state)))
    assert step == 1 and extra == {"data": {"index": 1}} and int(state.step) == 0
    assert "quarantine" in _one_warning_line(caplog, 2)
    assert not (tmp_path / "2").exists() and list((tmp_path / "quarantine").iterdir())
    ckpt.save(2, bumped, {"data": {"index": 2}})  # the step number is free again
    assert ckpt.steps() == [1, 2]
    ckpt.close()
    with pytest.raises(ValueError, match="checkpoint.keep"):
        Checkpointer(tmp_path, keep=0)


def test_restore_params_skips_a_corrupt_step(tmp_path, small_state, caplog):
    ckpt = Checkpointer(tmp_path, keep=3, async_save=False)
    ckpt.save(1, small_state, {"data": {}})
    bumped = small_state.replace(params=jax.tree.map(lambda p: p + 1, small_state.params))
    ckpt.save(2, bumped, {"data": {}})
    ckpt.close()
    _truncate_arrays(tmp_path / "2")
    with caplog.at_level(logging.WARNING):
        params = restore_params(tmp_path)
    _one_warning_line(caplog, 2)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(small_state.params),
                         strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert (tmp_path / "2").exists()  # reading params leaves the run's directory as it was


def test_restore_into_target_shardings(tmp_path, small_state):
    ckpt = Checkpointer(tmp_path, keep=1)
    ckpt.save(5, small_state, {"data": {}})
    ckpt.wait()
    target = _shardings(small_state)
    step, state, _ = ckpt.restore_latest(abstract_tree(small_state, target))
    ckpt.close()
    assert step == 5
    for got, want, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(small_state),
                                   jax.tree.leaves(target), strict=True):
        assert got.sharding == sharding
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    params = restore_params(tmp_path)
    assert jax.tree.structure(params) == jax.tree.structure(small_state.params)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(small_state.params),
                         strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
