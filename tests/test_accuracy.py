"""evaluate_accuracy: chat-templated prompts in batches, completions scored by the task."""

from __future__ import annotations

import pytest
from helpers_tokenizer import chatml_tokenizer

from headjax.data import get_task
from headjax.eval.accuracy import evaluate_accuracy


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
    assert result.accuracy == pytest.approx(0.7)
    assert result.scores == (1.0,) * 7 + (0.0,) * 3
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
