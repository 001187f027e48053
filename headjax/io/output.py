"""The one rule for every writer of a user-named output: never replace what is there unasked."""

from __future__ import annotations

import os


def check_output(path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Raise FileExistsError naming `path` when it is a file or a non-empty directory, unless
    `overwrite` (a missing path or an empty directory is always fine)."""
    path = os.fspath(path)
    if overwrite or not os.path.exists(path):
        return
    if os.path.isdir(path) and not os.listdir(path):
        return
    what = "already exists and is not empty" if os.path.isdir(path) else "already exists"
    raise FileExistsError(f"{path}: {what}; choose a new path or pass --overwrite "
                          "(overwrite=True) to replace it")
