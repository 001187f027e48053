"""Hugging Face `config.json` -> `ModelConfig`, for every supported family.

A strict whitelist: every attribute is either mapped onto `ModelConfig`, checked to hold a value
headjax reproduces exactly, or listed as harmless (it does not change the forward numerics);
anything else is an error naming the file and the attribute. Each family reads only its own
attributes (a Gemma soft-cap in a Llama config is an error, not a silent no-op).
"""

from __future__ import annotations

from headjax.model.config import ModelConfig, RopeScaling

# model_type -> the one architecture headjax reads for it.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "mistral": "MistralForCausalLM", "qwen3": "Qwen3ForCausalLM",
                 "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}
HF_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu",
                  "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "relu": "relu"}
# Attributes that do not change the forward pass (token ids, init, caching, bookkeeping).
HARMLESS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "use_cache",
    "pretraining_tp", "max_window_layers", "_name_or_path", "output_attentions",
    "output_hidden_states", "return_dict", "tie_encoder_decoder", "is_decoder",
    "chunk_size_feed_forward", "problem_type", "id2label", "label2id", "is_encoder_decoder",
})
COMMON = frozenset({
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "intermediate_size", "rms_norm_eps", "rope_theta",
    "rope_scaling", "rope_parameters", "tie_word_embeddings", "max_position_embeddings",
    "attention_bias", "mlp_bias", "attention_dropout", "layer_types", "partial_rotary_factor",
})
_QWEN = frozenset({"hidden_act", "sliding_window", "use_sliding_window", "max_window_layers"})
_GEMMA = frozenset({"hidden_activation", "hidden_act", "query_pre_attn_scalar",
                    "attn_logit_softcapping", "final_logit_softcapping", "sliding_window",
                    "use_bidirectional_attention", "cache_implementation"})
FAMILY_ATTRIBUTES = {
    # Llama ignores sliding-window attributes (as transformers' Llama does).
    "llama": frozenset({"hidden_act", "sliding_window", "use_sliding_window"}),
    "mistral": frozenset({"hidden_act", "sliding_window", "use_sliding_window"}),
    "qwen2": _QWEN | {"use_sliding_window"},
    "qwen3": _QWEN,
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA | {"rope_local_base_freq", "sliding_window_pattern",
                             "_sliding_window_pattern"},
}
SCALINGS = {"linear": {"factor"},
            "llama3": {"factor", "low_freq_factor", "high_freq_factor",
                       "original_max_position_embeddings"}}


def _rope_entry(entry: dict, theta: float, attribute: str, fail) -> tuple[float, RopeScaling]:
    """(theta, RopeScaling) from one `rope_parameters`-style dict (`theta` when it has none)."""
    scaling = dict(entry)
    kind = scaling.pop("rope_type", scaling.pop("type", "default"))
    theta = scaling.pop("rope_theta", theta)
    if kind == "default":
        if scaling:
            fail(attribute, f"unexpected entries {sorted(scaling)} for default RoPE")
        return float(theta), RopeScaling()
    if kind not in SCALINGS:
        fail(attribute, f"rope type {kind!r} is not supported (supported: default, "
                        f"{', '.join(SCALINGS)})")
    extra = set(scaling) - SCALINGS[kind]
    if extra:
        fail(attribute, f"unsupported entries {sorted(extra)} for rope type {kind!r}")
    return float(theta), RopeScaling(kind=kind, **scaling)


def _rope(hf: dict, fail) -> tuple[float, RopeScaling]:
    """(rope_theta, RopeScaling) from `rope_parameters` (transformers 5) or the older keys."""
    params = hf.get("rope_parameters") or {}
    if params:
        return _rope_entry(params, hf.get("rope_theta", 10000.0), "rope_scaling", fail)
    return _rope_entry(hf.get("rope_scaling") or {}, hf.get("rope_theta", 10000.0),
                       "rope_scaling", fail)


def _gemma3_rope(hf: dict, fail) -> tuple[float, RopeScaling, float]:
    """(global theta, global scaling, local theta): per-layer-type `rope_parameters` or the
    older `rope_theta` / `rope_scaling` / `rope_local_base_freq`."""
    params = hf.get("rope_parameters") or {}
    if params and set(params) <= {"full_attention", "sliding_attention"}:
        theta, scaling = _rope_entry(params.get("full_attention") or {}, 1e6, "rope_parameters",
                                     fail)
        local, local_scaling = _rope_entry(params.get("sliding_attention") or {}, 1e4,
                                           "rope_parameters", fail)
        if local_scaling.kind is not None:
            fail("rope_parameters", "RoPE scaling on sliding-window layers is not supported")
        return theta, scaling, local
    theta, scaling = _rope_entry(params or hf.get("rope_scaling") or {},
                                 hf.get("rope_theta", 1e6), "rope_scaling", fail)
    return theta, scaling, float(hf.get("rope_local_base_freq", 1e4))


def _local_layers(hf: dict, model_type: str, window: int | None, layers: int, fail
                  ) -> tuple[bool, ...]:
    """One bool per layer, True for a sliding-window layer (() without a window)."""
    types = hf.get("layer_types")
    if types is not None:
        if len(types) != layers or set(types) - {"sliding_attention", "full_attention"}:
            fail("layer_types", f"expected {layers} of 'sliding_attention'/'full_attention', "
                                f"got {types}")
        if model_type in ("llama", "mistral") and "sliding_attention" in types:
            fail("layer_types", f"{model_type} has no sliding-window layers")
    if window is None:
        return ()
    if types is not None:
        return tuple(t == "sliding_attention" for t in types)
    if model_type == "mistral":
        return (True,) * layers
    if model_type in ("qwen2", "qwen3"):
        first = hf.get("max_window_layers", 28)
        return tuple(i >= first for i in range(layers))
    period = 2 if model_type == "gemma2" else hf.get(
        "sliding_window_pattern", hf.get("_sliding_window_pattern", 6))
    return tuple(bool((i + 1) % period) for i in range(layers))


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
    unknown = sorted(set(hf) - HARMLESS - COMMON - FAMILY_ATTRIBUTES[model_type])
    if unknown:
        fail(unknown[0], f"not understood by headjax for model type {model_type!r} (unknown "
                         f"attributes: {unknown})")
    if hf.get("attention_bias", False) or hf.get("mlp_bias", False):
        fail("attention_bias" if hf.get("attention_bias") else "mlp_bias",
             "attention/MLP biases are not supported")
    if hf.get("attention_dropout", 0.0):
        fail("attention_dropout", "attention dropout is not supported")
    if hf.get("partial_rotary_factor", 1.0) != 1.0:
        fail("partial_rotary_factor", "partial rotary embeddings are not supported")
    if hf.get("use_bidirectional_attention"):
        fail("use_bidirectional_attention", "bidirectional attention is not supported")
    gemma = model_type in ("gemma2", "gemma3_text")
    activation_key = "hidden_activation" if gemma else "hidden_act"
    activation = hf.get(activation_key, "gelu_pytorch_tanh" if gemma else "silu")
    if activation not in HF_ACTIVATIONS:
        fail(activation_key, f"unsupported activation {activation!r}")
    window = hf.get("sliding_window", 4096 if gemma else None)
    if model_type == "llama" or (model_type in ("qwen2", "qwen3")
                                 and not hf.get("use_sliding_window", False)):
        window = None
    local_theta = None
    if model_type == "gemma3_text":
        theta, scaling, local_theta = _gemma3_rope(hf, fail)
    else:
        theta, scaling = _rope(hf, fail)
    heads, layers = hf["num_attention_heads"], hf["num_hidden_layers"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    local_layers = _local_layers(hf, model_type, window, layers, fail)
    if not any(local_layers):
        window, local_layers = None, ()
    default_caps = (50.0, 30.0) if model_type == "gemma2" else (None, None)  # transformers'
    attn_cap = hf.get("attn_logit_softcapping", default_caps[0]) if gemma else None
    final_cap = hf.get("final_logit_softcapping", default_caps[1]) if gemma else None
    return ModelConfig(
        vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=layers,
        num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads, head_dim=head_dim,
        ffn_dim=hf["intermediate_size"], rope_theta=theta, rope_scaling=scaling,
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", gemma)),
        activation=HF_ACTIVATIONS[activation], qkv_bias=model_type == "qwen2",
        max_position_embeddings=hf.get("max_position_embeddings", 2048), dtype=dtype,
        param_dtype=dtype, qk_norm=model_type in ("qwen3", "gemma3_text"), norm_plus_one=gemma,
        sandwich_norms=gemma, scale_embeddings=gemma,
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)) if gemma else None,
        attn_logit_softcap=None if attn_cap is None else float(attn_cap),
        final_logit_softcap=None if final_cap is None else float(final_cap),
        sliding_window=window, local_layers=local_layers,
        rope_local_theta=local_theta)
