"""The scripts' handling of a user's mistakes: one line `error: ...` and exit status 2.

`run(main)` stands in for `absl.app.run(main)`. A mistake in the flags or in a config file (an
unknown or mistyped key, which the locked config refuses, a file that does not exist) and any
`UserError` raised by `main` print one line naming the file, key or flag, and exit with status 2;
`--verbose` shows the traceback instead. `main` marks the steps that read the user's input with
`user_errors()`, so a ValueError from a malformed data file becomes a one-line error while a bug
elsewhere keeps its traceback.
"""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from absl import app, flags

VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of a user's error.")
EXIT_USER_ERROR = 2
# What reading a user's config, task, data or model file raises when the input is wrong.
USER_ERROR_TYPES = (ValueError, TypeError, KeyError, AttributeError, OSError)
_LOCKED_KEY = re.compile(r'Key "(\w+)" does not exist')
_FIRST_WORD = re.compile(r"^\W*(\w+)")
_SUGGESTION = re.compile(r'Did you mean "(\w+)"')
_SITE = ("site-packages", "dist-packages", str(Path(__file__).parent))


class UserError(Exception):
    """A mistake in the user's flags, config or files, reported as one line."""


def describe(err: BaseException, argv: Sequence[str] | None = None) -> str:
    """One line for `err`: what, and where when raised while parsing `argv` (the config file's
    line or the `--config.` flag)."""
    if isinstance(err, UserError):
        return str(err)
    chain = _chain(err)
    missing = next((e for e in chain if isinstance(e, OSError) and e.filename), None)
    if missing is not None:
        return f"{missing.filename}: {missing.strerror}"
    # A config file's own error (wrapped by the flag parser): the first with a frame in it.
    where, err = next(((_user_frame(e), e) for e in chain if argv is not None and _user_frame(e)),
                      (None, err))
    text = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
    if isinstance(err, AttributeError) and ("config is locked" in text
                                            or _SUGGESTION.search(text)):
        text = _unknown_key(text)
        key = text.split("'")[1]
        flag = next((a.split("=")[0] for a in argv or ()
                     if a.startswith("--config.") and re.search(rf"\.{key}(=|$)", a)), None)
        where = where or flag
    text = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    return f"{where}: {text}" if where else text


def _unknown_key(text: str) -> str:
    """"unknown config key 'k' (did you mean 'kk'?)" from ml_collections' locked-key error."""
    match = _LOCKED_KEY.search(text) or _FIRST_WORD.search(text)
    hint = _SUGGESTION.search(text)
    return f"unknown config key {match.group(1)!r}" + (f" (did you mean {hint.group(1)!r}?)"
                                                       if hint else "")


def _chain(err: BaseException | None) -> list[BaseException]:
    """`err` and the exceptions it was raised from or during, outermost first."""
    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def _user_frame(err: BaseException) -> str | None:
    """"file:line" of the innermost traceback frame in the user's own code (a config file),
    None when every frame is in an installed package, headjax or the script."""
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if not any(part in f.filename for part in _SITE) and "<" not in f.filename
              and f.filename != sys.argv[0]]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Within: a ValueError, TypeError, KeyError, AttributeError or OSError is the user's
    (re-raised as `UserError` with one line)."""
    try:
        yield
    except UserError:
        raise
    except USER_ERROR_TYPES as err:
        raise UserError(describe(err)) from err


def parse_flags(argv: list[str]) -> list[str]:
    """`absl.flags.FLAGS(argv)` with a bad flag or config file raised as `UserError`."""
    try:
        rest = flags.FLAGS(argv)
        for name in flags.FLAGS:  # a config file that failed to load raises when read
            getattr(flags.FLAGS[name].value, "lock", None)
    except (flags.Error, *USER_ERROR_TYPES) as err:
        raise UserError(describe(err, argv)) from err
    return rest


def _verbose(argv: Sequence[str]) -> bool:
    if flags.FLAGS.is_parsed():
        return VERBOSE.value
    return any(a in ("--verbose", "--verbose=true", "--verbose=1") for a in argv)


def run(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> None:
    """`absl.app.run(main)` with a user's error printed as `error: ...`, exit status 2."""
    argv = list(sys.argv if argv is None else argv)

    def guarded(args):
        try:
            return main(args)
        except app.UsageError as err:
            raise UserError(str(err)) from err

    try:
        app.run(guarded, argv=argv, flags_parser=parse_flags)
    except UserError as err:
        if _verbose(argv):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
