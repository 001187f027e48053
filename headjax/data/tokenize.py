"""Chat-templated tokenization of one example with a loss mask on the answer only.

The prompt is rendered as a user message (after the example's system message, if any) with the
generation prompt (`add_generation_prompt=True`), the full text as the same messages plus the
assistant answer. The full tokens must start with the prompt tokens; the loss mask is 1 exactly
on the answer tokens and the end-of-turn token that closes the answer (`<|im_end|>` for ChatML),
0 on the prompt, and the sequence ends there.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from headjax.data.tasks import Example


class ExampleTooLongError(ValueError):
    """A tokenized example has more tokens than `max_len`."""


def end_of_turn_ids(tokenizer) -> frozenset[int]:
    """Token ids that end an assistant turn: the tokenizer's stop tokens and its EOS."""
    return frozenset(tuple(getattr(tokenizer, "stop_token_ids", ())) + (tokenizer.eos_token_id,))


def chat_messages(example: Example) -> list[dict[str, str]]:
    """The conversation before the answer: `example.metadata["system"]` as a system message if
    present, then `example.prompt` as the user message."""
    system = example.metadata.get("system")
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": example.prompt}]


def chat_prompt(example: Example, tokenizer) -> str:
    """The prompt text the model sees: `chat_messages(example)` plus the generation prompt of
    the tokenizer's chat template (what training conditions on and generation starts from)."""
    return tokenizer.apply_chat_template(chat_messages(example), add_generation_prompt=True,
                                         tokenize=False)


def tokenize_example(example: Example, tokenizer, max_len: int) -> dict[str, np.ndarray]:
    """{"tokens": i32[n], "loss_mask": f32[n]} of `example` in the tokenizer's chat template.

    Raises ExampleTooLongError when n > max_len, and ValueError when the template's prompt
    tokens are not a prefix of the full conversation's tokens or no end-of-turn token follows
    the answer.
    """
    prompt_text = chat_prompt(example, tokenizer)
    full_text = tokenizer.apply_chat_template(
        [*chat_messages(example), {"role": "assistant", "content": example.answer}],
        tokenize=False)
    prompt = tokenizer.encode(prompt_text, add_special_tokens=False)
    full = tokenizer.encode(full_text, add_special_tokens=False)
    if full[:len(prompt)] != prompt:
        raise ValueError(f"task {example.task!r}: the chat template's prompt tokens are not a "
                         f"prefix of the prompt+answer tokens (prompt text {prompt_text!r}, full "
                         f"text {full_text!r}); the template or tokenizer merges across the turn "
                         f"boundary")
    stops = end_of_turn_ids(tokenizer)
    end = next((i for i in range(len(prompt), len(full)) if full[i] in stops), None)
    if end is None:
        raise ValueError(f"task {example.task!r}: no end-of-turn token {sorted(stops)} follows "
                         f"the answer in {full_text!r}")
    tokens = np.asarray(full[:end + 1], np.int32)
    if len(tokens) > max_len:
        raise ExampleTooLongError(f"task {example.task!r}: {len(tokens)} tokens > max_len "
                                  f"{max_len}")
    loss_mask = np.zeros(len(tokens), np.float32)
    loss_mask[len(prompt):] = 1.0
    return {"tokens": tokens, "loss_mask": loss_mask}


def tokenize_examples(examples: Iterable[Example], tokenizer, max_len: int
                      ) -> tuple[list[dict[str, np.ndarray]], list[int], int]:
    """(tokenized examples that fit, their indices in `examples`, number dropped as too long)."""
    kept, indices, dropped = [], [], 0
    for index, example in enumerate(examples):
        try:
            kept.append(tokenize_example(example, tokenizer, max_len))
        except ExampleTooLongError:
            dropped += 1
            continue
        indices.append(index)
    return kept, indices, dropped
