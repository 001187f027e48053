"""Probe batches: fixed, bucketed, filled with padding rows that carry no pattern weight."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_tokenizer import chatml_tokenizer

from headjax.data import bucket_length, default_buckets, get_task, probe_batches
from headjax.heads.scores import head_scores


@pytest.fixture(scope="module")
def tokenizer():
    return chatml_tokenizer()


def test_probe_batches_hold_the_task_examples_in_order_padded_to_buckets(tokenizer):
    batches = probe_batches("chain_sum", tokenizer, num_samples=10, batch_size=4, max_len=128,
                            seed=1)
    again = probe_batches("chain_sum", tokenizer, num_samples=10, batch_size=4, max_len=128,
                          seed=1)
    for a, b in zip(batches, again, strict=True):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    examples = get_task("chain_sum").examples("test", 10, 1)
    rows = [(batch, row) for batch in batches for row in range(4)]
    assert len(batches) == 3 and len(rows) == 12
    for (batch, row), example in zip(rows, examples, strict=False):
        rendered = (f"<|im_start|>user\n{example.prompt}<|im_end|>\n<|im_start|>assistant\n"
                    f"{example.answer}<|im_end|>")
        n = int((batch["segment_ids"][row] == 1).sum())
        assert batch["tokens"][row, :n].tolist() == tokenizer.encode(rendered)
        answer = batch["tokens"][row][batch["loss_mask"][row] == 1]
        assert tokenizer.decode(answer) == tokenizer.decode(tokenizer.encode(example.answer))
        assert batch["positions"][row, :n].tolist() == list(range(n))
    for batch in batches:
        longest = (batch["segment_ids"] > 0).sum(1).max()
        assert batch["tokens"].shape == (4, bucket_length(longest, default_buckets(128)))
    for batch, row in rows[10:]:
        assert not batch["segment_ids"][row].any() and not batch["loss_mask"][row].any()
        assert (batch["task_ids"][row] == -1).all()


def test_padding_rows_leave_the_head_pattern_unchanged(tiny, tokenizer):
    config, params = tiny
    padded = probe_batches("chain_sum", tokenizer, num_samples=3, batch_size=4, max_len=128)[0]
    exact = probe_batches("chain_sum", tokenizer, num_samples=3, batch_size=3, max_len=128)[0]
    assert padded["tokens"].shape[0] == 4 and exact["tokens"].shape[0] == 3
    np.testing.assert_allclose(np.asarray(head_scores(params, padded, config)),
                               np.asarray(head_scores(params, exact, config)), rtol=1e-5)


def test_probe_batches_fail_clearly_when_nothing_fits(tokenizer):
    with pytest.raises(ValueError, match="task 'chain_sum' probe: none of 2 examples fits"):
        probe_batches("chain_sum", tokenizer, num_samples=2, batch_size=2, max_len=8)
