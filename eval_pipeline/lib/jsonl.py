"""Strict JSON Lines reading for the project's own files (the model registry, recorded outputs):
every non-blank line must be one JSON object, and an error names the file and the line.

Log files are not read here: ingestion quarantines a bad line instead of stopping (``lib/ingestion.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["JSONLineError", "json_objects"]


class JSONLineError(ValueError):
    """A line that is not a JSON object; the message starts with ``<source> line <n>``."""


def json_objects(lines: Iterable[str], source: object) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(line number, "<source> line <n>", object)`` for every non-blank line, in order.

    Raises:
        JSONLineError: at the first line that is not JSON, or is JSON but not an object.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JSONLineError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(value, dict):
            raise JSONLineError(f"{where}: expected a JSON object, got {type(value).__name__}")
        yield number, where, value
