"""Logical-axis rules (MaxText style) and the `NamedSharding` trees they give.

A rule maps a logical dimension name (`batch`, `embed`, `heads`, ...) to mesh axes: a tuple of
axis names, a single name, or None (replicated). A dimension whose size is not divisible by the
product of its mesh axes' sizes is replicated instead, so any model fits any mesh.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, Any]]

DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
    ("head_dim", None),
    ("norm", None),
    ("seq", None),
)


def _as_axes(target: Any) -> tuple[str, ...]:
    if target is None:
        return ()
    if isinstance(target, str):
        return (target,)
    return tuple(target)


def rules_dict(rules: Rules, mesh: Mesh) -> dict[str, tuple[str, ...]]:
    """`rules` as {logical name: tuple of mesh axes}, checking every axis exists in `mesh`."""
    table = {}
    for entry in rules:
        if len(entry) != 2 or not isinstance(entry[0], str):
            raise ValueError(f"mesh.rules: each rule must be (logical_name, mesh_axes), "
                             f"got {entry!r}")
        name, target = entry
        axes = _as_axes(target)
        missing = [axis for axis in axes if axis not in mesh.shape]
        if missing:
            raise ValueError(f"mesh.rules: rule {name!r} names mesh axes {missing} not in the "
                             f"mesh {tuple(mesh.shape)}")
        table[name] = axes
    return table


def logical_to_spec(names: Sequence[str], shape: Sequence[int], rules: Rules,
                    mesh: Mesh) -> PartitionSpec:
    """PartitionSpec of an array with logical dimension `names` and `shape`.

    Each mesh axis shards at most one dimension (the first that claims it); a dimension whose
    size is not divisible by its mesh axes' total size stays replicated.
    """
    if len(names) != len(shape):
        raise ValueError(f"logical axes {tuple(names)} do not match shape {tuple(shape)}")
    table = rules_dict(rules, mesh)
    used: set[str] = set()
    spec = []
    for name, size in zip(names, shape, strict=True):
        if name not in table:
            raise ValueError(f"mesh.rules: no rule for logical axis {name!r}")
        axes = tuple(axis for axis in table[name] if axis not in used and mesh.shape[axis] > 1)
        if not axes or size % math.prod(mesh.shape[axis] for axis in axes):
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def _is_names(x: Any) -> bool:
    return isinstance(x, tuple) and all(isinstance(n, str) for n in x)


def tree_shardings(axes: Any, shapes: Any, rules: Rules, mesh: Mesh) -> Any:
    """NamedSharding tree from a tree of logical-name tuples and a same-shaped tree of shapes."""
    return jax.tree.map(
        lambda names, shape: NamedSharding(mesh, logical_to_spec(names, shape, rules, mesh)),
        axes, shapes, is_leaf=_is_names)


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated sharding on `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def like_params(tree: Any, params_shardings: Any, mesh: Mesh) -> Any:
    """Shardings for a tree holding param-shaped subtrees (optimizer state, masks).

    Every subtree with the params' structure gets `params_shardings`; every other leaf (step
    counters, scalars) is replicated.
    """
    params_def = jax.tree.structure(params_shardings)

    def is_param_tree(x: Any) -> bool:
        return jax.tree.structure(x) == params_def

    return jax.tree.map(lambda x: params_shardings if is_param_tree(x) else replicated(mesh),
                        tree, is_leaf=is_param_tree)


def batch_shardings(batch: Mapping[str, Any], rules: Rules, mesh: Mesh) -> dict:
    """Shardings for a batch dict of `[batch, seq, ...]` arrays: batch dim by the `batch` rule."""
    def spec(x):
        names = ("batch",) + ("seq",) * (len(x.shape) - 1)
        return NamedSharding(mesh, logical_to_spec(names, x.shape, rules, mesh))

    return {key: spec(value) for key, value in batch.items()}
