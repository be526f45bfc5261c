"""Adapters from the log formats people actually write into the canonical :class:`LogRecord`.

Five formats are understood:

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
``openinference``
    OTLP/JSON as above whose spans carry the OpenInference semantic conventions
    (https://github.com/Arize-ai/openinference, ``spec/semantic_conventions.md``), as Arize
    Phoenix and the OpenInference instrumentations write them. Each span whose
    ``openinference.span.kind`` is ``LLM`` is one record: the flattened list attributes
    ``llm.input_messages.<i>.message.role`` / ``.message.content`` (or
    ``.message.contents.<j>.message_content.text``) and ``llm.output_messages...``, else the
    legacy ``llm.prompts.<i>.prompt.text`` / ``llm.choices.<i>.completion.text``, else
    ``input.value`` / ``output.value`` read by their ``input.mime_type`` / ``output.mime_type``;
    ``llm.model_name`` (``llm.request.model_name`` / ``llm.response.model_name`` when set),
    ``llm.invocation_parameters`` (JSON) as params, ``llm.token_count.*``, ``session.id`` as the
    conversation, ``user.id``, ``tag.tags`` and ``metadata`` (JSON) as metadata, the span's
    times, ids and status. The documents of ``RETRIEVER`` spans
    (``retrieval.documents.<i>.document.id`` / ``.content`` / ``.score``) become the retrieved
    chunks of the LLM spans of the same trace in the same line that start after the retrieval
    started. Each line is read on its own: a retriever exported in another line than its LLM
    span is not attached. Every span that is not ``LLM`` (``RETRIEVER`` included) is counted as
    skipped.
``langfuse``
    Langfuse traces as its public API returns them (``GET /api/public/traces/{traceId}``: the
    trace with ``observations`` and ``scores``; API reference at https://api.reference.langfuse.com,
    data model at https://langfuse.com/docs/tracing-data-model), or one observation object per line (the
    items of ``GET /api/public/observations``). Each observation of type ``GENERATION`` is one
    record (``input``, ``output``, ``model``, ``modelParameters``, ``usageDetails``/``usage``,
    ``startTime``/``endTime``/``completionStartTime``, ``metadata``, ``level``); the trace gives
    ``sessionId`` (the conversation), ``userId``, ``tags`` and its scores, which become the
    feedback of the generations they are about. Other observations are counted as skipped.

For ``openinference`` and ``langfuse`` a ``task_type``, ``user_segment``, ``turn_index`` or
``conversation_id`` key of the metadata fills that field of the record; without one,
``turn_index`` is the number of user messages of the prompt before the last. A span's ERROR
status, or a generation's ERROR level, is kept as a failed post-processing step
(``span_status`` / ``observation_level``, ``ok`` false, its message as detail), the record
model's one place for a failure the user saw.

Each adapter turns one parsed JSON value into a list of ``(index, dict)`` candidates; the
dicts are validated against :class:`LogRecord` by :mod:`eval_pipeline.lib.ingestion`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Callable

__all__ = [
    "FORMATS",
    "AdapterError",
    "detect_format",
    "format_from_name",
    "adapt",
]

FORMATS = ("canonical", "openai", "otlp", "openinference", "langfuse")

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
        return "openinference" if _has_openinference_span(obj) else "otlp"
    if "request" in obj and "response" in obj:
        return "openai"
    if _looks_like_langfuse(obj):
        return "langfuse"
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


def count_skipped_spans(obj: Any, fmt: str = "otlp") -> int:
    """Spans (or Langfuse observations) of a line that are not model calls: reported, never
    counted as records. Zero for the one-record-per-line formats."""
    counter = _SKIPPED.get(fmt)
    return counter(obj) if counter is not None else 0


def _otlp_skipped(obj: Any) -> int:
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


# --------------------------------------------------------------------------------------------
# helpers shared by the trace formats (OpenInference, Langfuse)

_Scalar = str | int | float | bool | None
_ROLE_ALIASES = {"human": "user", "ai": "assistant", "model": "assistant", "function": "tool"}
_RECORD_KEYS_IN_METADATA = ("task_type", "user_segment", "conversation_id")
# Score / annotation names read as the user's thumbs, and values read as up or down.
_THUMBS_NAMES = {"user_feedback", "feedback", "thumbs", "user_thumbs"}
_UP = {"up", "thumbs_up", "positive", "good", "helpful", "like", "liked", "1", "true", "yes", "\U0001f44d"}
_DOWN = {"down", "thumbs_down", "negative", "bad", "unhelpful", "dislike", "disliked", "0", "-1", "false", "no",
         "\U0001f44e"}
_FLAG_NAMES = ("abandoned", "clarification_requested", "parse_error", "regenerated", "escalated")


def _scalar(value: Any) -> _Scalar:
    """A metadata or params value: scalars as they are, anything nested as JSON text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _scalar_map(value: Any, field: str) -> dict[str, _Scalar]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AdapterError("wrong_type", field, f"{field}: expected an object, got {type(value).__name__}")
    return {str(k): _scalar(v) for k, v in value.items()}


def _text(value: Any) -> str:
    """Free-form content as text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _role(value: Any) -> Any:
    # Instrumentations write the provider's or the framework's role names; map the common
    # synonyms, leave anything else for the contract to reject with its field path.
    return _ROLE_ALIASES.get(value.lower(), value.lower()) if isinstance(value, str) else value


def _chat_message(msg: Any, field: str) -> dict[str, Any]:
    """A message logged in the OpenAI chat shape (``role``, ``content`` string or parts, ``tool_calls``)."""
    if isinstance(msg, str):
        return {"role": "user", "content": msg}
    if not isinstance(msg, dict):
        raise AdapterError("wrong_type", field, f"{field}: expected a message object")
    content = msg.get("content")
    if isinstance(content, (str, list)) or content is None:
        text = _content_text(content, f"{field}.content")
    else:
        text = _text(content)
    if not text and msg.get("tool_calls"):
        text = _text(msg["tool_calls"])
    out: dict[str, Any] = {"role": _role(msg.get("role")), "content": text}
    if isinstance(msg.get("name"), str) and msg["name"]:
        out["name"] = msg["name"]
    return out


def _user_turn(messages: list[dict[str, Any]]) -> int:
    """The turn of a prompt that carries its history: user messages before the last one."""
    return max(0, sum(1 for m in messages if m.get("role") == "user") - 1)


def _apply_metadata_fields(record: dict[str, Any], meta: dict[str, _Scalar], field: str) -> None:
    """Record fields an application put in the metadata (the formats have no place of their own for them)."""
    for key in _RECORD_KEYS_IN_METADATA:
        if key in meta and record.get(key) is None:
            record[key] = meta.pop(key)
    if "turn_index" in meta:
        record["turn_index"] = _int_from_string(meta.pop("turn_index"), f"{field}.turn_index")
    else:
        record["turn_index"] = _user_turn(record["messages"])


def _score_feedback(name: Any, value: Any, comment: Any, field: str,
                    feedback: dict[str, Any], meta: dict[str, _Scalar]) -> None:
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
        meta[f"score.{name}"] = _scalar(value)


def _iso_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise AdapterError("missing_field" if value is None else "invalid_timestamp", field,
                           f"{field}: expected an ISO 8601 time, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as err:
        raise AdapterError("invalid_timestamp", field, f"{field}: {value!r} is not an ISO 8601 time") from err
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------------------------
# OpenInference spans in OTLP/JSON

_OI_KIND = "openinference.span.kind"
_OI_MESSAGE = re.compile(r"llm\.(input|output)_messages\.(\d+)\.message\.(.+)")
_OI_CONTENT = re.compile(r"contents\.(\d+)\.message_content\.(.+)")
_OI_DOCUMENT = re.compile(r"retrieval\.documents\.(\d+)\.document\.(.+)")
_OI_PROMPT = re.compile(r"llm\.prompts\.(\d+)\.prompt\.text")
_OI_CHOICE = re.compile(r"llm\.choices\.(\d+)\.completion\.text")
_OI_ANNOTATION = re.compile(
    r"(?:annotations\.(\d+)\.annotation|evaluations\.(\d+)\.evaluation)\.(name|label|score|explanation)")
_STATUS_ERROR = (2, "2", "STATUS_CODE_ERROR", "ERROR")


def _strict_any_value(value: Any, field: str) -> Any:
    """An OTLP AnyValue, with a precise error when it is not one."""
    if not isinstance(value, dict):
        raise AdapterError("wrong_type", field, f"{field}: expected an AnyValue object")
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return _int_from_string(value["intValue"], f"{field}.intValue")
    if "doubleValue" in value:
        try:
            return float(value["doubleValue"])
        except (TypeError, ValueError) as err:
            raise AdapterError("wrong_type", f"{field}.doubleValue", f"{field}.doubleValue: not a number") from err
    if "boolValue" in value:
        return value["boolValue"]
    if "arrayValue" in value:
        items = (value["arrayValue"] or {}).get("values") if isinstance(value["arrayValue"], dict) else None
        if not isinstance(items, list):
            raise AdapterError("wrong_type", f"{field}.arrayValue",
                               f"{field}.arrayValue: expected {{\"values\": [...]}}")
        return [_strict_any_value(v, f"{field}.arrayValue.values[{i}]") for i, v in enumerate(items)]
    if "kvlistValue" in value:
        items = (value["kvlistValue"] or {}).get("values") if isinstance(value["kvlistValue"], dict) else None
        if not isinstance(items, list):
            raise AdapterError("wrong_type", f"{field}.kvlistValue",
                               f"{field}.kvlistValue: expected {{\"values\": [...]}}")
        return _strict_attributes(items, f"{field}.kvlistValue.values")
    return None


def _strict_attributes(items: Any, field: str) -> dict[str, Any]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise AdapterError("wrong_type", field, f"{field}: expected a list of key/value objects")
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise AdapterError("wrong_type", f"{field}[{i}]",
                               f"{field}[{i}]: expected {{\"key\": <string>, \"value\": ...}}")
        out[item["key"]] = _strict_any_value(item.get("value", {}), f"{field}[{i}].value")
    return out


def _list_at(container: dict[str, Any], key: str, field: str) -> list[Any]:
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise AdapterError("wrong_type", field, f"{field}: expected a list")
    return value


def _walk_spans(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]] | AdapterError]:
    """Every span of an OTLP line as (path, resource attributes, span, attributes); a part that
    cannot be read is an :class:`AdapterError` naming its path, in its place."""
    resource_spans = obj.get("resourceSpans")
    if not isinstance(resource_spans, list):
        raise AdapterError("wrong_type", "resourceSpans", "resourceSpans: expected a list")
    out: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]] | AdapterError] = []
    for i, rs in enumerate(resource_spans):
        where = f"resourceSpans[{i}]"
        try:
            if not isinstance(rs, dict):
                raise AdapterError("wrong_type", where, f"{where}: expected an object")
            resource = rs.get("resource") or {}
            if not isinstance(resource, dict):
                raise AdapterError("wrong_type", f"{where}.resource", f"{where}.resource: expected an object")
            resource_attrs = _strict_attributes(resource.get("attributes"), f"{where}.resource.attributes")
            scopes = _list_at(rs, "scopeSpans", f"{where}.scopeSpans")
        except AdapterError as err:
            out.append(err)
            continue
        for j, ss in enumerate(scopes):
            at = f"{where}.scopeSpans[{j}]"
            try:
                if not isinstance(ss, dict):
                    raise AdapterError("wrong_type", at, f"{at}: expected an object")
                spans = _list_at(ss, "spans", f"{at}.spans")
            except AdapterError as err:
                out.append(err)
                continue
            for k, span in enumerate(spans):
                path = f"{at}.spans[{k}]"
                try:
                    if not isinstance(span, dict):
                        raise AdapterError("wrong_type", path, f"{path}: expected a span object")
                    attrs = _strict_attributes(span.get("attributes"), f"{path}.attributes")
                    out.append((path, resource_attrs, span, attrs))
                except AdapterError as err:
                    out.append(err)
    return out


def _has_openinference_span(obj: dict[str, Any]) -> bool:
    """Whether any span of the line carries ``openinference.span.kind`` (every span is looked at:
    an instrumented app often exports a plain HTTP span first)."""
    try:
        for rs in obj.get("resourceSpans") or []:
            for ss in (rs.get("scopeSpans") or []) if isinstance(rs, dict) else []:
                for span in (ss.get("spans") or []) if isinstance(ss, dict) else []:
                    attributes = span.get("attributes") if isinstance(span, dict) else None
                    if isinstance(attributes, list) and any(
                            isinstance(a, dict) and a.get("key") == _OI_KIND for a in attributes):
                        return True
    except (AttributeError, TypeError):
        return False
    return False


def _oi_kind(attrs: dict[str, Any]) -> str:
    kind = attrs.get(_OI_KIND)
    return kind.upper() if isinstance(kind, str) else ""


def _oi_messages(attrs: dict[str, Any], direction: str) -> list[dict[str, Any]]:
    """``llm.<direction>_messages``: the flattened ``.<i>.message.*`` keys, or one attribute
    holding the list (an array of key/value lists, or JSON text)."""
    whole = attrs.get(f"llm.{direction}_messages")
    field = f"llm.{direction}_messages"
    if whole is not None:
        if isinstance(whole, str):
            whole = _json_attr(attrs, field, [])
        if not isinstance(whole, list):
            raise AdapterError("wrong_type", field, f"{field}: expected a list of messages")
        flat = {}
        for i, msg in enumerate(whole):
            if not isinstance(msg, dict):
                raise AdapterError("wrong_type", f"{field}.{i}", f"{field}.{i}: expected a message object")
            for key, value in msg.items():
                flat[(i, key.removeprefix("message."))] = value
    else:
        flat = {}
        for key, value in attrs.items():
            match = _OI_MESSAGE.fullmatch(key)
            if match and match.group(1) == direction:
                flat[(int(match.group(2)), match.group(3))] = value
    by_index: dict[int, dict[str, Any]] = {}
    for (i, suffix), value in flat.items():
        by_index.setdefault(i, {})[suffix] = value
    out = []
    for i in sorted(by_index):
        out.append(_oi_message(by_index[i], f"{field}.{i}.message"))
    return out


def _oi_message(parts: dict[str, Any], field: str) -> dict[str, Any]:
    content = parts.get("content")
    if content is not None and not isinstance(content, str):
        raise AdapterError("wrong_type", f"{field}.content", f"{field}.content: expected a string")
    if content is None:
        pieces: dict[int, dict[str, Any]] = {}
        for suffix, value in parts.items():
            match = _OI_CONTENT.fullmatch(suffix)
            if match:
                pieces.setdefault(int(match.group(1)), {})[match.group(2)] = value
        texts = []
        for j in sorted(pieces):
            piece = pieces[j]
            if "text" in piece:
                texts.append(_text(piece["text"]))
            else:
                texts.append(f"[{piece.get('type', 'part')}]")  # images, audio: a marker, not the bytes
        content = "\n".join(texts)
    if not content:
        calls = {suffix: value for suffix, value in parts.items() if suffix.startswith("tool_calls.")}
        if calls:
            content = json.dumps(calls, sort_keys=True, default=str)
    out: dict[str, Any] = {"role": _role(parts.get("role")), "content": content}
    if isinstance(parts.get("name"), str) and parts["name"]:
        out["name"] = parts["name"]
    return out


def _oi_indexed_texts(attrs: dict[str, Any], pattern: re.Pattern[str]) -> list[str]:
    found = {int(m.group(1)): _text(v) for k, v in attrs.items() if (m := pattern.fullmatch(k))}
    return [found[i] for i in sorted(found)]


def _oi_value(attrs: dict[str, Any], kind: str) -> tuple[Any, bool]:
    """``input.value`` / ``output.value`` decoded by its mime type: (value, found)."""
    if f"{kind}.value" not in attrs:
        return None, False
    raw = attrs[f"{kind}.value"]
    mime = attrs.get(f"{kind}.mime_type")
    if isinstance(raw, str) and isinstance(mime, str) and mime.split(";")[0].strip().lower() == "application/json":
        return _json_attr(attrs, f"{kind}.value", None), True
    return raw, True


def _oi_input(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    messages = _oi_messages(attrs, "input")
    if messages:
        return messages
    prompts = _oi_indexed_texts(attrs, _OI_PROMPT)
    if prompts:
        return [{"role": "user", "content": p} for p in prompts]
    value, found = _oi_value(attrs, "input")
    if not found or value is None:
        raise AdapterError("missing_field", "llm.input_messages",
                           "llm.input_messages: the LLM span has no input messages, prompts or input.value")
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        value = value["messages"]  # a logged request body
    if isinstance(value, list):
        return [_chat_message(m, f"input.value[{i}]") for i, m in enumerate(value)]
    return [{"role": "user", "content": _text(value)}]


def _oi_output(attrs: dict[str, Any], failed: bool) -> str:
    messages = _oi_messages(attrs, "output")
    if messages:
        return messages[0]["content"]
    choices = _oi_indexed_texts(attrs, _OI_CHOICE)
    if choices:
        return choices[0]
    value, found = _oi_value(attrs, "output")
    if isinstance(value, dict):
        choice = (value.get("choices") or [None])[0] if isinstance(value.get("choices"), list) else None
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            return _chat_message(choice["message"], "output.value.choices[0].message")["content"]
        if isinstance(choice, dict) and isinstance(choice.get("text"), str):
            return choice["text"]
        if isinstance(value.get("content"), (str, list)):
            return _chat_message(value, "output.value")["content"]
    if found and value is not None:
        return _text(value)
    if failed:
        return ""  # the call failed before the model answered; the status says so
    raise AdapterError("missing_field", "llm.output_messages",
                       "llm.output_messages: the LLM span has no output messages, choices or output.value")


def _oi_documents(attrs: dict[str, Any], span_id: Any) -> list[tuple[int, dict[str, Any]]]:
    docs: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        match = _OI_DOCUMENT.fullmatch(key)
        if match:
            docs.setdefault(int(match.group(1)), {})[match.group(2)] = value
    out = []
    for n in sorted(docs):
        doc, field = docs[n], f"retrieval.documents.{n}.document"
        where = f" (retriever span {span_id})"
        if not isinstance(doc.get("content"), str):
            raise AdapterError("missing_field" if "content" not in doc else "wrong_type", f"{field}.content",
                               f"{field}.content: expected the document's text{where}")
        score = doc.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise AdapterError("wrong_type", f"{field}.score", f"{field}.score: expected a number{where}")
        doc_id = doc.get("id")
        out.append((n, {"doc_id": str(doc_id) if doc_id not in (None, "") else f"{span_id}:{n}",
                        "text": doc["content"], **_chunk_score(score)}))
    return out


def _chunk_score(score: float | None) -> dict[str, Any]:
    """The record keeps scores on [0, 1]. A retriever without scores gives none; one on another
    scale (a distance, BM25, a negative cosine) keeps its document with no score and the raw value
    in ``_raw_score``, which the LLM record moves to its metadata (``retrieval_raw_scores``)."""
    if score is None or 0.0 <= score <= 1.0:
        return {"score": score}
    return {"score": None, "_raw_score": score}


def _span_start_end(span: dict[str, Any]) -> tuple[int, int | None]:
    start = span.get("startTimeUnixNano")
    try:
        start_ns = int(start)
    except (TypeError, ValueError) as err:
        raise AdapterError("invalid_timestamp", "startTimeUnixNano",
                           f"startTimeUnixNano: {start!r} is not a time") from err
    end = span.get("endTimeUnixNano")
    if end is None:
        return start_ns, None
    try:
        return start_ns, int(end)
    except (TypeError, ValueError) as err:
        raise AdapterError("wrong_type", "endTimeUnixNano", f"endTimeUnixNano: {end!r} is not a time") from err


def _oi_annotations(attrs: dict[str, Any], feedback: dict[str, Any], meta: dict[str, _Scalar]) -> None:
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for key, value in attrs.items():
        match = _OI_ANNOTATION.fullmatch(key)
        if match:
            kind = "annotations" if match.group(1) is not None else "evaluations"
            index = int(match.group(1) if match.group(1) is not None else match.group(2))
            found.setdefault((kind, index), {})[match.group(3)] = value
    for (kind, index), ann in sorted(found.items()):
        value = ann["label"] if ann.get("label") is not None else ann.get("score")
        _score_feedback(ann.get("name"), value, ann.get("explanation"), f"{kind}.{index}", feedback, meta)


def _oi_llm_span(span: dict[str, Any], attrs: dict[str, Any], resource: dict[str, Any],
                 chunks: list[dict[str, Any]]) -> dict[str, Any]:
    status = span.get("status") if isinstance(span.get("status"), dict) else {}
    failed = status.get("code") in _STATUS_ERROR
    messages = _oi_input(attrs)
    completion = _oi_output(attrs, failed)
    start_ns, end_ns = _span_start_end(span)
    request_id = span.get("spanId")  # the trace id is shared by the trace's spans: kept as metadata
    if not isinstance(request_id, str) or not request_id:
        raise AdapterError("missing_field" if request_id in (None, "") else "wrong_type", "spanId",
                           f"spanId: expected the span's id, got {request_id!r}")
    model = attrs.get("llm.request.model_name") or attrs.get("llm.model_name") or attrs.get("llm.response.model_name")
    if not isinstance(model, str) or not model:
        raise AdapterError("missing_field" if model is None else "wrong_type", "llm.model_name",
                           "llm.model_name: the LLM span names no model")
    params = _json_attr(attrs, "llm.invocation_parameters", {})
    meta = _scalar_map(_json_attr(attrs, "metadata", {}), "metadata")
    for key in ("user.id", "llm.provider", "llm.system"):
        if attrs.get(key) is not None:
            meta[key.replace(".", "_")] = _scalar(attrs[key])
    if isinstance(attrs.get("tag.tags"), list):
        meta["tags"] = ",".join(str(t) for t in attrs["tag.tags"])
    meta.update({k.removeprefix("llm."): _scalar(v) for k, v in attrs.items() if k.startswith("llm.token_count.")})
    if isinstance(span.get("traceId"), str):
        meta["trace_id"] = span["traceId"]
    if "service.name" in resource:
        meta.setdefault("service_name", _scalar(resource["service.name"]))
    feedback: dict[str, Any] = {}
    _oi_annotations(attrs, feedback, meta)
    record: dict[str, Any] = {
        "request_id": request_id,
        "conversation_id": attrs.get("session.id"),
        "timestamp": _unix_seconds(start_ns / 1e9, "startTimeUnixNano"),
        "messages": messages,
        "completion": completion,
        "model": model,
        "model_version": attrs.get("llm.response.model_name") or attrs.get("llm.model_name"),
        "params": _scalar_map(params, "llm.invocation_parameters"),
        "retrieved_chunks": chunks,
        "feedback": feedback,
        "metadata": meta,
    }
    if end_ns is not None:
        record["latency_ms"] = (end_ns - start_ns) / 1e6
    if failed:
        record["post_processing"] = [{"name": "span_status", "ok": False,
                                      "detail": _text(status.get("message") or "ERROR")}]
    _apply_metadata_fields(record, meta, "metadata")
    return {k: v for k, v in record.items() if v is not None}


def _trace_key(span: dict[str, Any]) -> str | None:
    trace_id = span.get("traceId")
    return trace_id if isinstance(trace_id, str) and trace_id else None  # no trace id: nothing to join on


def _openinference(obj: dict[str, Any]) -> list[tuple[int, dict[str, Any] | AdapterError]]:
    walked = _walk_spans(obj)
    # Retrievals per trace, in the line: (start, documents or the error that made them unreadable).
    retrievals: dict[Any, list[tuple[int | None, list[dict[str, Any]] | AdapterError]]] = {}
    for item in walked:
        if isinstance(item, AdapterError) or _oi_kind(item[3]) != "RETRIEVER":
            continue
        _, _, span, attrs = item
        try:
            docs: list[dict[str, Any]] | AdapterError = [d for _, d in _oi_documents(attrs, span.get("spanId"))]
        except AdapterError as err:
            docs = err
        try:
            start: int | None = int(span.get("startTimeUnixNano"))
        except (TypeError, ValueError):
            start = None  # unknown: attached to every LLM span of the trace
        retrievals.setdefault(_trace_key(span), []).append((start, docs))
    out: list[tuple[int, dict[str, Any] | AdapterError]] = []
    for item in walked:
        if isinstance(item, AdapterError):
            out.append((len(out), item))
            continue
        path, resource, span, attrs = item
        if _oi_kind(attrs) != "LLM":
            continue  # counted by count_skipped_spans
        try:
            llm_start = _span_start_end(span)[0]
            chunks: list[dict[str, Any]] = []
            key = _trace_key(span)
            for start, docs in sorted(retrievals.get(key, []) if key else [], key=lambda r: r[0] or 0):
                if start is not None and start > llm_start:
                    continue  # retrieved after this call began: not part of its prompt
                if isinstance(docs, AdapterError):
                    raise docs
                chunks += docs
            chunks = [dict(c) for c in chunks]  # a retrieval may feed several LLM spans
            raw = {c["doc_id"]: c.pop("_raw_score") for c in chunks if "_raw_score" in c}
            record = _oi_llm_span(span, attrs, resource, chunks)
            if raw:
                record["metadata"]["retrieval_raw_scores"] = json.dumps(raw, sort_keys=True)
            out.append((len(out), record))
        except AdapterError as err:
            # The field is the attribute (what to fix); the message says which span of the line.
            span_id = span.get("spanId") if isinstance(span.get("spanId"), str) else "?"
            out.append((len(out), AdapterError(err.reason, err.field, f"{path} (span {span_id}): {err.message}")))
    return out


def _openinference_skipped(obj: Any) -> int:
    if not isinstance(obj, dict):
        return 0
    try:
        walked = _walk_spans(obj)
    except AdapterError:
        return 0  # the adapter reports the structural error
    return sum(1 for item in walked if not isinstance(item, AdapterError) and _oi_kind(item[3]) != "LLM")


# --------------------------------------------------------------------------------------------
# Langfuse traces and observations (public API JSON)

_LANGFUSE_TYPES = {"GENERATION", "SPAN", "EVENT", "AGENT", "TOOL", "CHAIN", "RETRIEVER", "EVALUATOR",
                   "EMBEDDING", "GUARDRAIL"}


def _looks_like_langfuse(obj: dict[str, Any]) -> bool:
    if isinstance(obj.get("observations"), list) and ("scores" in obj or "sessionId" in obj or "id" in obj):
        return True  # a trace with its observations
    kind = obj.get("type")
    return isinstance(kind, str) and kind.upper() in _LANGFUSE_TYPES and "startTime" in obj and "traceId" in obj


def _langfuse_parts(obj: dict[str, Any]) -> tuple[dict[str, Any], list[Any], list[Any], str]:
    """(trace, observations, scores, field prefix of an observation) of one line."""
    if "observations" not in obj:
        return {}, [obj], [], ""
    observations = obj["observations"]
    if not isinstance(observations, list):
        raise AdapterError("wrong_type", "observations", "observations: expected a list of observation objects")
    scores = obj.get("scores") or []
    if not isinstance(scores, list):
        raise AdapterError("wrong_type", "scores", "scores: expected a list of score objects")
    return obj, observations, scores, "observations"


def _langfuse_type(observation: Any, field: str) -> str:
    if not isinstance(observation, dict):
        hint = " (the trace list gives observation ids only; export each trace with GET /api/public/traces/{id})" \
            if isinstance(observation, str) else ""
        raise AdapterError("wrong_type", field, f"{field}: expected an observation object{hint}")
    kind = observation.get("type")
    if not isinstance(kind, str):
        raise AdapterError("missing_field" if kind is None else "wrong_type", f"{field}.type".lstrip("."),
                           f"{field}.type: expected GENERATION, SPAN, EVENT ...".lstrip("."))
    return kind.upper()


def _langfuse_generation(obs: dict[str, Any], trace: dict[str, Any], scores: list[Any], field: str) -> dict[str, Any]:
    def at(name: str) -> str:
        return f"{field}.{name}" if field else name

    raw_input = obs.get("input")
    if raw_input is None:
        raise AdapterError("missing_field", at("input"), f"{at('input')}: the generation has no input")
    if isinstance(raw_input, dict) and isinstance(raw_input.get("messages"), list):
        raw_input = raw_input["messages"]
    if isinstance(raw_input, list):
        messages = [_chat_message(m, f"{at('input')}[{i}]") for i, m in enumerate(raw_input)]
    else:
        messages = [{"role": "user", "content": _text(raw_input)}]

    failed = isinstance(obs.get("level"), str) and obs["level"].upper() == "ERROR"
    output = obs.get("output")
    if isinstance(output, dict) and isinstance(output.get("choices"), list) and output["choices"] \
            and isinstance(output["choices"][0], dict):
        choice = output["choices"][0]  # a logged response body: its first choice
        output = choice["message"] if "message" in choice else choice.get("text", choice)
    if output is None:
        if not failed:
            raise AdapterError("missing_field", at("output"), f"{at('output')}: the generation has no output")
        completion = ""
    elif isinstance(output, dict) and ("content" in output or "tool_calls" in output):
        completion = _chat_message(output, at("output"))["content"]
    elif isinstance(output, list) and output and all(isinstance(m, dict) for m in output):
        completion = _chat_message(output[-1], f"{at('output')}[{len(output) - 1}]")["content"]
    else:
        completion = _text(output)

    start = _iso_time(obs.get("startTime"), at("startTime"))
    if not isinstance(obs.get("model"), str) or not obs["model"]:
        raise AdapterError("missing_field" if obs.get("model") is None else "wrong_type", at("model"),
                           f"{at('model')}: the generation names no model")
    request_id = obs.get("id")
    if not isinstance(request_id, str) or not request_id:
        raise AdapterError("missing_field" if request_id is None else "wrong_type", at("id"),
                           f"{at('id')}: expected the observation's id")
    trace_meta = trace.get("metadata")
    meta: dict[str, _Scalar] = _scalar_map(trace_meta, "metadata") if isinstance(trace_meta, dict) else {}
    if trace_meta is not None and not isinstance(trace_meta, dict):
        meta["trace_metadata"] = _scalar(trace_meta)  # Langfuse takes any JSON here
    if obs.get("metadata") is not None:
        if isinstance(obs["metadata"], dict):
            meta.update(_scalar_map(obs["metadata"], at("metadata")))
        else:
            meta["metadata"] = _scalar(obs["metadata"])
    for key, name in (("userId", "user_id"), ("name", "trace_name"), ("release", "release")):
        if trace.get(key) is not None:
            meta[name] = _scalar(trace[key])
    tags = trace.get("tags")
    if tags:
        if not isinstance(tags, list):
            raise AdapterError("wrong_type", "tags", "tags: expected a list of strings")
        meta["tags"] = ",".join(str(t) for t in tags)
    trace_id = obs.get("traceId") or trace.get("id")
    if trace_id is not None:
        meta["trace_id"] = _scalar(trace_id)
    for key, name in (("name", "observation_name"), ("promptName", "prompt_name"), ("promptVersion", "prompt_version"),
                      ("level", "level"), ("version", "version")):
        if obs.get(key) is not None:
            meta[name] = _scalar(obs[key])
    usage_key = "usageDetails" if obs.get("usageDetails") else "usage"  # usageDetails is the current field
    if obs.get(usage_key) is not None:
        usage = _scalar_map(obs[usage_key], at(usage_key))
        meta.update({f"usage.{k}": v for k, v in usage.items() if v is not None})
    if obs.get("completionStartTime") is not None:
        first = _iso_time(obs["completionStartTime"], at("completionStartTime"))
        meta["time_to_first_token_ms"] = (first - start).total_seconds() * 1000

    feedback: dict[str, Any] = {}
    for i, score in enumerate(scores):
        where = f"scores[{i}]"
        if not isinstance(score, dict):
            raise AdapterError("wrong_type", where, f"{where}: expected a score object")
        if score.get("observationId") not in (None, request_id):
            continue  # about another observation of the trace
        value = score.get("stringValue") if score.get("dataType") == "CATEGORICAL" or score.get("value") is None \
            else score.get("value")
        _score_feedback(score.get("name"), value, score.get("comment"), where, feedback, meta)

    record: dict[str, Any] = {
        "request_id": request_id,
        "conversation_id": trace.get("sessionId"),
        "timestamp": start.isoformat(),
        "messages": messages,
        "completion": completion,
        "model": obs.get("model"),
        "params": _scalar_map(obs.get("modelParameters"), at("modelParameters")),
        "feedback": feedback,
        "metadata": meta,
    }
    if obs.get("endTime") is not None:
        end = _iso_time(obs["endTime"], at("endTime"))
        if end < start:
            raise AdapterError("invalid_value", at("endTime"), f"{at('endTime')}: {obs['endTime']} is before startTime")
        record["latency_ms"] = (end - start).total_seconds() * 1000
    if failed:
        record["post_processing"] = [{"name": "observation_level", "ok": False,
                                      "detail": _text(obs.get("statusMessage") or "ERROR")}]
    _apply_metadata_fields(record, meta, at("metadata"))
    return {k: v for k, v in record.items() if v is not None}


def _langfuse(obj: dict[str, Any]) -> list[tuple[int, dict[str, Any] | AdapterError]]:
    trace, observations, scores, prefix = _langfuse_parts(obj)
    out: list[tuple[int, dict[str, Any] | AdapterError]] = []
    for i, obs in enumerate(observations):
        field = f"{prefix}[{i}]" if prefix else ""
        try:
            if _langfuse_type(obs, field) != "GENERATION":
                continue  # counted by count_skipped_spans
            out.append((len(out), _langfuse_generation(obs, trace, scores, field)))
        except AdapterError as err:
            out.append((len(out), err))
    return out


def _langfuse_skipped(obj: Any) -> int:
    if not isinstance(obj, dict):
        return 0
    try:
        _, observations, _, prefix = _langfuse_parts(obj)
    except AdapterError:
        return 0
    skipped = 0
    for obs in observations:
        try:
            skipped += _langfuse_type(obs, prefix) != "GENERATION"
        except AdapterError:
            pass  # a quarantined record, not a skipped one
    return skipped


_ADAPTERS: dict[str, Callable[[dict[str, Any]], list[tuple[int, dict[str, Any] | AdapterError]]]] = {
    "canonical": _canonical,
    "openai": _openai,
    "otlp": _otlp,
    "openinference": _openinference,
    "langfuse": _langfuse,
}
# the formats whose lines hold spans or observations that are not model calls
_SKIPPED: dict[str, Callable[[Any], int]] = {
    "otlp": _otlp_skipped,
    "openinference": _openinference_skipped,
    "langfuse": _langfuse_skipped,
}
