"""Chat-templated tokenization of one example with a loss mask on the assistant turns only.

The conversation is `chat_messages(example)` (the system message and the prompt, or a multi-turn
chat's turns) plus the assistant answer, rendered by the tokenizer's chat template. For each
assistant turn, the conversation before it is rendered with the generation prompt
(`add_generation_prompt=True`); the full tokens must start with those prefix tokens, and the loss
mask is 1 from the end of the prefix through the end-of-turn token that closes the turn
(`<|im_end|>` for ChatML). So the mask covers every assistant turn's tokens and end-of-turn
token, and never a system, user or tool turn or the template's role headers; the sequence ends
after the final answer's end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from headjax.data.example import Example


class ExampleTooLongError(ValueError):
    """A tokenized example has more tokens than `max_len`."""


def end_of_turn_ids(tokenizer) -> frozenset[int]:
    """Token ids that end an assistant turn: the tokenizer's stop tokens and its EOS."""
    return frozenset(tuple(getattr(tokenizer, "stop_token_ids", ())) + (tokenizer.eos_token_id,))


def chat_messages(example: Example) -> list[dict[str, str]]:
    """The conversation before the answer: a multi-turn chat's `example.messages`, else
    `example.metadata["system"]` as a system message if present, then `example.prompt` as the
    user message."""
    if example.messages:
        return [dict(m) for m in example.messages]
    system = example.metadata.get("system")
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": example.prompt}]


def chat_prompt(example: Example, tokenizer) -> str:
    """The prompt text the model sees: `chat_messages(example)` plus the generation prompt of
    the tokenizer's chat template (what training conditions on and generation starts from)."""
    return tokenizer.apply_chat_template(chat_messages(example), add_generation_prompt=True,
                                         tokenize=False)


def _encode(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool
            ) -> tuple[str, list[int]]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                         tokenize=False)
    return text, tokenizer.encode(text, add_special_tokens=False)


def tokenize_example(example: Example, tokenizer, max_len: int) -> dict[str, np.ndarray]:
    """{"tokens": i32[n], "loss_mask": f32[n]} of `example` in the tokenizer's chat template.

    Raises ExampleTooLongError when n > max_len, and ValueError when the template's tokens of
    the conversation before an assistant turn are not a prefix of the full conversation's
    tokens, or no end-of-turn token closes an assistant turn.
    """
    turns = [*chat_messages(example), {"role": "assistant", "content": example.answer}]
    full_text, full = _encode(tokenizer, turns, add_generation_prompt=False)
    stops = end_of_turn_ids(tokenizer)
    spans = []
    for index in (i for i, turn in enumerate(turns) if turn["role"] == "assistant"):
        prompt_text, prompt = _encode(tokenizer, turns[:index], add_generation_prompt=True)
        if full[:len(prompt)] != prompt:
            raise ValueError(f"task {example.task!r}: the chat template's prompt tokens are not "
                             f"a prefix of the prompt+answer tokens (prompt text "
                             f"{prompt_text!r}, full text {full_text!r}); the template or "
                             f"tokenizer merges across the turn boundary")
        end = next((i for i in range(len(prompt), len(full)) if full[i] in stops), None)
        if end is None:
            raise ValueError(f"task {example.task!r}: no end-of-turn token {sorted(stops)} "
                             f"follows the answer in {full_text!r}")
        spans.append((len(prompt), end + 1))
    tokens = np.asarray(full[:spans[-1][1]], np.int32)
    if len(tokens) > max_len:
        raise ExampleTooLongError(f"task {example.task!r}: {len(tokens)} tokens > max_len "
                                  f"{max_len}")
    loss_mask = np.zeros(len(tokens), np.float32)
    for start, stop in spans:
        loss_mask[start:stop] = 1.0
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
