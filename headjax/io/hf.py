"""Import a Hugging Face Llama / Qwen2 / Mistral checkpoint directory (no torch needed).

The directory holds `config.json` and either `model.safetensors` or a sharded
`model.safetensors.index.json`. Config conversion is a strict whitelist: every attribute of
`config.json` is either mapped onto `ModelConfig`, checked to hold a value we reproduce exactly, or
listed as harmless (it does not change the forward numerics); anything else is an error naming the
file and the attribute.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np
from safetensors import SafetensorError, safe_open

from headjax.io import layout
from headjax.model.config import ModelConfig, RopeScaling

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "mistral": "MistralForCausalLM"}
HF_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu",
                  "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "relu": "relu"}
# Attributes that do not change the forward pass (token ids, init, caching, bookkeeping).
HARMLESS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "use_cache",
    "pretraining_tp", "max_window_layers", "_name_or_path", "output_attentions",
    "output_hidden_states", "return_dict", "tie_encoder_decoder", "is_decoder",
    "chunk_size_feed_forward", "problem_type", "id2label", "label2id",
})
MAPPED = frozenset({
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "intermediate_size", "rms_norm_eps", "rope_theta",
    "rope_scaling", "rope_parameters", "tie_word_embeddings", "hidden_act",
    "max_position_embeddings", "attention_bias", "mlp_bias", "attention_dropout",
    "sliding_window", "use_sliding_window", "layer_types", "partial_rotary_factor",
})
# Tensors a checkpoint may carry that we rebuild ourselves.
IGNORED_TENSORS = ("rotary_emb.inv_freq",)


def read_config_json(path: str) -> dict:
    """The JSON object in `path`, with errors naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path) as f:
            values = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return values


def _rope(hf: dict, fail) -> tuple[float, RopeScaling]:
    """(rope_theta, RopeScaling) from `rope_parameters` (transformers 5) or the older keys."""
    params = hf.get("rope_parameters") or {}
    if params:
        theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
        scaling = dict(params)
    else:
        theta = hf.get("rope_theta", 10000.0)
        scaling = dict(hf.get("rope_scaling") or {})
    kind = scaling.pop("rope_type", scaling.pop("type", "default"))
    scaling.pop("rope_theta", None)
    if kind == "default":
        if scaling:
            fail("rope_parameters", f"unexpected entries {sorted(scaling)} for default RoPE")
        return float(theta), RopeScaling()
    allowed = {"linear": {"factor"},
               "llama3": {"factor", "low_freq_factor", "high_freq_factor",
                          "original_max_position_embeddings"}}
    if kind not in allowed:
        fail("rope_scaling", f"rope type {kind!r} is not supported (supported: default, "
                             f"{', '.join(allowed)})")
    extra = set(scaling) - allowed[kind]
    if extra:
        fail("rope_scaling", f"unsupported entries {sorted(extra)} for rope type {kind!r}")
    return float(theta), RopeScaling(kind=kind, **scaling)


def config_from_hf(hf: dict, *, source: str = "config.json", dtype: str = "float32"
                   ) -> ModelConfig:
    """`ModelConfig` from a Hugging Face `config.json` dict; unsupported values raise naming
    `source` and the attribute."""

    def fail(attribute: str, why: str):
        raise ValueError(f"{source}: attribute {attribute!r}: {why}")

    model_type = hf.get("model_type")
    if model_type not in ARCHITECTURES:
        fail("model_type", f"unsupported model type {model_type!r} (supported: "
                           f"{sorted(ARCHITECTURES)})")
    architectures = hf.get("architectures") or [ARCHITECTURES[model_type]]
    if architectures != [ARCHITECTURES[model_type]]:
        fail("architectures", f"unsupported {architectures} (expected "
                              f"[{ARCHITECTURES[model_type]!r}])")
    unknown = sorted(set(hf) - HARMLESS - MAPPED)
    if unknown:
        fail(unknown[0], f"not understood by headjax (unknown attributes: {unknown})")
    if hf.get("attention_bias", False) or hf.get("mlp_bias", False):
        fail("attention_bias" if hf.get("attention_bias") else "mlp_bias",
             "Llama attention/MLP biases are not supported")
    if hf.get("attention_dropout", 0.0):
        fail("attention_dropout", "attention dropout is not supported")
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        fail("partial_rotary_factor", "partial rotary embeddings are not supported")
    layer_types = hf.get("layer_types") or []
    if any(t != "full_attention" for t in layer_types):
        fail("layer_types", f"only full attention is supported, got {sorted(set(layer_types))}")
    if hf.get("use_sliding_window", False):
        fail("use_sliding_window", "sliding-window attention is not supported")
    max_positions = hf.get("max_position_embeddings", 2048)
    window = hf.get("sliding_window")
    if model_type == "mistral" and window is not None:
        # Sequences no longer than the window attend exactly as full causal attention does.
        max_positions = min(max_positions, window)
    activation = hf.get("hidden_act", "silu")
    if activation not in HF_ACTIVATIONS:
        fail("hidden_act", f"unsupported activation {activation!r}")
    theta, scaling = _rope(hf, fail)
    heads = hf["num_attention_heads"]
    return ModelConfig(
        vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"], num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        ffn_dim=hf["intermediate_size"], rope_theta=theta, rope_scaling=scaling,
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        activation=HF_ACTIVATIONS[activation], qkv_bias=model_type == "qwen2",
        max_position_embeddings=max_positions, dtype=dtype, param_dtype=dtype)


def _safetensors_problem(path: str) -> str:
    """What is wrong with a `.safetensors` file the library refused, in words."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            return "not a safetensors file (shorter than its 8-byte header)"
        (header_len,) = struct.unpack("<Q", prefix)
        try:
            header = json.loads(f.read(header_len))
            ends = {name: 8 + header_len + entry["data_offsets"][1]
                    for name, entry in header.items() if name != "__metadata__"}
        except (UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as err:
            return f"corrupt safetensors header ({err})"
    past = [name for name, end in ends.items() if end > size]
    if header_len > size - 8 or past:
        return (f"truncated safetensors file: tensor {past[0]!r} ends past its {size} bytes"
                if past else f"truncated safetensors file ({size} bytes)")
    return "unreadable safetensors file"


def _open_safetensors(path: str):
    """A `safetensors.safe_open` handle (numpy) on `path`; a file it refuses is one ValueError
    naming the file and the problem."""
    try:
        return safe_open(path, framework="np")
    except SafetensorError as err:
        raise ValueError(f"{path}: {_safetensors_problem(path)}") from err


def _open_shards(directory: str) -> dict:
    """{tensor name: the open file holding it} for `model.safetensors` or its sharded index."""
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(single):
        shard = _open_safetensors(single)
        return {name: shard for name in shard.keys()}  # noqa: SIM118 (a handle, not a dict)
    if os.path.isfile(index):
        weight_map = read_config_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: missing 'weight_map'")
        shards = {f: _open_safetensors(os.path.join(directory, f))
                  for f in set(weight_map.values())}
        names = {f: set(shard.keys()) for f, shard in shards.items()}  # noqa: SIM118
        located = {}
        for name, file in weight_map.items():
            if name not in names[file]:
                raise ValueError(f"{os.path.join(directory, file)}: tensor {name!r} listed in "
                                 f"{index} is missing")
            located[name] = shards[file]
        return located
    raise FileNotFoundError(f"{directory}: no model.safetensors or model.safetensors.index.json")


def load_hf(directory: str, *, dtype: str = "float32") -> tuple[dict, ModelConfig]:
    """(numpy params in `dtype`, ModelConfig) from a Hugging Face checkpoint directory."""
    config_path = os.path.join(directory, "config.json")
    config = config_from_hf(read_config_json(config_path), source=config_path, dtype=dtype)
    located = _open_shards(directory)
    expected = set(layout.expected_names(config, "hf"))
    if config.tie_embeddings:
        located.pop("lm_head.weight", None)
    unexpected = sorted(n for n in set(located) - expected if not n.endswith(IGNORED_TENSORS))
    if unexpected:
        raise ValueError(f"{directory}: unexpected tensors for {config_path}: {unexpected[:5]}")

    def read(name: str, rule: layout.Rule) -> np.ndarray:
        if name not in located:
            raise ValueError(f"{directory}: tensor {name!r} is missing from the checkpoint")
        return located[name].get_tensor(name).astype(np.float32)

    return layout.to_canonical(read, config, "hf", dtype), config
