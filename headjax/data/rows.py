"""One data row (a file line, a dataset record) as an `Example`, by a field mapping.

A row is either a prompt/answer pair, `{fields.prompt: ..., fields.answer: ...}` (numeric answers
are turned into text), or a chat, `{fields.messages: [{"role": ..., "content": ...}, ...]}`:
roles system, user, assistant and tool, at least one user turn, ending with an assistant turn.
A chat of an optional system turn, one user turn and one assistant turn is a single-turn example
(the system text kept as `metadata["system"]`); a longer one keeps its turns before the final
answer in `Example.messages`, and training covers every assistant turn
(`headjax.data.tokenize`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

from headjax.data.example import Example

ROLES = ("system", "user", "assistant", "tool")


class MalformedRowError(ValueError):
    """A row lacks a field, has a wrong type or is not valid JSON."""


@dataclasses.dataclass(frozen=True)
class Fields:
    """Column names of a data source: `prompt` and `answer`, or `messages` (a chat)."""

    prompt: str = "prompt"
    answer: str = "answer"
    messages: str = "messages"

    def check_columns(self, columns: Sequence[str], source: str) -> None:
        """Raise one ValueError naming `source` and the missing field unless `columns` hold
        the messages column or both the prompt and the answer column."""
        if self.messages in columns:
            return
        missing = [f for f in (self.prompt, self.answer) if f not in columns]
        if missing:
            raise ValueError(f"{source}: no column {missing[0]!r} (columns: {list(columns)}); "
                             f"name the columns with data.prompt_field and data.answer_field, "
                             f"or data.messages_field for chats")


DEFAULT_FIELDS = Fields()


def _text(row: Mapping, field: str) -> str:
    value = row.get(field)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise MalformedRowError(f"field {field!r} must be text, got {value!r}")
    if not str(value).strip():
        raise MalformedRowError(f"field {field!r} is empty")
    return str(value)


def _turns(messages: object, field: str) -> list[dict[str, str]]:
    if not isinstance(messages, list | tuple):
        raise MalformedRowError(f"{field} must be a list, got {type(messages).__name__}")
    roles = [m.get("role") if isinstance(m, Mapping) else None for m in messages]
    if any(role not in ROLES for role in roles) or "user" not in roles or roles[-1:] != [
            "assistant"]:
        raise MalformedRowError(f"{field} must hold turns with roles in {ROLES}, at least one "
                                f"user turn, and end with an assistant turn; got roles {roles}")
    return [{"role": m["role"], "content": _text(m, "content")} for m in messages]


def row_to_example(row: object, task: str, fields: Fields = DEFAULT_FIELDS) -> Example:
    """The `Example` of one parsed row (see the module docstring for the accepted shapes)."""
    if isinstance(row, json.JSONDecodeError):
        raise MalformedRowError(f"invalid JSON ({row.msg} at column {row.colno})")
    if not isinstance(row, Mapping):
        raise MalformedRowError(f"expected an object, got {type(row).__name__}")
    if row.get(fields.messages) is None:
        return Example(_text(row, fields.prompt), _text(row, fields.answer), task, {})
    turns = _turns(row[fields.messages], fields.messages)
    roles = [t["role"] for t in turns]
    if roles in (["user", "assistant"], ["system", "user", "assistant"]):
        system = {"system": turns[0]["content"]} if len(turns) == 3 else {}
        return Example(turns[-2]["content"], turns[-1]["content"], task, system)
    last_user = next(t["content"] for t in reversed(turns) if t["role"] == "user")
    return Example(last_user, turns[-1]["content"], task, {}, tuple(turns[:-1]))
