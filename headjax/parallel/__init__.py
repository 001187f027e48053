"""Meshes, logical-axis sharding rules and multi-process start-up."""

from headjax.parallel.distributed import global_batch, maybe_initialize, should_initialize
from headjax.parallel.mesh import MESH_AXES, make_mesh, resolve_axis_sizes
from headjax.parallel.rules import (
    DEFAULT_RULES,
    batch_shardings,
    like_params,
    logical_to_spec,
    replicated,
    tree_shardings,
)

__all__ = [
    "DEFAULT_RULES", "MESH_AXES", "batch_shardings", "global_batch", "like_params",
    "logical_to_spec", "make_mesh", "maybe_initialize", "replicated", "resolve_axis_sizes",
    "should_initialize", "tree_shardings",
]
