"""Request bodies parsed as standard JSON, and nothing a database would choke on.

Python's ``json`` accepts more than JSON: ``NaN`` and ``Infinity``, numbers
that overflow to infinity (``1e999``), and duplicate keys (the last one wins,
where another parser may keep the first). PostgreSQL then refuses what the
body may carry inside its strings: NUL characters, and lone surrogates
(``"\\ud800"``), which are not Unicode text at all. All of that is refused
here, once, for every route that takes a body, so no column and no JSON
document ever holds it.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64  # arrays and objects nested in one another


class JsonSyntaxError(ValueError):
    """The body is not standard JSON (the message says where and why)."""


class JsonContentError(ValueError):
    """The body is JSON, but a value in it may not be stored (``field`` names it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def _no_constants(name: str) -> Any:
    raise JsonSyntaxError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonSyntaxError(f"the number {text[:40]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonSyntaxError(f"the key {key[:40]!r} appears twice in one object")
        result[key] = value
    return result


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise JsonContentError(where, "must not contain NUL characters (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonContentError(
            where, "must be valid Unicode text (it holds a lone surrogate escape)"
        ) from None


def _walk(value: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise JsonSyntaxError(f"objects and arrays are nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value, path or "body")
    elif isinstance(value, dict):
        for key, item in value.items():
            # The path is shown back in the error: its NULs written out, not sent.
            shown = key.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode()
            where = f"{path}.{shown}" if path else shown
            _check_text(key, where)
            _walk(item, where, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]", depth + 1)


def loads(body: bytes) -> Any:
    """``body`` as a JSON value: JsonSyntaxError if it is not standard JSON,
    JsonContentError if it carries a string no database may store."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonSyntaxError(f"not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(
            text,
            parse_constant=_no_constants,
            parse_float=_finite,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise JsonSyntaxError(f"{exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise JsonSyntaxError(
            f"objects and arrays are nested deeper than {MAX_DEPTH} levels"
        ) from None
    except ValueError as exc:  # an integer of thousands of digits
        if isinstance(exc, JsonSyntaxError):
            raise
        raise JsonSyntaxError(str(exc)) from None
    _walk(value, "", 0)
    return value
