"""Round trips: headjax -> HF dir -> transformers, native save/load, GGUF (F32, Q8_0) import."""

from __future__ import annotations

import json

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gguf_files import write_llama_gguf  # noqa: E402

from headjax.io import (  # noqa: E402
    TextTokenizer,
    export_hf,
    load_gguf,
    load_hf,
    load_native,
    load_pretrained,
    save_native,
)
from headjax.model import forward, init, tiny_config  # noqa: E402
from headjax.model.config import RopeScaling  # noqa: E402

HF_CONFIG = dict(vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                 rope_theta=10000.0, max_position_embeddings=64, head_dim=8)


def _random(params, seed=1):
    """`params` with every leaf replaced by N(0, 0.2) noise (norm scales around 1)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [0.2 * jax.random.normal(k, x.shape) + (x == 1)
                                        for k, x in zip(keys, leaves, strict=True)])


@pytest.fixture(scope="module")
def torch_llama(tmp_path_factory):
    """(torch LlamaForCausalLM with random weights, its saved directory)."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**HF_CONFIG)
    config._attn_implementation = "eager"
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape)
            p.copy_(1.0 + 0.3 * noise if "norm" in name else 0.2 * noise)
    directory = tmp_path_factory.mktemp("hf_llama")
    model.save_pretrained(directory)
    return model, str(directory)


def _tokens(vocab: int) -> np.ndarray:
    return np.random.RandomState(0).randint(0, vocab, (2, 11)).astype(np.int32)


@pytest.mark.parametrize("overrides", [
    dict(), dict(qkv_bias=True), dict(tie_embeddings=True),
    dict(rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 16)),
], ids=["llama", "qwen2", "tied", "llama3_rope"])
def test_export_loads_in_transformers_with_same_logits(tmp_path, overrides):
    config = tiny_config(**overrides)
    params = _random(init(jax.random.key(0), config))
    export_hf(str(tmp_path), params, config)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", dtype=torch.float32).eval()
    tokens = _tokens(config.vocab_size)
    with torch.no_grad():
        reference = model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    ours = np.asarray(forward(params, jnp.asarray(tokens), config).logits)
    assert np.abs(ours - reference).max() < 1e-4
    assert np.abs(reference).max() > 0.1
    reloaded, reloaded_config = load_hf(str(tmp_path))
    assert reloaded_config == config
    jax.tree.map(np.testing.assert_array_equal, reloaded, jax.tree.map(np.asarray, params))


def test_export_with_tokenizer_writes_loadable_tokenizer(tmp_path, torch_llama):
    _, directory = torch_llama
    gguf_path = str(tmp_path / "m.gguf")
    model = torch_llama[0]
    write_llama_gguf(gguf_path, {k: v.numpy() for k, v in model.state_dict().items()},
                     HF_CONFIG)
    params, config, tokenizer = load_pretrained(gguf_path)
    out = tmp_path / "hf"
    export_hf(str(out), params, config, tokenizer)
    auto = transformers.AutoTokenizer.from_pretrained(out)
    text = "the theme<|eot|> then"
    assert auto(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(text)
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [258]
    assert TextTokenizer.from_hf_dir(str(out)).chat_template == tokenizer.chat_template


def test_native_round_trip_is_bit_identical(tmp_path, torch_llama):
    params, config, tokenizer = load_pretrained(torch_llama[1])
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    config = config.replace(param_dtype="bfloat16")
    save_native(str(tmp_path / "ckpt"), params, config)
    restored, restored_config, restored_tokenizer = load_native(str(tmp_path / "ckpt"))
    assert restored_config == config and restored_tokenizer is None
    assert jax.tree.structure(restored) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileExistsError, match="already exists"):
        save_native(str(tmp_path / "ckpt"), params, config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging left behind


def test_gguf_f32_import_equals_hf_import_exactly(tmp_path, torch_llama):
    model, directory = torch_llama
    path = str(tmp_path / "f32.gguf")
    write_llama_gguf(path, {k: v.numpy() for k, v in model.state_dict().items()}, HF_CONFIG)
    from_gguf, gguf_config = load_gguf(path)
    from_hf, hf_config = load_hf(directory)
    assert gguf_config.replace(norm_eps=hf_config.norm_eps) == hf_config
    assert gguf_config.norm_eps == pytest.approx(hf_config.norm_eps)
    jax.tree.map(np.testing.assert_array_equal, from_gguf, from_hf)
    tokens = _tokens(HF_CONFIG["vocab_size"])
    with torch.no_grad():
        reference = model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    ours = np.asarray(forward(from_gguf, jnp.asarray(tokens), gguf_config).logits)
    assert np.abs(ours - reference).max() < 1e-4


def test_gguf_q8_0_import_within_quantisation_error(tmp_path, torch_llama):
    model, directory = torch_llama
    path = str(tmp_path / "q8.gguf")
    write_llama_gguf(path, {k: v.numpy() for k, v in model.state_dict().items()}, HF_CONFIG,
                     quant=gguf.GGMLQuantizationType.Q8_0)
    from_gguf, _ = load_gguf(path)
    from_hf, _ = load_hf(directory)
    for ours, source in zip(jax.tree.leaves(from_gguf), jax.tree.leaves(from_hf), strict=True):
        # Q8_0: blocks of 32 along the input axis, scale d = max|block| / 127 stored as f16:
        # error <= d / 2 + 127 * |d - f16(d)| <= 0.57 d.
        error, bound = np.abs(ours - source).max(), 0.57 * np.abs(source).max() / 127
        assert error <= bound, (error, bound)


def test_sharded_checkpoint_equals_single_file(tmp_path, torch_llama):
    model, directory = torch_llama
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    jax.tree.map(np.testing.assert_array_equal, load_hf(str(tmp_path))[0], load_hf(directory)[0])


def test_execution_fields_are_not_exported(tmp_path):
    """How headjax computes (remat, scan, attention kernel, answer-only projection) is not part
    of a Hugging Face config: export succeeds and the reloaded config has the defaults."""
    config = tiny_config()
    params = init(jax.random.key(0), config)
    running = config.replace(remat="full", scan_layers=False, attention_impl="fused",
                             answer_positions=8)
    export_hf(str(tmp_path), params, running)
    _, reloaded_config = load_hf(str(tmp_path))
    assert reloaded_config == config
