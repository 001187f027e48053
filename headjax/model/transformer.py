"""The decoder-only transformer as pure functions over a nested dict of arrays.

Canonical parameter tree (layers stacked on a leading `layers` axis, see `param_axes`):

    embed        [vocab, d_model]
    layers/
      attn_norm  [layers, d_model]
      q_proj     [layers, d_model, heads, head_dim]      q_bias [layers, heads, head_dim]
      k_proj     [layers, d_model, kv_heads, head_dim]   k_bias [layers, kv_heads, head_dim]
      v_proj     [layers, d_model, kv_heads, head_dim]   v_bias [layers, kv_heads, head_dim]
      o_proj     [layers, heads, head_dim, d_model]
      mlp_norm   [layers, d_model]
      gate_proj  [layers, d_model, ffn]   up_proj [layers, d_model, ffn]
      down_proj  [layers, ffn, d_model]
    final_norm   [d_model]
    lm_head      [d_model, vocab]          (absent when embeddings are tied)

Biases exist only when `config.qkv_bias`; `layers/q_norm`, `layers/k_norm` `[layers, head_dim]`
only with `config.qk_norm`; `layers/post_attn_norm`, `layers/post_mlp_norm` `[layers, d_model]`
only with `config.sandwich_norms`. The block itself is `headjax.model.block.decoder_block`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from headjax.model import attention, block
from headjax.model.config import ModelConfig
from headjax.parallel.rules import constrain

Params = dict


def param_axes(config: ModelConfig) -> dict:
    """Logical axis names of every parameter dimension, as a tree shaped like the params."""
    layers = {
        "attn_norm": ("layers", "norm"),
        "q_proj": ("layers", "embed", "heads", "head_dim"),
        "k_proj": ("layers", "embed", "kv_heads", "head_dim"),
        "v_proj": ("layers", "embed", "kv_heads", "head_dim"),
        "o_proj": ("layers", "heads", "head_dim", "embed"),
        "mlp_norm": ("layers", "norm"),
        "gate_proj": ("layers", "embed", "mlp"),
        "up_proj": ("layers", "embed", "mlp"),
        "down_proj": ("layers", "mlp", "embed"),
    }
    if config.qkv_bias:
        layers.update(q_bias=("layers", "heads", "head_dim"),
                      k_bias=("layers", "kv_heads", "head_dim"),
                      v_bias=("layers", "kv_heads", "head_dim"))
    if config.qk_norm:
        layers.update(q_norm=("layers", "head_dim"), k_norm=("layers", "head_dim"))
    if config.sandwich_norms:
        layers.update(post_attn_norm=("layers", "norm"), post_mlp_norm=("layers", "norm"))
    axes = {"embed": ("vocab", "embed"), "layers": layers, "final_norm": ("norm",)}
    if not config.tie_embeddings:
        axes["lm_head"] = ("embed", "vocab")
    return axes


def param_shapes(config: ModelConfig) -> dict:
    """Shape of every parameter, as a tree shaped like the params."""
    sizes = {"layers": config.num_layers, "embed": config.d_model, "norm": config.d_model,
             "heads": config.num_heads, "kv_heads": config.num_kv_heads,
             "head_dim": config.head_dim, "mlp": config.ffn_dim, "vocab": config.vocab_size}
    return jax.tree.map(lambda names: tuple(sizes[n] for n in names), param_axes(config),
                        is_leaf=lambda x: isinstance(x, tuple))


def init(key: jax.Array, config: ModelConfig, *, std: float = 0.02) -> Params:
    """Random parameters: N(0, std) matrices, identity norm scales (1, or 0 with
    `config.norm_plus_one`), zero biases."""
    shapes = param_shapes(config)
    is_shape = lambda x: isinstance(x, tuple)
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(shapes, is_leaf=is_shape)
    keys = jax.random.split(key, len(with_paths))
    dtype = jnp.dtype(config.param_dtype)

    def make(path: str, shape: tuple, k: jax.Array) -> jax.Array:
        if "norm" in path:
            return (jnp.zeros if config.norm_plus_one else jnp.ones)(shape, dtype)
        if "bias" in path:
            return jnp.zeros(shape, dtype)
        return (std * jax.random.normal(k, shape, jnp.float32)).astype(dtype)

    return jax.tree.unflatten(treedef, [make(jax.tree_util.keystr(path), shape, k)
                                        for (path, shape), k in zip(with_paths, keys, strict=True)])


class ForwardOutput(NamedTuple):
    """What `forward` returns.

    logits: f32[batch, seq, vocab], or None with `return_hidden`.
    attention: f32[batch, layers, heads, q, k] post-softmax probabilities, or None.
    head_outputs: [batch, layers, seq, heads, head_dim] per-head attention outputs before the
      gate and `o_proj` (TransformerLens' `z`), or None.
    hidden: [batch, seq, d_model] residual stream after the last layer (before the final norm)
      with `return_hidden`, or None.
    """

    logits: Float[Array, "batch seq vocab"] | None
    attention: Float[Array, "batch layers heads q k"] | None = None
    head_outputs: Float[Array, "batch layers seq heads head_dim"] | None = None
    hidden: Float[Array, "batch seq d_model"] | None = None


def embed_tokens(params: Params, tokens: Int[Array, "batch seq"], config: ModelConfig
                 ) -> Float[Array, "batch seq d_model"]:
    """Token embeddings, times sqrt(d_model) (cast to the compute dtype first, as Hugging Face
    does) with `config.scale_embeddings`. `params` are already in the compute dtype."""
    x = params["embed"][tokens]
    if config.scale_embeddings:
        x = x * jnp.asarray(config.d_model ** 0.5, x.dtype)
    return x


def unembed(params: Params, x: Float[Array, "batch seq d_model"], config: ModelConfig
            ) -> Float[Array, "batch seq vocab"]:
    """Final RMSNorm, the (tied or untied) output projection, and the optional final soft-cap
    `config.final_logit_softcap`; logits in >= float32.

    `params` are already in the compute dtype (see `cast_params`).
    """
    x = block.norm(x, params["final_norm"], config)
    out_dtype = jnp.promote_types(x.dtype, jnp.float32)
    if config.tie_embeddings:
        logits = jnp.einsum("bsd,vd->bsv", x, params["embed"], preferred_element_type=out_dtype)
    else:
        logits = jnp.einsum("bsd,dv->bsv", x, params["lm_head"], preferred_element_type=out_dtype)
    return constrain(attention.soft_cap(logits, config.final_logit_softcap),
                     ("batch", "seq", "vocab"))


def cast_params(params: Params, config: ModelConfig) -> Params:
    """Parameters in the compute dtype (norm scales included; norms compute in f32 anyway)."""
    dtype = jnp.dtype(config.dtype)
    return jax.tree.map(lambda p: p.astype(dtype) if p.dtype != dtype else p, params)


def forward(params: Params, tokens: Int[Array, "batch seq"], config: ModelConfig, *,
            gates: Float[Array, "layers heads"] | Float[Array, "batch layers heads"] | None = None,
            positions: Int[Array, "batch seq"] | None = None,
            segment_ids: Int[Array, "batch seq"] | None = None,
            return_attention: bool = False,
            return_head_outputs: bool = False,
            return_hidden: bool = False,
            adapters: block.Adapters | None = None) -> ForwardOutput:
    """Run the model on `tokens` `[batch, seq]`.

    Args:
      gates: per-query-head multipliers on each head's output before `o_proj`; `[layers, heads]`
        shared across the batch or `[batch, layers, heads]` per sample. None (or all ones) is the
        plain model, bit for bit.
      positions: RoPE positions; default 0..seq-1 in every row.
      segment_ids: packing/padding ids; attention stays within a segment, 0 marks padding.
        Default: all ones (a single causal sequence per row).
      return_attention: also return post-softmax probabilities (forces the einsum path).
      return_head_outputs: also return per-head outputs `z`.
      return_hidden: return the last residual stream instead of the logits (for a loss that
        projects onto the vocabulary piece by piece, `headjax.model.loss`).
      adapters: low-rank adapters applied inside the projections (`headjax.model.adapter`,
        built by `headjax.lora.layer_adapters`), scanned with the layer params; None: none.
    """
    batch, seq = tokens.shape
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (batch, seq))
    if segment_ids is None:
        segment_ids = jnp.ones((batch, seq), jnp.int32)
    per_layer_gates = block.layer_gates(gates, batch, config)
    params = cast_params(params, config)
    slots = jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (batch, seq))
    context = block.layer_context(config, positions, slots, slots, segment_ids, segment_ids)
    x = constrain(embed_tokens(params, tokens, config), ("batch", "seq", "embed"))

    def body(x, scanned):
        layer, gate, spec, layer_adapters = scanned
        x, out = block.decoder_block(layer, x, gate, spec, context, config,
                                     adapters=layer_adapters,
                                     return_attention=return_attention,
                                     return_head_outputs=return_head_outputs)
        return constrain(x, ("batch", "seq", "embed")), (out.probs, out.z)

    if config.remat != "none":
        body = jax.checkpoint(body, policy=None if config.remat == "full"
                              else jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims)
    scanned = (params["layers"], per_layer_gates, block.layer_spec(config), adapters)
    if config.scan_layers:
        x, (probs, z) = jax.lax.scan(body, x, scanned)
    else:
        outs = []
        for i in range(config.num_layers):
            x, out = body(x, jax.tree.map(lambda a, i=i: a[i], scanned))
            outs.append(out)
        probs, z = jax.tree.map(lambda *a: jnp.stack(a), *outs) if outs else (None, None)
    return ForwardOutput(
        logits=None if return_hidden else unembed(params, x, config),
        attention=jnp.swapaxes(probs, 0, 1) if return_attention else None,
        head_outputs=jnp.swapaxes(z, 0, 1) if return_head_outputs else None,
        hidden=x if return_hidden else None,
    )
