"""Adapters from the log formats people actually write into the canonical :class:`LogRecord`.

Three formats are understood:

``canonical``
    One canonical record per line (JSON Lines), as in ``schemas/log_record.schema.json``.
``openai``
    One chat-completions call per line: ``{"request": <request body>, "response": <response
    body>, ...}`` - the way applications log the OpenAI API. ``request.model`` is the model
    name, ``response.model`` the resolved snapshot (our ``model_version``), ``response.id`` the
    request id, ``response.created`` the time unless a ``timestamp`` key is present. Fields the
    API has no place for come from ``request.metadata`` (string values: ``request_id``,
    ``conversation_id``, ``turn_index``, ``task_type``, ``user_segment``; other keys become
    metadata) or from top-level keys of the line (``latency_ms``, ``timestamp``,
    ``retrieved_chunks``, ``post_processing``, ``feedback``, ``metadata``).
``otlp``
    OpenTelemetry traces exported as OTLP/JSON (the collector's file exporter writes one
    ``ExportTraceServiceRequest`` per line). Each span whose ``gen_ai.operation.name`` is a
    chat/completion operation is one record, read from the GenAI semantic-convention attributes
    (``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.response.id``,
    ``gen_ai.conversation.id``, ``gen_ai.system_instructions``, ``gen_ai.input.messages``,
    ``gen_ai.output.messages``, ``gen_ai.request.temperature`` ...). Application fields come
    from ``app.*`` attributes (``app.task_type``, ``app.turn_index``, ``app.user_segment``,
    ``app.request_id``, ``app.metadata.<key>``, and JSON strings ``app.retrieved_chunks``,
    ``app.feedback``, ``app.post_processing``). Other spans (HTTP, DB) are not LLM calls and
    are counted as skipped, not as records.

Each adapter turns one parsed JSON value into a list of ``(index, dict)`` candidates; the
dicts are validated against :class:`LogRecord` by :mod:`eval_pipeline.lib.ingestion`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable

__all__ = [
    "FORMATS",
    "AdapterError",
    "detect_format",
    "format_from_name",
    "adapt",
]

FORMATS = ("canonical", "openai", "otlp")

# Operations of the GenAI conventions that are one model call with a prompt and an output.
_LLM_OPERATIONS = {"chat", "text_completion", "generate_content"}
_OPENAI_PARAM_KEYS = (
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "n",
    "reasoning_effort",
)
_OTEL_PARAM_KEYS = {
    "gen_ai.request.temperature": "temperature",
    "gen_ai.request.max_tokens": "max_tokens",
    "gen_ai.request.top_p": "top_p",
    "gen_ai.request.top_k": "top_k",
    "gen_ai.request.frequency_penalty": "frequency_penalty",
    "gen_ai.request.presence_penalty": "presence_penalty",
    "gen_ai.request.seed": "seed",
}


class AdapterError(ValueError):
    """A value that cannot be turned into a record: says which field and why."""

    def __init__(self, reason: str, field: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message


def format_from_name(name: str) -> str | None:
    """A format declared by the file name: ``*.canonical.jsonl``, ``*.openai.jsonl``, ``*.otlp.json[l]``."""
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
        return "otlp"
    if "request" in obj and "response" in obj:
        return "openai"
    if "messages" in obj or "request_id" in obj:
        return "canonical"
    return None


def adapt(fmt: str, obj: Any) -> list[tuple[int, dict[str, Any] | AdapterError]]:
    """Candidates for canonical records from one JSON value of the given format."""
    if not isinstance(obj, dict):
        return [(0, AdapterError("not_an_object", "", f"expected a JSON object, got {type(obj).__name__}"))]
    try:
        return _ADAPTERS[fmt](obj)
    except AdapterError as err:
        return [(0, err)]
    except Exception as err:  # noqa: BLE001 - a value of an unexpected shape costs its line, never the file
        return [(0, AdapterError("adapter_error", "", f"{type(err).__name__}: {str(err)[:200]}"))]


# --------------------------------------------------------------------------------------------
# canonical


def _canonical(obj: dict[str, Any]) -> list[tuple[int, dict[str, Any] | AdapterError]]:
    return [(0, obj)]


# --------------------------------------------------------------------------------------------
# OpenAI chat-completions request/response pairs


def _content_text(content: Any, field: str) -> str:
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


def _openai_message(msg: Any, field: str) -> dict[str, Any]:
    if not isinstance(msg, dict):
        raise AdapterError("wrong_type", field, f"{field}: expected an object")
    content = _content_text(msg.get("content"), f"{field}.content")
    if not content and msg.get("tool_calls"):
        # An assistant turn that only called tools: keep the calls as text so history stays whole.
        content = json.dumps(msg["tool_calls"], sort_keys=True)
    out: dict[str, Any] = {"role": msg.get("role"), "content": content}
    if msg.get("name"):
        out["name"] = msg["name"]
    return out


def _openai(obj: dict[str, Any]) -> list[tuple[int, dict[str, Any] | AdapterError]]:
    request = obj.get("request")
    response = obj.get("response")
    if not isinstance(request, dict):
        raise AdapterError("wrong_type" if request is not None else "missing_field", "request",
                           "request: expected the request body object")
    if not isinstance(response, dict):
        raise AdapterError("wrong_type" if response is not None else "missing_field", "response",
                           "response: expected the response body object")
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise AdapterError("missing_field" if messages is None else "wrong_type", "request.messages",
                           "request.messages: expected a list of messages")
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        raise AdapterError("missing_field", "response.choices", "response.choices: no choice in the response")
    first = choices[0]
    if not isinstance(first, dict) or not isinstance(first.get("message"), dict):
        raise AdapterError("missing_field", "response.choices[0].message", "response.choices[0].message: missing")
    completion_msg = first["message"]
    completion = _content_text(completion_msg.get("content"), "response.choices[0].message.content")
    if not completion and completion_msg.get("tool_calls"):
        completion = json.dumps(completion_msg["tool_calls"], sort_keys=True)

    meta = dict(request.get("metadata") or {})
    record: dict[str, Any] = {
        "request_id": meta.pop("request_id", None) or response.get("id"),
        "messages": [_openai_message(m, f"request.messages[{i}]") for i, m in enumerate(messages)],
        "completion": completion,
        "model": request.get("model") or response.get("model"),
        "model_version": response.get("model"),
        "params": {k: request[k] for k in _OPENAI_PARAM_KEYS if k in request},
    }
    if "timestamp" in obj:
        record["timestamp"] = obj["timestamp"]
    elif "created" in response:
        record["timestamp"] = _unix_seconds(response["created"], "response.created")
    for key in ("conversation_id", "task_type", "user_segment"):
        if key in meta:
            record[key] = meta.pop(key)
    if "turn_index" in meta:
        record["turn_index"] = _int_from_string(meta.pop("turn_index"), "request.metadata.turn_index")
    for key in ("latency_ms", "retrieved_chunks", "post_processing", "feedback", "user_segment", "task_type"):
        if key in obj:
            record[key] = obj[key]
    extra_meta = obj.get("metadata") or {}
    if not isinstance(extra_meta, dict):
        raise AdapterError("wrong_type", "metadata", "metadata: expected an object")
    record["metadata"] = {**meta, **extra_meta}
    return [(0, record)]


def _unix_seconds(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AdapterError("invalid_timestamp", field, f"{field}: expected unix seconds, got {value!r}")
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError) as err:
        raise AdapterError("invalid_timestamp", field, f"{field}: {value!r} is not a valid time ({err})") from err


def _int_from_string(value: Any, field: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as err:
        raise AdapterError("wrong_type", field, f"{field}: expected an integer, got {value!r}") from err


# --------------------------------------------------------------------------------------------
# OpenTelemetry OTLP/JSON with GenAI semantic conventions


def _any_value(value: dict[str, Any]) -> Any:
    """Decode an OTLP AnyValue (intValue is a string in OTLP/JSON)."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return {kv["key"]: _any_value(kv.get("value", {})) for kv in value["kvlistValue"].get("values", [])}
    return None


def _attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: _any_value(item.get("value", {})) for item in items or [] if "key" in item}


def _json_attr(attrs: dict[str, Any], key: str, default: Any) -> Any:
    raw = attrs.get(key)
    if raw is None:
        return default
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise AdapterError("invalid_json", key, f"attribute {key}: not valid JSON ({err.msg})") from err


def _otel_parts_text(parts: Any, field: str) -> str:
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise AdapterError("wrong_type", field, f"{field}: expected a list of parts")
    texts = []
    for part in parts:
        if isinstance(part, dict) and part.get("type") == "text":
            texts.append(str(part.get("content", "")))
        elif isinstance(part, dict) and part.get("type") in ("tool_call", "tool_call_response"):
            texts.append(json.dumps(part, sort_keys=True))
        elif isinstance(part, dict):
            texts.append(f"[{part.get('type', 'part')}]")
    return "\n".join(texts)


def _otel_messages(raw: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise AdapterError("wrong_type", field, f"{field}: expected a list of messages")
    out = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise AdapterError("wrong_type", f"{field}[{i}]", f"{field}[{i}]: expected an object")
        parts = msg.get("parts", msg.get("content"))
        out.append({"role": msg.get("role"), "content": _otel_parts_text(parts, f"{field}[{i}].parts")})
    return out


def _otel_span(span: dict[str, Any], resource: dict[str, Any]) -> dict[str, Any]:
    attrs = _attributes(span.get("attributes"))
    messages: list[dict[str, Any]] = []
    system = _json_attr(attrs, "gen_ai.system_instructions", None)
    if system is not None:
        messages.append({"role": "system", "content": _otel_parts_text(system, "gen_ai.system_instructions")})
    messages += _otel_messages(_json_attr(attrs, "gen_ai.input.messages", []), "gen_ai.input.messages")
    outputs = _otel_messages(_json_attr(attrs, "gen_ai.output.messages", []), "gen_ai.output.messages")
    if not outputs:
        raise AdapterError("missing_field", "gen_ai.output.messages", "gen_ai.output.messages: the span has no output")

    start = span.get("startTimeUnixNano")
    end = span.get("endTimeUnixNano")
    try:
        start_ns = int(start)
    except (TypeError, ValueError) as err:
        raise AdapterError("invalid_timestamp", "startTimeUnixNano", f"startTimeUnixNano: {start!r} is not a time") from err
    record: dict[str, Any] = {
        "request_id": attrs.get("app.request_id") or attrs.get("gen_ai.response.id") or span.get("spanId"),
        "conversation_id": attrs.get("gen_ai.conversation.id"),
        "timestamp": _unix_seconds(start_ns / 1e9, "startTimeUnixNano"),
        "messages": messages,
        "completion": outputs[0]["content"],
        "model": attrs.get("gen_ai.request.model") or attrs.get("gen_ai.response.model"),
        "model_version": attrs.get("gen_ai.response.model"),
        "params": {name: attrs[key] for key, name in _OTEL_PARAM_KEYS.items() if key in attrs},
        "task_type": attrs.get("app.task_type"),
        "user_segment": attrs.get("app.user_segment"),
        "retrieved_chunks": _json_attr(attrs, "app.retrieved_chunks", []),
        "post_processing": _json_attr(attrs, "app.post_processing", []),
        "feedback": _json_attr(attrs, "app.feedback", {}),
        "metadata": {k[len("app.metadata."):]: v for k, v in attrs.items() if k.startswith("app.metadata.")},
    }
    if "app.turn_index" in attrs:
        record["turn_index"] = attrs["app.turn_index"]
    if end is not None:
        try:
            record["latency_ms"] = (int(end) - start_ns) / 1e6
        except (TypeError, ValueError) as err:
            raise AdapterError("wrong_type", "endTimeUnixNano", f"endTimeUnixNano: {end!r} is not a time") from err
    if "service.name" in resource:
        record["metadata"].setdefault("service_name", resource["service.name"])
    return {k: v for k, v in record.items() if v is not None}


def _otlp(obj: dict[str, Any]) -> list[tuple[int, dict[str, Any] | AdapterError]]:
    out: list[tuple[int, dict[str, Any] | AdapterError]] = []
    resource_spans = obj.get("resourceSpans")
    if not isinstance(resource_spans, list):
        raise AdapterError("wrong_type", "resourceSpans", "resourceSpans: expected a list")
    index = 0
    for rs in resource_spans:
        resource = _attributes((rs.get("resource") or {}).get("attributes"))
        for ss in rs.get("scopeSpans") or []:
            for span in ss.get("spans") or []:
                attrs = _attributes(span.get("attributes"))
                if attrs.get("gen_ai.operation.name") not in _LLM_OPERATIONS:
                    continue  # not a model call (HTTP, DB, retrieval spans)
                try:
                    out.append((index, _otel_span(span, resource)))
                except AdapterError as err:
                    out.append((index, err))
                index += 1
    return out


def count_skipped_spans(obj: Any) -> int:
    """Spans in an OTLP line that are not model calls (reported, never counted as records)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("resourceSpans"), list):
        return 0  # the adapter reports the structural error
    total = 0
    try:
        for rs in obj.get("resourceSpans") or []:
            for ss in rs.get("scopeSpans") or []:
                for span in ss.get("spans") or []:
                    if _attributes(span.get("attributes")).get("gen_ai.operation.name") not in _LLM_OPERATIONS:
                        total += 1
    except Exception:  # noqa: BLE001 - a malformed structure: adapt() quarantines the line
        return 0
    return total


_ADAPTERS: dict[str, Callable[[dict[str, Any]], list[tuple[int, dict[str, Any] | AdapterError]]]] = {
    "canonical": _canonical,
    "openai": _openai,
    "otlp": _otlp,
}
