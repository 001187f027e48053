"""LoRA run unmerged, inside the projections (`headjax.model.adapter`): the same model as the
merged weights W + (alpha / r) a b (logits, adapter gradients and head scores, for every target
and head-LoRA), a step whose program forms no weight-shaped gradient of a frozen adapted weight
(checked on its jaxpr against the merged path, which does), and LoRA dropout: an independent mask
per token entry, unbiased in expectation, off at evaluation, reproducible per step.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_scores_graph import dot_shapes

from headjax.app.bench.models import synthetic_batch
from headjax.lora import LoraParams, adapter_shapes, init_adapters, lora_spec, model_params
from headjax.model import forward, init, tiny_config
from headjax.model.adapter import INPUT_DIMS, Adapter, adapted, dropout
from headjax.model.loss import batch_token_losses
from headjax.train import create_state, make_optimizer, make_schedule, make_train_step

ALL = ("q", "k", "v", "o", "gate", "up", "down")
HEADS = np.array([[False, True, False, False], [True, False, False, True]])
CASES = [((t,), None) for t in ALL] + [(ALL, None), (ALL, HEADS), (("q", "k", "v", "o"), HEADS)]
IDS = ["-".join(t) + ("-heads" if h is not None else "") for t, h in CASES]


def _random_adapters(config, spec, seed=3, std=0.3):
    """Adapters with nonzero a and b, N(0, std) (b starts at zero in `init_adapters`)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda shape: jnp.asarray(std * rng.standard_normal(shape), jnp.float32),
                        adapter_shapes(config, spec), is_leaf=lambda x: isinstance(x, tuple))


def _batch(batch=3, seq=10, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((batch, seq), np.float32)
    mask[:, seq // 2:] = 1.0
    return {"tokens": jnp.asarray(rng.integers(0, 128, (batch, seq)), jnp.int32),
            "loss_mask": jnp.asarray(mask)}


def _unmerged_logits(params, tokens, config):
    base, adapters = params.unmerged()
    return forward(base, tokens, config, adapters=adapters).logits


def _summed_loss(params, adapters, batch, config, gates=None):
    return batch_token_losses(params, batch, config, gates, adapters=adapters)[0].sum()


@pytest.mark.parametrize(("targets", "heads"), CASES, ids=IDS)
def test_unmerged_equals_merged(tiny, targets, heads):
    """Logits (1e-5, f32), adapter gradients and gate gradients (head scores) of both paths."""
    config, base = tiny
    spec = lora_spec(4, 8.0, targets, heads)
    params = LoraParams(base, _random_adapters(config, spec), spec)
    batch = _batch()
    merged = jax.jit(model_params)(params)
    unmerged = jax.jit(lambda p: _unmerged_logits(p, batch["tokens"], config))
    plain = jax.jit(lambda p: forward(p, batch["tokens"], config).logits)
    ours, reference = np.asarray(unmerged(params)), np.asarray(plain(merged))
    assert np.abs(reference - np.asarray(plain(base))).max() > 1e-3  # the adapters matter
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)

    def grads(t, merge: bool):
        p = params.replace(adapters=t)
        if merge:
            return _summed_loss(model_params(p), None, batch, config)
        return _summed_loss(*p.unmerged(), batch, config)

    ours = jax.jit(jax.grad(lambda t: grads(t, False)))(params.adapters)
    reference = jax.jit(jax.grad(lambda t: grads(t, True)))(params.adapters)
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())

    if len(targets) == 1:
        return  # gate gradients (head scores): on the target sets below
    gates = jnp.ones((config.num_layers, config.num_heads))
    score = jax.jit(jax.grad(_summed_loss, argnums=4), static_argnums=3)
    ours = score(params.base, params.unmerged()[1], batch, config, gates)
    reference = score(merged, None, batch, config, gates)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6)


def _as_matrix(shape: tuple, n_in: int) -> tuple[int, int]:
    return math.prod(shape[:n_in]), math.prod(shape[n_in:])


@pytest.mark.parametrize("scan_layers", [True, False])
def test_lora_step_forms_no_weight_gradient_of_frozen_weights(scan_layers):
    """No matrix product of the LoRA step's program has the shape of an adapted weight (a
    weight gradient); the merged path's gradient has one per adapted weight and layer."""
    config = tiny_config(vocab_size=96, d_model=40, ffn_dim=56, num_heads=4, num_kv_heads=2,
                         head_dim=12, num_layers=2, scan_layers=scan_layers)
    base = init(jax.random.key(0), config)
    spec = lora_spec(3, 6.0, ALL)
    params = LoraParams(base, init_adapters(jax.random.key(1), config, spec), spec)
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config, 5, 7))
    schedule = make_schedule("constant", 1e-3, 2)
    optimizer = make_optimizer(schedule, weight_decay=0.0)
    state = create_state(params, optimizer, 0)
    step = make_train_step(config, optimizer, schedule)
    # Projections run as 2-D products (`project`): a weight gradient is `[prod(in), prod(out)]`.
    weight_shapes = {tuple(sorted(_as_matrix(base["layers"][key].shape[1:], INPUT_DIMS[key])))
                     for key in spec.keys}
    assert len(weight_shapes) == 3  # q and o, k and v, gate, up and down (sizes sorted)

    def weight_shaped(fn, *args):
        shapes = dot_shapes(jax.make_jaxpr(fn)(*args).jaxpr)
        return [s for s in shapes if tuple(sorted(s)) in weight_shapes]

    assert weight_shaped(step, state, batch) == []
    merged_grad = jax.grad(lambda t: _summed_loss(model_params(params.replace(adapters=t)),
                                                  None, batch, config))
    found = {tuple(sorted(s)) for s in weight_shaped(merged_grad, params.adapters)}
    assert found == weight_shapes


def test_dropout_mask_is_per_token_entry_and_unbiased():
    x = jnp.ones((4, 64, 32), jnp.float32)
    dropped = np.asarray(dropout(x, 0.25, jax.random.key_data(jax.random.key(0))))
    assert set(np.unique(dropped)) == {0.0, np.float32(1 / 0.75)}
    assert abs((dropped == 0).mean() - 0.25) < 0.02
    tokens = dropped.reshape(-1, 32)
    assert len({row.tobytes() for row in tokens}) == len(tokens)  # every token its own mask
    np.testing.assert_array_equal(dropout(x, 0.25, None), x)  # no key: no dropout

    # E[s (drop(x) a) b] = s (x a) b: the mean over many keys matches the undropped adapter.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 3, 16)), jnp.float32)
    w = jnp.zeros((16, 8), jnp.float32)
    a = jnp.asarray(rng.standard_normal((16, 4)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((4, 8)), jnp.float32)
    keys = jax.random.key_data(jax.random.split(jax.random.key(1), 4000))
    outs = jax.vmap(lambda k: adapted(x, w, Adapter(a, b, 2.0, 0.3, k), "bsd,df->bsf"))(keys)
    exact = adapted(x, w, Adapter(a, b, 2.0, 0.0, None), "bsd,df->bsf")
    mean, sem = outs.mean(0), outs.std(0) / np.sqrt(len(keys))
    assert np.abs(np.asarray(outs[0] - exact)).max() > 0.1  # dropout acts
    assert (np.abs(np.asarray(mean - exact)) < 5 * np.asarray(sem) + 1e-4).all()


def test_dropout_in_training_only(tiny):
    """With lora.dropout > 0: evaluation (no key) equals the merged model; a step's loss
    differs from the dropout-free one, is reproducible from the same state, and changes with
    the step counter (fresh masks every step)."""
    config, base = tiny
    spec = lora_spec(4, 8.0, ALL, dropout=0.5)
    params = LoraParams(base, _random_adapters(config, spec), spec)
    batch = _batch()
    evaluate = jax.jit(lambda p: _unmerged_logits(p, batch["tokens"], config))
    merged = forward(model_params(params), batch["tokens"], config).logits
    np.testing.assert_allclose(evaluate(params), merged, rtol=1e-5, atol=1e-5)

    schedule = make_schedule("constant", 0.0, 4)
    optimizer = make_optimizer(schedule, weight_decay=0.0)
    step = jax.jit(make_train_step(config, optimizer, schedule))
    state = create_state(params, optimizer, 0)
    first = float(step(state, batch)[1]["loss"])
    assert first == float(step(state, batch)[1]["loss"])
    later = float(step(state.replace(step=state.step + 1), batch)[1]["loss"])
    no_dropout = create_state(params.replace(spec=lora_spec(4, 8.0, ALL)), optimizer, 0)
    exact = float(step(no_dropout, batch)[1]["loss"])
    assert first != later and first != exact
    reference = optax.softmax_cross_entropy_with_integer_labels(
        merged[:, :-1], batch["tokens"][:, 1:])
    mask = batch["loss_mask"][:, 1:]
    np.testing.assert_allclose(exact, (reference * mask).sum() / mask.sum(), rtol=1e-5)
