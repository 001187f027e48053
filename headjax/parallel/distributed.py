"""Multi-process start-up and per-process batch assembly.

`maybe_initialize` calls `jax.distributed.initialize` when asked to (config) or when the
environment says this is one process of many: `JAX_COORDINATOR_ADDRESS` (with
`JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`) or a multi-host Cloud TPU slice
(`TPU_WORKER_HOSTNAMES` listing several hosts, where JAX auto-detects everything).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import numpy as np

MODES = ("auto", "on", "off")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r} is not an int") from err


def should_initialize(mode: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to call `jax.distributed.initialize` for `mode` ("auto" | "on" | "off")."""
    if mode not in MODES:
        raise ValueError(f"distributed.mode: {mode!r} not in {MODES}")
    environ = os.environ if environ is None else environ
    if mode != "auto":
        return mode == "on"
    multi_tpu = "," in environ.get("TPU_WORKER_HOSTNAMES", "")
    return bool(environ.get("JAX_COORDINATOR_ADDRESS")) or multi_tpu


def maybe_initialize(mode: str = "auto", coordinator_address: str = "",
                     num_processes: int = 0, process_id: int = -1) -> bool:
    """Initialise multi-process JAX when `should_initialize(mode)`; True if it did.

    Unset arguments ("", 0, -1) come from `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID`, or are left to JAX's cluster auto-detection (Cloud TPU, SLURM, ...).
    Must run before anything touches a JAX device.
    """
    if not should_initialize(mode):
        return False
    kwargs = {
        "coordinator_address": coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS"),
        "num_processes": num_processes or _env_int("JAX_NUM_PROCESSES"),
        "process_id": process_id if process_id >= 0 else _env_int("JAX_PROCESS_ID"),
    }
    # CPU collectives across processes need an implementation (no effect on GPU/TPU).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**{k: v for k, v in kwargs.items() if v is not None})
    return True


def global_batch(batch: Mapping[str, np.ndarray], shardings: Mapping[str, jax.Sharding], *,
                 process_local: bool = False) -> dict[str, jax.Array]:
    """A global `jax.Array` batch from numpy arrays `[rows, ...]` on every process.

    process_local=False: every process holds the same full global batch and each device takes
      its slice (simple and order-proof for data pipelines that are cheap to replicate).
    process_local=True: each process holds only the rows its devices own, in device order; the
      global batch has `rows * process_count` rows along a fully sharded batch dimension.
    """
    def put(key, value):
        value = np.asarray(value)
        global_shape = None if process_local else value.shape
        return jax.make_array_from_process_local_data(shardings[key], value, global_shape)

    return {key: put(key, value) for key, value in batch.items()}
