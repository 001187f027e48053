"""Logical-axis rules (MaxText style) and the `NamedSharding` trees they give.

A rule maps a logical dimension name (`batch`, `embed`, `heads`, ...) to mesh axes: a tuple of
axis names, a single name, or None (replicated). `logical_to_spec` replicates a dimension whose
size is not divisible by the product of its mesh axes' sizes; the trees built for a run are
stricter: `param_shardings` raises for a weight matrix that cannot shard (only small parameters,
norm scales and biases, may fall back to replication, see `replicated_params`) and
`batch_shardings` raises for a batch that cannot. `constrain` pins an activation's sharding by
logical names inside `activation_sharding(mesh, rules)` and does nothing outside it.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Mapping, Sequence
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


def frozen_rules(rules: Rules) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`rules` as nested tuples, each target as its tuple of mesh axes (hashable: a cache key)."""
    return tuple((name, _as_axes(target)) for name, target in rules)


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


def _assign(names: Sequence[str], shape: Sequence[int], rules: Rules, mesh: Mesh
            ) -> tuple[PartitionSpec, list[str]]:
    """(PartitionSpec, one line per dimension left replicated because it does not divide)."""
    if len(names) != len(shape):
        raise ValueError(f"logical axes {tuple(names)} do not match shape {tuple(shape)}")
    table = rules_dict(rules, mesh)
    used: set[str] = set()
    spec, misses = [], []
    for name, size in zip(names, shape, strict=True):
        if name not in table:
            raise ValueError(f"mesh.rules: no rule for logical axis {name!r}")
        axes = tuple(axis for axis in table[name] if axis not in used and mesh.shape[axis] > 1)
        total = math.prod(mesh.shape[axis] for axis in axes)
        if axes and size % total:
            misses.append(f"{name} dimension {size} is not divisible by mesh "
                          f"{' x '.join(axes)} = {total}")
        if not axes or size % total:
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec), misses


def logical_to_spec(names: Sequence[str], shape: Sequence[int], rules: Rules,
                    mesh: Mesh) -> PartitionSpec:
    """PartitionSpec of an array with logical dimension `names` and `shape`.

    Each mesh axis shards at most one dimension (the first that claims it); a dimension whose
    size is not divisible by its mesh axes' total size stays replicated.
    """
    return _assign(names, shape, rules, mesh)[0]


def _is_names(x: Any) -> bool:
    return isinstance(x, tuple) and all(isinstance(n, str) for n in x)


def tree_shardings(axes: Any, shapes: Any, rules: Rules, mesh: Mesh) -> Any:
    """NamedSharding tree from a tree of logical-name tuples and a same-shaped tree of shapes."""
    return jax.tree.map(
        lambda names, shape: NamedSharding(mesh, logical_to_spec(names, shape, rules, mesh)),
        axes, shapes, is_leaf=_is_names)


def is_small_param(names: Sequence[str]) -> bool:
    """A parameter without an `embed` dimension (norm scales, biases): no weight matrix."""
    return "embed" not in names


def param_shardings(axes: Any, shapes: Any, rules: Rules, mesh: Mesh) -> Any:
    """`tree_shardings` for parameters, raising for a weight matrix that cannot shard.

    A parameter with an `embed` dimension whose sharded dimension does not divide its mesh axes
    (more tensor shards than kv heads, a d_model the fsdp axis does not divide, ...) raises
    ValueError naming the parameter and both numbers; small parameters (`is_small_param`) stay
    replicated there (`replicated_params` lists them).
    """
    def one(path, names, shape):
        spec, misses = _assign(names, shape, rules, mesh)
        if misses and not is_small_param(names):
            raise ValueError(f"mesh: parameter {_path(path)} {tuple(shape)}: {misses[0]}")
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(one, axes, shapes, is_leaf=_is_names)


def replicated_params(axes: Any, shapes: Any, rules: Rules, mesh: Mesh) -> dict[str, str]:
    """{parameter path: why} for the parameters left (partly) replicated because a dimension
    does not divide its mesh axes."""
    flat = jax.tree_util.tree_flatten_with_path(axes, is_leaf=_is_names)[0]
    flat_shapes = jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple))
    found = {}
    for (path, names), shape in zip(flat, flat_shapes, strict=True):
        misses = _assign(names, shape, rules, mesh)[1]
        if misses:
            found[_path(path)] = misses[0]
    return found


def _path(path) -> str:
    return "/".join(str(getattr(p, "key", p)) for p in path)


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


def batch_spec(shape: Sequence[int], rules: Rules, mesh: Mesh) -> PartitionSpec:
    """PartitionSpec of a `[batch, seq, ...]` array; raises ValueError naming the rows and the
    devices when the batch rule's mesh axes do not divide the rows."""
    names = ("batch",) + ("seq",) * (len(shape) - 1)
    spec, misses = _assign(names, shape, rules, mesh)
    if misses:
        raise ValueError(f"a global batch of {shape[0]} rows cannot be split evenly: {misses[0]} "
                         f"(use a multiple of it)")
    return spec


def batch_multiple(rules: Rules, mesh: Mesh) -> int:
    """Rows a batch must be a multiple of to shard by the `batch` rule on `mesh`: the product of
    the rule's mesh axes' sizes (data x fsdp by default)."""
    table = rules_dict(rules, mesh)
    if "batch" not in table:
        raise ValueError("mesh.rules: no rule for logical axis 'batch'")
    return math.prod(mesh.shape[axis] for axis in table["batch"])


def batch_shardings(batch: Mapping[str, Any], rules: Rules, mesh: Mesh) -> dict:
    """Shardings for a batch dict of `[batch, seq, ...]` arrays: batch dim by the `batch` rule
    (an indivisible batch raises, see `batch_spec`)."""
    return {key: NamedSharding(mesh, batch_spec(value.shape, rules, mesh))
            for key, value in batch.items()}


_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("activation_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Within this context (while a function is traced), `constrain` pins activations."""
    token = _ACTIVE.set((mesh, tuple(tuple(rule) for rule in rules)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def with_activation_sharding(fn, mesh: Mesh, rules: Rules):
    """`fn` traced inside `activation_sharding(mesh, rules)` (wrap before `jax.jit`)."""
    def wrapped(*args, **kwargs):
        with activation_sharding(mesh, rules):
            return fn(*args, **kwargs)

    return wrapped


def constrain(x: jax.Array, names: Sequence[str]) -> jax.Array:
    """`x` with its sharding pinned by logical dimension `names` (e.g. `("batch", "seq",
    "embed")`) inside `activation_sharding`; `x` itself outside it. A dimension that cannot
    shard raises ValueError naming both numbers."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    spec, misses = _assign(names, x.shape, rules, mesh)
    if misses:
        raise ValueError(f"activation {tuple(names)} {tuple(x.shape)}: {misses[0]}")
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
