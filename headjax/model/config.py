"""Model configuration: one frozen, hashable dataclass (usable as a static jit argument)."""

from __future__ import annotations

import dataclasses
from typing import Any

ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "relu")
ROPE_SCALINGS = (None, "linear", "llama3")
# float64 needs `jax_enable_x64` and exists for numerical checks (finite differences).
DTYPES = ("float32", "bfloat16", "float16", "float64")
REMAT_POLICIES = ("none", "full", "dots")
ATTENTION_IMPLS = ("xla", "fused")
# Fields that say how headjax computes, not what: a run sets them (config section `model`), and
# checkpoint formats such as Hugging Face's have no place for them.
EXECUTION_FIELDS = ("dtype", "param_dtype", "scan_layers", "remat", "attention_impl",
                    "answer_positions")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling (Hugging Face `rope_scaling`).

    kind: None (plain RoPE), "linear" (positions divided by `factor`) or "llama3"
    (Llama-3.1 wavelength-dependent scaling with `low_freq_factor`, `high_freq_factor` and
    `original_max_position_embeddings`).
    """

    kind: str | None = None
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a Llama-family decoder-only transformer.

    Attributes:
      vocab_size: number of token ids.
      d_model: residual stream width.
      num_layers: decoder blocks.
      num_heads: query heads per layer (gates are per query head).
      num_kv_heads: key/value heads per layer (GQA when < num_heads; divides num_heads).
      head_dim: width of one head.
      ffn_dim: hidden width of the gated MLP.
      rope_theta: RoPE base.
      rope_scaling: optional RoPE frequency scaling.
      norm_eps: RMSNorm epsilon.
      tie_embeddings: the output projection is the transposed token embedding.
      activation: MLP activation ("silu" for SwiGLU).
      qkv_bias: q/k/v projections carry biases (Qwen2).
      max_position_embeddings: longest supported sequence (informational, used by export).
      dtype: compute dtype name ("float32", "bfloat16", ...); norms, softmax and logits are
        computed in at least float32.
      param_dtype: storage dtype of parameters created by `init`.
      scan_layers: run the stacked layers with `jax.lax.scan` (fast compile) instead of unrolling.
      remat: rematerialise each layer in the backward pass ("none", "full", "dots").
      attention_impl: "xla" (einsum, can return probabilities) or "fused"
        (`jax.nn.dot_product_attention`, never materialises probabilities outside the kernel;
        with `attn_logit_softcap`, which that kernel lacks, the einsum path runs instead).
      answer_positions: the loss (`headjax.model.loss`) projects onto the vocabulary only the
        positions that predict answer tokens, at most this many per row; a batch with a longer
        answer takes the full projection, so losses and gradients never change. 0: every
        position. Saves (seq - answer_positions) / seq of the vocabulary projection.

    Family features (each off by default; see docs/method.md for which family uses which):
      qk_norm: per-head RMSNorm on q and k (params `q_norm`, `k_norm` `[layers, head_dim]`),
        after the projections and before RoPE (Qwen3, Gemma 3).
      norm_plus_one: every RMSNorm scales by (1 + weight), computed in >= f32 before casting
        back (Gemma); weights are stored as Hugging Face stores them (0 = identity).
      sandwich_norms: extra RMSNorms on the attention output and on the MLP output before each
        residual add (params `post_attn_norm`, `post_mlp_norm` `[layers, d_model]`; `mlp_norm`
        is then Gemma's pre-feed-forward norm) (Gemma 2/3).
      scale_embeddings: token embeddings are multiplied by sqrt(d_model), the factor cast to the
        compute dtype first (Gemma).
      query_pre_attn_scalar: attention logits are scaled by query_pre_attn_scalar ** -0.5
        instead of head_dim ** -0.5 (Gemma); None for head_dim.
      attn_logit_softcap: attention logits (after scaling, before the mask) become
        cap * tanh(logits / cap) (Gemma 2); None for off.
      final_logit_softcap: output logits become cap * tanh(logits / cap) (Gemma 2); None for off.
      sliding_window: in local layers query slot i attends only key slots j with
        i - sliding_window < j <= i (as Hugging Face's `sliding_window`); None for no window.
      local_layers: one bool per layer, True for a local (sliding-window) layer; required (and
        only allowed) with `sliding_window`, e.g. all True for Mistral, Gemma 2's alternation,
        Gemma 3's five local layers per global one.
      rope_local_theta: RoPE base of the local layers, which then also skip `rope_scaling`
        (Gemma 3's `rope_local_base_freq`); None: local layers use the global RoPE table.
    """

    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_dim: int
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = RopeScaling()
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    activation: str = "silu"
    qkv_bias: bool = False
    max_position_embeddings: int = 2048
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = True
    remat: str = "none"
    attention_impl: str = "xla"
    answer_positions: int = 0
    qk_norm: bool = False
    norm_plus_one: bool = False
    sandwich_norms: bool = False
    scale_embeddings: bool = False
    query_pre_attn_scalar: float | None = None
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    sliding_window: int | None = None
    local_layers: tuple[bool, ...] = ()
    rope_local_theta: float | None = None

    def __post_init__(self) -> None:
        def fail(field: str, why: str) -> None:
            raise ValueError(f"ModelConfig.{field}: {why}")

        for field in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads",
                      "head_dim", "ffn_dim"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                fail(field, f"must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            fail("num_kv_heads", f"{self.num_kv_heads} does not divide num_heads={self.num_heads}")
        if self.head_dim % 2:
            fail("head_dim", f"RoPE needs an even head_dim, got {self.head_dim}")
        if self.activation not in ACTIVATIONS:
            fail("activation", f"{self.activation!r} not in {ACTIVATIONS}")
        if self.rope_scaling.kind not in ROPE_SCALINGS:
            fail("rope_scaling", f"kind {self.rope_scaling.kind!r} not in {ROPE_SCALINGS}")
        if self.dtype not in DTYPES:
            fail("dtype", f"unsupported compute dtype {self.dtype!r}, expected one of {DTYPES}")
        if self.param_dtype not in DTYPES:
            fail("param_dtype", f"unsupported parameter dtype {self.param_dtype!r}")
        if self.remat not in REMAT_POLICIES:
            fail("remat", f"{self.remat!r} not in {REMAT_POLICIES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            fail("attention_impl", f"{self.attention_impl!r} not in {ATTENTION_IMPLS}")
        if self.answer_positions < 0:
            fail("answer_positions", f"must be >= 0, got {self.answer_positions}")
        for field in ("query_pre_attn_scalar", "attn_logit_softcap", "final_logit_softcap",
                      "rope_local_theta"):
            value = getattr(self, field)
            if value is not None and not value > 0:
                fail(field, f"must be None or > 0, got {value!r}")
        object.__setattr__(self, "local_layers", tuple(bool(b) for b in self.local_layers))
        if self.sliding_window is None:
            if self.local_layers:
                fail("local_layers", "local layers need a sliding_window")
        elif not isinstance(self.sliding_window, int) or self.sliding_window <= 0:
            fail("sliding_window", f"must be None or a positive int, got {self.sliding_window!r}")
        elif len(self.local_layers) != self.num_layers:
            fail("local_layers", f"needs one bool per layer ({self.num_layers}), got "
                                 f"{len(self.local_layers)}")

    @property
    def group_size(self) -> int:
        """Query heads sharing one key/value head."""
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        """Parameter count (embeddings counted once when tied)."""
        d, h, kv, hd, f, v, n = (self.d_model, self.num_heads, self.num_kv_heads, self.head_dim,
                                 self.ffn_dim, self.vocab_size, self.num_layers)
        attn = d * h * hd + 2 * d * kv * hd + h * hd * d
        if self.qkv_bias:
            attn += h * hd + 2 * kv * hd
        per_layer = attn + 3 * d * f + 2 * d
        per_layer += 2 * hd * self.qk_norm + 2 * d * self.sandwich_norms
        head = 0 if self.tie_embeddings else v * d
        return v * d + n * per_layer + d + head

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (PaLM convention: 6 N + 12 L H D_h S, non-causal count).

        N counts matmul parameters: the input embedding lookup is excluded unless it is tied to
        the output projection.
        """
        matmul_params = self.num_params()
        if not self.tie_embeddings:
            matmul_params -= self.vocab_size * self.d_model
        attention = 12 * self.num_layers * self.num_heads * self.head_dim * seq_len
        return 6 * matmul_params + attention


def tiny_config(**overrides: Any) -> ModelConfig:
    """A small random-init config for tests and examples (2 layers, 4 heads, GQA 2)."""
    base = dict(vocab_size=128, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                head_dim=8, ffn_dim=64, max_position_embeddings=256)
    base.update(overrides)
    return ModelConfig(**base)
