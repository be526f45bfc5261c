"""The canonical log record: the contract every adapter produces and every asset reads.

One record is one model call as it happened in production: the full prompt that was sent
(system prompt, injected context and the conversation so far), what came back, and what we
know about how it went. The JSON Schema published in ``eval_pipeline/schemas/`` is generated
from these models (``eval-pipeline schema`` writes it; a test keeps the two identical).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ROLES",
    "Message",
    "RetrievedChunk",
    "PostProcessingStep",
    "Feedback",
    "LogRecord",
    "log_record_json_schema",
    "record_to_row",
    "FAILURE_SIGNALS",
]

ROLES = ("system", "developer", "user", "assistant", "tool")
Role = Literal["system", "developer", "user", "assistant", "tool"]

# Quality signals that mark a record as a likely failure (used by sampling to oversample them).
FAILURE_SIGNALS = (
    "thumbs_down",
    "abandoned",
    "clarification_requested",
    "parse_error",
    "regenerated",
    "escalated",
)


class _Strict(BaseModel):
    # Unknown keys are an error: a misspelt field must not silently vanish.
    model_config = ConfigDict(extra="forbid", strict=False, str_strip_whitespace=False)


class Message(_Strict):
    """One message of the prompt as the model saw it."""

    role: Role
    content: str = Field(description="Text content; multi-part content is joined by the adapter.")
    name: str | None = None


class RetrievedChunk(_Strict):
    """A passage the retrieval step injected into the prompt."""

    doc_id: str = Field(min_length=1)
    text: str
    score: float | None = Field(default=None, ge=0.0, le=1.0,
                                description="Retrieval score normalised to [0, 1]; null when the retriever gives none "
                                            "on that scale.")


class PostProcessingStep(_Strict):
    """A step applied to the raw completion before the user saw it (parsing, filtering, ...)."""

    name: str = Field(min_length=1)
    ok: bool = True
    detail: str | None = None


class Feedback(_Strict):
    """Quality signals observed for this call. Absent means not observed (False / None)."""

    thumbs: Literal["up", "down"] | None = None
    abandoned: bool = False
    clarification_requested: bool = False
    parse_error: bool = False
    regenerated: bool = False
    escalated: bool = False
    comment: str | None = Field(default=None, description="Free text from the user; may hold PII.")


class LogRecord(_Strict):
    """One production LLM call in canonical form."""

    request_id: str = Field(min_length=1, max_length=256)
    conversation_id: str | None = Field(
        default=None, description="Groups the turns of one conversation; defaults to request_id."
    )
    turn_index: int = Field(default=0, ge=0, description="0 for the first user turn.")
    timestamp: datetime = Field(description="When the request was made, UTC (ISO 8601).")
    messages: list[Message] = Field(
        min_length=1,
        description=(
            "The full prompt as sent: system prompt, injected context and, in a multi-turn "
            "conversation, every earlier turn."
        ),
    )
    completion: str = Field(description="The model's output text ('' when it returned none).")
    model: str = Field(min_length=1)
    model_version: str | None = None
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    latency_ms: float | None = Field(default=None, ge=0.0)
    task_type: str | None = None
    retrieved_chunks: list[RetrievedChunk] = Field(default_factory=list)
    post_processing: list[PostProcessingStep] = Field(default_factory=list)
    feedback: Feedback = Field(default_factory=Feedback)
    user_segment: str | None = None
    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # Naive timestamps are taken as UTC (the common logging default); all are stored in UTC.
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    @property
    def user_input(self) -> str:
        """The last user message: what this turn asked."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


def log_record_json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`LogRecord` (draft 2020-12), as published in the package."""
    schema = LogRecord.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://eval-pipeline.dev/schemas/log_record.schema.json"
    return schema


def record_to_row(record: LogRecord) -> dict[str, Any]:
    """Flatten a record into the column layout of the ``raw_logs`` table.

    Nested lists stay nested (DuckDB LIST of STRUCT); the free-form maps (params, metadata) are
    stored as JSON text because their value types differ from record to record.
    """
    fb = record.feedback
    return {
        "request_id": record.request_id,
        "conversation_id": record.conversation_id or record.request_id,
        "turn_index": record.turn_index,
        "timestamp": record.timestamp.replace(tzinfo=None),
        "messages": [{"role": m.role, "content": m.content, "name": m.name} for m in record.messages],
        "user_input": record.user_input,
        "completion": record.completion,
        "model": record.model,
        "model_version": record.model_version,
        "params": json.dumps(record.params, sort_keys=True),
        "latency_ms": record.latency_ms,
        "task_type": record.task_type,
        "retrieved_chunks": [
            {"doc_id": c.doc_id, "text": c.text, "score": c.score} for c in record.retrieved_chunks
        ],
        "post_processing": [
            {"name": p.name, "ok": p.ok, "detail": p.detail} for p in record.post_processing
        ],
        "thumbs": fb.thumbs,
        "abandoned": fb.abandoned,
        "clarification_requested": fb.clarification_requested,
        "parse_error": fb.parse_error,
        "regenerated": fb.regenerated,
        "escalated": fb.escalated,
        "feedback_comment": fb.comment,
        "user_segment": record.user_segment,
        "metadata": json.dumps(record.metadata, sort_keys=True),
    }
