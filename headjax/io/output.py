"""The one rule for every writer of a user-named output: never replace what is there unasked."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator


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


@contextlib.contextmanager
def staged_directory(path: str | os.PathLike, *, overwrite: bool = False
                     ) -> Iterator[str]:
    """Write a directory atomically: yields a temporary sibling of `path` to fill; when the
    block succeeds the sibling becomes `path` (an existing non-empty `path` is replaced whole,
    and only with `overwrite`, see `check_output`); when it fails nothing at `path` changes."""
    path = os.path.abspath(os.fspath(path))
    check_output(path, overwrite=overwrite)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)
    try:
        yield staging
        if os.path.isdir(path) and os.listdir(path):  # overwrite: swap, then drop the old one
            old = tempfile.mkdtemp(prefix=f".{name}.old.", dir=parent)
            os.rename(path, old)
            os.rename(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if os.path.isfile(path):
                os.remove(path)
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
