"""Grouped-query attention pieces: projections, masks, the attention itself, gated output.

Shapes: q `[batch, seq, heads, head_dim]`, k/v `[batch, seq, kv_heads, head_dim]`, probabilities
`[batch, heads, q_len, k_len]`. Query head `h` reads key/value head `h // group_size`, as in
Hugging Face's `repeat_kv`. Gates act per *query* head on the head output, before `o_proj`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from headjax.model.adapter import Adapters, adapted, adapter_of
from headjax.model.config import ModelConfig
from headjax.model.norms import rms_norm
from headjax.model.rope import apply_rotary

MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def project_qkv(layer: dict, x: Float[Array, "batch seq d_model"],
                cos: Float[Array, "batch seq head_dim"], sin: Float[Array, "batch seq head_dim"],
                config: ModelConfig, adapters: Adapters | None = None):
    """Rotated queries `[b, s, heads, hd]` and keys, plain values `[b, s, kv_heads, hd]`.

    With `config.qk_norm` each head of q and k is RMS-normalised (`q_norm`, `k_norm`) before RoPE.
    `adapters`: this layer's low-rank adapters (`headjax.model.adapter`), or None.
    """
    q, k, v = (adapted(x, layer[key], adapter_of(adapters, key), "bsd,dhk->bshk")
               for key in ("q_proj", "k_proj", "v_proj"))
    if config.qkv_bias:
        q, k, v = q + layer["q_bias"], k + layer["k_bias"], v + layer["v_bias"]
    if config.qk_norm:
        q = rms_norm(q, layer["q_norm"], config.norm_eps, plus_one=config.norm_plus_one)
        k = rms_norm(k, layer["k_norm"], config.norm_eps, plus_one=config.norm_plus_one)
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v


def attention_mask(q_positions: Int[Array, "batch q"], k_positions: Int[Array, "batch k"],
                   q_segments: Int[Array, "batch q"], k_segments: Int[Array, "batch k"]
                   ) -> Bool[Array, "batch q k"]:
    """True where query i may attend key j: same segment and j not after i.

    `*_positions` here are slot indices in the sequence (or cache), not RoPE positions, so that
    packed segments stay causal. Segment id 0 marks padding; padding attends only to padding.
    """
    causal = k_positions[:, None, :] <= q_positions[:, :, None]
    same_segment = q_segments[:, :, None] == k_segments[:, None, :]
    return causal & same_segment


def slot_distance(q_slots: Int[Array, "batch q"], k_slots: Int[Array, "batch k"]
                  ) -> Int[Array, "batch q k"]:
    """q_slot - k_slot: how many slots key j lies behind query i (for sliding windows)."""
    return q_slots[:, :, None] - k_slots[:, None, :]


def window_mask(mask: Bool[Array, "batch q k"], distance: Int[Array, "batch q k"],
                window: Int[Array, ""]) -> Bool[Array, "batch q k"]:
    """`mask` restricted to keys fewer than `window` slots behind the query.

    Slots, not RoPE positions: the real tokens of a segment (or of a left-padded cache row) sit
    in consecutive slots, so this is their token distance, as in Hugging Face's sliding window.
    """
    return mask & (distance < window)


def logit_scale(config: ModelConfig) -> float:
    """Factor on q.k: query_pre_attn_scalar ** -0.5 when set, else head_dim ** -0.5."""
    return (config.query_pre_attn_scalar or config.head_dim) ** -0.5


def soft_cap(x: Float[Array, "..."], cap: float | None) -> Float[Array, "..."]:
    """cap * tanh(x / cap), or x unchanged when `cap` is None."""
    return x if cap is None else cap * jnp.tanh(x / cap)


def attend(q: Float[Array, "batch q heads head_dim"], k: Float[Array, "batch k kv_heads head_dim"],
           v: Float[Array, "batch k kv_heads head_dim"], mask: Bool[Array, "batch q k"],
           config: ModelConfig, *, return_probs: bool = False):
    """Softmax attention (softmax in >= f32). Returns (out `[b, q, heads, hd]`, probs or None).

    Logits are q.k * `logit_scale(config)`, soft-capped by `config.attn_logit_softcap`, masked.
    With `config.attention_impl == "fused"`, no probabilities requested and no soft-cap (which
    `jax.nn.dot_product_attention` lacks), runs the fused kernel (cuDNN/flash on GPU); otherwise
    an explicit einsum path.
    """
    batch, q_len, num_heads, head_dim = q.shape
    fused = config.attention_impl == "fused" and config.attn_logit_softcap is None
    if fused and not return_probs:
        out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, :, :],
                                           scale=logit_scale(config))
        return out, None
    kv_heads = k.shape[2]
    q = q.reshape(batch, q_len, kv_heads, num_heads // kv_heads, head_dim)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k,
                        preferred_element_type=jnp.promote_types(q.dtype, jnp.float32))
    scores = soft_cap(scores * logit_scale(config), config.attn_logit_softcap)
    scores = jnp.where(mask[:, None, None, :, :], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v)
    out = out.reshape(batch, q_len, num_heads, head_dim)
    probs = probs.reshape(batch, num_heads, q_len, -1) if return_probs else None
    return out, probs


def gated_output(layer: dict, heads_out: Float[Array, "batch seq heads head_dim"],
                 gate: Float[Array, " heads"] | Float[Array, "batch heads"] | None,
                 adapters: Adapters | None = None) -> Float[Array, "batch seq d_model"]:
    """Scale each head's output by its gate, then apply `o_proj` (`[heads, hd, d_model]`).

    `gate` is `[heads]` (shared by the batch) or `[batch, heads]` (one gate set per sample, so
    that one backward pass yields per-sample gate gradients). None skips the multiply.
    `adapters`: this layer's low-rank adapters (an "o_proj" adapter reads the gated outputs).
    """
    if gate is not None:
        gate = gate.astype(heads_out.dtype)
        gate = gate[None, None, :, None] if gate.ndim == 1 else gate[:, None, :, None]
        heads_out = heads_out * gate
    return adapted(heads_out, layer["o_proj"], adapter_of(adapters, "o_proj"), "bshk,hkd->bsd")
