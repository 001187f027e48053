"""Finding 3: how much (and how few) parameters move, per head and per module, and a parameter
mask for head-targeted SFT.

Relative Frobenius change of a slice W (before) -> W' (after):  ||W' - W||_F / ||W||_F.

Head slices (canonical tree of `headjax.model.transformer`), layer l, query head h, its key/value
group g = h // group_size:
    q:  q_proj[l, :, h, :] (+ q_bias[l, h])        o:  o_proj[l, h, :, :]
    k:  k_proj[l, :, g, :] (+ k_bias[l, g])        v:  v_proj[l, :, g, :] (+ v_bias[l, g])
GQA attribution: a key/value head serves every query head of its group, so each of those query
heads is attributed the group's full k/v change (shared, not divided). The combined per-head
change stacks all four slices: ||d[q_h, k_g, v_g, o_h]||_F / ||[q_h, k_g, v_g, o_h]||_F.

Concentration: the smallest fraction of parameter entries whose squared changes add up to `mass`
(e.g. 90%) of the total squared change.
Pattern/parameter ratio: (||dAP||_F / ||AP_before||_F) / (||d theta||_2 / ||theta_before||_2).
Its null: the same ratio for a random perturbation d theta of the same relative size (every
array moved by that fraction of its own norm in a random direction).
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from headjax.model.config import ModelConfig, tiny_config
from headjax.model.transformer import Params, param_axes, param_shapes

MLP_KEYS = ("mlp_norm", "gate_proj", "up_proj", "down_proj", "post_mlp_norm")


def _layer_axes() -> dict:
    """Logical axis names of the stacked layer parameters, biases included (`param_axes`; the
    names do not depend on the model's sizes)."""
    return param_axes(tiny_config(qkv_bias=True, qk_norm=True, sandwich_norms=True))["layers"]


def _place(values: np.ndarray, value_axes: tuple[str, ...], names: tuple[str, ...],
           shape: tuple[int, ...]) -> np.ndarray:
    """`values` (dimensions named `value_axes`) broadcast to `shape` (dimensions `names`)."""
    order = sorted(range(len(value_axes)), key=lambda i: names.index(value_axes[i]))
    expanded = [1] * len(names)
    for axis, size in zip(value_axes, values.shape, strict=True):
        expanded[names.index(axis)] = size
    return np.broadcast_to(np.transpose(values, order).reshape(expanded), shape)


class HeadChange(NamedTuple):
    """Relative Frobenius change per head slice.

    q, o, combined: `[layers, heads]`; k, v: `[layers, kv_heads]` (see the module docstring).
    """

    q: Float[Array, "layers heads"]
    k: Float[Array, "layers kv_heads"]
    v: Float[Array, "layers kv_heads"]
    o: Float[Array, "layers heads"]
    combined: Float[Array, "layers heads"]


def _head_sq_norm(w: jax.Array, names: tuple[str, ...], head: str) -> jax.Array:
    """Squared norm of `w` per (layer, `head`), summing every other named dimension."""
    other = tuple(i for i, n in enumerate(names) if n not in ("layers", head))
    sq = jnp.sum(w.astype(jnp.float32) ** 2, axis=other)
    return sq if names.index("layers") < names.index(head) else sq.T


def _sq_norms(layers: dict, name: str, bias: str | None):
    """Squared norms per (layer, head) of `layers[name]` plus its bias, `[layers, heads or
    kv_heads]`, the dimensions found by their logical names."""
    axes = _layer_axes()
    head = "heads" if "heads" in axes[name] else "kv_heads"
    sq = _head_sq_norm(layers[name], axes[name], head)
    if bias is not None and bias in layers:
        sq = sq + _head_sq_norm(layers[bias], axes[bias], head)
    return sq


@jax.jit
def head_param_change(before: Params, after: Params) -> HeadChange:
    """Per-head relative Frobenius change of the q/k/v/o slices between two param trees."""
    chex.assert_trees_all_equal_shapes(before, after)
    delta = jax.tree.map(lambda a, b: b.astype(jnp.float32) - a.astype(jnp.float32),
                         before["layers"], after["layers"])
    base = before["layers"]
    parts = {}
    for slot, name, bias in (("q", "q_proj", "q_bias"), ("k", "k_proj", "k_bias"),
                             ("v", "v_proj", "v_bias"), ("o", "o_proj", None)):
        parts[slot] = (_sq_norms(delta, name, bias), _sq_norms(base, name, bias))
    group = parts["q"][0].shape[1] // parts["k"][0].shape[1]
    per_query = lambda sq: jnp.repeat(sq, group, axis=1)
    num = parts["q"][0] + parts["o"][0] + per_query(parts["k"][0]) + per_query(parts["v"][0])
    den = parts["q"][1] + parts["o"][1] + per_query(parts["k"][1]) + per_query(parts["v"][1])
    rel = {slot: jnp.sqrt(d / n) for slot, (d, n) in parts.items()}
    return HeadChange(q=rel["q"], k=rel["k"], v=rel["v"], o=rel["o"], combined=jnp.sqrt(num / den))


def module_change(before: Params, after: Params) -> dict[str, np.ndarray]:
    """Relative Frobenius change of every parameter, keyed by its path ("layers/q_proj", ...):
    `[layers]` (one value per layer) for stacked layer parameters, a scalar otherwise."""
    out = {}
    flat_before = jax.tree_util.tree_flatten_with_path(before)[0]
    for (path, a), b in zip(flat_before, jax.tree.leaves(after), strict=True):
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        axes = tuple(range(1, a.ndim)) if name.startswith("layers/") else None
        a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
        num = np.sqrt(np.sum((b32 - a32) ** 2, axis=axes))
        out[name] = num / np.sqrt(np.sum(a32 ** 2, axis=axes))
    return out


def change_concentration(before: Params, after: Params, *, mass: float = 0.9) -> float:
    """Smallest fraction of all parameter entries holding `mass` of the total squared change."""
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass: {mass} must be in (0, 1]")
    sq = np.concatenate([(np.asarray(b, np.float32) - np.asarray(a, np.float32)).ravel() ** 2
                         for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after),
                                         strict=True)])
    total = sq.sum()
    if total == 0:
        return 0.0
    cumulative = np.cumsum(np.sort(sq)[::-1], dtype=np.float64)
    needed = int(np.searchsorted(cumulative, mass * cumulative[-1])) + 1
    return needed / sq.size


def relative_param_change(before: Params, after: Params) -> float:
    """||theta_after - theta_before||_2 / ||theta_before||_2 over all parameters."""
    num = sum(float(jnp.sum((b.astype(jnp.float32) - a.astype(jnp.float32)) ** 2))
              for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True))
    den = sum(float(jnp.sum(a.astype(jnp.float32) ** 2)) for a in jax.tree.leaves(before))
    return float(np.sqrt(num / den))


def random_relative_perturbation(params: Params, relative: float, key: jax.Array) -> Params:
    """`params` with every floating-point array W moved by `relative` x ||W||_F in a uniformly
    random direction (an isotropic Gaussian draw scaled to that norm), so that
    `relative_param_change(params, result)` is `relative`: a change as large as a fine-tune's
    that follows no gradient (Finding 3's null). Same tree, shapes and dtypes."""
    leaves, treedef = jax.tree.flatten(params)
    moved = []
    for leaf, leaf_key in zip(leaves, jax.random.split(key, len(leaves)), strict=True):
        w = jnp.asarray(leaf)
        if not jnp.issubdtype(w.dtype, jnp.floating):
            moved.append(leaf)
            continue
        w32 = w.astype(jnp.float32)
        direction = jax.random.normal(leaf_key, w.shape, jnp.float32)
        step = relative * jnp.linalg.norm(w32) / jnp.linalg.norm(direction)
        moved.append((w32 + step * direction).astype(w.dtype))
    return jax.tree.unflatten(treedef, moved)


def relative_pattern_change(pattern_before: Float[Array, "layers heads"],
                            pattern_after: Float[Array, "layers heads"]) -> float:
    """||AP_after - AP_before||_F / ||AP_before||_F, in the patterns' own precision."""
    before, after = np.asarray(pattern_before), np.asarray(pattern_after)
    chex.assert_equal_shape([before, after])
    return float(np.linalg.norm(after - before) / np.linalg.norm(before))


def pattern_to_param_ratio(pattern_before: Float[Array, "layers heads"],
                           pattern_after: Float[Array, "layers heads"],
                           params_before: Params, params_after: Params) -> float:
    """Relative pattern change (float64) divided by relative parameter change (> 1: the pattern
    moved more, in relative terms, than the parameters did)."""
    pattern_rel = relative_pattern_change(np.asarray(pattern_before, np.float64),
                                          np.asarray(pattern_after, np.float64))
    return float(pattern_rel / relative_param_change(params_before, params_after))


def head_parameter_mask(config: ModelConfig, heads: Bool[Array, "layers heads"], *,
                        include_kv: bool = True, include_mlp: bool = False) -> Params:
    """A pytree of 0/1 float32 arrays shaped like the params: 1 on the parameters of `heads`.

    For each selected head (l, h): q_proj[l, :, h, :], q_bias[l, h], o_proj[l, h, :, :]; with
    `include_kv` also its group's k_proj/v_proj[l, :, g, :] and k/v_bias[l, g] (g = h //
    group_size, shared with the group's other query heads); with `include_mlp` the whole MLP
    (mlp_norm, gate/up/down_proj, post_mlp_norm with sandwich norms) of every layer holding a
    selected head. Everything else (embeddings, other norms, lm_head, other heads) is 0. Multiply
    it into updates for head-targeted SFT.
    """
    heads = np.asarray(heads, bool)
    shape = (config.num_layers, config.num_heads)
    if heads.shape != shape:
        raise ValueError(f"heads: shape {heads.shape}, expected [layers, heads] = {shape}")
    groups = heads.reshape(config.num_layers, config.num_kv_heads, config.group_size).any(-1)
    by_head = (heads, ("layers", "heads"))
    by_group = (groups, ("layers", "kv_heads"))
    slot_masks = {"q_proj": by_head, "q_bias": by_head, "o_proj": by_head}
    if include_kv:
        slot_masks.update(dict.fromkeys(("k_proj", "v_proj", "k_bias", "v_bias"), by_group))
    if include_mlp:
        slot_masks.update(dict.fromkeys(MLP_KEYS, (heads.any(axis=1), ("layers",))))
    axes = param_axes(config)["layers"]

    def build(path, shape):
        name = str(getattr(path[-1], "key", path[-1]))
        if path[0].key == "layers" and name in slot_masks:
            values, value_axes = slot_masks[name]
            return jnp.asarray(_place(values, value_axes, axes[name], shape), jnp.float32)
        return jnp.zeros(shape, jnp.float32)

    return jax.tree_util.tree_map_with_path(build, param_shapes(config),
                                            is_leaf=lambda x: isinstance(x, tuple))
