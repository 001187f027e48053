"""Device mesh from configured axis sizes (`data`, `fsdp`, `tensor`); -1 fills the rest."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def resolve_axis_sizes(sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Axis sizes with at most one -1 replaced so that their product is `num_devices`.

    Raises ValueError naming the axis (or the product) when the sizes cannot cover the devices.
    """
    unknown = set(sizes) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh: unknown axes {sorted(unknown)}, expected {MESH_AXES}")
    resolved = {axis: int(sizes.get(axis, 1)) for axis in MESH_AXES}
    fill = [axis for axis, size in resolved.items() if size == -1]
    for axis, size in resolved.items():
        if size != -1 and size < 1:
            raise ValueError(f"mesh.{axis}: size must be a positive int or -1, got {size}")
    if len(fill) > 1:
        raise ValueError(f"mesh: only one axis may be -1, got {fill}")
    fixed = math.prod(size for size in resolved.values() if size != -1)
    if fill:
        if num_devices % fixed:
            raise ValueError(f"mesh: the fixed axes (product {fixed}) do not divide the "
                             f"{num_devices} devices, so mesh.{fill[0]}=-1 cannot fill them")
        resolved[fill[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(f"mesh: data*fsdp*tensor = {fixed} but there are {num_devices} devices "
                         f"(set one axis to -1 to fill the remaining devices)")
    return resolved


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `Mesh` with axes `("data", "fsdp", "tensor")` over `devices` (default: all devices)."""
    devices = list(jax.devices() if devices is None else devices)
    resolved = resolve_axis_sizes(sizes, len(devices))
    shape = tuple(resolved[axis] for axis in MESH_AXES)
    try:
        grid = mesh_utils.create_device_mesh(shape, devices)
    except (AssertionError, ValueError, NotImplementedError):
        grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(grid, MESH_AXES)
