"""Import a llama-architecture GGUF file (llama.cpp's format) with the `gguf` package.

Tensors are dequantised to float32 with `gguf.quants.dequantize`. llama.cpp's converter permutes
the rows of q/k projections from Hugging Face's rotate-half RoPE layout to the interleaved one;
`unpermute_rows` inverts that so our rotate-half RoPE applies unchanged.
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
# Metadata keys that change the numerics and that headjax does not implement.
UNSUPPORTED_KEYS = ("expert_count", "attention.sliding_window", "rope.scaling.attn_factor",
                    "attention.layer_norm_epsilon", "logit_scale")


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


def config_from_gguf(reader: gguf.GGUFReader, *, source: str, dtype: str = "float32"
                     ) -> ModelConfig:
    """`ModelConfig` from GGUF metadata; unsupported values raise naming `source` and the key."""

    def fail(key: str, why: str):
        raise ValueError(f"{source}: metadata {key!r}: {why}")

    arch = field(reader, "general.architecture")
    if arch != "llama":
        fail("general.architecture", f"unsupported architecture {arch!r} (supported: 'llama')")

    def get(key: str, default=None):
        value = field(reader, f"llama.{key}", default)
        if value is None:
            fail(f"llama.{key}", "missing")
        return value

    for key in UNSUPPORTED_KEYS:
        if f"llama.{key}" in reader.fields:
            fail(f"llama.{key}", "not supported by headjax")
    d_model, heads = get("embedding_length"), get("attention.head_count")
    head_dim = get("attention.key_length", d_model // heads)
    if get("rope.dimension_count", head_dim) != head_dim:
        fail("llama.rope.dimension_count", "partial rotary embeddings are not supported")
    kind = field(reader, "llama.rope.scaling.type", "none")
    if kind not in ("none", "linear"):
        fail("llama.rope.scaling.type", f"rope scaling {kind!r} is not supported")
    scaling = (RopeScaling("linear", float(get("rope.scaling.factor")))
               if kind == "linear" else RopeScaling())
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = len(tokens.data) if tokens is not None else get("vocab_size")
    names = {t.name for t in reader.tensors}
    return ModelConfig(
        vocab_size=int(vocab), d_model=int(d_model), num_layers=int(get("block_count")),
        num_heads=int(heads), num_kv_heads=int(get("attention.head_count_kv", heads)),
        head_dim=int(head_dim), ffn_dim=int(get("feed_forward_length")),
        rope_theta=float(get("rope.freq_base", 10000.0)), rope_scaling=scaling,
        norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        tie_embeddings="output.weight" not in names,
        max_position_embeddings=int(get("context_length")), dtype=dtype, param_dtype=dtype)


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
    """(numpy params in `dtype`, ModelConfig) from a llama-architecture GGUF file.

    `reader`: an already open `read_gguf(path)` (parsing the metadata takes seconds).
    """
    reader = reader or read_gguf(path)
    config = config_from_gguf(reader, source=path, dtype=dtype)
    tensors = {t.name: t for t in reader.tensors}
    expected = set(layout.expected_names(config, "gguf"))
    unexpected = sorted(set(tensors) - expected)
    if unexpected:
        raise ValueError(f"{path}: unsupported tensors {unexpected[:5]}")
    row_heads = {"q_proj": config.num_heads, "k_proj": config.num_kv_heads}

    def read(name: str, rule: layout.Rule) -> np.ndarray:
        if name not in tensors:
            raise ValueError(f"{path}: tensor {name!r} is missing")
        weight = dequantize(tensors[name], path)
        return unpermute_rows(weight, row_heads[rule.key]) if rule.key in row_heads else weight

    return layout.to_canonical(read, config, "gguf", dtype), config
