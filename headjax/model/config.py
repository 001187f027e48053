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
        (`jax.nn.dot_product_attention`, never materialises probabilities outside the kernel).
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
