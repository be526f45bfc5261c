"""Each adapter on realistic samples (eval_pipeline_tests/fixtures/landing)."""

import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest

from eval_pipeline.lib.adapters import detect_format, format_from_name
from eval_pipeline.lib.ingestion import scan_file
from eval_pipeline.lib.records import LogRecord, log_record_json_schema

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "landing"
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "eval_pipeline" / "schemas" / "log_record.schema.json"


def records(name: str) -> list[LogRecord]:
    scan = scan_file(FIXTURES / name)
    assert all(o.record is not None for o in scan.outcomes), [o.message for o in scan.outcomes if o.record is None]
    return [o.record for o in scan.outcomes]


def test_canonical_keeps_history_and_converts_to_utc():
    first, second, third = records("support.canonical.jsonl")
    assert first.retrieved_chunks[0].doc_id == "kb-card-arrival-01" and first.retrieved_chunks[0].score == 0.82
    assert first.feedback.thumbs == "down" and first.params == {"temperature": 0.2, "max_tokens": 512}
    # the second turn carries the whole conversation so far
    assert [m.role for m in second.messages] == ["system", "user", "assistant", "user"]
    assert second.conversation_id == first.conversation_id and second.turn_index == 1
    assert second.user_input == "It has been two weeks. Please order a new one."
    # +01:00 is converted to UTC; a record without conversation id is its own conversation
    assert third.timestamp == datetime(2026, 3, 3, 22, 59, 59, tzinfo=timezone.utc)
    assert third.conversation_id is None and third.turn_index == 0


def test_openai_request_response_pairs():
    extraction, routing = records("traffic.openai.jsonl")
    assert extraction.request_id == "req-0101"  # metadata.request_id wins over response.id
    assert extraction.model == "support-assistant" and extraction.model_version == "support-assistant-2026-06-01"
    assert extraction.messages[1].content == "Please send 250 EUR to my landlord on 5 March"  # content parts joined
    assert extraction.turn_index == 0 and extraction.conversation_id == "conv-0101"
    assert extraction.task_type == "extraction" and extraction.user_segment == "premium"
    assert extraction.metadata == {"channel": "web"}
    assert extraction.params == {"temperature": 0.0, "max_tokens": 128}
    assert extraction.timestamp == datetime.fromtimestamp(1772447400, tz=timezone.utc)  # from response.created
    assert json.loads(extraction.completion)["currency"] == "EUR"
    assert routing.request_id == "chatcmpl-9xA2" and routing.timestamp.isoformat() == "2026-03-03T10:30:00+00:00"
    assert routing.feedback.thumbs == "up"


def test_otlp_genai_spans():
    scan = scan_file(FIXTURES / "spans.otlp.jsonl")
    assert scan.skipped_spans == 1  # the HTTP server span is not a model call
    (record,) = [o.record for o in scan.outcomes]
    assert record.request_id == "chatcmpl-otel-1" and record.conversation_id == "conv-otel-1"
    assert [m.role for m in record.messages] == ["system", "user"]
    assert record.messages[0].content == "You are the support assistant of a digital bank."
    assert record.completion.startswith("Payments can be declined")
    assert record.latency_ms == pytest.approx(1250.0)
    assert record.timestamp == datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
    assert record.params == {"temperature": 0.2, "max_tokens": 512}
    assert record.task_type == "rag_qa" and record.user_segment == "business"
    assert record.feedback.abandoned is True and record.retrieved_chunks[0].score == pytest.approx(0.77)
    assert record.metadata == {"channel": "android", "service_name": "support-assistant"}


@pytest.mark.parametrize(
    ("name", "first_line", "expected"),
    [
        ("x.otlp.jsonl", {}, "otlp"),
        ("x.jsonl", {"resourceSpans": []}, "otlp"),
        ("x.jsonl", {"request": {}, "response": {}}, "openai"),
        ("x.jsonl", {"request_id": "a", "messages": []}, "canonical"),
        ("x.jsonl", {"hello": 1}, None),
    ],
)
def test_format_is_declared_by_name_or_detected(name, first_line, expected):
    assert (format_from_name(name) or detect_format(first_line)) == expected


def test_published_schema_is_current_and_validates_canonical_lines():
    published = json.loads(SCHEMA_FILE.read_text())
    assert published == json.loads(json.dumps(log_record_json_schema())), "run: eval-pipeline schema --out " + str(SCHEMA_FILE)
    validator = jsonschema.Draft202012Validator(published)
    for line in (FIXTURES / "support.canonical.jsonl").read_text().splitlines():
        validator.validate(json.loads(line))
    bad = json.loads((FIXTURES / "support.canonical.jsonl").read_text().splitlines()[0])
    bad["latency_ms"] = -1
    assert not validator.is_valid(bad)


def test_a_broken_otlp_structure_is_quarantined_not_raised(tmp_path):
    path = tmp_path / "bad.otlp.jsonl"
    path.write_text('{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "gen_ai.operation.name", '
                    '"value": {"intValue": "not-a-number"}}]}]}]}]}\n{"resourceSpans": "nope"}\n')
    scan = scan_file(path)
    assert [(o.line, o.reason) for o in scan.outcomes] == [(1, "adapter_error"), (2, "wrong_type")]
