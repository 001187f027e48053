"""LoRA SFT of the real SmolLM2-135M-Instruct: 20 steps (batch 4, 64 tokens) of rank-8 adapters
on q, k, v, o lower the answer loss on held-out letter_counting examples, and the base weights
stay bit-identical."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from headjax.data import example_batches, get_task
from headjax.io import load_pretrained
from headjax.lora import LoraParams, init_adapters, lora_spec, model_params
from headjax.model import loss as model_loss
from headjax.train import create_state, make_optimizer, make_schedule, make_train_step

pytestmark = pytest.mark.slow

STEPS, BATCH, MAX_LEN = 20, 4, 64


def _batches(tokenizer, split, count, seed):
    examples = get_task("letter_counting").examples(split, count, seed)
    return [{k: jnp.asarray(v) for k, v in b.items() if k != "task_ids"}
            for b in example_batches(examples, tokenizer, batch_size=BATCH, max_len=MAX_LEN,
                                     buckets=(MAX_LEN,), name=f"letter_counting {split}")]


def test_twenty_lora_steps_lower_held_out_loss():
    base, config, tokenizer = load_pretrained("smollm2-135m-instruct")
    train = _batches(tokenizer, "train", STEPS * BATCH, 0)
    held_out = _batches(tokenizer, "test", 4 * BATCH, 1)
    spec = lora_spec(8, 16.0, ("q", "k", "v", "o"))
    params = LoraParams(base, init_adapters(jax.random.key(0), config, spec), spec)
    schedule = make_schedule("constant", 2e-3, STEPS)
    optimizer = make_optimizer(schedule, grad_clip=1.0)
    step = jax.jit(make_train_step(config, optimizer, schedule))
    evaluate = jax.jit(lambda p, b: model_loss(model_params(p), b, config))

    def held_out_loss(p):
        return float(np.mean([evaluate(p, b) for b in held_out]))

    before = held_out_loss(params)
    state = create_state(params, optimizer, 0)
    for batch in train[:STEPS]:
        state, _ = step(state, batch)
    after = held_out_loss(state.params)
    assert after < before - 0.2, (before, after)
    for old, new in zip(jax.tree.leaves(base), jax.tree.leaves(state.params.base), strict=True):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
