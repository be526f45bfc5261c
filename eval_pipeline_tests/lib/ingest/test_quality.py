"""The Great Expectations suite on raw_logs passes clean data and names what is wrong in bad data."""

from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime

from eval_pipeline.lib.ingest.quality import validate_raw_logs
from eval_pipeline.lib.ingest.records import LogRecord, record_to_row
from eval_pipeline.lib.storage.tables import RAW_LOGS_SCHEMA, frame


def row(request_id: str, ts: str, **overrides) -> dict:
    record = LogRecord.model_validate({
        "request_id": request_id, "timestamp": ts, "completion": "ok", "model": "m", "latency_ms": 12.0,
        "messages": [{"role": "user", "content": "hello"}],
        "retrieved_chunks": [{"doc_id": "d1", "text": "t", "score": 0.5}],
    })
    values = {**record_to_row(record), "source_file": "f", "source_line": 1, "source_index": 0, "source_format": "canonical"}
    values.update(overrides)
    return values


def test_clean_day_passes():
    df = frame([row("a", "2026-03-02T00:00:00Z"), row("b", "2026-03-02T23:59:59Z")], RAW_LOGS_SCHEMA)
    result = validate_raw_logs(df, date(2026, 3, 2))
    assert result.success and len(result.outcomes) == 8


def test_empty_day_passes():
    assert validate_raw_logs(frame([], RAW_LOGS_SCHEMA), date(2026, 3, 2)).success


def test_each_broken_rule_is_reported():
    bad = [
        row("a", "2026-03-02T10:00:00Z"),
        row("a", "2026-03-02T11:00:00Z"),  # duplicate id
        row("c", "2026-03-03T00:00:01Z"),  # outside the partition
        row("d", "2026-03-02T12:00:00Z", latency_ms=-1.0),
        row("e", "2026-03-02T12:00:00Z", messages=[{"role": "robot", "content": "x", "name": None}]),
        row("f", "2026-03-02T12:00:00Z", retrieved_chunks=[{"doc_id": "d", "text": "t", "score": 1.5}]),
        {**row("g", "2026-03-02T12:00:00Z"), "request_id": None},
    ]
    result = validate_raw_logs(frame(bad, RAW_LOGS_SCHEMA), date(2026, 3, 2))
    failed = {(o.table, o.expectation) for o in result.failed}
    assert failed == {
        ("records", "expect_column_values_to_not_be_null"),
        ("records", "expect_column_values_to_be_unique"),
        ("records", "expect_column_values_to_be_between"),
        ("message_roles", "expect_column_values_to_be_in_set"),
        ("chunk_scores", "expect_column_values_to_be_between"),
    }
    between = {o.column: o for o in result.failed if o.expectation == "expect_column_values_to_be_between"}
    assert set(between) == {"timestamp", "latency_ms", "score"}
    assert between["timestamp"].examples[0] == datetime(2026, 3, 3, 0, 0, 1) or between["timestamp"].unexpected_count == 1
    assert "NO" in result.markdown()


def test_each_frame_is_judged_alone_in_order_and_from_threads():
    """A process keeps one GX context: a verdict depends on its frame only, not on the frames
    validated before it or at the same time in another thread."""
    clean = frame([row("a", "2026-03-02T00:00:00Z"), row("b", "2026-03-02T23:59:59Z")], RAW_LOGS_SCHEMA)
    bad = frame([row("a", "2026-03-02T10:00:00Z"), row("a", "2026-03-02T11:00:00Z")], RAW_LOGS_SCHEMA)
    day = date(2026, 3, 2)
    in_order = [validate_raw_logs(f, day) for f in (clean, bad, clean, bad)]
    assert [r.success for r in in_order] == [True, False, True, False]
    assert [(o.expectation, o.unexpected_count) for o in in_order[1].failed] == [("expect_column_values_to_be_unique", 2)]
    assert in_order[0].outcomes == in_order[2].outcomes and in_order[1].outcomes == in_order[3].outcomes
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda f: validate_raw_logs(f, day), [clean, bad] * 4))
    assert [r.outcomes for r in threaded] == [in_order[0].outcomes, in_order[1].outcomes] * 4
