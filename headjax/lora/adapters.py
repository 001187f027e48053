"""LoRA adapters: W' = W + (alpha / r) A B, applied unmerged in training, merged elsewhere.

For a projection W with per-layer input dims `in` and output dims `out` (our layout, `[*in, *out]`,
the transpose of torch's `[out, in]`), an adapter of rank r holds

    a  [layers, *in, r]    (peft's lora_A.weight `[r, in]`, transposed)
    b  [layers, r, *out]   (peft's lora_B.weight `[out, r]`, transposed)

`a` starts U(-1/sqrt(in), 1/sqrt(in)) (peft's default Kaiming-uniform), `b` starts at zero, so
step 0 is the base model. Two equal ways to run the model:

- unmerged (training): `layer_adapters` hands the masked adapters to `forward`, and each adapted
  projection computes y = x W + (alpha / r) (dropout(x) a) b (`headjax.model.adapter.adapted`),
  peft's y = x W^T + (alpha / r) B_peft A_peft dropout(x). The backward pass never forms a
  weight-shaped gradient for a frozen W, and `spec.dropout` > 0 is the real LoRA dropout.
- merged (evaluation, head scores, export): W' = W + (alpha / r) * a @ b (`merge`,
  `model_params`); without dropout its outputs equal the unmerged ones.

Head-LoRA: with `LoraSpec.heads` (bool `[layers, heads]`) a head axis of the adapter is masked to
the chosen heads: q's `b[l, :, h, :]`, o's `a[l, h, :, :]`, k/v's `b[l, :, g, :]` for the chosen
heads' key/value groups g; the other factor and the MLP targets are masked to the layers holding a
chosen head. The mask is applied at init, inside `layer_adapters` and inside the merge, so the
delta of every other head (and layer) is exactly zero, its gradient too, and it never moves.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from headjax.model.adapter import INPUT_DIMS, Adapters
from headjax.model.config import ModelConfig
from headjax.model.transformer import Params, param_axes, param_shapes

TARGETS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj",
           "up": "up_proj", "down": "down_proj"}
RANK_AXIS = "lora_rank"
RANK_RULE = (RANK_AXIS, None)  # the rank dimension is never sharded


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """Adapter shape: rank r, alpha (scale alpha / r), targets (keys of `TARGETS`), for
    head-LoRA the chosen heads as a `[layers][heads]` tuple of bools (None: every head), and the
    dropout rate on the adapter input in training (unmerged path only)."""

    rank: int
    alpha: float
    targets: tuple[str, ...]
    heads: tuple[tuple[bool, ...], ...] | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise ValueError(f"lora.rank: must be a positive int, got {self.rank!r}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if not self.targets or unknown or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"lora.targets: {tuple(self.targets)} must name distinct targets "
                             f"among {tuple(TARGETS)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout: {self.dropout!r} not in [0, 1)")

    @property
    def scale(self) -> float:
        """alpha / r."""
        return self.alpha / self.rank

    @property
    def keys(self) -> tuple[str, ...]:
        """Parameter keys of the adapted projections, in `TARGETS` order."""
        return tuple(key for t, key in TARGETS.items() if t in self.targets)


def lora_spec(rank: int, alpha: float, targets, heads=None, dropout: float = 0.0) -> LoraSpec:
    """A `LoraSpec`; `heads` as any bool `[layers, heads]` array (or None)."""
    if heads is not None:
        heads = np.asarray(heads, bool)
        if heads.ndim != 2:
            raise ValueError(f"lora heads: shape {heads.shape}, expected [layers, heads]")
        heads = tuple(map(tuple, heads.tolist()))
    return LoraSpec(rank=rank, alpha=float(alpha), targets=tuple(targets), heads=heads,
                    dropout=float(dropout))


def adapter_axes(config: ModelConfig, spec: LoraSpec) -> dict:
    """Logical axis names of every adapter dimension, `{key: {"a": names, "b": names}}`: the
    adapted weight's `layers`, `in` and `out` names around `lora_rank` (sharded like W)."""
    axes = param_axes(config)["layers"]
    out = {}
    for key in spec.keys:
        names, n_in = axes[key], INPUT_DIMS[key]
        out[key] = {"a": (*names[:1 + n_in], RANK_AXIS), "b": (names[0], RANK_AXIS,
                                                               *names[1 + n_in:])}
    return out


def adapter_shapes(config: ModelConfig, spec: LoraSpec) -> dict:
    """Shape of every adapter array, a tree shaped like `adapter_axes`."""
    shapes = param_shapes(config)["layers"]
    out = {}
    for key in spec.keys:
        shape, n_in = shapes[key], INPUT_DIMS[key]
        out[key] = {"a": (*shape[:1 + n_in], spec.rank), "b": (shape[0], spec.rank,
                                                               *shape[1 + n_in:])}
    return out


def adapter_masks(spec: LoraSpec, shapes: dict) -> dict | None:
    """Head-LoRA masks, 0/1 float32 arrays broadcastable to the adapters of `shapes` (a tree
    shaped like `adapter_shapes`): 1 where an entry may be nonzero. None without `spec.heads`."""
    if spec.heads is None:
        return None
    heads = np.asarray(spec.heads, bool)
    num_layers, num_heads = heads.shape
    layer = heads.any(axis=1).astype(np.float32)
    masks = {}
    for key, ab in shapes.items():
        masks[key] = {f: layer.reshape(-1, *[1] * (len(s) - 1)) for f, s in ab.items()}
        if key in ("q_proj", "o_proj"):
            head = heads[:, None, :, None] if key == "q_proj" else heads[:, :, None, None]
            masks[key]["b" if key == "q_proj" else "a"] = head.astype(np.float32)
        elif key in ("k_proj", "v_proj"):
            kv_heads = ab["b"][2]
            groups = heads.reshape(num_layers, kv_heads, num_heads // kv_heads).any(-1)
            masks[key]["b"] = groups[:, None, :, None].astype(np.float32)
    return masks


def trainable_count(config: ModelConfig, spec: LoraSpec) -> int:
    """Adapter entries that can be nonzero (the head-LoRA budget; all entries without heads)."""
    shapes = adapter_shapes(config, spec)
    masks = adapter_masks(spec, shapes)
    if masks is None:
        return int(sum(np.prod(s) for ab in shapes.values() for s in ab.values()))
    return int(sum(np.broadcast_to(masks[k][f], s).sum()
                   for k, ab in shapes.items() for f, s in ab.items()))


def init_adapters(key: jax.Array, config: ModelConfig, spec: LoraSpec) -> dict:
    """Fresh adapters: a ~ U(-1/sqrt(in), 1/sqrt(in)), b = 0, both times the head-LoRA mask."""
    shapes = adapter_shapes(config, spec)
    heads = np.asarray(spec.heads, bool) if spec.heads is not None else None
    if heads is not None and heads.shape != (config.num_layers, config.num_heads):
        raise ValueError(f"lora heads: shape {heads.shape}, expected [layers, heads] = "
                         f"{(config.num_layers, config.num_heads)}")
    masks = adapter_masks(spec, shapes)
    dtype = jnp.dtype(config.param_dtype)
    out = {}
    for k, key_name in zip(jax.random.split(key, len(spec.keys)), spec.keys, strict=True):
        shape_a = shapes[key_name]["a"]
        fan_in = int(np.prod(shape_a[1:-1]))
        bound = fan_in ** -0.5
        a = jax.random.uniform(k, shape_a, jnp.float32, -bound, bound)
        if masks is not None:
            a = a * masks[key_name]["a"]
        out[key_name] = {"a": a.astype(dtype), "b": jnp.zeros(shapes[key_name]["b"], dtype)}
    return out


def delta(a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """scale * a @ b contracted over the rank: `[L, *in, r] x [L, r, *out] -> [L, *in, *out]`,
    in >= float32."""
    letters = iter(string.ascii_lowercase.replace("z", "").replace("l", ""))
    ins = "".join(next(letters) for _ in range(a.ndim - 2))
    outs = "".join(next(letters) for _ in range(b.ndim - 2))
    dtype = jnp.promote_types(a.dtype, jnp.float32)
    return scale * jnp.einsum(f"l{ins}z,lz{outs}->l{ins}{outs}", a, b,
                              preferred_element_type=dtype)


def masked(adapters: dict, spec: LoraSpec) -> dict:
    """`adapters` times their head-LoRA masks (`adapter_masks`); as they are without heads."""
    masks = adapter_masks(spec, jax.tree.map(lambda x: x.shape, adapters))
    if masks is None:
        return adapters
    return {key: {f: x * masks[key][f].astype(x.dtype) for f, x in ab.items()}
            for key, ab in adapters.items()}


def layer_adapters(adapters: dict, spec: LoraSpec, rng: jax.Array | None = None) -> Adapters:
    """The unmerged model's adapters, for `forward(..., adapters=)`: the masked `adapters`,
    scale alpha / r, and with `rng` (raw u32[2] key data) and `spec.dropout` > 0 dropout keys,
    one per layer. Without `rng` no dropout (evaluation, pattern scoring)."""
    num_layers = next(iter(adapters.values()))["a"].shape[0]
    keys = None
    if rng is not None and spec.dropout > 0:
        keys = jax.random.key_data(jax.random.split(jax.random.wrap_key_data(rng), num_layers))
    return Adapters(weights=masked(adapters, spec), rng=keys, scale=spec.scale,
                    dropout=spec.dropout)


def merge(base: Params, adapters: dict, spec: LoraSpec) -> Params:
    """`base` with W + (alpha / r) (a * mask_a) @ (b * mask_b) for every adapted projection
    (the head-LoRA masks of `adapter_masks`; none without `spec.heads`)."""
    adapters = masked(adapters, spec)
    layers = dict(base["layers"])
    for key in spec.keys:
        a, b = adapters[key]["a"], adapters[key]["b"]
        w = layers[key]
        layers[key] = (w + delta(a, b, spec.scale)).astype(w.dtype)
    return {**base, "layers": layers}


@struct.dataclass
class LoraParams:
    """A LoRA model as one pytree: the frozen base params, the trained adapters and the spec
    (static). The train state holds it in place of the params; the optimizer sees `adapters`."""

    base: Any
    adapters: Any
    spec: LoraSpec = struct.field(pytree_node=False)

    def merged(self) -> Params:
        """The model's params W + (alpha / r) a @ b (head-LoRA masks applied)."""
        return merge(self.base, self.adapters, self.spec)

    def unmerged(self, rng: jax.Array | None = None) -> tuple[Params, Adapters]:
        """(base params, `layer_adapters`) for `forward(base, ..., adapters=)`: the same model
        run with the adapters inside the projections (with `rng`: training-time dropout)."""
        return self.base, layer_adapters(self.adapters, self.spec, rng)


def trainable(params: Any) -> Any:
    """What the optimizer updates: the adapters of a `LoraParams`, else `params` itself."""
    return params.adapters if isinstance(params, LoraParams) else params


def with_trainable(params: Any, updated: Any) -> Any:
    """`params` with its trainable part replaced by `updated` (see `trainable`)."""
    return params.replace(adapters=updated) if isinstance(params, LoraParams) else updated


def model_params(params: Any) -> Params:
    """The model's params: merged for a `LoraParams`, else `params` itself."""
    return params.merged() if isinstance(params, LoraParams) else params


def restored_model_params(tree: Any, alpha: float) -> Params:
    """The model's params from a train-state `params` tree restored without its structure
    (`headjax.train.checkpoint.restore_params`): a LoRA run's `{"base", "adapters"}` merged with
    scale `alpha` / r (r and the targets read off the adapters), anything else as it is.

    Head-LoRA masks are not needed here: masked entries start at zero and get zero gradients,
    so the stored adapters are zero outside the chosen heads.
    """
    if not (isinstance(tree, dict) and set(tree) == {"base", "adapters"}):
        return tree
    names = {key: short for short, key in TARGETS.items()}
    adapters = tree["adapters"]
    rank = next(iter(adapters.values()))["a"].shape[-1]
    spec = LoraSpec(rank=rank, alpha=float(alpha),
                    targets=tuple(names[key] for key in adapters))
    return merge(tree["base"], adapters, spec)


def params_axes(params: Any, config: ModelConfig) -> Any:
    """Logical axis names shaped like `params` (plain params or a `LoraParams`)."""
    if isinstance(params, LoraParams):
        return params.replace(base=param_axes(config),
                              adapters=adapter_axes(config, params.spec))
    return param_axes(config)


def with_rank_rule(rules) -> tuple:
    """`rules` plus the (replicated) `lora_rank` rule when they do not name it."""
    rules = tuple(tuple(rule) for rule in rules)
    return rules if any(rule[0] == RANK_AXIS for rule in rules) else (*rules, RANK_RULE)
