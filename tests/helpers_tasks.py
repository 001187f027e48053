"""Synthetic digit tasks for hermetic tests: a prompt of three digits and a numeric answer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from headjax.data import Example, Task, register_task
from headjax.data.example import numbers_equal


def digit_task(name: str, op: Callable[[np.ndarray], int]) -> Task:
    """Register (overwriting) and return the task "`name`: d1 d2 d3" -> `op(digits)`."""

    def draw(seed: int, count: int) -> list[Example]:
        digits = np.random.default_rng(seed).integers(0, 10, (count, 3))
        return [Example(f"{name}: {' '.join(map(str, d))}", str(op(d)), name) for d in digits]

    return register_task(Task(name, "basic", draw, lambda e, a: numbers_equal(e.answer, a)),
                         overwrite=True)


def concatenated(digits: np.ndarray) -> int:
    """The digits read as one number (an echo task)."""
    return int("".join(map(str, digits)))


def tiny_run_config(model_dir, run_dir, tasks: tuple[str, ...]):
    """A run config of a few steps on the tiny native model in `model_dir`."""
    from headjax.train import default_config

    c = default_config()
    c.run_dir = str(run_dir)
    c.model.pretrained = str(model_dir)
    c.data.update(tasks=tasks, max_len=32, train_samples=64)
    c.train.update(steps=3, batch_size=4, lr=1e-2, warmup_steps=1)
    c.checkpoint.update(every=2, keep=1)
    c.eval.update(every=0, samples=4, max_new_tokens=4, batch_size=4)
    c.heads.update(every=0, samples=4, batch_size=4)
    return c
