"""Sliding windows on every attention path: a token beyond the window leaves a query's output
exactly unchanged, a token inside it changes it, and without the window both change.

One local layer with window W: query slot i reads key slots i - W < j <= i.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from headjax.eval import prefill
from headjax.eval.generate import decode_step
from headjax.model import forward, init, tiny_config

WINDOW, SEQ, CHANGED = 3, 10, 2


@pytest.fixture(scope="module")
def model():
    config = tiny_config(num_layers=1, sliding_window=WINDOW, local_layers=(True,))
    return config, init(jax.random.key(0), config, std=0.3)


def _tokens():
    tokens = np.random.RandomState(0).randint(1, 128, (1, SEQ)).astype(np.int32)
    changed = tokens.copy()
    changed[0, CHANGED] = (tokens[0, CHANGED] + 7) % 128
    return jnp.asarray(tokens), jnp.asarray(changed)


def _moved(a, b) -> np.ndarray:
    """Per position: whether the logits differ at all."""
    return np.abs(np.asarray(a) - np.asarray(b)).max(axis=-1)[0] > 0


@pytest.mark.parametrize("impl", ["xla", "fused"])
def test_forward_ignores_tokens_beyond_the_window(model, impl):
    config, params = model
    tokens, changed = _tokens()
    for windowed in (True, False):
        cfg = config.replace(attention_impl=impl)
        if not windowed:
            cfg = cfg.replace(sliding_window=None, local_layers=())
        moved = _moved(forward(params, tokens, cfg).logits, forward(params, changed, cfg).logits)
        assert not moved[:CHANGED].any() and moved[CHANGED:CHANGED + WINDOW].all()
        assert moved[CHANGED + WINDOW:].all() != windowed, (impl, windowed, moved)


def test_global_layers_are_not_windowed(model):
    config, params = model
    tokens, changed = _tokens()
    cfg = config.replace(local_layers=(False,))
    moved = _moved(forward(params, tokens, cfg).logits, forward(params, changed, cfg).logits)
    assert moved[CHANGED:].all()


def test_packed_rows_window_counts_within_the_segment(model):
    config, params = model
    tokens, changed = _tokens()
    segments = jnp.asarray([[1, 1, 2, 2, 2, 2, 2, 2, 2, 2]])  # CHANGED opens segment 2
    packed = forward(params, tokens, config, segment_ids=segments).logits
    moved = _moved(packed, forward(params, changed, config, segment_ids=segments).logits)
    assert not moved[:CHANGED].any() and moved[CHANGED:CHANGED + WINDOW].all()
    assert not moved[CHANGED + WINDOW:].any()
    alone = forward(params, tokens[:, CHANGED:], config).logits  # segment 2 on its own
    np.testing.assert_allclose(packed[:, CHANGED:], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("windowed", [True, False])
def test_kv_cache_decoding_ignores_tokens_beyond_the_window(model, windowed):
    config, params = model
    if not windowed:
        config = config.replace(sliding_window=None, local_layers=())
    tokens, changed = _tokens()
    mask = jnp.ones((1, SEQ - 1), bool)
    last = []
    for prompt in (tokens, changed):
        _, cache = prefill(params, config, prompt[:, :-1], mask, SEQ + 2)
        logits, _ = decode_step(params, config, cache, prompt[:, -1])
        last.append(np.asarray(logits))
        np.testing.assert_allclose(logits, forward(params, prompt, config).logits[:, -1],
                                   atol=1e-5, rtol=1e-5)
    assert (np.abs(last[0] - last[1]).max() > 0) != windowed


def test_family_config_survives_native_save_and_load(tmp_path):
    from headjax.io import load_native, save_native

    config = tiny_config(num_layers=3, sliding_window=4, local_layers=(True, False, True),
                         qk_norm=True, norm_plus_one=True, sandwich_norms=True,
                         scale_embeddings=True, query_pre_attn_scalar=12.0,
                         attn_logit_softcap=20.0, final_logit_softcap=30.0,
                         rope_local_theta=100.0, activation="gelu_tanh")
    params = init(jax.random.key(0), config)
    assert params["layers"]["post_mlp_norm"].shape == (3, 32)
    assert params["layers"]["q_norm"].shape == (3, 8) and not params["layers"]["q_norm"].any()
    assert config.num_params() == sum(p.size for p in jax.tree.leaves(params))
    save_native(str(tmp_path / "ckpt"), params, config)
    restored, restored_config, _ = load_native(str(tmp_path / "ckpt"))
    assert restored_config == config and hash(restored_config) == hash(config)
    jax.tree.map(np.testing.assert_array_equal, restored, params)
