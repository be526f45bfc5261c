"""The ``langfuse`` format: Langfuse traces and observations as its public API returns them.

Langfuse traces as its public API returns them (``GET /api/public/traces/{traceId}``: the
trace with ``observations`` and ``scores``; API reference at https://api.reference.langfuse.com,
data model at https://langfuse.com/docs/tracing-data-model), or one observation object per line (the
items of ``GET /api/public/observations``). Each observation of type ``GENERATION`` is one
record (``input``, ``output``, ``model``, ``modelParameters``, ``usageDetails``/``usage``,
``startTime``/``endTime``/``completionStartTime``, ``metadata``, ``level``); the trace gives
``sessionId`` (the conversation), ``userId``, ``tags`` and its scores, which become the
feedback of the generations they are about. Other observations are counted as skipped.
"""

from __future__ import annotations

from typing import Any

from eval_pipeline.lib.ingest.adapters.common import (AdapterError, Candidates, Scalar, apply_metadata_fields, as_text,
                                               chat_message, iso_time, scalar, scalar_map, score_feedback)

__all__ = ["candidates", "count_skipped", "looks_like"]

_LANGFUSE_TYPES = {"GENERATION", "SPAN", "EVENT", "AGENT", "TOOL", "CHAIN", "RETRIEVER", "EVALUATOR",
                   "EMBEDDING", "GUARDRAIL"}


def looks_like(obj: dict[str, Any]) -> bool:
    """Whether a line is Langfuse JSON: a trace with its observations, or one observation."""
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
        messages = [chat_message(m, f"{at('input')}[{i}]") for i, m in enumerate(raw_input)]
    else:
        messages = [{"role": "user", "content": as_text(raw_input)}]

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
        completion = chat_message(output, at("output"))["content"]
    elif isinstance(output, list) and output and all(isinstance(m, dict) for m in output):
        completion = chat_message(output[-1], f"{at('output')}[{len(output) - 1}]")["content"]
    else:
        completion = as_text(output)

    start = iso_time(obs.get("startTime"), at("startTime"))
    if not isinstance(obs.get("model"), str) or not obs["model"]:
        raise AdapterError("missing_field" if obs.get("model") is None else "wrong_type", at("model"),
                           f"{at('model')}: the generation names no model")
    request_id = obs.get("id")
    if not isinstance(request_id, str) or not request_id:
        raise AdapterError("missing_field" if request_id is None else "wrong_type", at("id"),
                           f"{at('id')}: expected the observation's id")
    trace_meta = trace.get("metadata")
    meta: dict[str, Scalar] = scalar_map(trace_meta, "metadata") if isinstance(trace_meta, dict) else {}
    if trace_meta is not None and not isinstance(trace_meta, dict):
        meta["trace_metadata"] = scalar(trace_meta)  # Langfuse takes any JSON here
    if obs.get("metadata") is not None:
        if isinstance(obs["metadata"], dict):
            meta.update(scalar_map(obs["metadata"], at("metadata")))
        else:
            meta["metadata"] = scalar(obs["metadata"])
    for key, name in (("userId", "user_id"), ("name", "trace_name"), ("release", "release")):
        if trace.get(key) is not None:
            meta[name] = scalar(trace[key])
    tags = trace.get("tags")
    if tags:
        if not isinstance(tags, list):
            raise AdapterError("wrong_type", "tags", "tags: expected a list of strings")
        meta["tags"] = ",".join(str(t) for t in tags)
    trace_id = obs.get("traceId") or trace.get("id")
    if trace_id is not None:
        meta["trace_id"] = scalar(trace_id)
    for key, name in (("name", "observation_name"), ("promptName", "prompt_name"), ("promptVersion", "prompt_version"),
                      ("level", "level"), ("version", "version")):
        if obs.get(key) is not None:
            meta[name] = scalar(obs[key])
    usage_key = "usageDetails" if obs.get("usageDetails") else "usage"  # usageDetails is the current field
    if obs.get(usage_key) is not None:
        usage = scalar_map(obs[usage_key], at(usage_key))
        meta.update({f"usage.{k}": v for k, v in usage.items() if v is not None})
    if obs.get("completionStartTime") is not None:
        first = iso_time(obs["completionStartTime"], at("completionStartTime"))
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
        score_feedback(score.get("name"), value, score.get("comment"), where, feedback, meta)

    record: dict[str, Any] = {
        "request_id": request_id,
        "conversation_id": trace.get("sessionId"),
        "timestamp": start.isoformat(),
        "messages": messages,
        "completion": completion,
        "model": obs.get("model"),
        "params": scalar_map(obs.get("modelParameters"), at("modelParameters")),
        "feedback": feedback,
        "metadata": meta,
    }
    if obs.get("endTime") is not None:
        end = iso_time(obs["endTime"], at("endTime"))
        if end < start:
            raise AdapterError("invalid_value", at("endTime"), f"{at('endTime')}: {obs['endTime']} is before startTime")
        record["latency_ms"] = (end - start).total_seconds() * 1000
    if failed:
        record["post_processing"] = [{"name": "observation_level", "ok": False,
                                      "detail": as_text(obs.get("statusMessage") or "ERROR")}]
    apply_metadata_fields(record, meta, at("metadata"))
    return {k: v for k, v in record.items() if v is not None}


def candidates(obj: dict[str, Any]) -> Candidates:
    """One candidate per ``GENERATION`` observation of the line (an error in its place when unreadable)."""
    trace, observations, scores, prefix = _langfuse_parts(obj)
    out: Candidates = []
    for i, obs in enumerate(observations):
        field = f"{prefix}[{i}]" if prefix else ""
        try:
            if _langfuse_type(obs, field) != "GENERATION":
                continue  # counted by count_skipped_spans
            out.append((len(out), _langfuse_generation(obs, trace, scores, field)))
        except AdapterError as err:
            out.append((len(out), err))
    return out


def count_skipped(obj: Any) -> int:
    """The line's observations that are not generations."""
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
