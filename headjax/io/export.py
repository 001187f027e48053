"""Export params + config (+ tokenizer) to a Hugging Face checkpoint directory.

The directory holds `config.json` written by transformers' own config class of the family
(`FAMILIES`: Llama, Qwen2, Mistral, Qwen3, Gemma 2, Gemma 3 text), `model.safetensors` in torch
layout, `generation_config.json` and, with a tokenizer, `tokenizer.json` +
`tokenizer_config.json`; `AutoModelForCausalLM.from_pretrained` loads it with the same logits.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from safetensors.numpy import save_file

from headjax.io import layout
from headjax.io.hf_config import ARCHITECTURES, config_from_hf
from headjax.io.output import check_output
from headjax.io.tokenizer import TextTokenizer
from headjax.model.config import EXECUTION_FIELDS, ModelConfig, RopeScaling
from headjax.model.transformer import Params

TO_HF_ACTIVATION = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh",
                    "relu": "relu"}
# --architecture name -> (transformers config class name, model type)
FAMILIES = {"llama": ("LlamaConfig", "llama"), "qwen2": ("Qwen2Config", "qwen2"),
            "mistral": ("MistralConfig", "mistral"), "qwen3": ("Qwen3Config", "qwen3"),
            "gemma2": ("Gemma2Config", "gemma2"), "gemma3": ("Gemma3TextConfig", "gemma3_text")}


def default_architecture(config: ModelConfig) -> str:
    """The family whose Hugging Face config represents `config`'s features."""
    if config.sandwich_norms:
        return "gemma3" if config.qk_norm else "gemma2"
    if config.qk_norm:
        return "qwen3"
    if config.qkv_bias:
        return "qwen2"
    return "mistral" if config.sliding_window is not None else "llama"


def _rope_parameters(theta: float, scaling: RopeScaling) -> dict:
    rope = {"rope_type": scaling.kind or "default", "rope_theta": theta}
    if scaling.kind == "linear":
        rope["factor"] = scaling.factor
    elif scaling.kind == "llama3":
        rope.update(factor=scaling.factor, low_freq_factor=scaling.low_freq_factor,
                    high_freq_factor=scaling.high_freq_factor,
                    original_max_position_embeddings=scaling.original_max_position_embeddings)
    return rope


def _family_values(config: ModelConfig, architecture: str) -> dict:
    """The family-specific config.json attributes (windows, norms, caps, RoPE)."""
    gemma = architecture.startswith("gemma")
    layer_types = ["sliding_attention" if local else "full_attention"
                   for local in config.local_layers or [False] * config.num_layers]
    values = {"hidden_activation" if gemma else "hidden_act": TO_HF_ACTIVATION[config.activation],
              "rope_parameters": _rope_parameters(config.rope_theta, config.rope_scaling)}
    if architecture != "qwen2":
        values["head_dim"] = config.head_dim
    if architecture == "mistral":
        values["sliding_window"] = config.sliding_window
    elif architecture in ("qwen2", "qwen3"):
        values.update(use_sliding_window=config.sliding_window is not None,
                      sliding_window=config.sliding_window, layer_types=layer_types,
                      max_window_layers=config.num_layers)
    elif gemma:
        scalar = config.query_pre_attn_scalar or config.head_dim
        values.update(sliding_window=config.sliding_window or config.max_position_embeddings,
                      layer_types=layer_types,
                      query_pre_attn_scalar=int(scalar) if scalar == int(scalar) else scalar,
                      attn_logit_softcapping=config.attn_logit_softcap,
                      final_logit_softcapping=config.final_logit_softcap)
    if architecture == "gemma3":
        local_theta = config.rope_local_theta or config.rope_theta
        values["rope_parameters"] = {
            "full_attention": values["rope_parameters"],
            "sliding_attention": {"rope_type": "default", "rope_theta": local_theta}}
    return values


def hf_config(config: ModelConfig, architecture: str, tokenizer: TextTokenizer | None = None):
    """The transformers config object of `architecture` (see `FAMILIES`) for `config`.

    Raises ValueError naming the first field the family cannot represent: the config is read
    back with headjax's own importer and must come back unchanged.
    """
    import transformers

    if architecture not in FAMILIES:
        raise ValueError(f"export: architecture {architecture!r} not in {sorted(FAMILIES)}")
    class_name, model_type = FAMILIES[architecture]
    if architecture == "qwen2" and config.head_dim * config.num_heads != config.d_model:
        raise ValueError("export: qwen2 needs head_dim * num_heads == d_model")
    values = dict(
        vocab_size=config.vocab_size, hidden_size=config.d_model,
        intermediate_size=config.ffn_dim, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
        rms_norm_eps=config.norm_eps, max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_embeddings,
        architectures=[ARCHITECTURES[model_type]], **_family_values(config, architecture))
    if tokenizer is not None:
        values.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    hf = getattr(transformers, class_name)(**values)
    same_execution = {name: getattr(config, name) for name in EXECUTION_FIELDS}
    reread = config_from_hf(hf.to_dict(), source=f"{architecture} config").replace(
        **same_execution)
    for field in dataclasses.fields(ModelConfig):
        ours, theirs = getattr(config, field.name), getattr(reread, field.name)
        if ours != theirs:
            raise ValueError(f"export: {field.name}={ours!r} cannot be written as {architecture}"
                             f" (it would load as {theirs!r}; --architecture picks the family)")
    return hf


def export_hf(path: str, params: Params, config: ModelConfig,
              tokenizer: TextTokenizer | None = None, *, architecture: str | None = None,
              overwrite: bool = False) -> None:
    """Write a Hugging Face checkpoint directory for `params`/`config` (and `tokenizer`) into
    `path`, which must be new or empty unless `overwrite`."""
    check_output(path, overwrite=overwrite)
    architecture = architecture or default_architecture(config)
    hf = hf_config(config, architecture, tokenizer)
    os.makedirs(path, exist_ok=True)
    hf.save_pretrained(path)
    tensors = layout.to_checkpoint(params, config, "hf")
    save_file({name: np.ascontiguousarray(t) for name, t in tensors.items()},
              os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    generation = {"do_sample": False}
    if tokenizer is not None:
        tokenizer.save(path)
        generation.update(bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=list(tokenizer.stop_token_ids),
                          pad_token_id=tokenizer.pad_token_id)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=2)
