"""evaluate_accuracy: chat-templated prompts in batches, completions scored by the task."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from helpers_tokenizer import chatml_tokenizer

from headjax.data import Example, chat_prompt, get_task
from headjax.eval.accuracy import evaluate_accuracy
from headjax.model import forward


def scripted_generate(answers: dict[str, str], calls: list[list[str]]):
    """A generate_fn answering each rendered prompt from `answers` (else "no idea")."""
    def generate(params, config, tokenizer, prompts, *, max_new_tokens):
        assert max_new_tokens == 8
        calls.append(list(prompts))
        return [answers.get(p, "no idea") for p in prompts]
    return generate


def test_accuracy_counts_correct_completions_over_rendered_prompts():
    tokenizer = chatml_tokenizer()
    task = get_task("chain_sum")
    examples = task.examples("test", 10, seed=0)
    rendered = {e.prompt: f"<|im_start|>user\n{e.prompt}<|im_end|>\n<|im_start|>assistant\n"
                for e in examples}
    answers = {rendered[e.prompt]: f"The answer is {e.answer}.<|im_end|>" for e in examples[:7]}
    calls: list[list[str]] = []
    result = evaluate_accuracy(None, None, tokenizer, "chain_sum", examples, max_new_tokens=8,
                               batch_size=4, generate_fn=scripted_generate(answers, calls))
    assert result.accuracy == pytest.approx(0.7) and result.n == 10
    assert result.scores == (1.0,) * 7 + (0.0,) * 3
    records = json.loads(json.dumps(result.to_dict()))["records"]
    assert [r["extracted"] for r in records] == [e.answer for e in examples[:7]] + ["no idea"] * 3
    assert [r["answer"] for r in records] == [e.answer for e in examples]
    assert records[0]["completion"] == f"The answer is {examples[0].answer}.<|im_end|>"
    assert [len(c) for c in calls] == [4, 4, 2]
    assert sum(calls, []) == [rendered[e.prompt] for e in examples]


def test_accuracy_draws_held_out_examples_by_count_and_seed():
    calls: list[list[str]] = []
    result = evaluate_accuracy(None, None, chatml_tokenizer(), "leg_counting", num_samples=5,
                               seed=2, max_new_tokens=8, batch_size=8,
                               generate_fn=scripted_generate({}, calls))
    assert result.examples == tuple(get_task("leg_counting").examples("test", 5, 2))
    assert result.accuracy == 0.0 and len(calls) == 1
    with pytest.raises(ValueError, match="pass examples or num_samples"):
        evaluate_accuracy(None, None, chatml_tokenizer(), "leg_counting", max_new_tokens=8,
                          batch_size=8, generate_fn=scripted_generate({}, calls))


def test_default_generator_completes_the_chat_prompts_greedily(tiny):
    """With `generate_text`, completions equal a naive greedy decode (full forward per token,
    no cache, no left padding) of each chat-templated prompt on the tiny model."""
    config, params = tiny
    filler = tuple(f"w{i}" for i in range(config.vocab_size - chatml_tokenizer().vocab_size))
    tokenizer = chatml_tokenizer(filler)  # every id the model can emit decodes to a word
    assert tokenizer.vocab_size == config.vocab_size
    examples = [Example("what is 3 + 4?", "7", "chain_sum", {}),
                Example("how many legs 2 and 3 and 4?", "18", "chain_sum", {})]
    result = evaluate_accuracy(params, config, tokenizer, "chain_sum", examples,
                               max_new_tokens=3, batch_size=2)
    fwd = jax.jit(forward, static_argnames="config")
    for example, completion in zip(examples, result.completions, strict=True):
        ids = tokenizer.encode(chat_prompt(example, tokenizer))
        new = []
        for _ in range(3):
            row = np.zeros((1, 64), np.int32)  # fixed width: one compile; causal attention
            row[0, :len(ids + new)] = ids + new  # ignores the zeros after the sequence
            logits = fwd(params, row, config).logits[0, len(ids + new) - 1]
            new.append(int(np.argmax(logits)))
            if new[-1] in tokenizer.stop_token_ids:
                new.pop()
                break
        assert completion == tokenizer.decode(new)

