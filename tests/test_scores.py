"""Gate-gradient head scores against independent references.

- central finite differences of the loss in each gate (float64),
- per-sample gates: one backward over a batch equals one backward per sample,
- the batch-mean loss variant is the per-sample variant rescaled by answer-token counts,
- first-order ablation: dL/dgate ~ L(gate=1) - L(gate=0) where the loss is near-linear in the
  gate. On the tiny random model (float64, init std 0.02) each head moves the loss by up to
  ~0.02 nats; the test first measures near-linearity (a half ablation moves the loss by half as
  much, within 5% of the largest score), then requires every head's ablation change to match its
  score within 10% of the largest score (correlation > 0.99), and the second-order estimate
  4 [L(1) - L(1/2)] - [L(1) - L(0)], exact for a quadratic, to match within 2%.
The identity with the paper's explicit sum over Gamma * dL/dGamma is checked against
transformers' PyTorch attention weights in tests/test_parity_torch.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from headjax.heads import gate_gradients, head_scores, per_sample_head_scores
from headjax.model import init, per_sample_loss, tiny_config


def make_batch(seq: int = 10) -> dict:
    tokens = jax.random.randint(jax.random.key(3), (3, seq), 0, 128)
    loss_mask = np.zeros((3, seq), np.float32)
    loss_mask[0, 4:] = 1.0          # a long answer
    loss_mask[1, 7:9] = 1.0         # a short answer
    loss_mask[2, 6:] = 1.0
    segment_ids = np.ones((3, seq), np.int32)
    segment_ids[1, 9:] = 0          # right padding in sample 1
    return {"tokens": tokens, "loss_mask": jnp.asarray(loss_mask),
            "segment_ids": jnp.asarray(segment_ids)}


@pytest.fixture(scope="module")
def grads(tiny):
    config, params = tiny
    return jax.jit(gate_gradients, static_argnums=2)(params, make_batch(), config)


def test_gate_gradient_matches_central_finite_differences():
    with jax.enable_x64(True):
        config = tiny_config(dtype="float64", param_dtype="float64")
        params = init(jax.random.key(5), config, std=0.2)
        batch = make_batch()
        grads = np.asarray(gate_gradients(params, batch, config))
        loss_of = jax.jit(lambda g: per_sample_loss(params, batch, config, g))
        eps = 1e-5
        ones = jnp.ones((3, config.num_layers, config.num_heads), jnp.float64)
        numeric = np.zeros_like(grads)
        for layer in range(config.num_layers):
            for head in range(config.num_heads):
                bump = jnp.zeros_like(ones).at[:, layer, head].set(eps)
                numeric[:, layer, head] = (loss_of(ones + bump) - loss_of(ones - bump)) / (2 * eps)
    assert np.abs(grads).max() > 1e-3
    np.testing.assert_allclose(grads, numeric, rtol=1e-3, atol=1e-9)


def test_one_backward_equals_one_backward_per_sample(tiny, grads):
    config, params = tiny
    batch = make_batch()
    for i in range(3):
        single = {k: v[i:i + 1] for k, v in batch.items()}
        np.testing.assert_allclose(np.asarray(grads[i]),
                                   np.asarray(gate_gradients(params, single, config)[0]),
                                   rtol=1e-4, atol=1e-8)


def test_batch_mean_variant_rescales_by_answer_tokens(tiny, grads):
    config, params = tiny
    batch = make_batch()
    batch_mean = np.asarray(gate_gradients(params, batch, config, loss_kind="batch_mean"))
    answer_tokens = np.asarray(batch["loss_mask"][:, 1:].sum(1))
    expected = np.asarray(grads) * (answer_tokens / answer_tokens.sum())[:, None, None]
    np.testing.assert_allclose(batch_mean, expected, rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="loss_kind"):
        gate_gradients(params, batch, config, loss_kind="token_mean")


def test_gradient_predicts_single_head_ablation():
    with jax.enable_x64(True):
        config = tiny_config(dtype="float64", param_dtype="float64")
        params = init(jax.random.key(0), config, std=0.02)
        batch = make_batch()
        grads = np.asarray(gate_gradients(params, batch, config))
        loss_of = jax.jit(lambda g: per_sample_loss(params, batch, config, g))
        ones = jnp.ones((3, config.num_layers, config.num_heads), jnp.float64)
        base = np.asarray(loss_of(ones))
        drop, half_drop = np.zeros_like(grads), np.zeros_like(grads)
        for layer in range(config.num_layers):
            for head in range(config.num_heads):
                at = (slice(None), layer, head)
                drop[at] = base - np.asarray(loss_of(ones.at[at].set(0.0)))
                half_drop[at] = base - np.asarray(loss_of(ones.at[at].set(0.5)))
    scale = np.abs(grads).max()
    # The regime: half an ablation moves the loss by about half as much (curvature is small).
    assert np.abs(2 * half_drop - drop).max() < 0.05 * scale
    # First order: the score predicts the ablation's loss change, head by head.
    assert np.abs(drop - grads).max() < 0.1 * scale
    assert np.corrcoef(drop.ravel(), grads.ravel())[0, 1] > 0.99
    # Second order (exact for a quadratic): 4 * half_drop - drop = dL/dgate.
    assert np.abs(4 * half_drop - drop - grads).max() < 0.02 * scale


def test_head_scores_average_abs_gradients_over_samples_with_answers(tiny, grads):
    config, params = tiny
    batch = make_batch()
    batch["loss_mask"] = batch["loss_mask"].at[2].set(0.0)   # sample 2 has no answer
    per_sample = np.asarray(per_sample_head_scores(params, batch, config))
    np.testing.assert_allclose(per_sample[:2], np.abs(np.asarray(grads[:2])), rtol=1e-4)
    np.testing.assert_array_equal(per_sample[2], 0.0)
    scores = np.asarray(head_scores(params, batch, config))
    np.testing.assert_allclose(scores, per_sample[:2].mean(0), rtol=1e-5)
