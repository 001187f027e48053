"""Orbax checkpoints of the train state plus the data iterator state, with corrupt-step fallback.

Each step directory holds `state` (the TrainState pytree, restored straight into the target
shardings from an abstract `ShapeDtypeStruct` tree) and `extra` (JSON: the batch iterator's
`state_dict()` and anything else needed to resume exactly). Orbax writes into a temporary
directory and renames it when complete, so an interrupted save never looks like a step. A step
that exists but fails to restore (truncated or corrupted files) is moved to `quarantine/` with a
one-line warning naming the step and the reason, and the previous step is used.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

QUARANTINE = "quarantine"


def _jsonable(value: Any) -> Any:
    """`value` with numpy scalars/arrays turned into plain Python (JSON round trip)."""
    def default(x):
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
        raise TypeError(f"checkpoint extra: {type(x).__name__} is not JSON serialisable")

    return json.loads(json.dumps(value, default=default))


def abstract_tree(tree: Any, shardings: Any) -> Any:
    """`ShapeDtypeStruct` tree of `tree` (arrays or structs) carrying `shardings`."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def failure_reason(err: BaseException, limit: int = 160) -> str:
    """"Type: message" in one line of about `limit` characters: the message's first line without
    the storage specs tensorstore appends, and of a long chain of "context: cause" its cause."""
    lines = str(err).strip().splitlines() or [""]
    message = re.sub(r"\s*\[tensorstore_spec.*$", "", lines[0])
    if len(message) > limit:
        message = "... " + message.rsplit(": ", 1)[-1][-limit:]
    return f"{type(err).__name__}: {message}"


@contextlib.contextmanager
def _storage_logs_held_back(names: tuple[str, ...] = ("absl", "orbax", "asyncio")):
    """Raise the storage library's loggers above ERROR for the duration (a failed restore is
    reported once, by `restore_latest`).

    A failed restore leaves the storage library's other read tasks holding exceptions nobody
    retrieved; asyncio logs each when the task is collected, so they are collected here, while
    its logger is still held back, rather than at some later moment.
    """
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        gc.collect()
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class Checkpointer:
    """Keep-N (optionally asynchronous) checkpoints of (state, extra) under `directory`."""

    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True):
        if keep < 1:
            raise ValueError(f"checkpoint.keep: must be >= 1, got {keep}")
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save,
                                               cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "extra"))

    def steps(self) -> list[int]:
        """Complete step numbers on disk, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, extra: dict) -> None:
        """Save `state` and the JSON-able `extra` as `step` (returns before writes finish when
        asynchronous; call `wait` before reading them)."""
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(_jsonable(extra))))

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """(state placed as `abstract_state`'s shardings, extra) of `step`."""
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()))
        return restored["state"], dict(restored["extra"])

    def restore_latest(self, abstract_state: Any, *, quarantine: bool = True
                       ) -> tuple[int, Any, dict] | None:
        """(step, state, extra) of the newest step that restores, or None without one.

        Steps that fail to restore are skipped newest first, each with one warning line naming
        the step and the reason (the storage library's own logging is held back meanwhile), and
        moved to `quarantine/` when `quarantine`.
        """
        self.wait()
        for step in reversed(self.steps()):
            try:
                with _storage_logs_held_back():
                    state, extra = self.restore(step, abstract_state)
            except Exception as err:  # noqa: BLE001 - any failure means an unusable step
                log.warning("checkpoint step %d in %s is unreadable (%s); %strying the previous "
                            "step", step, self.directory, failure_reason(err),
                            f"moved to {QUARANTINE}/, " if quarantine else "")
                if quarantine:
                    self._quarantine(step)
                continue
            return step, state, extra
        return None

    def _quarantine(self, step: int) -> None:
        target = self.directory / QUARANTINE / f"{step}-{int(time.time())}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.directory / str(step)), str(target))
        self._manager.reload()

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self._manager.close()


def restore_params(directory: str | Path) -> Any:
    """The params tree of the newest good step under `directory` (on the default device)."""
    checkpointer = Checkpointer(directory, keep=1, async_save=False)
    try:
        restored = checkpointer.restore_latest(None, quarantine=False)
    finally:
        checkpointer.close()
    if restored is None:
        raise FileNotFoundError(f"checkpoint: no readable step under {directory}")
    return restored[1]["params"]
