"""What the format adapters share: the error they raise, the record type they return, and the
readers of values that several formats write the same way (OpenAI message content, times,
integers sent as strings, and the trace formats' messages, metadata and scores).

For ``openinference`` and ``langfuse`` a ``task_type``, ``user_segment``, ``turn_index`` or
``conversation_id`` key of the metadata fills that field of the record; without one,
``turn_index`` is the number of user messages of the prompt before the last. A span's ERROR
status, or a generation's ERROR level, is kept as a failed post-processing step
(``span_status`` / ``observation_level``, ``ok`` false, its message as detail), the record
model's one place for a failure the user saw.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "AdapterError",
    "Candidates",
    "Scalar",
    "apply_metadata_fields",
    "as_text",
    "chat_message",
    "content_text",
    "int_from_string",
    "iso_time",
    "normalise_role",
    "scalar",
    "scalar_map",
    "score_feedback",
    "unix_seconds",
]


class AdapterError(ValueError):
    """A value that cannot be turned into a record: says which field and why."""

    def __init__(self, reason: str, field: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message


# One parsed JSON value's candidates for canonical records: (index in the value, the record's
# fields, or the error that made that part unreadable).
Candidates = list[tuple[int, dict[str, Any] | AdapterError]]


def content_text(content: Any, field: str) -> str:
    """OpenAI content is a string or a list of parts; text parts are joined, others described."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict):
                raise AdapterError("wrong_type", f"{field}[{i}]", f"{field}[{i}]: expected an object")
            if part.get("type") in ("text", "input_text", "output_text"):
                texts.append(str(part.get("text", "")))
            else:
                # Images and audio are not text the pipeline can use; keep a marker, not the bytes.
                texts.append(f"[{part.get('type', 'part')}]")
        return "\n".join(texts)
    raise AdapterError("wrong_type", field, f"{field}: expected a string or a list of parts")


def unix_seconds(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AdapterError("invalid_timestamp", field, f"{field}: expected unix seconds, got {value!r}")
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError) as err:
        raise AdapterError("invalid_timestamp", field, f"{field}: {value!r} is not a valid time ({err})") from err


def int_from_string(value: Any, field: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as err:
        raise AdapterError("wrong_type", field, f"{field}: expected an integer, got {value!r}") from err


# --------------------------------------------------------------------------------------------
# helpers shared by the trace formats (OpenInference, Langfuse)

Scalar = str | int | float | bool | None
_ROLE_ALIASES = {"human": "user", "ai": "assistant", "model": "assistant", "function": "tool"}
_RECORD_KEYS_IN_METADATA = ("task_type", "user_segment", "conversation_id")
# Score / annotation names read as the user's thumbs, and values read as up or down.
_THUMBS_NAMES = {"user_feedback", "feedback", "thumbs", "user_thumbs"}
_UP = {"up", "thumbs_up", "positive", "good", "helpful", "like", "liked", "1", "true", "yes", "\U0001f44d"}
_DOWN = {"down", "thumbs_down", "negative", "bad", "unhelpful", "dislike", "disliked", "0", "-1", "false", "no",
         "\U0001f44e"}
_FLAG_NAMES = ("abandoned", "clarification_requested", "parse_error", "regenerated", "escalated")


def scalar(value: Any) -> Scalar:
    """A metadata or params value: scalars as they are, anything nested as JSON text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def scalar_map(value: Any, field: str) -> dict[str, Scalar]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AdapterError("wrong_type", field, f"{field}: expected an object, got {type(value).__name__}")
    return {str(k): scalar(v) for k, v in value.items()}


def as_text(value: Any) -> str:
    """Free-form content as text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def normalise_role(value: Any) -> Any:
    # Instrumentations write the provider's or the framework's role names; map the common
    # synonyms, leave anything else for the contract to reject with its field path.
    return _ROLE_ALIASES.get(value.lower(), value.lower()) if isinstance(value, str) else value


def chat_message(msg: Any, field: str) -> dict[str, Any]:
    """A message logged in the OpenAI chat shape (``role``, ``content`` string or parts, ``tool_calls``)."""
    if isinstance(msg, str):
        return {"role": "user", "content": msg}
    if not isinstance(msg, dict):
        raise AdapterError("wrong_type", field, f"{field}: expected a message object")
    content = msg.get("content")
    if isinstance(content, (str, list)) or content is None:
        text = content_text(content, f"{field}.content")
    else:
        text = as_text(content)
    if not text and msg.get("tool_calls"):
        text = as_text(msg["tool_calls"])
    out: dict[str, Any] = {"role": normalise_role(msg.get("role")), "content": text}
    if isinstance(msg.get("name"), str) and msg["name"]:
        out["name"] = msg["name"]
    return out


def _user_turn(messages: list[dict[str, Any]]) -> int:
    """The turn of a prompt that carries its history: user messages before the last one."""
    return max(0, sum(1 for m in messages if m.get("role") == "user") - 1)


def apply_metadata_fields(record: dict[str, Any], meta: dict[str, Scalar], field: str) -> None:
    """Record fields an application put in the metadata (the formats have no place of their own for them)."""
    for key in _RECORD_KEYS_IN_METADATA:
        if key in meta and record.get(key) is None:
            record[key] = meta.pop(key)
    if "turn_index" in meta:
        record["turn_index"] = int_from_string(meta.pop("turn_index"), f"{field}.turn_index")
    else:
        record["turn_index"] = _user_turn(record["messages"])


def score_feedback(name: Any, value: Any, comment: Any, field: str,
                    feedback: dict[str, Any], meta: dict[str, Scalar]) -> None:
    """Fold one score (Langfuse) or annotation (OpenInference) into the record's feedback.

    ``user-feedback`` (or ``feedback`` / ``thumbs``) is the thumbs: 1 / true / "up" ... is up,
    0 / -1 / false / "down" ... is down, its comment the feedback comment. A score named after a
    failure signal (``abandoned``, ``escalated`` ...) sets that flag. Other scores are kept in the
    metadata as ``score.<name>``.
    """
    if not isinstance(name, str) or not name:
        raise AdapterError("missing_field" if name is None else "wrong_type", f"{field}.name",
                           f"{field}.name: expected the score's name")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    token = str(value).strip().lower() if isinstance(value, (str, bool, int, float)) else None
    if isinstance(value, float) and value.is_integer():
        token = str(int(value))
    if key in _THUMBS_NAMES:
        if token in _UP:
            feedback["thumbs"] = "up"
        elif token in _DOWN:
            feedback["thumbs"] = "down"
        else:
            raise AdapterError("invalid_value", f"{field}.value",
                               f"{field}.value: {value!r} is neither thumbs up (1, true, \"up\") "
                               f"nor down (0, -1, false, \"down\")")
        if isinstance(comment, str) and comment:
            feedback["comment"] = comment
    elif key in _FLAG_NAMES:
        if token in ("1", "true", "yes"):
            feedback[key] = True
        elif token in ("0", "false", "no"):
            feedback[key] = False
        else:
            raise AdapterError("invalid_value", f"{field}.value", f"{field}.value: {value!r} is not a yes/no signal")
    else:
        meta[f"score.{name}"] = scalar(value)


def iso_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise AdapterError("missing_field" if value is None else "invalid_timestamp", field,
                           f"{field}: expected an ISO 8601 time, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as err:
        raise AdapterError("invalid_timestamp", field, f"{field}: {value!r} is not an ISO 8601 time") from err
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)
