"""Test helper: write small llama GGUF files from Hugging Face-layout tensors, as llama.cpp's
`convert_hf_to_gguf.py` does (q/k rows permuted to the interleaved RoPE layout)."""

from __future__ import annotations

import gguf
import numpy as np

HF_TO_GGUF = {
    "input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
}


def llama_cpp_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """Verbatim the permutation of llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def byte_level_vocab() -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges): the 256 GPT-2 byte characters, two merges, one control."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = [], 0
    for byte in range(256):
        chars.append(chr(byte) if byte in printable else chr(256 + extra))
        extra += byte not in printable
    tokens = chars + ["Ġt", "he", "<|eot|>"]
    types = [1] * (len(tokens) - 1) + [3]
    return tokens, types, ["Ġ t", "h e"]


Q = gguf.GGMLQuantizationType


def write_llama_gguf(path: str, hf_tensors: dict[str, np.ndarray], hf_config: dict, *,
                     quant: Q = Q.F32,
                     raw_override: dict[str, tuple[np.ndarray, Q]] | None = None) -> None:
    """Write `hf_tensors` (HF names, torch layout, f32) as a llama GGUF.

    Matrices are stored as `quant`, 1-d tensors as F32. `raw_override` maps a GGUF tensor name to
    (bytes `[rows, row bytes]`, GGML type) written as is.
    """
    heads, kv = hf_config["num_attention_heads"], hf_config["num_key_value_heads"]
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(hf_config["num_hidden_layers"])
    writer.add_context_length(hf_config["max_position_embeddings"])
    writer.add_embedding_length(hf_config["hidden_size"])
    writer.add_feed_forward_length(hf_config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_rope_freq_base(hf_config["rope_theta"])
    writer.add_layer_norm_rms_eps(hf_config["rms_norm_eps"])
    writer.add_rope_dimension_count(hf_config["hidden_size"] // heads)
    tokens, types, merges = byte_level_vocab()
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(len(tokens) - 1)
    writer.add_chat_template("{% for m in messages %}{{ m['content'] }}<|eot|>{% endfor %}")
    raw_override = raw_override or {}
    for name, tensor in hf_tensors.items():
        if name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        elif name == "lm_head.weight":
            out = "output.weight"
        else:
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            out = f"blk.{layer}.{HF_TO_GGUF[rest]}"
            if rest == "self_attn.q_proj.weight":
                tensor = llama_cpp_permute(tensor, heads, heads)
            elif rest == "self_attn.k_proj.weight":
                tensor = llama_cpp_permute(tensor, heads, kv)
        if out in raw_override:
            data, raw_type = raw_override[out]
            writer.add_tensor(out, data, raw_dtype=raw_type)
        elif tensor.ndim == 2 and quant != Q.F32:
            writer.add_tensor(out, gguf.quants.quantize(tensor, quant), raw_dtype=quant)
        else:
            writer.add_tensor(out, np.ascontiguousarray(tensor, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


FAMILY_TO_GGUF = {
    **HF_TO_GGUF, "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias", "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
}
GEMMA_TO_GGUF = {
    **FAMILY_TO_GGUF, "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}


def write_family_gguf(path: str, arch: str, hf_tensors: dict[str, np.ndarray], hf: dict, *,
                      quant: Q = Q.F32, raw: dict[str, tuple[np.ndarray, Q]] | None = None
                      ) -> None:
    """Write a qwen2 / qwen3 / gemma2 / gemma3 GGUF as llama.cpp's converter does: no q/k row
    permutation, Gemma norms stored as (1 + w), Gemma's soft-caps and sliding window as metadata.

    `hf` is the transformers config's `to_dict()`; matrices are stored as `quant` (or as the
    bytes in `raw`, keyed by GGUF name), 1-d tensors as F32. No tokenizer is written.
    """
    gemma = arch.startswith("gemma")
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(hf["num_hidden_layers"])
    writer.add_context_length(hf["max_position_embeddings"])
    writer.add_embedding_length(hf["hidden_size"])
    writer.add_feed_forward_length(hf["intermediate_size"])
    writer.add_head_count(hf["num_attention_heads"])
    writer.add_head_count_kv(hf["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(hf["rms_norm_eps"])
    writer.add_vocab_size(hf["vocab_size"])
    rope = hf["rope_parameters"]
    rope = rope.get("full_attention", rope)
    writer.add_rope_freq_base(rope["rope_theta"])
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    if hf.get("head_dim"):
        writer.add_key_length(hf["head_dim"])
        writer.add_value_length(hf["head_dim"])
    if gemma:
        writer.add_sliding_window(hf["sliding_window"])
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(hf["attn_logit_softcapping"])
        writer.add_final_logit_softcapping(hf["final_logit_softcapping"])
    names = GEMMA_TO_GGUF if gemma else FAMILY_TO_GGUF
    raw = raw or {}
    for name, tensor in hf_tensors.items():
        if name == "lm_head.weight" and gemma and hf["tie_word_embeddings"]:
            continue
        top = {"model.embed_tokens.weight": "token_embd.weight",
               "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
        if name in top:
            out = top[name]
        else:
            layer, rest = name.removeprefix("model.layers.").split(".", 1)
            out = f"blk.{layer}.{names[rest]}"
        if gemma and name.endswith("norm.weight"):
            tensor = tensor + 1.0
        if out in raw:
            writer.add_tensor(out, raw[out][0], raw_dtype=raw[out][1])
        elif tensor.ndim == 2 and quant != Q.F32:
            writer.add_tensor(out, gguf.quants.quantize(tensor, quant), raw_dtype=quant)
        else:
            writer.add_tensor(out, np.ascontiguousarray(tensor, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
