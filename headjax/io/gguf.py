"""Import a GGUF file (llama.cpp's format) of architecture llama, qwen2, qwen3, gemma2 or gemma3.

Tensors are dequantised to float32 with `gguf.quants.dequantize` (F32, F16, BF16, Q4_0..Q8_0,
Q2_K..Q6_K). For `llama` llama.cpp's converter permutes the rows of q/k projections from Hugging
Face's rotate-half RoPE layout to the interleaved one; `unpermute_rows` inverts that so our
rotate-half RoPE applies unchanged. Qwen and Gemma use rotate-half RoPE in llama.cpp too (NEOX
style): no permutation. For Gemma the converter stores every RMSNorm weight as (1 + w), which is
undone here (as transformers' GGUF loader does), and the graph's fixed choices (GeGLU, sandwich
norms, scaled embeddings, local layer pattern, attention scale) become `ModelConfig` fields.
"""

from __future__ import annotations

import os

import gguf
import numpy as np

from headjax.io import layout
from headjax.model.config import ModelConfig, RopeScaling

Q = gguf.GGMLQuantizationType
SUPPORTED_TYPES = frozenset({
    Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0,
    Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K,
})
ARCHITECTURES = ("gemma2", "gemma3", "llama", "qwen2", "qwen3")
# Metadata keys that change the numerics and that headjax does not implement.
UNSUPPORTED_KEYS = ("expert_count", "rope.scaling.attn_factor", "attention.layer_norm_epsilon",
                    "logit_scale")
# Gemma's llama.cpp graph: local layers of `pattern` (one global layer per period), their RoPE
# base, and the block count of the 27B models, whose attention scale is 1/sqrt(d_model / heads).
GEMMA = {"gemma2": dict(period=2, local_theta=None, big_blocks=46),
         "gemma3": dict(period=6, local_theta=10000.0, big_blocks=62)}


def read_gguf(path: str) -> gguf.GGUFReader:
    """A `GGUFReader` for `path`; a missing or unreadable file raises naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, KeyError, IndexError, OSError) as err:
        raise ValueError(f"{path}: not a readable GGUF file ({type(err).__name__}: {err})") from err


def field(reader: gguf.GGUFReader, key: str, default=None):
    """The value of metadata field `key` (None/`default` when absent)."""
    entry = reader.fields.get(key)
    return default if entry is None else entry.contents()


def _gemma_features(reader, arch: str, layers: int, d_model: int, heads: int, head_dim: int,
                    fail) -> dict:
    """ModelConfig fields of a Gemma 2/3 file, as llama.cpp's graph computes them."""
    family = GEMMA[arch]
    pattern = field(reader, f"{arch}.attention.sliding_window_pattern", family["period"])
    if isinstance(pattern, list):
        if len(pattern) != layers:
            fail(f"{arch}.attention.sliding_window_pattern",
                 f"{len(pattern)} entries for {layers} layers")
        local = tuple(bool(b) for b in pattern)
    else:
        local = tuple(bool(pattern) and i % int(pattern) < int(pattern) - 1
                      for i in range(layers))
    big = layers == family["big_blocks"]
    local_theta = field(reader, f"{arch}.rope.freq_base_swa", family["local_theta"])
    caps = {"attn_logit_softcap": field(reader, f"{arch}.attn_logit_softcapping"),
            "final_logit_softcap": field(reader, f"{arch}.final_logit_softcapping")}
    window = field(reader, f"{arch}.attention.sliding_window")
    return dict(
        activation="gelu_tanh", norm_plus_one=True, sandwich_norms=True, scale_embeddings=True,
        qk_norm=arch == "gemma3",
        query_pre_attn_scalar=float(d_model // heads if big else head_dim),
        sliding_window=int(window) if window and any(local) else None,
        local_layers=local if window and any(local) else (),
        rope_local_theta=None if local_theta is None else float(local_theta),
        **{k: None if v is None else float(v) for k, v in caps.items()})


def config_from_gguf(reader: gguf.GGUFReader, *, source: str, dtype: str = "float32"
                     ) -> ModelConfig:
    """`ModelConfig` from GGUF metadata; unsupported values raise naming `source` and the key."""

    def fail(key: str, why: str):
        raise ValueError(f"{source}: metadata {key!r}: {why}")

    arch = field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        fail("general.architecture", f"unsupported architecture {arch!r} (supported: "
                                     f"{', '.join(map(repr, ARCHITECTURES))})")

    def get(key: str, default=None):
        value = field(reader, f"{arch}.{key}", default)
        if value is None:
            fail(f"{arch}.{key}", "missing")
        return value

    unsupported = UNSUPPORTED_KEYS + (() if arch in GEMMA else ("attention.sliding_window",))
    for key in unsupported:
        if f"{arch}.{key}" in reader.fields:
            fail(f"{arch}.{key}", "not supported by headjax")
    d_model, heads = get("embedding_length"), get("attention.head_count")
    head_dim = get("attention.key_length", d_model // heads)
    if get("rope.dimension_count", head_dim) != head_dim:
        fail(f"{arch}.rope.dimension_count", "partial rotary embeddings are not supported")
    kind = field(reader, f"{arch}.rope.scaling.type", "none")
    if kind not in ("none", "linear"):
        fail(f"{arch}.rope.scaling.type", f"rope scaling {kind!r} is not supported")
    scaling = (RopeScaling("linear", float(get("rope.scaling.factor")))
               if kind == "linear" else RopeScaling())
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = len(tokens.data) if tokens is not None else get("vocab_size")
    names = {t.name for t in reader.tensors}
    layers = int(get("block_count"))
    features = (_gemma_features(reader, arch, layers, int(d_model), int(heads), int(head_dim),
                                fail) if arch in GEMMA
                else dict(qkv_bias=arch == "qwen2", qk_norm=arch == "qwen3"))
    return ModelConfig(
        vocab_size=int(vocab), d_model=int(d_model), num_layers=layers,
        num_heads=int(heads), num_kv_heads=int(get("attention.head_count_kv", heads)),
        head_dim=int(head_dim), ffn_dim=int(get("feed_forward_length")),
        rope_theta=float(get("rope.freq_base", 10000.0)), rope_scaling=scaling,
        norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        tie_embeddings="output.weight" not in names,
        max_position_embeddings=int(get("context_length")), dtype=dtype, param_dtype=dtype,
        **features)


def permute_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (rotate-half -> interleaved), as its converter applies it.

    weight: [num_heads * head_dim, ...] (matrix rows or a bias).
    """
    return (weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def unpermute_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """The inverse of `permute_rows`: interleaved -> rotate-half row order."""
    return (weight.reshape(num_heads, weight.shape[0] // num_heads // 2, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def dequantize(tensor, source: str) -> np.ndarray:
    """f32 tensor in torch layout `[out, in]` from a `ReaderTensor`; unknown types raise."""
    if tensor.tensor_type not in SUPPORTED_TYPES:
        raise ValueError(f"{source}: tensor {tensor.name!r} has quantisation type "
                         f"{tensor.tensor_type.name}, which headjax cannot dequantise (supported: "
                         f"{sorted(t.name for t in SUPPORTED_TYPES)})")
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return np.asarray(values, np.float32).reshape([int(n) for n in reversed(tensor.shape)])


def load_gguf(path: str, *, dtype: str = "float32", reader: gguf.GGUFReader | None = None
              ) -> tuple[dict, ModelConfig]:
    """(numpy params in `dtype`, ModelConfig) from a GGUF file of a supported architecture.

    `reader`: an already open `read_gguf(path)` (parsing the metadata takes seconds).
    """
    reader = reader or read_gguf(path)
    config = config_from_gguf(reader, source=path, dtype=dtype)
    tensors = {t.name: t for t in reader.tensors}
    expected = set(layout.expected_names(config, "gguf"))
    unexpected = sorted(set(tensors) - expected)
    if unexpected:
        raise ValueError(f"{path}: unsupported tensors {unexpected[:5]}")
    permuted = field(reader, "general.architecture") == "llama"
    row_heads = {"q_proj": config.num_heads, "k_proj": config.num_kv_heads}

    def read(name: str, rule: layout.Rule) -> np.ndarray:
        if name not in tensors:
            raise ValueError(f"{path}: tensor {name!r} is missing")
        weight = dequantize(tensors[name], path)
        if config.norm_plus_one and rule.key.endswith("norm"):
            return weight - 1.0  # llama.cpp stores Gemma's (1 + w)
        if permuted and rule.key in row_heads:
            return unpermute_rows(weight, row_heads[rule.key])
        return weight

    return layout.to_canonical(read, config, "gguf", dtype), config
