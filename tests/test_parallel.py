"""Meshes, logical-axis rules, sharded steps on 8 host devices and two-process training.

Bad inputs tried: mesh sizes whose product differs from the device count, two -1 axes, a fixed
product that does not divide the devices, an unknown mesh axis, a rule naming a missing mesh
axis, a logical axis without a rule.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec

from headjax.model import param_axes, param_shapes, tiny_config
from headjax.parallel import (
    DEFAULT_RULES,
    like_params,
    logical_to_spec,
    resolve_axis_sizes,
    should_initialize,
    tree_shardings,
)

WORKER = Path(__file__).with_name("train_worker.py")
ROOT = WORKER.parent.parent
MESH_222 = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"))


def worker_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAX_"))}
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **extra)
    return env


def test_axis_sizes_fill_and_errors():
    assert resolve_axis_sizes({"data": -1, "fsdp": 2, "tensor": 2}, 8) == \
        {"data": 2, "fsdp": 2, "tensor": 2}
    assert resolve_axis_sizes({"fsdp": -1}, 8) == {"data": 1, "fsdp": 8, "tensor": 1}
    with pytest.raises(ValueError, match=r"data\*fsdp\*tensor = 4 but there are 8 devices"):
        resolve_axis_sizes({"data": 2, "fsdp": 2, "tensor": 1}, 8)
    with pytest.raises(ValueError, match="only one axis may be -1"):
        resolve_axis_sizes({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match="do not divide the 8 devices"):
        resolve_axis_sizes({"data": -1, "tensor": 3}, 8)
    with pytest.raises(ValueError, match="unknown axes"):
        resolve_axis_sizes({"pipeline": 2}, 2)


def test_rules_shard_divisible_dims_and_replicate_the_rest():
    spec = logical_to_spec(("layers", "embed", "heads", "head_dim"), (2, 32, 4, 8),
                           DEFAULT_RULES, MESH_222)
    assert spec == PartitionSpec(None, "fsdp", "tensor", None)
    assert logical_to_spec(("batch", "seq"), (8, 16), DEFAULT_RULES, MESH_222) == \
        PartitionSpec(("data", "fsdp"), None)
    # 3 heads on a tensor axis of 2 and a batch of 6 over data*fsdp=4: replicated.
    assert logical_to_spec(("layers", "embed", "heads", "head_dim"), (2, 32, 3, 8),
                           DEFAULT_RULES, MESH_222) == PartitionSpec(None, "fsdp", None, None)
    assert logical_to_spec(("batch", "seq"), (6, 16), DEFAULT_RULES, MESH_222) == \
        PartitionSpec(None, None)
    with pytest.raises(ValueError, match="names mesh axes \\['pipe'\\]"):
        logical_to_spec(("embed",), (32,), (("embed", "pipe"),), MESH_222)
    with pytest.raises(ValueError, match="no rule for logical axis 'mlp'"):
        logical_to_spec(("mlp",), (64,), (("embed", "fsdp"),), MESH_222)


def test_optimizer_state_shardings_follow_params():
    import optax

    config = tiny_config()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1),
                             ("data", "fsdp", "tensor"))
    params_sh = tree_shardings(param_axes(config), param_shapes(config), DEFAULT_RULES, mesh)
    shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, np.float32), param_shapes(config),
                          is_leaf=lambda x: isinstance(x, tuple))
    opt_state = jax.eval_shape(optax.adamw(1e-3).init, shapes)
    sh = like_params(opt_state, params_sh, mesh)
    assert sh[0].mu == params_sh and sh[0].nu == params_sh
    assert sh[0].count.spec == PartitionSpec()


def test_distributed_detection_from_environment():
    assert should_initialize("auto", {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
    assert should_initialize("auto", {"TPU_WORKER_HOSTNAMES": "t0,t1"})
    assert not should_initialize("auto", {"TPU_WORKER_HOSTNAMES": "t0"})
    assert not should_initialize("auto", {})
    assert should_initialize("on", {})
    assert not should_initialize("off", {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
    with pytest.raises(ValueError, match="distributed.mode"):
        should_initialize("maybe", {})


def test_sharded_steps_match_single_device(tmp_path):
    """data=2 x fsdp=2 x tensor=2 and fsdp=8 (8 host devices) equal one device after 3 steps."""
    out = tmp_path / "diffs.json"
    subprocess.run([sys.executable, str(WORKER), "sharded", str(out)], check=True, timeout=240,
                   env=worker_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"))
    diffs = json.loads(out.read_text())
    assert diffs.pop("changed") > 1e-3  # the steps did move the params
    for variant, diff in diffs.items():
        assert diff < 1e-5, (variant, diff)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(worker: Path, outputs: list[Path], timeout: float):
    """Run `worker multiprocess <output> <port> <index> <count>` as `len(outputs)` jax.distributed
    CPU processes on one free port, assert each exits 0, and return the worker's module (imported
    from its file, for the one-device reference)."""
    sys.path.insert(0, str(worker.parent))
    try:
        module = __import__(worker.stem)
    finally:
        sys.path.pop(0)
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(worker), "multiprocess", str(out), port,
                               str(i), str(len(outputs))],
                              env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i, out in enumerate(outputs)]
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, out.decode()[-3000:]
    return module


def test_two_processes_match_one(tmp_path):
    """Two `jax.distributed` CPU processes (gloo collectives), mesh data=2, equal one device."""
    train_worker = run_processes(WORKER, [tmp_path / f"p{i}.npz" for i in range(2)], timeout=240)
    reference = jax.tree.leaves(train_worker.run_steps(None))
    for i in range(2):
        got = np.load(tmp_path / f"p{i}.npz")
        for j, ref in enumerate(reference):
            np.testing.assert_allclose(got[str(j)], ref, atol=1e-5, rtol=0)
