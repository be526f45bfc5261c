"""Strict JSON Lines reading for the project's own files (the model registry, recorded outputs):
every non-blank line must be one JSON object, and an error names the file and the line.

Log files are not read here: ingestion quarantines a bad line instead of stopping (``lib/ingest/ingestion.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["JSONLineError", "json_objects", "lone_surrogate_field", "parse_json_line"]


class JSONLineError(ValueError):
    """A line that is not a JSON object; the message starts with ``<source> line <n>``."""


def json_objects(lines: Iterable[str], source: object) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(line number, "<source> line <n>", object)`` for every non-blank line, in order.

    Raises:
        JSONLineError: at the first line that is not JSON, or is JSON but not an object.
    """
    for number, line in enumerate(lines, start=1):
        if number == 1:
            line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark some editors write
        if not line.strip():
            continue
        where = f"{source} line {number}"
        value = parse_json_line(line, where)
        if not isinstance(value, dict):
            raise JSONLineError(f"{where}: expected a JSON object, got {type(value).__name__}")
        bad = lone_surrogate_field(value)
        if bad is not None:
            raise JSONLineError(f"{where}, field {bad!r}: contains a lone UTF-16 surrogate escape "
                                "(such as \\ud800), which is not text")
        yield number, where, value


def parse_json_line(text: str, where: str) -> Any:
    """``json.loads`` whose every failure is a JSONLineError naming ``where``: not JSON, nested
    too deeply for the parser, or an integer too long to convert."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONLineError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError:
        raise JSONLineError(f"{where}: not readable JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise JSONLineError(f"{where}: not readable JSON ({exc})") from None


def lone_surrogate_field(value: Any, path: str = "") -> str | None:
    """The dotted path of the first key or string in ``value`` holding a lone surrogate, else None.

    ``json`` accepts an escaped ``\\ud800`` but the result cannot be written as UTF-8 later, so the
    readers refuse it where it is read rather than in a later step.
    """
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:  # iterative: a deeply nested value must not exhaust the stack here either
        where, item = stack.pop()
        if isinstance(item, str):
            if _has_surrogate(item):
                return where or "(value)"
        elif isinstance(item, dict):
            for key, sub in item.items():
                name = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and _has_surrogate(key):
                    return name
                stack.append((name, sub))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", sub) for i, sub in enumerate(item))
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
