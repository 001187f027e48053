"""Task accuracy: greedy answers to chat-templated prompts, scored by the task's own scorer."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

from headjax.data import Example, Task, chat_prompt, get_task
from headjax.parallel import DEFAULT_RULES
from headjax.parallel.rules import Rules


@dataclasses.dataclass(frozen=True)
class AccuracyResult:
    """accuracy: mean score in [0, 1]; per example the score, the completion (generated text)
    and the final answer the task extracted from it."""

    task: str
    accuracy: float
    scores: tuple[float, ...]
    completions: tuple[str, ...]
    extracted: tuple[str, ...]
    examples: tuple[Example, ...]

    @property
    def n(self) -> int:
        """Number of examples scored."""
        return len(self.scores)

    def records(self) -> list[dict]:
        """Per example: prompt, gold answer, completion, the answer extracted from it, score."""
        return [{"prompt": e.prompt, "answer": e.answer, "completion": c, "extracted": x,
                 "score": s} for e, c, x, s in zip(self.examples, self.completions,
                                                   self.extracted, self.scores, strict=True)]

    def to_dict(self) -> dict:
        """JSON-serialisable {task, accuracy, n, records}."""
        return {"task": self.task, "accuracy": self.accuracy, "n": self.n,
                "records": self.records()}


GenerateFn = Callable[..., Sequence[str]]


def evaluate_accuracy(params, config, tokenizer, task: str | Task,
                      examples: Sequence[Example] | None = None, *, max_new_tokens: int,
                      batch_size: int, num_samples: int | None = None, seed: int = 0,
                      split: str = "test", generate_fn: GenerateFn | None = None,
                      rules: Rules = DEFAULT_RULES) -> AccuracyResult:
    """Accuracy of the model on `examples`, or on `num_samples` examples of `task`'s `split`.

    Each prompt is the chat template's user turn plus generation prompt; `generate_fn(params,
    config, tokenizer, prompts, max_new_tokens=...)` -> completions (default
    `headjax.eval.generate.generate_text`, greedy, its rows sharded over the params' mesh by
    `rules`) runs `batch_size` prompts at a time, and the task scores each completion after
    extracting its final answer.
    """
    task = get_task(task) if isinstance(task, str) else task
    if examples is None:
        if num_samples is None:
            raise ValueError("evaluate_accuracy: pass examples or num_samples")
        examples = task.examples(split, num_samples, seed)
    if not examples:
        raise ValueError(f"evaluate_accuracy: no examples for task {task.name!r}")
    if batch_size <= 0:
        raise ValueError(f"evaluate_accuracy: batch_size must be positive, got {batch_size}")
    if generate_fn is None:
        from headjax.eval.generate import generate_text

        generate_fn = functools.partial(generate_text, rules=rules)
    completions: list[str] = []
    for start in range(0, len(examples), batch_size):
        prompts = [chat_prompt(e, tokenizer) for e in examples[start:start + batch_size]]
        completions += list(generate_fn(params, config, tokenizer, prompts,
                                        max_new_tokens=max_new_tokens))
    if len(completions) != len(examples):
        raise ValueError(f"evaluate_accuracy: generate_fn returned {len(completions)} "
                         f"completions for {len(examples)} prompts")
    scores = tuple(task.score(e, c) for e, c in zip(examples, completions, strict=True))
    extracted = tuple(task.extract(c) for c in completions)
    return AccuracyResult(task.name, sum(scores) / len(scores), scores, tuple(completions),
                          extracted, tuple(examples))
