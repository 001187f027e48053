"""Meshes, logical-axis sharding rules, internal batches on a mesh and multi-process start-up."""

from headjax.parallel.distributed import global_batch, maybe_initialize, should_initialize
from headjax.parallel.mesh import MESH_AXES, make_mesh, resolve_axis_sizes
from headjax.parallel.placement import (
    gather_rows,
    pad_rows,
    padded_rows,
    params_mesh,
    shard_rows,
)
from headjax.parallel.rules import (
    DEFAULT_RULES,
    activation_sharding,
    batch_multiple,
    batch_shardings,
    batch_spec,
    constrain,
    frozen_rules,
    is_small_param,
    like_params,
    logical_to_spec,
    param_shardings,
    replicated,
    replicated_params,
    tree_shardings,
    with_activation_sharding,
)

__all__ = [
    "DEFAULT_RULES", "MESH_AXES", "activation_sharding", "batch_multiple", "batch_shardings",
    "batch_spec", "constrain", "frozen_rules", "gather_rows", "global_batch", "is_small_param",
    "like_params", "logical_to_spec", "make_mesh", "maybe_initialize", "pad_rows", "padded_rows",
    "param_shardings", "params_mesh", "replicated", "replicated_params", "resolve_axis_sizes",
    "shard_rows", "should_initialize", "tree_shardings", "with_activation_sharding",
]
