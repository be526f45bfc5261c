"""Each adapter on realistic samples (eval_pipeline_tests/fixtures/landing, fixtures/traces)."""

import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest

from eval_pipeline.lib.ingest.adapters import adapt, count_skipped_spans, detect_format, format_from_name
from eval_pipeline.lib.ingest.ingestion import scan_file, validate_files
from eval_pipeline.lib.ingest.records import LogRecord, log_record_json_schema

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "landing"
TRACES = Path(__file__).resolve().parents[2] / "fixtures" / "traces"
SCHEMA_FILE = Path(__file__).resolve().parents[3] / "eval_pipeline" / "schemas" / "log_record.schema.json"


def records(name: str, folder: Path = FIXTURES) -> list[LogRecord]:
    scan = scan_file(folder / name)
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
        ("x.openinference.jsonl", {}, "openinference"),
        ("x.langfuse.jsonl", {}, "langfuse"),
        ("x.jsonl", {"resourceSpans": []}, "otlp"),
        # an OpenInference span anywhere in the line, not only the first
        ("x.jsonl", {"resourceSpans": [{"scopeSpans": [{"spans": [
            {"attributes": [{"key": "http.route", "value": {"stringValue": "/chat"}}]},
            {"attributes": [{"key": "openinference.span.kind", "value": {"stringValue": "CHAIN"}}]}]}]}]},
         "openinference"),
        ("x.jsonl", {"id": "t1", "observations": [], "scores": []}, "langfuse"),
        ("x.jsonl", {"id": "o1", "traceId": "t1", "type": "GENERATION", "startTime": "2026-03-02T10:00:00Z"},
         "langfuse"),
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


# --------------------------------------------------------------------------------------------
# OpenInference


def _oi_line(*spans, resource=None) -> dict:
    return {"resourceSpans": [{"resource": {"attributes": resource or []}, "scopeSpans": [{"spans": list(spans)}]}]}


def _oi_span(span_id: str, kind: str, start_s: float, trace: str = "t1", status=None, **attributes) -> dict:
    def value(x):
        return {"doubleValue": x} if isinstance(x, float) else {"intValue": str(x)} if isinstance(x, int) \
            else {"stringValue": x}
    start = int((1772445600 + start_s) * 1e9)
    return {"traceId": trace, "spanId": span_id, "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 500_000_000),
            "status": status or {}, "attributes": [{"key": "openinference.span.kind", "value": {"stringValue": kind}}]
            + [{"key": k.replace("__", "."), "value": value(v)} for k, v in attributes.items()]}


LLM = {"llm__model_name": "m", "llm__input_messages__0__message__role": "user",
       "llm__input_messages__0__message__content": "hi", "llm__output_messages__0__message__content": "hello"}


def _write(path: Path, *lines) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_openinference_rag_trace_attaches_the_retrieved_documents():
    scan = scan_file(TRACES / "rag_and_chat.openinference.jsonl")
    assert scan.format == "openinference"
    assert scan.skipped_spans == 6  # CHAIN + RETRIEVER, three AGENT roots, one EMBEDDING
    rag = scan.outcomes[0].record
    assert rag.request_id == "1000000000000003" and rag.conversation_id == "sess-rag-1"
    assert [(c.doc_id, c.score) for c in rag.retrieved_chunks] == [
        ("kb-sepa-01", 0.91), ("kb-sepa-instant-02", 0.84), ("kb-fees-07", 0.42)]
    assert rag.retrieved_chunks[1].text == "SEPA Instant transfers arrive within ten seconds."
    assert [m.role for m in rag.messages] == ["system", "user"]
    # message.contents parts: text kept, the image only marked
    assert rag.messages[1].content == "How long does a SEPA transfer take?\n[image]"
    assert rag.completion.startswith("A SEPA transfer arrives within one business day")
    assert rag.model == rag.model_version == "support-assistant-2026-06-01"
    assert rag.params == {"temperature": 0.2, "max_tokens": 512, "stop": '["\\n\\n"]'}
    assert rag.timestamp == datetime(2026, 3, 2, 10, 0, 0, 200000, tzinfo=timezone.utc)
    assert rag.latency_ms == pytest.approx(1650.0)
    assert rag.task_type == "rag_qa" and rag.user_segment == "business" and rag.turn_index == 0
    assert rag.metadata == {"channel": "web", "user_id": "user-4411", "llm_provider": "openai", "llm_system": "openai",
                            "tags": "rag,payments", "token_count.prompt": 212, "token_count.completion": 21,
                            "token_count.total": 233, "trace_id": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                            "service_name": "support-assistant"}


def test_openinference_session_over_separate_traces_and_a_failed_call():
    first, second, third = records("rag_and_chat.openinference.jsonl", TRACES)[1:4]
    assert {first.conversation_id, second.conversation_id, third.conversation_id} == {"sess-chat-7"}
    assert [first.turn_index, second.turn_index, third.turn_index] == [0, 1, 2]  # user messages before the last
    assert [m.role for m in third.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert third.user_input == "Can I order a new one instead?"
    assert first.post_processing == [] and first.completion == "Open Cards, choose the card and tap Freeze."
    # status ERROR without output: a record with an empty completion and the failure as a failed step
    assert third.completion == ""
    assert [(p.name, p.ok, p.detail) for p in third.post_processing] == [("span_status", False, "upstream timeout after 30 s")]


def test_openinference_input_value_fallback_and_user_feedback_annotation():
    record = records("rag_and_chat.openinference.jsonl", TRACES)[4]
    assert [(m.role, m.content) for m in record.messages] == [
        ("system", "Classify the intent."), ("user", "I lost my phone with the app on it")]  # application/json body
    assert record.completion == "lost_or_stolen_phone"
    assert record.feedback.thumbs == "down" and record.feedback.comment == "wrong intent"


def test_openinference_documents_join_only_earlier_retrievals_of_the_same_trace_and_line(tmp_path):
    docs = {"retrieval__documents__0__document__id": "d1", "retrieval__documents__0__document__content": "text",
            "retrieval__documents__0__document__score": 0.5}
    path = _write(tmp_path / "agent.openinference.jsonl",
                  _oi_line(_oi_span("r1", "RETRIEVER", 0, **docs), _oi_span("l1", "LLM", 1, **LLM),
                           _oi_span("l2", "LLM", 1, trace="t2", **LLM),  # another trace
                           _oi_span("r2", "RETRIEVER", 2, **{**docs, "retrieval__documents__0__document__id": "d2"}),
                           _oi_span("l3", "LLM", 3, **LLM)),
                  _oi_line(_oi_span("l4", "LLM", 4, **LLM)))  # same trace, next line: not joined
    chunks = {o.record.request_id: [c.doc_id for c in o.record.retrieved_chunks] for o in scan_file(path).outcomes}
    assert chunks == {"l1": ["d1"], "l2": [], "l3": ["d1", "d2"], "l4": []}


def test_openinference_malformed_spans_are_quarantined_one_by_one(tmp_path):
    good = _oi_span("ok", "LLM", 0, **LLM)
    bad_params = _oi_span("p", "LLM", 0, **LLM, llm__invocation_parameters="{temperature: 0.2")
    no_output = _oi_span("o", "LLM", 0, **{k: v for k, v in LLM.items() if "output" not in k})
    bad_int = _oi_span("i", "LLM", 0, **LLM)
    bad_int["attributes"].append({"key": "llm.token_count.total", "value": {"intValue": "many"}})
    bad_role = _oi_span("r", "LLM", 0, **{**LLM, "llm__input_messages__0__message__role": "robot"})
    no_model = _oi_span("n", "LLM", 0, **{k: v for k, v in LLM.items() if k != "llm__model_name"})
    unscored = _oi_span("u", "RETRIEVER", 0, trace="t9", retrieval__documents__0__document__content="x",
                        retrieval__documents__0__document__score="high")
    llm_t9 = _oi_span("l9", "LLM", 1, trace="t9", **LLM)
    path = _write(tmp_path / "bad.openinference.jsonl",
                  _oi_line(good, "not a span", bad_params, no_output, bad_int, bad_role, no_model, unscored, llm_t9,
                           _oi_span("c", "CHAIN", 0)),
                  {"resourceSpans": {"spans": []}})
    scan = scan_file(path)
    got = [(o.line, o.index, o.reason, o.field) for o in scan.outcomes]
    assert got == [
        (1, 0, None, None),
        (1, 1, "wrong_type", "resourceSpans[0].scopeSpans[0].spans[1]"),
        (1, 2, "invalid_json", "llm.invocation_parameters"),
        (1, 3, "missing_field", "llm.output_messages"),
        (1, 4, "wrong_type", "resourceSpans[0].scopeSpans[0].spans[4].attributes[5].value.intValue"),
        (1, 5, "invalid_value", "messages.0.role"),
        (1, 6, "missing_field", "llm.model_name"),
        (1, 7, "wrong_type", "retrieval.documents.0.document.score"),  # the LLM span the retrieval feeds
        (2, 0, "wrong_type", "resourceSpans"),
    ]
    assert "(span l9)" in scan.outcomes[7].message and "retriever span u" in scan.outcomes[7].message
    assert scan.skipped_spans == 2  # the retriever and the chain
    report = validate_files([path])
    assert (report.records, report.valid, len(report.errors), report.skipped_spans) == (9, 1, 8, 2)


def test_openinference_documents_without_a_score_on_zero_to_one_keep_their_text(tmp_path):
    """Many retrievers give no score, or one on another scale (BM25, a distance): the document is
    still part of the prompt, so the record keeps it with no score and the raw value in metadata."""
    retriever = _oi_span("r", "RETRIEVER", 0, retrieval__documents__0__document__content="plain",
                         retrieval__documents__0__document__id="d0",
                         retrieval__documents__1__document__content="bm25", retrieval__documents__1__document__id="d1",
                         retrieval__documents__1__document__score=7.25,
                         retrieval__documents__2__document__content="cosine", retrieval__documents__2__document__id="d2",
                         retrieval__documents__2__document__score=0.5)
    path = _write(tmp_path / "scores.openinference.jsonl", _oi_line(retriever, _oi_span("l", "LLM", 1, **LLM)))
    (outcome,) = scan_file(path).outcomes
    assert [(c.doc_id, c.text, c.score) for c in outcome.record.retrieved_chunks] == [
        ("d0", "plain", None), ("d1", "bm25", None), ("d2", "cosine", 0.5)]
    assert json.loads(outcome.record.metadata["retrieval_raw_scores"]) == {"d1": 7.25}


# --------------------------------------------------------------------------------------------
# Langfuse


def test_langfuse_traces_generations_and_scores():
    scan = scan_file(TRACES / "billing.langfuse.jsonl")
    assert scan.format == "langfuse"
    assert scan.skipped_spans == 3  # SPAN and RETRIEVER of the first trace, EVENT of the second
    first, second, summary, failed = [o.record for o in scan.outcomes]
    assert first.request_id == "obs-0003" and first.conversation_id == second.conversation_id == "lf-sess-1"
    assert [m.role for m in first.messages] == ["system", "user"] and first.model == "support-assistant"
    assert first.params == {"temperature": 0.3, "max_tokens": 256}
    assert first.timestamp == datetime(2026, 3, 2, 14, 0, 0, 200000, tzinfo=timezone.utc)
    assert first.latency_ms == pytest.approx(1350.0)
    # the trace-level user-feedback score 0 is a thumbs down with its comment; other scores are kept as metadata
    assert first.feedback.thumbs == "down" and first.feedback.comment == "I never chose the Plus plan"
    assert first.task_type == "billing_qa" and first.user_segment == "premium"  # observation / trace metadata
    assert first.metadata["score.helpfulness"] == 0.4 and first.metadata["time_to_first_token_ms"] == pytest.approx(450.0)
    assert first.metadata["usage.total"] == 82 and first.metadata["user_id"] == "user-9001"
    assert first.metadata["tags"] == "billing,web" and first.metadata["trace_id"] == "lf-trace-0001"
    # second turn: history in the input, a categorical "up" aimed at this generation only
    assert second.turn_index == 1 and second.feedback.thumbs == "up" and second.metadata["usage.unit"] == "TOKENS"
    assert summary.messages[0].role == "user" and summary.completion.startswith("Customer downgraded")
    assert summary.feedback.escalated is True and summary.feedback.thumbs is None
    # one observation per line (the observations endpoint), level ERROR without output
    assert failed.conversation_id is None and failed.completion == ""
    assert [(p.name, p.ok, p.detail) for p in failed.post_processing] == [
        ("observation_level", False, "RateLimitError: 429 Too Many Requests")]


def test_langfuse_malformed_observations_and_scores_are_quarantined_one_by_one(tmp_path):
    def generation(oid, **extra):
        return {"id": oid, "traceId": "t1", "type": "GENERATION", "startTime": "2026-03-02T10:00:00Z",
                "endTime": "2026-03-02T10:00:01Z", "model": "m", "input": [{"role": "user", "content": "hi"}],
                "output": {"role": "assistant", "content": "hello"}, **extra}

    trace = {"id": "t1", "sessionId": "s1", "observations": [
        generation("ok"),
        "obs-id-only",
        generation("when", startTime="yesterday"),
        {k: v for k, v in generation("mute").items() if k != "output"},
        {"id": "span", "type": "SPAN", "startTime": "2026-03-02T10:00:00Z"},
        generation("backwards", endTime="2026-03-02T09:59:00Z"),
        generation("scored"),
        {"id": "untyped"},
        generation("params", modelParameters=["temperature", 0.2]),
        generation("nameless", model=None),
    ], "scores": [{"name": "user-feedback", "value": 0.5, "observationId": "scored", "dataType": "NUMERIC"}]}
    path = _write(tmp_path / "bad.langfuse.jsonl", trace, {"id": "t2", "observations": {"a": 1}})
    scan = scan_file(path)
    got = [(o.line, o.index, o.reason, o.field) for o in scan.outcomes]
    assert got == [
        (1, 0, None, None),
        (1, 1, "wrong_type", "observations[1]"),
        (1, 2, "invalid_timestamp", "observations[2].startTime"),
        (1, 3, "missing_field", "observations[3].output"),
        (1, 4, "invalid_value", "observations[5].endTime"),
        (1, 5, "invalid_value", "scores[0].value"),
        (1, 6, "missing_field", "observations[7].type"),
        (1, 7, "wrong_type", "observations[8].modelParameters"),
        (1, 8, "missing_field", "observations[9].model"),
        (2, 0, "wrong_type", "observations"),
    ]
    assert "GET /api/public/traces/{id}" in scan.outcomes[1].message
    assert scan.skipped_spans == 1
    report = validate_files([path])
    assert (report.records, report.valid, len(report.errors), report.skipped_spans) == (10, 1, 9, 1)


def test_every_format_adapts_its_own_sample_and_counts_the_rest_as_skipped():
    for fmt, path in (("otlp", FIXTURES / "spans.otlp.jsonl"),
                      ("openinference", TRACES / "rag_and_chat.openinference.jsonl"),
                      ("langfuse", TRACES / "billing.langfuse.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert all(detect_format(line) == fmt for line in lines)
        assert all(isinstance(c, dict) for line in lines for _, c in adapt(fmt, line))
        assert sum(count_skipped_spans(line, fmt) for line in lines) == scan_file(path).skipped_spans > 0


@pytest.mark.parametrize(("attributes", "messages", "completion"), [
    # the list in one attribute: an array of key/value lists (how some exporters write a list of objects)
    ([{"key": "llm.input_messages", "value": {"arrayValue": {"values": [{"kvlistValue": {"values": [
        {"key": "message.role", "value": {"stringValue": "human"}},
        {"key": "message.content", "value": {"stringValue": "hi"}}]}}]}}},
      {"key": "llm.output_messages.0.message.content", "value": {"stringValue": "hello"}}],
     [("user", "hi")], "hello"),
    # ... or as JSON text
    ([{"key": "llm.input_messages", "value": {"stringValue": '[{"message.role": "system", "message.content": "be brief"}]'}},
      {"key": "output.value", "value": {"stringValue": '{"choices": [{"message": {"role": "assistant", "content": "ok"}}]}'}},
      {"key": "output.mime_type", "value": {"stringValue": "application/json"}}],
     [("system", "be brief")], "ok"),
    # the legacy completions API
    ([{"key": "llm.prompts.0.prompt.text", "value": {"stringValue": "def fib(n):"}},
      {"key": "llm.choices.0.completion.text", "value": {"stringValue": " return n"}}],
     [("user", "def fib(n):")], " return n"),
])
def test_openinference_other_message_layouts(attributes, messages, completion):
    span = _oi_span("s", "LLM", 0, llm__model_name="m")
    span["attributes"] += attributes
    [(index, candidate)] = adapt("openinference", _oi_line(span))
    record = LogRecord.model_validate(candidate)
    assert [(m.role, m.content) for m in record.messages] == messages and record.completion == completion
