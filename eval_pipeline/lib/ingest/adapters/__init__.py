"""Adapters from the log formats people actually write into the canonical :class:`LogRecord`.

Five formats are understood:

``canonical``
    One canonical record per line (JSON Lines), as in ``schemas/log_record.schema.json``.
``openai``
    One chat-completions call per line (:mod:`~eval_pipeline.lib.ingest.adapters.openai_chat`).
``otlp``
    OpenTelemetry traces exported as OTLP/JSON with the GenAI semantic conventions
    (:mod:`~eval_pipeline.lib.ingest.adapters.otlp`).
``openinference``
    OTLP/JSON whose spans carry the OpenInference semantic conventions
    (:mod:`~eval_pipeline.lib.ingest.adapters.openinference`).
``langfuse``
    Langfuse traces and observations as its public API returns them
    (:mod:`~eval_pipeline.lib.ingest.adapters.langfuse`).

Each format's module says exactly which fields it reads; :mod:`~eval_pipeline.lib.ingest.adapters.common`
holds what they share (and says how the trace formats fill record fields from their metadata). Each adapter turns one parsed JSON value into a list of ``(index, dict)``
candidates; the dicts are validated against :class:`LogRecord` by :mod:`eval_pipeline.lib.ingest.ingestion`.
"""

from __future__ import annotations

from typing import Any, Callable

from eval_pipeline.lib.ingest.adapters import langfuse, openai_chat, openinference, otlp
from eval_pipeline.lib.ingest.adapters.common import AdapterError, Candidates

__all__ = [
    "FORMATS",
    "AdapterError",
    "detect_format",
    "format_from_name",
    "adapt",
    "count_skipped_spans",
]

FORMATS = ("canonical", "openai", "otlp", "openinference", "langfuse")


def format_from_name(name: str) -> str | None:
    """A format declared by the file name: ``*.canonical.jsonl``, ``*.openai.jsonl``, ``*.otlp.jsonl``,
    ``*.openinference.jsonl``, ``*.langfuse.jsonl``."""
    lowered = name.lower()
    for fmt in FORMATS:
        if f".{fmt}." in lowered:
            return fmt
    return None


def detect_format(obj: Any) -> str | None:
    """Guess the format from the first JSON object of a file (None when it is not recognisable)."""
    if not isinstance(obj, dict):
        return None
    if "resourceSpans" in obj:
        return "openinference" if openinference.looks_like(obj) else "otlp"
    if "request" in obj and "response" in obj:
        return "openai"
    if langfuse.looks_like(obj):
        return "langfuse"
    if "messages" in obj or "request_id" in obj:
        return "canonical"
    return None


def adapt(fmt: str, obj: Any) -> Candidates:
    """Candidates for canonical records from one JSON value of the given format."""
    if not isinstance(obj, dict):
        return [(0, AdapterError("not_an_object", "", f"expected a JSON object, got {type(obj).__name__}"))]
    try:
        return _ADAPTERS[fmt](obj)
    except AdapterError as err:
        return [(0, err)]
    except Exception as err:  # noqa: BLE001 - a value of an unexpected shape costs its line, never the file
        return [(0, AdapterError("adapter_error", "", f"{type(err).__name__}: {str(err)[:200]}"))]


def count_skipped_spans(obj: Any, fmt: str = "otlp") -> int:
    """Spans (or Langfuse observations) of a line that are not model calls: reported, never
    counted as records. Zero for the one-record-per-line formats."""
    counter = _SKIPPED.get(fmt)
    return counter(obj) if counter is not None else 0


def _canonical(obj: dict[str, Any]) -> Candidates:
    return [(0, obj)]


_ADAPTERS: dict[str, Callable[[dict[str, Any]], Candidates]] = {
    "canonical": _canonical,
    "openai": openai_chat.candidates,
    "otlp": otlp.candidates,
    "openinference": openinference.candidates,
    "langfuse": langfuse.candidates,
}
# the formats whose lines hold spans or observations that are not model calls
_SKIPPED: dict[str, Callable[[Any], int]] = {
    "otlp": otlp.count_skipped,
    "openinference": openinference.count_skipped,
    "langfuse": langfuse.count_skipped,
}
