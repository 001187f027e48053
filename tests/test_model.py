"""Model invariants on the tiny random model: gates, layer scan, attention paths, masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from headjax.model import ModelConfig, forward, init, param_axes, param_shapes, tiny_config

TOKENS = jax.random.randint(jax.random.key(1), (3, 12), 0, 128)


def test_param_tree_matches_axes_and_shapes(tiny):
    config, params = tiny
    shapes = jax.tree.map(lambda a: a.shape, params)
    assert shapes == param_shapes(config)
    axes = param_axes(config)
    flat_axes = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))
    for names, leaf in zip(flat_axes, jax.tree.leaves(params), strict=True):
        assert len(names) == leaf.ndim
    untied_qwen = tiny_config(qkv_bias=True)
    assert "q_bias" in init(jax.random.key(0), untied_qwen)["layers"]
    assert "lm_head" not in init(jax.random.key(0), tiny_config(tie_embeddings=True))


def test_unit_gates_are_bit_identical_to_no_gates(tiny):
    config, params = tiny
    plain = forward(params, TOKENS, config).logits
    shared = forward(params, TOKENS, config,
                     gates=jnp.ones((config.num_layers, config.num_heads))).logits
    per_sample = forward(params, TOKENS, config,
                         gates=jnp.ones((3, config.num_layers, config.num_heads))).logits
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(shared))
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(per_sample))


@pytest.mark.parametrize("change", [dict(scan_layers=False), dict(remat="full"),
                                    dict(remat="dots"), dict(attention_impl="fused")])
def test_execution_options_do_not_change_the_function(tiny, change):
    config, params = tiny
    reference = forward(params, TOKENS, config).logits
    changed = forward(params, TOKENS, config.replace(**change)).logits
    np.testing.assert_allclose(np.asarray(changed), np.asarray(reference), atol=1e-5)


def test_zero_gate_equals_zeroing_that_heads_output_projection(tiny):
    config, params = tiny
    gates = jnp.ones((config.num_layers, config.num_heads)).at[1, 2].set(0.0)
    gated = forward(params, TOKENS, config, gates=gates).logits
    pruned = jax.tree.map(lambda a: a, params)
    pruned["layers"] = dict(params["layers"])
    pruned["layers"]["o_proj"] = params["layers"]["o_proj"].at[1, 2].set(0.0)
    np.testing.assert_allclose(np.asarray(gated),
                               np.asarray(forward(pruned, TOKENS, config).logits), atol=1e-6)


def test_per_sample_gates_act_on_their_own_sample_only(tiny):
    config, params = tiny
    gates = jnp.ones((3, config.num_layers, config.num_heads)).at[1, 0, 1].set(0.0)
    logits = np.asarray(forward(params, TOKENS, config, gates=gates).logits)
    plain = np.asarray(forward(params, TOKENS, config).logits)
    alone = np.asarray(forward(params, TOKENS[1:2], config, gates=gates[1]).logits)
    np.testing.assert_array_equal(logits[[0, 2]], plain[[0, 2]])
    np.testing.assert_allclose(logits[1], alone[0], atol=1e-6)
    assert not np.allclose(logits[1], plain[1])


def test_attention_probabilities_are_causal_distributions(tiny):
    config, params = tiny
    out = forward(params, TOKENS, config, return_attention=True, return_head_outputs=True)
    probs = np.asarray(out.attention)
    assert probs.shape == (3, config.num_layers, config.num_heads, 12, 12)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(probs, k=1) == 0.0)
    assert out.head_outputs.shape == (3, config.num_layers, 12, config.num_heads, config.head_dim)


def test_head_output_is_probabilities_times_values(tiny):
    """z[h] = Gamma[h] @ V[kv(h)]: checks GQA head-to-group mapping (head h reads h // group)."""
    config, params = tiny
    out = forward(params, TOKENS, config, return_attention=True, return_head_outputs=True)
    z = np.asarray(out.head_outputs)[:, 0]
    gamma = np.asarray(out.attention)[:, 0]
    x = np.asarray(params["embed"])[np.asarray(TOKENS)]
    h = x / np.sqrt((x * x).mean(-1, keepdims=True) + config.norm_eps)
    h = h * np.asarray(params["layers"]["attn_norm"][0])
    v = np.einsum("bsd,dkh->bskh", h, np.asarray(params["layers"]["v_proj"][0]))
    for head in range(config.num_heads):
        expected = gamma[:, head] @ v[:, :, head // config.group_size]
        np.testing.assert_allclose(z[:, :, head], expected, atol=1e-5)


def test_packed_segments_do_not_see_each_other(tiny):
    config, params = tiny
    first, second = TOKENS[0, :5], TOKENS[1, :7]
    packed = jnp.concatenate([first, second])[None]
    segments = jnp.array([[1] * 5 + [2] * 7])
    positions = jnp.array([list(range(5)) + list(range(7))])
    out = forward(params, packed, config, segment_ids=segments, positions=positions).logits
    np.testing.assert_allclose(np.asarray(out[0, :5]),
                               np.asarray(forward(params, first[None], config).logits[0]),
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(out[0, 5:]),
                               np.asarray(forward(params, second[None], config).logits[0]),
                               atol=1e-5)


def test_bad_gate_shape_and_bad_config_are_clear_errors(tiny):
    config, params = tiny
    with pytest.raises(ValueError, match=r"gates: shape \(3, 3\)"):
        forward(params, TOKENS, config, gates=jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="num_kv_heads"):
        ModelConfig(vocab_size=8, d_model=8, num_layers=1, num_heads=4, num_kv_heads=3,
                    head_dim=2, ffn_dim=8)
    with pytest.raises(ValueError, match="attention_impl"):
        tiny_config(attention_impl="flash")


def test_bfloat16_compute_stays_close_to_float32(tiny):
    config, params = tiny
    reference = forward(params, TOKENS, config).logits
    low = forward(params, TOKENS, config.replace(dtype="bfloat16")).logits
    assert low.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(low), np.asarray(reference), atol=5e-2)
