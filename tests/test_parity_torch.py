"""Parity with transformers' PyTorch Llama / Qwen2 / Mistral: logits, gates, and head scores.

Tiny random models (GQA, fp32, eager attention) are saved with `save_pretrained` and imported with
`headjax.io.load_hf`; transformers is the independent reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from headjax.heads.scores import gate_gradients  # noqa: E402
from headjax.io import load_hf  # noqa: E402
from headjax.model import forward  # noqa: E402

VOCAB, BATCH, SEQ = 97, 3, 12
LENGTHS = (12, 7, 9)  # right padding
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            max_position_embeddings=128, attention_dropout=0.0)
LLAMA3_ROPE = dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                   high_freq_factor=4.0, original_max_position_embeddings=16)
VARIANTS = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(head_dim=8)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {}),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM,
                dict(head_dim=8, sliding_window=None)),
    "llama_tied": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                   dict(head_dim=8, tie_word_embeddings=True)),
    "llama3_rope": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                    dict(head_dim=8, rope_parameters=LLAMA3_ROPE)),
    "linear_rope": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                    dict(head_dim=8, rope_parameters=dict(rope_type="linear", factor=2.0,
                                                          rope_theta=500.0))),
}


def _randomise(model) -> None:
    """Non-trivial weights: N(0, 0.15) matrices and biases, norm scales in [0.5, 1.5]."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{variant: (torch model, headjax params, headjax config)}, built once per module."""
    built = {}
    for name, (config_cls, model_cls, extra) in VARIANTS.items():
        torch.manual_seed(0)
        hf_config = config_cls(**BASE, **extra)
        hf_config._attn_implementation = "eager"
        model = model_cls(hf_config).eval()
        _randomise(model)
        directory = tmp_path_factory.mktemp(name)
        model.save_pretrained(directory)
        params, config = load_hf(str(directory))
        built[name] = (model, jax.tree.map(jnp.asarray, params), config)
    return built


@pytest.fixture(scope="module")
def batch():
    """Right-padded tokens, attention mask, and an answer-token loss mask (last 4 real tokens)."""
    rng = np.random.RandomState(0)
    tokens = rng.randint(0, VOCAB, (BATCH, SEQ)).astype(np.int32)
    mask = (np.arange(SEQ)[None] < np.array(LENGTHS)[:, None]).astype(np.int32)
    tokens = tokens * mask
    loss_mask = (mask * (np.arange(SEQ)[None] >= np.array(LENGTHS)[:, None] - 4)).astype(np.float32)
    return dict(tokens=tokens, segment_ids=mask, loss_mask=loss_mask)


def _torch_logits(model, batch) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(batch["tokens"], dtype=torch.long),
                     attention_mask=torch.tensor(batch["segment_ids"])).logits.numpy()


def _headjax_logits(params, config, batch, gates=None) -> np.ndarray:
    return np.asarray(forward(params, jnp.asarray(batch["tokens"]), config, gates=gates,
                              segment_ids=jnp.asarray(batch["segment_ids"])).logits)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_match_transformers(models, batch, variant):
    model, params, config = models[variant]
    real = batch["segment_ids"].astype(bool)
    diff = np.abs(_headjax_logits(params, config, batch) - _torch_logits(model, batch))[real]
    assert diff.max() < 1e-4, f"{variant}: max abs logits difference {diff.max():.3g}"


def test_imported_config_reflects_variants(models):
    assert models["qwen2"][2].qkv_bias and not models["llama"][2].qkv_bias
    assert models["llama_tied"][2].tie_embeddings and "lm_head" not in models["llama_tied"][1]
    assert models["llama3_rope"][2].rope_scaling.kind == "llama3"


@pytest.mark.parametrize("variant", ["llama", "qwen2"])
def test_zero_gate_equals_zeroed_o_proj_columns(models, batch, variant):
    model, params, config = models[variant]
    layer, head = 1, 2
    gates = jnp.ones((config.num_layers, config.num_heads)).at[layer, head].set(0.0)
    ours = _headjax_logits(params, config, batch, gates)
    o_proj = model.model.layers[layer].self_attn.o_proj.weight
    saved = o_proj.detach().clone()
    columns = slice(head * config.head_dim, (head + 1) * config.head_dim)
    with torch.no_grad():
        o_proj[:, columns] = 0.0
    try:
        reference = _torch_logits(model, batch)
    finally:
        with torch.no_grad():
            o_proj.copy_(saved)
    real = batch["segment_ids"].astype(bool)
    assert np.abs(ours - reference)[real].max() < 1e-4
    assert np.abs(ours - _headjax_logits(params, config, batch))[real].max() > 1e-3


def _torch_gamma_scores(model, batch) -> np.ndarray:
    """sum_{q,k} Gamma * dL_i/dGamma per sample and head, from transformers' attention maps."""
    assert not model.training and model.config.attention_dropout == 0.0  # dropout is identity
    out = model(torch.tensor(batch["tokens"], dtype=torch.long),
                attention_mask=torch.tensor(batch["segment_ids"]), output_attentions=True)
    for gamma in out.attentions:
        gamma.retain_grad()
    logp = torch.log_softmax(out.logits[:, :-1], dim=-1)
    targets = torch.tensor(batch["tokens"][:, 1:], dtype=torch.long)
    nll = -logp.gather(-1, targets[..., None])[..., 0]
    mask = torch.tensor(batch["loss_mask"][:, 1:])
    per_sample = (nll * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    per_sample.sum().backward()
    scores = [(g * g.grad).sum(dim=(-1, -2)) for g in out.attentions]  # each [batch, heads]
    return torch.stack(scores, dim=1).detach().numpy()


@pytest.mark.parametrize("variant", ["llama", "qwen2"])
def test_gate_gradients_equal_gamma_identity(models, batch, variant):
    model, params, config = models[variant]
    reference = _torch_gamma_scores(model, batch)
    ours = np.asarray(gate_gradients(params, {k: jnp.asarray(v) for k, v in batch.items()},
                                     config, loss_kind="sample_mean"))
    assert ours.shape == (BATCH, config.num_layers, config.num_heads)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6)
    assert np.abs(reference).max() > 1e-3
