"""Internal batches (evaluation prompts, probe batches) sharded over the mesh their params live on.

A batch the run builds itself can have any number of rows (the last evaluation batch is short, a
caller picks its probe batch size), so instead of refusing rows that the `batch` rule's mesh axes
(data x fsdp by default) do not divide, `shard_rows` pads them:

    rows -> padded_rows(rows, m), m = batch_multiple(rules, mesh)

with copies of the last row whose `zero` fields (e.g. `loss_mask`) are zeroed, places the batch
like a training batch (`batch_shardings`, `global_batch`), and `gather_rows` brings a result back
to the host without the padded rows. Every program run on such a batch computes each row on its
own (a padded row changes no real row), so the kept rows equal an unsharded run's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from headjax.parallel.distributed import global_batch
from headjax.parallel.rules import Rules, batch_multiple, batch_shardings


def params_mesh(params: Any) -> Mesh | None:
    """The mesh `params` are sharded over (the first leaf with a `NamedSharding`), or None for
    host arrays, arrays on one device and tracers."""
    for leaf in jax.tree.leaves(params):
        if isinstance(leaf, jax.core.Tracer) or not isinstance(leaf, jax.Array):
            continue
        if isinstance(leaf.sharding, NamedSharding):
            return leaf.sharding.mesh
    return None


def padded_rows(rows: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that holds `rows` rows."""
    return -(-rows // multiple) * multiple


def pad_rows(batch: Mapping[str, np.ndarray], multiple: int, *, zero: Sequence[str] = ()
             ) -> dict[str, np.ndarray]:
    """`batch` (arrays `[rows, ...]`) grown to `padded_rows(rows, multiple)` rows by repeating
    the last row, with the fields named in `zero` set to 0 in the added rows."""
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        extra = padded_rows(len(value), multiple) - len(value)
        tail = np.repeat(value[-1:], extra, axis=0)
        out[key] = np.concatenate([value, np.zeros_like(tail) if key in zero else tail])
    return out


def shard_rows(batch: Mapping[str, np.ndarray], mesh: Mesh, rules: Rules, *,
               zero: Sequence[str] = ()) -> dict[str, jax.Array]:
    """`pad_rows` of `batch` to a multiple of the `batch` rule's mesh axes, rows sharded over
    them like a training batch. Every process passes the same full batch."""
    padded = pad_rows(batch, batch_multiple(rules, mesh), zero=zero)
    return global_batch(padded, batch_shardings(padded, rules, mesh))


def _host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)


def gather_rows(tree: Any, rows: int) -> Any:
    """Numpy copies of a tree of `[padded rows, ...]` arrays (gathered from every process when
    they span several), each cut to its first `rows` rows."""
    return jax.tree.map(lambda x: _host(x)[:rows], tree)
