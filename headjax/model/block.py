"""One decoder block, shared by the training forward and KV-cache decoding.

A block on `x` `[batch, seq, d_model]`:

    h = x + post_attn_norm?(o_proj(gate * attention(attn_norm(x))))
    out = h + post_mlp_norm?(mlp(mlp_norm(h)))

(`post_*_norm` only with `config.sandwich_norms`). Per-layer differences are data, scanned with
the stacked layer params (`LayerSpec`): each layer's sliding window and whether it reads the local
RoPE table, so one compiled block serves every layer of every family.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from headjax.model import attention
from headjax.model.adapter import Adapters, adapted, adapter_of
from headjax.model.config import ModelConfig
from headjax.model.norms import rms_norm
from headjax.model.rope import rotary_tables

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}
NO_WINDOW = np.iinfo(np.int32).max
Gates = Float[Array, "layers heads"] | Float[Array, "batch layers heads"]


class LayerSpec(NamedTuple):
    """Per-layer scanned data: window i32 (slots; `NO_WINDOW` for global layers) and whether the
    layer is local (bool: reads the local RoPE table)."""

    window: Int[Array, " layers"]
    local: Bool[Array, " layers"]


class Rope(NamedTuple):
    """cos/sin tables `[batch, seq, head_dim]` of global layers, and of local ones (None when
    every layer uses the global table)."""

    cos: Float[Array, "batch seq head_dim"]
    sin: Float[Array, "batch seq head_dim"]
    local_cos: Float[Array, "batch seq head_dim"] | None = None
    local_sin: Float[Array, "batch seq head_dim"] | None = None


class Context(NamedTuple):
    """What every layer shares: RoPE tables, the mask `[b, q, k]`, and slot distances `[b, q, k]`
    for sliding windows (None without windows)."""

    rope: Rope
    mask: Bool[Array, "batch q k"]
    distance: Int[Array, "batch q k"] | None


def layer_spec(config: ModelConfig) -> LayerSpec:
    """Each layer's window and local flag, as arrays scanned with the layer params."""
    local = np.asarray(config.local_layers or [False] * config.num_layers, bool)
    window = np.where(local, config.sliding_window or NO_WINDOW, NO_WINDOW).astype(np.int32)
    return LayerSpec(jnp.asarray(window), jnp.asarray(local))


def layer_context(config: ModelConfig, positions: Int[Array, "batch q"],
                  q_slots: Int[Array, "batch q"], k_slots: Int[Array, "batch k"],
                  q_segments: Int[Array, "batch q"], k_segments: Int[Array, "batch k"]
                  ) -> Context:
    """The `Context` for queries at `q_slots` (RoPE `positions`) over keys at `k_slots`."""
    cos, sin = rotary_tables(positions, config)
    rope = Rope(cos, sin)
    if config.rope_local_theta is not None and any(config.local_layers):
        rope = Rope(cos, sin, *rotary_tables(positions, config, local=True))
    mask = attention.attention_mask(q_slots, k_slots, q_segments, k_segments)
    distance = (attention.slot_distance(q_slots, k_slots) if config.sliding_window is not None
                else None)
    return Context(rope, mask, distance)


def layer_gates(gates: Gates | None, batch: int, config: ModelConfig):
    """Gates as scanned per layer: `[layers, heads]` or `[layers, batch, heads]`, or None.

    Raises ValueError unless `gates` is `[layers, heads]` or `[batch, layers, heads]`.
    """
    if gates is None:
        return None
    if gates.shape not in {(config.num_layers, config.num_heads),
                           (batch, config.num_layers, config.num_heads)}:
        raise ValueError(f"gates: shape {gates.shape} is neither [layers, heads] = "
                         f"{(config.num_layers, config.num_heads)} nor [batch, layers, heads]")
    return gates if gates.ndim == 2 else jnp.swapaxes(gates, 0, 1)


def norm(x: Float[Array, "... d"], scale: Float[Array, " d"], config: ModelConfig
         ) -> Float[Array, "... d"]:
    """The family's RMSNorm (`config.norm_plus_one` selects Gemma's (1 + w))."""
    return rms_norm(x, scale, config.norm_eps, plus_one=config.norm_plus_one)


def mlp(layer: dict, x: Float[Array, "batch seq d_model"], config: ModelConfig,
        adapters: Adapters | None = None) -> Float[Array, "batch seq d_model"]:
    """Gated MLP: down(act(gate(x)) * up(x)) (SwiGLU with silu, GeGLU with gelu_tanh), each
    projection with its low-rank adapter from `adapters` when it has one."""
    def project(h, key, equation):
        return adapted(h, layer[key], adapter_of(adapters, key), equation)

    hidden = (ACTIVATIONS[config.activation](project(x, "gate_proj", "bsd,df->bsf"))
              * project(x, "up_proj", "bsd,df->bsf"))
    return project(hidden, "down_proj", "bsf,fd->bsd")


class BlockOut(NamedTuple):
    """Per-layer outputs besides the new `x`: probabilities `[b, heads, q, k]` or None, head
    outputs `z` `[b, q, heads, hd]` or None, and this call's keys/values `[b, q, kv_heads, hd]`
    (in the cache's dtype) when a cache was given, else None."""

    probs: Float[Array, "batch heads q k"] | None
    z: Float[Array, "batch q heads head_dim"] | None
    k: Float[Array, "batch q kv_heads head_dim"] | None
    v: Float[Array, "batch q kv_heads head_dim"] | None


def decoder_block(layer: dict, x: Float[Array, "batch q d_model"], gate, spec: LayerSpec,
                  context: Context, config: ModelConfig, *, cache=None,
                  adapters: Adapters | None = None,
                  return_attention: bool = False, return_head_outputs: bool = False
                  ) -> tuple[Float[Array, "batch q d_model"], BlockOut]:
    """One block (module docstring) of one layer.

    Args:
      layer: this layer's params; gate: `[heads]`, `[batch, heads]` or None.
      spec: this layer's `LayerSpec` entries (scalars).
      cache: None (keys are the queries' own), or (cached_k, cached_v, start): this layer's cache
        `[b, max_len, kv_heads, hd]`; the new keys/values are written at slot `start` and
        attention reads the whole cache (the context's mask says which slots count).
      adapters: this layer's low-rank adapters (`headjax.model.adapter.Adapters`), or None.
    """
    mask = context.mask
    if context.distance is not None:
        mask = attention.window_mask(mask, context.distance, spec.window)
    rope = context.rope
    cos, sin = rope.cos, rope.sin
    if rope.local_cos is not None:
        cos = jnp.where(spec.local, rope.local_cos, cos)
        sin = jnp.where(spec.local, rope.local_sin, sin)
    q, k, v = attention.project_qkv(layer, norm(x, layer["attn_norm"], config), cos, sin, config,
                                   adapters)
    new_k = new_v = None
    keys, values = k, v
    if cache is not None:
        cached_k, cached_v, start = cache
        new_k, new_v = k.astype(cached_k.dtype), v.astype(cached_v.dtype)
        keys = jax.lax.dynamic_update_slice(cached_k, new_k, (0, start, 0, 0))
        values = jax.lax.dynamic_update_slice(cached_v, new_v, (0, start, 0, 0))
    z, probs = attention.attend(q, keys, values, mask, config, return_probs=return_attention)
    out = attention.gated_output(layer, z, gate, adapters)
    if config.sandwich_norms:
        out = norm(out, layer["post_attn_norm"], config)
    x = x + out
    out = mlp(layer, norm(x, layer["mlp_norm"], config), config, adapters)
    if config.sandwich_norms:
        out = norm(out, layer["post_mlp_norm"], config)
    x = x + out
    return x, BlockOut(probs, z if return_head_outputs else None, new_k, new_v)
