"""Accelerators a run is planned for: memory, peak bf16 throughput, simulated or TPU devices.

Memory is per chip (one JAX device: TPU v5p's two TensorCores act as one device), peak is dense
bf16 matmul throughput per chip from the vendors' data sheets. Cloud TPU slice names count chips
for v5e/v6e (v5e-64 = 64 chips) but TensorCores for v5p (v5p-128 = 64 chips).
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import NamedTuple

import jax

GIB = 1024 ** 3


class Chip(NamedTuple):
    """name: display name; memory_gib: per device; peak_flops: dense bf16 FLOP/s per device;
    tpu: whether `jax.experimental.topologies` can describe a slice of it."""

    name: str
    memory_gib: float
    peak_flops: float
    tpu: bool


CHIPS: dict[str, Chip] = {
    "v5e": Chip("TPU v5e", 16, 197e12, True),
    "v6e": Chip("TPU v6e", 32, 918e12, True),
    "v5p": Chip("TPU v5p", 95, 459e12, True),
    "h100": Chip("H100", 80, 989e12, False),
    "h200": Chip("H200", 141, 989e12, False),
}


def chip(name: str) -> Chip:
    """The chip `name` (a key of `CHIPS`); unknown names raise naming the known ones."""
    if name not in CHIPS:
        raise ValueError(f"--chip: {name!r} not in {tuple(CHIPS)}")
    return CHIPS[name]


def has_libtpu() -> bool:
    """Whether libtpu is installed (needed to compile for a TPU topology)."""
    return importlib.util.find_spec("libtpu") is not None


def tpu_grid(name: str, devices: int) -> tuple[int, ...]:
    """Chip grid of a `devices`-chip slice: 3D for v5p (2x2x1 per host), 2D for v5e/v6e."""
    dims = 3 if name == "v5p" else 2
    grid = [1] * dims
    if devices < 1 or 2 ** round(math.log2(devices)) != devices:
        raise ValueError(f"--devices: a {name} slice needs a power of two chips, got {devices}")
    for i in range(round(math.log2(devices))):
        grid[i % dims] *= 2
    return tuple(sorted(grid))


def tpu_devices(name: str, devices: int) -> list:
    """Compile-only devices of a `devices`-chip TPU `name` slice (needs libtpu, no TPU)."""
    from jax.experimental import topologies

    grid = tpu_grid(name, devices)
    topology = topologies.get_topology_desc(
        topology_name=f"{name}:{'x'.join(map(str, grid))}", platform="tpu",
        chip_config_name="default", chips_per_host_bounds=(2, 2, 1), num_slices=1,
        wrap=(False,) * 3)
    return list(topology.devices)


def simulate_cpu_devices(devices: int) -> None:
    """Make JAX's CPU backend expose `devices` devices (only before JAX creates its backends;
    afterwards it must already have exactly `devices`)."""
    try:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", devices)
    except RuntimeError:
        if jax.device_count() != devices:
            raise RuntimeError(f"--devices={devices}: JAX already started with "
                               f"{jax.device_count()} devices") from None


def running_on() -> str:
    """The devices this process computes on, in words: "2 CPU cores" (the host's logical CPUs)
    or "<count> x <device kind>" ("1 x NVIDIA H100 80GB HBM3"); recorded beside wall times."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return f"{os.cpu_count()} CPU cores"
    return f"{jax.device_count()} x {device.device_kind}"
