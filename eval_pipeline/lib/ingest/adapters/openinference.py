"""The ``openinference`` format: OTLP/JSON spans with the OpenInference semantic conventions.

OTLP/JSON (as :mod:`~eval_pipeline.lib.ingest.adapters.otlp` reads it) whose spans carry the OpenInference semantic conventions
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
"""

from __future__ import annotations

import json
import re
from typing import Any

from eval_pipeline.lib.ingest.adapters.common import (AdapterError, Candidates, Scalar, apply_metadata_fields, as_text,
                                               chat_message, int_from_string, normalise_role, scalar, scalar_map,
                                               score_feedback, unix_seconds)
from eval_pipeline.lib.ingest.adapters.otlp import json_attr

__all__ = ["candidates", "count_skipped", "looks_like"]

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
        return int_from_string(value["intValue"], f"{field}.intValue")
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


def looks_like(obj: dict[str, Any]) -> bool:
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
            whole = json_attr(attrs, field, [])
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
                texts.append(as_text(piece["text"]))
            else:
                texts.append(f"[{piece.get('type', 'part')}]")  # images, audio: a marker, not the bytes
        content = "\n".join(texts)
    if not content:
        calls = {suffix: value for suffix, value in parts.items() if suffix.startswith("tool_calls.")}
        if calls:
            content = json.dumps(calls, sort_keys=True, default=str)
    out: dict[str, Any] = {"role": normalise_role(parts.get("role")), "content": content}
    if isinstance(parts.get("name"), str) and parts["name"]:
        out["name"] = parts["name"]
    return out


def _oi_indexed_texts(attrs: dict[str, Any], pattern: re.Pattern[str]) -> list[str]:
    found = {int(m.group(1)): as_text(v) for k, v in attrs.items() if (m := pattern.fullmatch(k))}
    return [found[i] for i in sorted(found)]


def _oi_value(attrs: dict[str, Any], kind: str) -> tuple[Any, bool]:
    """``input.value`` / ``output.value`` decoded by its mime type: (value, found)."""
    if f"{kind}.value" not in attrs:
        return None, False
    raw = attrs[f"{kind}.value"]
    mime = attrs.get(f"{kind}.mime_type")
    if isinstance(raw, str) and isinstance(mime, str) and mime.split(";")[0].strip().lower() == "application/json":
        return json_attr(attrs, f"{kind}.value", None), True
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
        return [chat_message(m, f"input.value[{i}]") for i, m in enumerate(value)]
    return [{"role": "user", "content": as_text(value)}]


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
            return chat_message(choice["message"], "output.value.choices[0].message")["content"]
        if isinstance(choice, dict) and isinstance(choice.get("text"), str):
            return choice["text"]
        if isinstance(value.get("content"), (str, list)):
            return chat_message(value, "output.value")["content"]
    if found and value is not None:
        return as_text(value)
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


def _oi_annotations(attrs: dict[str, Any], feedback: dict[str, Any], meta: dict[str, Scalar]) -> None:
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for key, value in attrs.items():
        match = _OI_ANNOTATION.fullmatch(key)
        if match:
            kind = "annotations" if match.group(1) is not None else "evaluations"
            index = int(match.group(1) if match.group(1) is not None else match.group(2))
            found.setdefault((kind, index), {})[match.group(3)] = value
    for (kind, index), ann in sorted(found.items()):
        value = ann["label"] if ann.get("label") is not None else ann.get("score")
        score_feedback(ann.get("name"), value, ann.get("explanation"), f"{kind}.{index}", feedback, meta)


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
    params = json_attr(attrs, "llm.invocation_parameters", {})
    meta = scalar_map(json_attr(attrs, "metadata", {}), "metadata")
    for key in ("user.id", "llm.provider", "llm.system"):
        if attrs.get(key) is not None:
            meta[key.replace(".", "_")] = scalar(attrs[key])
    if isinstance(attrs.get("tag.tags"), list):
        meta["tags"] = ",".join(str(t) for t in attrs["tag.tags"])
    meta.update({k.removeprefix("llm."): scalar(v) for k, v in attrs.items() if k.startswith("llm.token_count.")})
    if isinstance(span.get("traceId"), str):
        meta["trace_id"] = span["traceId"]
    if "service.name" in resource:
        meta.setdefault("service_name", scalar(resource["service.name"]))
    feedback: dict[str, Any] = {}
    _oi_annotations(attrs, feedback, meta)
    record: dict[str, Any] = {
        "request_id": request_id,
        "conversation_id": attrs.get("session.id"),
        "timestamp": unix_seconds(start_ns / 1e9, "startTimeUnixNano"),
        "messages": messages,
        "completion": completion,
        "model": model,
        "model_version": attrs.get("llm.response.model_name") or attrs.get("llm.model_name"),
        "params": scalar_map(params, "llm.invocation_parameters"),
        "retrieved_chunks": chunks,
        "feedback": feedback,
        "metadata": meta,
    }
    if end_ns is not None:
        record["latency_ms"] = (end_ns - start_ns) / 1e6
    if failed:
        record["post_processing"] = [{"name": "span_status", "ok": False,
                                      "detail": as_text(status.get("message") or "ERROR")}]
    apply_metadata_fields(record, meta, "metadata")
    return {k: v for k, v in record.items() if v is not None}


def _trace_key(span: dict[str, Any]) -> str | None:
    trace_id = span.get("traceId")
    return trace_id if isinstance(trace_id, str) and trace_id else None  # no trace id: nothing to join on


def candidates(obj: dict[str, Any]) -> Candidates:
    """One candidate per ``LLM`` span of the line, with the documents its trace retrieved before it."""
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
    out: Candidates = []
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


def count_skipped(obj: Any) -> int:
    """The line's spans that are not ``LLM`` spans (``RETRIEVER`` included)."""
    if not isinstance(obj, dict):
        return 0
    try:
        walked = _walk_spans(obj)
    except AdapterError:
        return 0  # the adapter reports the structural error
    return sum(1 for item in walked if not isinstance(item, AdapterError) and _oi_kind(item[3]) != "LLM")
