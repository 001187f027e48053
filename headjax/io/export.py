"""Export params + config (+ tokenizer) to a Hugging Face checkpoint directory.

The directory holds `config.json` written by transformers' own `LlamaConfig` / `Qwen2Config` /
`MistralConfig`, `model.safetensors` in torch layout, `generation_config.json` and, with a
tokenizer, `tokenizer.json` + `tokenizer_config.json`; `AutoModelForCausalLM.from_pretrained`
loads it with the same logits.
"""

from __future__ import annotations

import json
import os

import numpy as np

from headjax.io import layout
from headjax.io.output import check_output
from headjax.io.safetensors_file import write_safetensors
from headjax.io.tokenizer import TextTokenizer
from headjax.model.config import ModelConfig
from headjax.model.transformer import Params

TO_HF_ACTIVATION = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh",
                    "relu": "relu"}


def default_architecture(config: ModelConfig) -> str:
    """"qwen2" for q/k/v biases, else "llama"."""
    return "qwen2" if config.qkv_bias else "llama"


def hf_config(config: ModelConfig, architecture: str, tokenizer: TextTokenizer | None = None):
    """The transformers config object (`LlamaConfig`, `Qwen2Config` or `MistralConfig`)."""
    import transformers

    classes = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
               "mistral": transformers.MistralConfig}
    if architecture not in classes:
        raise ValueError(f"export: architecture {architecture!r} not in {sorted(classes)}")
    if config.qkv_bias != (architecture == "qwen2"):
        raise ValueError(f"export: qkv_bias={config.qkv_bias} cannot be written as {architecture}"
                         " (only qwen2 has q/k/v biases)")
    if architecture == "qwen2" and config.head_dim * config.num_heads != config.d_model:
        raise ValueError("export: qwen2 needs head_dim * num_heads == d_model")
    rope = {"rope_type": config.rope_scaling.kind or "default", "rope_theta": config.rope_theta}
    if config.rope_scaling.kind == "linear":
        rope["factor"] = config.rope_scaling.factor
    elif config.rope_scaling.kind == "llama3":
        s = config.rope_scaling
        rope.update(factor=s.factor, low_freq_factor=s.low_freq_factor,
                    high_freq_factor=s.high_freq_factor,
                    original_max_position_embeddings=s.original_max_position_embeddings)
    values = dict(
        vocab_size=config.vocab_size, hidden_size=config.d_model,
        intermediate_size=config.ffn_dim, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
        hidden_act=TO_HF_ACTIVATION[config.activation], rms_norm_eps=config.norm_eps,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_embeddings, rope_parameters=rope,
        architectures=[{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                        "mistral": "MistralForCausalLM"}[architecture]])
    if architecture != "qwen2":
        values["head_dim"] = config.head_dim
    if architecture == "mistral":
        values["sliding_window"] = None
    if tokenizer is not None:
        values.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    return classes[architecture](**values)


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
    write_safetensors(os.path.join(path, "model.safetensors"),
                      {name: np.asarray(t) for name, t in tensors.items()}, {"format": "pt"})
    generation = {"do_sample": False}
    if tokenizer is not None:
        tokenizer.save(path)
        generation.update(bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=list(tokenizer.stop_token_ids),
                          pad_token_id=tokenizer.pad_token_id)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=2)
