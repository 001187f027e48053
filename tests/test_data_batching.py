"""Batching: bucketed padding, packing (equal to per-example forwards), mixture, exact resume."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from helpers_tokenizer import chatml_tokenizer

from headjax.data import Example
from headjax.data.batching import Batcher, bucket_length, default_buckets
from headjax.model import forward

BATCH_KEYS = ("tokens", "loss_mask", "segment_ids", "positions", "task_ids")


@pytest.fixture(scope="module")
def tokenizer():
    return chatml_tokenizer()


def toy_examples(n_add=40, n_legs=20):
    rng = np.random.default_rng(0)
    adds = [Example("what is " + " + ".join(map(str, terms)) + "?", str(sum(terms)), "add", {})
            for terms in (rng.integers(0, 999, size=rng.integers(2, 6)) for _ in range(n_add))]
    legs = [Example(f"how many legs {a} and {b}?", str(2 * a + 4 * b), "legs", {})
            for a, b in rng.integers(0, 99, size=(n_legs, 2))]
    return adds + legs


def take(batcher, n):
    return [next(batcher) for _ in range(n)]


def test_default_buckets_and_bucket_choice():
    assert default_buckets(128) == (16, 32, 64, 128)
    assert default_buckets(100) == (16, 32, 64, 100)
    assert [bucket_length(n, (16, 32, 64)) for n in (1, 16, 17, 64)] == [16, 16, 32, 64]
    with pytest.raises(ValueError, match="65 tokens exceeds the largest bucket 64"):
        bucket_length(65, (16, 32, 64))


def test_padded_batches_use_the_smallest_fitting_bucket(tokenizer):
    examples = toy_examples()
    batcher = Batcher(examples, tokenizer, batch_size=4, max_len=64, seed=1,
                      buckets=(24, 32, 48, 64))
    for batch in take(batcher, 10):
        assert set(batch) == set(BATCH_KEYS)
        lengths = (batch["segment_ids"] > 0).sum(1)
        assert batch["tokens"].shape == (4, bucket_length(lengths.max(), (24, 32, 48, 64)))
        assert batch["tokens"].dtype == np.int32 and batch["loss_mask"].dtype == np.float32
        for row, n in enumerate(lengths):
            assert (batch["segment_ids"][row, :n] == 1).all()
            assert (batch["segment_ids"][row, n:] == 0).all()
            assert (batch["tokens"][row, n:] == tokenizer.pad_token_id).all()
            assert (batch["loss_mask"][row, n:] == 0).all()
            assert batch["positions"][row, :n].tolist() == list(range(n))
            assert batch["tokens"][row, n - 1] == tokenizer.eos_token_id
            assert batch["loss_mask"][row, n - 1] == 1


def test_over_long_examples_are_dropped_and_counted(tokenizer, caplog):
    long = Example("what is " + " + ".join(["9"] * 40) + "?", "360", "add", {})
    legs_long = Example("how many legs " + " and ".join(["9"] * 20) + "?", "9", "legs", {})
    with caplog.at_level("WARNING", logger="headjax.data.batching"):
        batcher = Batcher([*toy_examples(), long, legs_long, long], tokenizer, batch_size=2,
                          max_len=48)
    assert batcher.num_dropped == 3 and batcher.dropped_per_task == {"add": 2, "legs": 1}
    assert "task 'add': 2 of its examples exceed max_len=48" in caplog.text
    with pytest.raises(ValueError, match=r"without examples: \['long'\] \(all examples over "
                                         r"max_len=48 tokens: \{'long': 1\}\)"):
        Batcher([*toy_examples(), Example(long.prompt, "1", "long", {})], tokenizer,
                batch_size=2, max_len=48, weights={"add": 1.0, "long": 1.0})
    with pytest.raises(ValueError, match="none of the 1 examples fits in max_len 48"):
        Batcher([long], tokenizer, batch_size=2, max_len=48)


def test_packed_rows_hold_whole_examples_with_restarting_positions(tokenizer):
    batcher = Batcher(toy_examples(), tokenizer, batch_size=3, max_len=96, packing=True, seed=2)
    for batch in take(batcher, 5):
        assert batch["tokens"].shape == (3, 96)
        for row in range(3):
            segments = batch["segment_ids"][row]
            ids = [s for s in np.unique(segments) if s > 0]
            assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 2
            for s in ids:
                where = np.flatnonzero(segments == s)
                assert (np.diff(where) == 1).all()
                assert batch["positions"][row, where].tolist() == list(range(len(where)))
                assert batch["tokens"][row, where[-1]] == tokenizer.eos_token_id
                assert len(set(batch["task_ids"][row, where].tolist())) == 1


def test_packed_forward_equals_per_example_forwards(tiny, tokenizer):
    config, params = tiny
    batch = next(Batcher(toy_examples(), tokenizer, batch_size=2, max_len=96, packing=True,
                         seed=3))
    fwd = jax.jit(forward, static_argnames="config")
    packed = np.asarray(fwd(params, batch["tokens"], config, positions=batch["positions"],
                            segment_ids=batch["segment_ids"]).logits)
    checked = 0
    for row in range(2):
        for s in set(batch["segment_ids"][row].tolist()) - {0}:
            where = np.flatnonzero(batch["segment_ids"][row] == s)
            alone = np.zeros((1, 96), np.int32)  # one example at the start of a row; causal
            alone[0, :len(where)] = batch["tokens"][row, where]  # attention ignores what follows
            logits = fwd(params, alone, config).logits[0, :len(where)]
            np.testing.assert_allclose(packed[row, where], np.asarray(logits), atol=1e-5)
            checked += 1
    assert checked >= 4


def test_mixture_follows_the_weights(tokenizer):
    batcher = Batcher(toy_examples(), tokenizer, batch_size=50, max_len=64,
                      weights={"add": 1.0, "legs": 3.0}, seed=4)
    first = np.concatenate([b["task_ids"][:, 0] for b in take(batcher, 40)])
    legs = batcher.task_names.index("legs")
    assert abs((first == legs).mean() - 0.75) < 0.03
    default = Batcher(toy_examples(), tokenizer, batch_size=50, max_len=64, seed=4)
    first = np.concatenate([b["task_ids"][:, 0] for b in take(default, 40)])
    assert abs((first == legs).mean() - 20 / 60) < 0.03
    with pytest.raises(ValueError, match="without examples: \\['nope'\\]"):
        Batcher(toy_examples(), tokenizer, batch_size=2, max_len=64, weights={"nope": 1.0})


def test_every_example_is_seen_once_per_epoch(tokenizer):
    examples = toy_examples(n_add=12, n_legs=0)
    batcher = Batcher(examples, tokenizer, batch_size=4, max_len=64, seed=5)
    rows = [tuple(r[r > 0]) for b in take(batcher, 3) for r in b["tokens"] * b["segment_ids"]]
    assert len(set(rows)) == 12


@pytest.mark.parametrize("packing", [False, True])
def test_resume_from_state_gives_the_identical_stream(tokenizer, packing):
    examples = toy_examples()
    kwargs = dict(batch_size=3, max_len=64, packing=packing, seed=6,
                  weights={"add": 0.1, "legs": 0.2})
    straight = take(Batcher(examples, tokenizer, **kwargs), 12)
    first = Batcher(examples, tokenizer, **kwargs)
    take(first, 5)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = take(Batcher.from_state(state, examples, tokenizer), 7)
    for a, b in zip(straight[5:], resumed, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other_seed = take(Batcher(examples, tokenizer, **{**kwargs, "seed": 7}), 1)[0]
    assert not np.array_equal(other_seed["tokens"], straight[0]["tokens"])
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        Batcher.from_state(state, examples[:-1], tokenizer)
