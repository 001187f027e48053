"""GGUF import of qwen2 / qwen3 / gemma2 / gemma3 files against the Hugging Face import of the
same weights (itself checked against transformers in test_families.py), and the quantisations
such files use: Q8_0, F16, BF16 (quantised by the `gguf` package) and Q4_K, Q5_K, Q6_K (random
blocks, since `gguf` cannot quantise to them), each against an F32 file of its dequantised values.
"""

from __future__ import annotations

import gguf
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gguf_files import write_family_gguf  # noqa: E402

from headjax.io import load_gguf, load_hf  # noqa: E402

Q = gguf.GGMLQuantizationType
BASE = dict(vocab_size=97, hidden_size=48, intermediate_size=40, num_hidden_layers=3,
            rms_norm_eps=1e-6, max_position_embeddings=64)
# GGUF has no query_pre_attn_scalar: llama.cpp uses head_dim (d_model / heads for the 27B models).
ARCHS = {
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(num_attention_heads=4, num_key_value_heads=1)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM",
              dict(num_attention_heads=8, num_key_value_heads=2, head_dim=10)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               dict(num_attention_heads=6, num_key_value_heads=1, head_dim=10, sliding_window=4,
                    query_pre_attn_scalar=10, attn_logit_softcapping=2.0,
                    final_logit_softcapping=3.0)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
               dict(num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=4,
                    query_pre_attn_scalar=16)),
}


def _checkpoint(directory, arch: str, sizes: dict | None = None):
    """Save a random transformers model of `arch`; return (HF tensors, config dict)."""
    config_cls, model_cls, extra = ARCHS[arch]
    config = getattr(transformers, config_cls)(**{**BASE, **extra, **(sizes or {})})
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config)
    gemma = arch.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(0.3 * torch.randn(p.shape) + (1.0 if "norm" in name and not gemma else 0.0))
    model.save_pretrained(directory)
    return {k: v.numpy() for k, v in model.state_dict().items()}, config.to_dict()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_gguf_import_equals_hf_import(tmp_path, arch):
    tensors, hf = _checkpoint(tmp_path, arch)
    write_family_gguf(str(tmp_path / "m.gguf"), arch, tensors, hf)
    from_gguf, gguf_config = load_gguf(str(tmp_path / "m.gguf"))
    from_hf, hf_config = load_hf(str(tmp_path))
    assert gguf_config.replace(norm_eps=hf_config.norm_eps) == hf_config
    # Gemma norms come back as (1 + w) - 1 in f32.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6),
                 from_gguf, from_hf)


def test_gemma3_local_layer_pattern_and_rope_base_from_metadata(tmp_path):
    tensors, hf = _checkpoint(tmp_path, "gemma3", dict(num_hidden_layers=7))
    write_family_gguf(str(tmp_path / "m.gguf"), "gemma3", tensors, hf)
    _, config = load_gguf(str(tmp_path / "m.gguf"))
    assert config.local_layers == (True,) * 5 + (False, True)
    assert config.rope_local_theta == 10000.0 and config.rope_theta == 1e6


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    path = str(tmp_path / "phi.gguf")
    writer = gguf.GGUFWriter(path, "phi3")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="unsupported architecture 'phi3' \\(supported: "
                                         "'gemma2', 'gemma3', 'llama', 'qwen2', 'qwen3'\\)"):
        load_gguf(path)


# Every matrix input width a multiple of 256 (the K-quant block).
WIDE = dict(hidden_size=256, intermediate_size=256, num_attention_heads=4, num_key_value_heads=1,
            head_dim=64, query_pre_attn_scalar=64, num_hidden_layers=1)


def _random_blocks(rows: int, cols: int, kind: Q, rng) -> np.ndarray:
    """Random K-quant blocks with small finite f16 scales `[rows, bytes per row]`."""
    block, size = gguf.GGML_QUANT_SIZES[kind]
    data = rng.randint(0, 256, (rows, cols // block, size)).astype(np.uint8)
    scales = np.full((rows, cols // block, 1), 0.01, np.float16).view(np.uint8)
    if kind == Q.Q6_K:  # ql, qh, int8 scales, then d
        data[..., -2:] = scales
    else:  # d, dmin, then the rest
        data[..., 0:2] = scales
        data[..., 2:4] = scales
    return data.reshape(rows, -1)


@pytest.mark.parametrize("kind", [Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_0, Q.F16, Q.BF16],
                         ids=lambda k: k.name)
def test_quantised_gguf_equals_its_dequantised_f32_twin(tmp_path, kind):
    tensors, hf = _checkpoint(tmp_path, "gemma3", WIDE)
    rng = np.random.RandomState(0)
    raw, dequantised = {}, dict(tensors)
    for name, tensor in tensors.items():
        if tensor.ndim != 2 or not name.startswith("model.layers."):
            continue
        layer, rest = name.removeprefix("model.layers.").split(".", 1)
        gguf_name = f"blk.{layer}." + {"self_attn.q_proj.weight": "attn_q", "self_attn.k_proj."
                                       "weight": "attn_k", "self_attn.v_proj.weight": "attn_v",
                                       "self_attn.o_proj.weight": "attn_output",
                                       "mlp.gate_proj.weight": "ffn_gate",
                                       "mlp.up_proj.weight": "ffn_up",
                                       "mlp.down_proj.weight": "ffn_down"}[rest] + ".weight"
        if kind in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
            blocks = _random_blocks(*tensor.shape, kind, rng)
        else:
            blocks = gguf.quants.quantize(tensor, kind)
        raw[gguf_name] = (blocks, kind)
        dequantised[name] = gguf.quants.dequantize(blocks, kind).reshape(tensor.shape)
        assert np.isfinite(dequantised[name]).all() and np.abs(dequantised[name]).max() > 0
    write_family_gguf(str(tmp_path / "q.gguf"), "gemma3", tensors, hf, raw=raw)
    write_family_gguf(str(tmp_path / "f32.gguf"), "gemma3", dequantised, hf)
    quantised, config = load_gguf(str(tmp_path / "q.gguf"))
    twin, twin_config = load_gguf(str(tmp_path / "f32.gguf"))
    assert config == twin_config
    jax.tree.map(np.testing.assert_array_equal, quantised, twin)
    if kind in (Q.Q8_0, Q.F16, Q.BF16):  # close to the unquantised weights too
        from_hf, _ = load_hf(str(tmp_path))
        error = np.abs(quantised["layers"]["q_proj"] - from_hf["layers"]["q_proj"]).max()
        assert 0 < error < 0.02
