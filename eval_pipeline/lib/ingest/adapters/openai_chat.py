"""The ``openai`` format: OpenAI chat-completions request/response pairs.

One chat-completions call per line: ``{"request": <request body>, "response": <response
body>, ...}`` - the way applications log the OpenAI API. ``request.model`` is the model
name, ``response.model`` the resolved snapshot (our ``model_version``), ``response.id`` the
request id, ``response.created`` the time unless a ``timestamp`` key is present. Fields the
API has no place for come from ``request.metadata`` (string values: ``request_id``,
``conversation_id``, ``turn_index``, ``task_type``, ``user_segment``; other keys become
metadata) or from top-level keys of the line (``latency_ms``, ``timestamp``,
``retrieved_chunks``, ``post_processing``, ``feedback``, ``metadata``).
"""

from __future__ import annotations

import json
from typing import Any

from eval_pipeline.lib.ingest.adapters.common import AdapterError, Candidates, content_text, int_from_string, unix_seconds

__all__ = ["candidates"]

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


def _openai_message(msg: Any, field: str) -> dict[str, Any]:
    if not isinstance(msg, dict):
        raise AdapterError("wrong_type", field, f"{field}: expected an object")
    content = content_text(msg.get("content"), f"{field}.content")
    if not content and msg.get("tool_calls"):
        # An assistant turn that only called tools: keep the calls as text so history stays whole.
        content = json.dumps(msg["tool_calls"], sort_keys=True)
    out: dict[str, Any] = {"role": msg.get("role"), "content": content}
    if msg.get("name"):
        out["name"] = msg["name"]
    return out


def candidates(obj: dict[str, Any]) -> Candidates:
    """The one candidate of a ``{"request": ..., "response": ...}`` line."""
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
    completion = content_text(completion_msg.get("content"), "response.choices[0].message.content")
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
        record["timestamp"] = unix_seconds(response["created"], "response.created")
    for key in ("conversation_id", "task_type", "user_segment"):
        if key in meta:
            record[key] = meta.pop(key)
    if "turn_index" in meta:
        record["turn_index"] = int_from_string(meta.pop("turn_index"), "request.metadata.turn_index")
    for key in ("latency_ms", "retrieved_chunks", "post_processing", "feedback", "user_segment", "task_type"):
        if key in obj:
            record[key] = obj[key]
    extra_meta = obj.get("metadata") or {}
    if not isinstance(extra_meta, dict):
        raise AdapterError("wrong_type", "metadata", "metadata: expected an object")
    record["metadata"] = {**meta, **extra_meta}
    return [(0, record)]
