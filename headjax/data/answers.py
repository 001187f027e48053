"""Final-answer extraction from free-form model output, before a task scores it."""

from __future__ import annotations

import re

_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>")
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_PREFIX = re.compile(r"^.*?\b(?:final answer|the answer|answer)\s*(?:is|:)\s*",
                            re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def extract_answer(text: str) -> str:
    """The final answer in `text`: the content of the last `<answer>` tag or `\\boxed{}` if any,
    else the last line announcing it ("... answer is X", "Answer: X") without that prefix, else
    the last non-empty line; without surrounding whitespace, quotes, `**` emphasis or a trailing
    period. End-of-turn markers cut the text."""
    for marker in _END_MARKERS:
        text = text.split(marker, 1)[0]
    tagged = _ANSWER_TAG.findall(text) or _BOXED.findall(text)
    if tagged:
        text = tagged[-1]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    announced = [line for line in lines if _ANSWER_PREFIX.match(line)]
    answer = _ANSWER_PREFIX.sub("", (announced or lines or [""])[-1])
    while (cleaned := answer.strip().strip("*\"'`").removesuffix(".")) != answer:
        answer = cleaned
    return answer


def extract_number(text: str) -> str:
    """The last number in the extracted answer of `text` (thousands separators removed), or the
    extracted answer itself when it holds no number."""
    answer = extract_answer(text)
    numbers = _NUMBER.findall(answer)
    return numbers[-1].replace(",", "") if numbers else answer
