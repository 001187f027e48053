"""KV-cache generation against full recomputation with `forward` on unpadded sequences."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from headjax.eval import generate, generate_text, left_pad, prefill
from headjax.model import forward
from tests.helpers_tokenizer import chatml_tokenizer

PROMPTS = ([5, 17, 99, 3, 42], [7, 8], [11, 12, 13, 14, 15, 16, 101])
NEW = 8


@functools.cache
def _jitted_forward(config):
    return jax.jit(lambda p, t, g: forward(p, t, config, gates=g).logits)


def recompute_greedy(config, params, prompts, new_tokens, gates=None):
    """Greedy continuation by re-running `forward` on each growing, unpadded sequence.

    Every row sits right-padded in one fixed buffer; causal attention makes the logits at its
    last real token independent of what follows, so one compiled shape serves every step.
    """
    width = max(map(len, prompts)) + new_tokens
    rows = [list(p) for p in prompts]
    fwd = _jitted_forward(config)
    for _ in range(new_tokens):
        buffer = np.zeros((len(rows), width), np.int32)
        for i, row in enumerate(rows):
            buffer[i, :len(row)] = row
        logits = np.asarray(fwd(params, jnp.asarray(buffer), gates))
        for i, row in enumerate(rows):
            row.append(int(logits[i, len(row) - 1].argmax()))
    return np.array([row[len(p):] for row, p in zip(rows, prompts, strict=True)])


@pytest.fixture(scope="module")
def padded():
    return left_pad(PROMPTS, pad_token_id=0)


@pytest.fixture(scope="module")
def greedy_reference(tiny):
    config, params = tiny
    return recompute_greedy(config, params, PROMPTS, NEW)


def test_prefill_logits_equal_forward_on_unpadded_prompts(tiny, padded):
    config, params = tiny
    assert config.num_kv_heads < config.num_heads  # grouped-query attention
    tokens, mask = padded
    logits, cache = prefill(params, config, tokens, mask, tokens.shape[1] + NEW)
    right_padded = np.zeros_like(tokens)
    for row, prompt in enumerate(PROMPTS):
        right_padded[row, :len(prompt)] = prompt
    expected = _jitted_forward(config)(params, jnp.asarray(right_padded), None)
    for row, prompt in enumerate(PROMPTS):
        np.testing.assert_allclose(logits[row, -len(prompt):], expected[row, :len(prompt)],
                                   atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(cache.positions, [len(p) for p in PROMPTS])


def test_kv_cache_greedy_equals_full_recompute(tiny, padded, greedy_reference):
    config, params = tiny
    out = generate(params, config, *padded, max_new_tokens=NEW)
    np.testing.assert_array_equal(out.tokens, greedy_reference)
    np.testing.assert_array_equal(out.lengths, [NEW] * len(PROMPTS))


def test_fused_attention_path_generates_the_same(tiny, padded, greedy_reference):
    config, params = tiny
    out = generate(params, config.replace(attention_impl="fused"), *padded, max_new_tokens=NEW)
    np.testing.assert_array_equal(out.tokens, greedy_reference)


def test_stop_token_stops_a_row_and_pads_after(tiny, padded, greedy_reference):
    config, params = tiny
    stop = int(greedy_reference[0, 2])
    out = generate(params, config, *padded, max_new_tokens=NEW, stop_token_ids=(stop,),
                   pad_token_id=-7)
    for row, expected in enumerate(greedy_reference):
        hits = np.flatnonzero(expected == stop)
        length = int(hits[0]) + 1 if hits.size else NEW
        assert out.lengths[row] == length
        np.testing.assert_array_equal(out.tokens[row, :length], expected[:length])
        assert (np.asarray(out.tokens[row, length:]) == -7).all()
    assert out.lengths[0] <= 3


def test_sampling_is_reproducible_and_cold_sampling_is_greedy(tiny, padded, greedy_reference):
    config, params = tiny
    sample = functools.partial(generate, params, config, *padded, max_new_tokens=NEW,
                               temperature=1.0)
    first = sample(rng=jax.random.key(1)).tokens
    np.testing.assert_array_equal(first, sample(rng=jax.random.key(1)).tokens)
    assert (np.asarray(first) != np.asarray(sample(rng=jax.random.key(2)).tokens)).any()
    cold = generate(params, config, *padded, max_new_tokens=NEW, temperature=1e-6,
                    rng=jax.random.key(3))
    np.testing.assert_array_equal(cold.tokens, greedy_reference)


def test_sampled_first_token_follows_softmax_of_forward_logits(tiny):
    config, params = tiny
    prompt, temperature, draws = [5, 17, 99], 0.02, 4096
    tokens, mask = left_pad([prompt] * draws, pad_token_id=0)
    out = generate(params, config, tokens, mask, max_new_tokens=1, temperature=temperature,
                   rng=jax.random.key(4))
    logits = np.asarray(_jitted_forward(config)(params, jnp.asarray([prompt]), None)[0, -1],
                        np.float64)
    probs = np.exp((logits - logits.max()) / temperature)
    probs /= probs.sum()
    empirical = np.bincount(np.asarray(out.tokens[:, 0]), minlength=config.vocab_size) / draws
    assert 0.5 * np.abs(empirical - probs).sum() < 0.08
    assert probs.max() > 0.1  # the temperature matters: far from uniform


def test_gates_ablate_through_the_same_heads_as_forward(tiny, padded, greedy_reference):
    config, params = tiny
    gates = jnp.ones((config.num_layers, config.num_heads)).at[1, 2].set(0.0).at[0, 0].set(0.0)
    expected = recompute_greedy(config, params, PROMPTS, NEW, gates)
    out = generate(params, config, *padded, max_new_tokens=NEW, gates=gates)
    np.testing.assert_array_equal(out.tokens, expected)
    tokens, mask = padded
    plain, _ = prefill(params, config, tokens, mask, tokens.shape[1] + 1)
    ablated, _ = prefill(params, config, tokens, mask, tokens.shape[1] + 1, gates=gates)
    assert np.abs(np.asarray(plain - ablated)[:, -1]).max() > 1e-4
    per_sample = jnp.broadcast_to(gates, (len(PROMPTS), *gates.shape))
    np.testing.assert_array_equal(
        generate(params, config, *padded, max_new_tokens=NEW, gates=per_sample).tokens, expected)


def test_generate_text_decodes_the_greedy_continuation_up_to_the_stop(tiny):
    config, params = tiny
    tokenizer = chatml_tokenizer()
    prompts = ["what is the answer", "sort these words and spell backward", "yes"]
    batched = generate_text(params, config, tokenizer, prompts, max_new_tokens=6)
    assert batched[0] == generate_text(params, config, tokenizer, prompts[:1], max_new_tokens=6)[0]
    ids = [tokenizer.encode(p) for p in prompts]
    reference = recompute_greedy(config, params, ids, 6)
    for text, row in zip(batched, reference, strict=True):
        stops = [i for i, t in enumerate(row) if t in tokenizer.stop_token_ids]
        assert text == tokenizer.decode(row[:stops[0]] if stops else row)


def test_bad_inputs_raise_clear_errors(tiny, padded):
    config, params = tiny
    tokens, mask = padded
    with pytest.raises(ValueError, match="left-padded"):
        generate(params, config, tokens[:, ::-1], mask[:, ::-1], max_new_tokens=2)
    with pytest.raises(ValueError, match="rng"):
        generate(params, config, tokens, mask, max_new_tokens=2, temperature=0.7)
    with pytest.raises(ValueError, match="gates"):
        generate(params, config, tokens, mask, max_new_tokens=2, gates=jnp.ones((3, 3)))
