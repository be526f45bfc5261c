"""The ``otlp`` format: OpenTelemetry traces in OTLP/JSON with the GenAI semantic conventions.

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
"""

from __future__ import annotations

import json
from typing import Any

from eval_pipeline.lib.ingest.adapters.common import AdapterError, Candidates, unix_seconds

__all__ = ["candidates", "count_skipped", "json_attr"]

# Operations of the GenAI conventions that are one model call with a prompt and an output.
_LLM_OPERATIONS = {"chat", "text_completion", "generate_content"}
_OTEL_PARAM_KEYS = {
    "gen_ai.request.temperature": "temperature",
    "gen_ai.request.max_tokens": "max_tokens",
    "gen_ai.request.top_p": "top_p",
    "gen_ai.request.top_k": "top_k",
    "gen_ai.request.frequency_penalty": "frequency_penalty",
    "gen_ai.request.presence_penalty": "presence_penalty",
    "gen_ai.request.seed": "seed",
}


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


def json_attr(attrs: dict[str, Any], key: str, default: Any) -> Any:
    """Attribute ``key`` decoded from JSON text (``default`` when absent, as is when not a string)."""
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
    system = json_attr(attrs, "gen_ai.system_instructions", None)
    if system is not None:
        messages.append({"role": "system", "content": _otel_parts_text(system, "gen_ai.system_instructions")})
    messages += _otel_messages(json_attr(attrs, "gen_ai.input.messages", []), "gen_ai.input.messages")
    outputs = _otel_messages(json_attr(attrs, "gen_ai.output.messages", []), "gen_ai.output.messages")
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
        "timestamp": unix_seconds(start_ns / 1e9, "startTimeUnixNano"),
        "messages": messages,
        "completion": outputs[0]["content"],
        "model": attrs.get("gen_ai.request.model") or attrs.get("gen_ai.response.model"),
        "model_version": attrs.get("gen_ai.response.model"),
        "params": {name: attrs[key] for key, name in _OTEL_PARAM_KEYS.items() if key in attrs},
        "task_type": attrs.get("app.task_type"),
        "user_segment": attrs.get("app.user_segment"),
        "retrieved_chunks": json_attr(attrs, "app.retrieved_chunks", []),
        "post_processing": json_attr(attrs, "app.post_processing", []),
        "feedback": json_attr(attrs, "app.feedback", {}),
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


def candidates(obj: dict[str, Any]) -> Candidates:
    """One candidate per GenAI chat/completion span of the line."""
    out: Candidates = []
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


def count_skipped(obj: Any) -> int:
    """The line's spans that are not model calls (HTTP, DB, retrieval)."""
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
