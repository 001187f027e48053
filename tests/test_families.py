"""Every supported family against transformers' PyTorch implementation, on tiny random checkpoints.

Odd sizes on purpose: head_dim != d_model / heads, GQA 6:1 and 4:1, sliding windows (4-5 slots)
shorter than the 12-token sequences, Gemma 2 soft-caps small enough to bind, Gemma 3 with a
separate local RoPE base and linear RoPE scaling on its global layer. Checked per family: logits
(f32, 1e-5), per-sample gate gradients against a gate multiplied into `o_proj`'s input by a
transformers forward hook (1e-4 relative), KV-cache greedy decoding against full recomputation,
and the export round trip (transformers loads our export with the same logits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from headjax.eval import generate, left_pad  # noqa: E402
from headjax.heads.scores import gate_gradients  # noqa: E402
from headjax.io import export_hf, load_hf  # noqa: E402
from headjax.model import forward  # noqa: E402
from tests.test_generate import recompute_greedy  # noqa: E402

VOCAB, SEQ = 97, 12
LENGTHS = (12, 7, 9)  # right padding
BASE = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=40, num_hidden_layers=3,
            rms_norm_eps=1e-6, max_position_embeddings=64, attention_dropout=0.0)
SLIDING_3 = ["sliding_attention", "full_attention", "sliding_attention"]
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM",
              dict(num_attention_heads=6, num_key_value_heads=1, head_dim=10)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(num_attention_heads=4, num_key_value_heads=1, use_sliding_window=True,
                   sliding_window=4, max_window_layers=1)),
    "mistral": ("MistralConfig", "MistralForCausalLM",
                dict(num_attention_heads=4, num_key_value_heads=1, head_dim=10, sliding_window=5)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM",
              dict(num_attention_heads=8, num_key_value_heads=2, head_dim=10,
                   use_sliding_window=True, sliding_window=4, max_window_layers=1)),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               dict(num_attention_heads=6, num_key_value_heads=1, head_dim=10, sliding_window=4,
                    attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                    query_pre_attn_scalar=12)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
               dict(num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=4,
                    layer_types=SLIDING_3, query_pre_attn_scalar=20,
                    rope_parameters={
                        "full_attention": dict(rope_type="linear", factor=2.0, rope_theta=1e3),
                        "sliding_attention": dict(rope_type="default", rope_theta=50.0)})),
}


def _randomise(model, gemma: bool) -> None:
    """N(0, 0.15) matrices; norm scales around 1 (Gemma stores w of (1 + w): around 0)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=gen) - (0.5 if gemma else -0.5))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{family: (torch model, headjax params, headjax config)}, built once per module."""
    built = {}
    for name, (config_cls, model_cls, extra) in FAMILIES.items():
        torch.manual_seed(0)
        hf_config = getattr(transformers, config_cls)(**BASE, **extra)
        hf_config._attn_implementation = "eager"
        model = getattr(transformers, model_cls)(hf_config).eval()
        _randomise(model, name.startswith("gemma"))
        directory = tmp_path_factory.mktemp(name)
        model.save_pretrained(directory)
        params, config = load_hf(str(directory))
        built[name] = (model, jax.tree.map(jnp.asarray, params), config)
    return built


@pytest.fixture(scope="module")
def batch():
    """Right-padded tokens, attention mask, and a loss mask on the last 4 real tokens."""
    rng = np.random.RandomState(0)
    mask = (np.arange(SEQ)[None] < np.array(LENGTHS)[:, None]).astype(np.int32)
    tokens = rng.randint(0, VOCAB, (len(LENGTHS), SEQ)).astype(np.int32) * mask
    loss_mask = (mask * (np.arange(SEQ)[None] >= np.array(LENGTHS)[:, None] - 4))
    return dict(tokens=tokens, segment_ids=mask, loss_mask=loss_mask.astype(np.float32))


def _torch_logits(model, batch) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(batch["tokens"], dtype=torch.long),
                     attention_mask=torch.tensor(batch["segment_ids"])).logits.numpy()


def _logits(params, config, batch) -> np.ndarray:
    return np.asarray(forward(params, jnp.asarray(batch["tokens"]), config,
                              segment_ids=jnp.asarray(batch["segment_ids"])).logits)


def test_imported_configs_carry_the_family_features(models):
    configs = {name: models[name][2] for name in FAMILIES}
    assert configs["llama"].group_size == 6 and configs["qwen3"].group_size == 4
    assert all(c.head_dim * c.num_heads != c.d_model for n, c in configs.items() if n != "qwen2")
    assert configs["qwen3"].qk_norm and not configs["qwen3"].sandwich_norms
    assert configs["qwen3"].local_layers == (False, True, True)
    assert configs["mistral"].local_layers == (True,) * 3
    gemma2, gemma3 = configs["gemma2"], configs["gemma3"]
    assert gemma2.norm_plus_one and gemma2.sandwich_norms and gemma2.scale_embeddings
    assert (gemma2.attn_logit_softcap, gemma2.final_logit_softcap) == (2.0, 3.0)
    assert gemma2.local_layers == gemma3.local_layers == (True, False, True)
    assert gemma3.qk_norm and gemma3.rope_local_theta == 50.0
    assert gemma3.rope_scaling.kind == "linear" and gemma3.query_pre_attn_scalar == 20.0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_match_transformers(models, batch, family):
    model, params, config = models[family]
    real = batch["segment_ids"].astype(bool)
    reference = _torch_logits(model, batch)
    diff = np.abs(_logits(params, config, batch) - reference)[real]
    assert diff.max() < 1e-5, f"{family}: max abs logits difference {diff.max():.3g}"
    assert np.abs(reference).max() > 1.0


@pytest.mark.parametrize("family, feature", [
    ("mistral", dict(sliding_window=None, local_layers=())),
    ("gemma3", dict(sliding_window=None, local_layers=())),
    ("gemma2", dict(attn_logit_softcap=None)),
    ("gemma2", dict(final_logit_softcap=None)),
    ("gemma3", dict(rope_local_theta=None)),
    ("gemma3", dict(qk_norm=False)),
])
def test_each_feature_matters_for_the_parity(models, batch, family, feature):
    """The parity above fails when a feature is dropped: windows, caps, RoPE bases all bind."""
    model, params, config = models[family]
    if "qk_norm" in feature:
        params = {**params, "layers": {k: v for k, v in params["layers"].items()
                                       if k not in ("q_norm", "k_norm")}}
    real = batch["segment_ids"].astype(bool)
    diff = np.abs(_logits(params, config.replace(**feature), batch)
                  - _torch_logits(model, batch))[real]
    assert diff.max() > 1e-3, f"{family} without {feature}: still matches ({diff.max():.3g})"


def _torch_gate_gradients(model, batch, num_heads: int) -> np.ndarray:
    """d(sum of per-sample mean answer losses)/d gate, gates multiplied into `o_proj`'s input
    per head by forward pre-hooks: `[batch, layers, heads]`."""
    layers = model.model.layers
    gates = torch.ones(len(batch["tokens"]), len(layers), num_heads, requires_grad=True)

    def hook_for(index):
        def hook(module, args):
            (x,) = args
            heads = x.reshape(*x.shape[:2], num_heads, -1) * gates[:, index, None, :, None]
            return (heads.reshape(x.shape),)
        return hook

    handles = [layer.self_attn.o_proj.register_forward_pre_hook(hook_for(i))
               for i, layer in enumerate(layers)]
    try:
        logits = model(torch.tensor(batch["tokens"], dtype=torch.long),
                       attention_mask=torch.tensor(batch["segment_ids"])).logits
    finally:
        for handle in handles:
            handle.remove()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -logp.gather(-1, torch.tensor(batch["tokens"][:, 1:], dtype=torch.long)[..., None])
    mask = torch.tensor(batch["loss_mask"][:, 1:])
    ((nll[..., 0] * mask).sum(1) / mask.sum(1).clamp(min=1.0)).sum().backward()
    return gates.grad.numpy()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_gate_gradients_match_an_o_proj_hook(models, batch, family):
    model, params, config = models[family]
    reference = _torch_gate_gradients(model, batch, config.num_heads)
    ours = np.asarray(gate_gradients(params, {k: jnp.asarray(v) for k, v in batch.items()},
                                     config, loss_kind="sample_mean"))
    assert ours.shape == (len(LENGTHS), config.num_layers, config.num_heads)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6)
    assert np.abs(reference).max() > 1e-3


PROMPTS = ([5, 17, 90, 3, 42, 8, 11], [7, 8, 9], [11, 12, 13, 14, 15, 16, 61, 2, 30])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_kv_cache_greedy_equals_full_recompute(models, family):
    _, params, config = models[family]
    tokens, mask = left_pad(PROMPTS, pad_token_id=0)
    out = generate(params, config, tokens, mask, max_new_tokens=6)
    np.testing.assert_array_equal(out.tokens, recompute_greedy(config, params, PROMPTS, 6))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_round_trip_loads_in_transformers(models, batch, family, tmp_path):
    _, params, config = models[family]
    export_hf(str(tmp_path), params, config)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", dtype=torch.float32).eval()
    assert type(model).__name__ == FAMILIES[family][1]
    real = batch["segment_ids"].astype(bool)
    diff = np.abs(_logits(params, config, batch) - _torch_logits(model, batch))[real]
    assert diff.max() < 1e-5, f"{family}: exported model differs by {diff.max():.3g}"
    reloaded, reloaded_config = load_hf(str(tmp_path))
    assert reloaded_config == config
    jax.tree.map(np.testing.assert_array_equal, reloaded, jax.tree.map(np.asarray, params))


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_gate_gradient_is_the_gamma_identity_under_soft_caps(models, batch, family):
    """sum_{q,k} Gamma dL/dGamma of transformers' post-softmax maps: the soft-cap acts before
    the softmax, so the identity with the gate gradient is untouched."""
    from tests.test_parity_torch import _torch_gamma_scores

    model, params, config = models[family]
    ours = np.asarray(gate_gradients(params, {k: jnp.asarray(v) for k, v in batch.items()},
                                     config, loss_kind="sample_mean"))
    np.testing.assert_allclose(ours, _torch_gamma_scores(model, batch), rtol=1e-4, atol=1e-6)


GEMMA3_270M_CONFIG = {  # config.json of google/gemma-3-270m as transformers 4.55 wrote it
    "_sliding_window_pattern": 6, "architectures": ["Gemma3ForCausalLM"], "attention_bias": False,
    "attention_dropout": 0.0, "attn_logit_softcapping": None, "bos_token_id": 2,
    "eos_token_id": 1, "final_logit_softcapping": None, "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 640, "initializer_range": 0.02,
    "intermediate_size": 2048,
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 3,
    "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 4,
    "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0,
    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0,
    "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 512,
    "torch_dtype": "bfloat16", "transformers_version": "4.55.0.dev0",
    "use_bidirectional_attention": False, "use_cache": True, "vocab_size": 262144,
}


def test_older_gemma3_config_format_reads_like_transformers_reads_it():
    from headjax.io import config_from_hf

    config = config_from_hf(GEMMA3_270M_CONFIG)
    assert (config.rope_theta, config.rope_local_theta, config.sliding_window) == (1e6, 1e4, 512)
    assert config.local_layers == ((True,) * 5 + (False,)) * 3
    assert config.tie_embeddings and config.qk_norm and config.query_pre_attn_scalar == 256.0
    theirs = transformers.Gemma3TextConfig(**GEMMA3_270M_CONFIG)
    assert config_from_hf(theirs.to_dict()) == config
