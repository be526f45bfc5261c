"""Parsing, validation, quarantine and the landing manifest, without Dagster."""

import os
from collections import Counter
from datetime import date

from conftest import mixed_lines, write_mixed_file

from eval_pipeline.lib.ingest.ingestion import (build_manifest, ingest_day, manifest_changed_days, scan_days, scan_file,
                                        validate_files)


def expected_reasons() -> Counter:
    return Counter(reason for line, reason in mixed_lines() if reason is not None)


def test_mixed_file_exact_counts_and_reasons(tmp_path):
    path = tmp_path / "landing" / "mixed.canonical.jsonl"
    write_mixed_file(path)
    day = ingest_day(tmp_path / "landing", date(2026, 3, 2))
    assert sorted(r["request_id"] for r in day.rows) == ["ok-1", "ok-2"]
    assert Counter(q["reason"] for q in day.quarantined) == expected_reasons()
    # every non-blank line but the next day's record belongs to 2026-03-02, so counts reconcile
    assert day.records_in == len(day.rows) + len(day.quarantined) == len([l for l, _ in mixed_lines() if l]) - 1
    next_day = ingest_day(tmp_path / "landing", date(2026, 3, 3))
    assert [r["request_id"] for r in next_day.rows] == ["ok-3"] and not next_day.quarantined


def test_quarantine_rows_name_file_line_and_field(tmp_path):
    path = tmp_path / "landing" / "sub" / "mixed.canonical.jsonl"
    write_mixed_file(path)
    quarantined = ingest_day(tmp_path / "landing", date(2026, 3, 2)).quarantined
    by_reason = {q["reason"]: q for q in quarantined}
    assert by_reason["invalid_json"]["source_file"] == "sub/mixed.canonical.jsonl"
    assert by_reason["invalid_json"]["source_line"] == 3
    assert by_reason["missing_field"]["field"] == "completion"
    assert by_reason["wrong_type"]["field"] == "turn_index" and "two" in by_reason["wrong_type"]["message"]
    assert by_reason["invalid_timestamp"]["field"] == "timestamp"
    assert by_reason["duplicate_id"]["message"].endswith("sub/mixed.canonical.jsonl:1")
    assert by_reason["line_too_long"]["source_line"] == 9 and len(by_reason["line_too_long"]["raw_excerpt"]) <= 300
    assert by_reason["not_utf8"]["message"].startswith("byte ")
    assert sorted(q["field"] for q in quarantined if q["reason"] == "invalid_value") == ["latency_ms", "messages.0.role"]
    assert by_reason["unknown_field"]["field"] == "complection"


def test_a_file_without_any_valid_record_lands_on_its_modification_day(tmp_path):
    path = tmp_path / "landing" / "junk.jsonl"
    path.parent.mkdir()
    path.write_text("not json\n{\"also\": \"unknown\"}\n")
    os.utime(path, (1772000000, 1772000000))  # 2026-02-25 UTC
    scan = scan_file(path)
    assert scan.anchor_day == date(2026, 2, 25)
    assert [o.reason for o in scan.outcomes] == ["invalid_json", "unknown_format"]
    assert all(o.day == date(2026, 2, 25) for o in scan.outcomes)


def test_one_pass_day_reads_agree_with_the_whole_file_scan(tmp_path):
    """A day's ingest and the manifest read a file in one pass without keeping other days' records;
    they must give what the whole-file scan gives: the same lines per day (undated lines on the
    anchor day, in file order), the same days and the same cacheability."""
    landing = tmp_path / "landing"
    write_mixed_file(landing / "mixed.canonical.jsonl")
    junk = landing / "junk.jsonl"
    junk.write_text("not json\n{\"also\": \"unknown\"}\n")
    os.utime(junk, (1772000000, 1772000000))
    for path in (landing / "mixed.canonical.jsonl", junk):
        rel = path.name
        scan = scan_file(path, rel)
        assert scan_days(path, rel) == (scan.format, scan.days, scan.stable)
        for day in scan.days:
            lines = [(o.line, o.index) for o in scan.outcomes if o.day == day]
            got = ingest_day(landing, day, files=[rel])
            assert sorted((r["source_line"], r["source_index"]) for r in got.rows + got.quarantined) == sorted(lines)
            assert lines and got.records_in == len(lines)
            batches: list[list[dict]] = []  # handed over in batches: the same rows, in order
            streamed = ingest_day(landing, day, files=[rel], on_rows=batches.append, batch=1)
            assert not streamed.rows and [b[0] for b in batches] == got.rows and all(len(b) == 1 for b in batches)
            assert streamed.quarantined == got.quarantined


def test_an_unpaired_surrogate_escape_costs_its_record_not_the_day(tmp_path):
    """JSON may escape a lone UTF-16 surrogate ("\\ud800"), which is not text: no frame or
    database can store it. Its record is quarantined with the field's path; a correctly paired
    escape (an emoji) and the other records of the day are ingested."""
    import json

    import polars as pl

    from eval_pipeline.lib.storage.tables import RAW_LOGS_SCHEMA, frame

    def record(rid, content):
        return ('{"request_id": "%s", "timestamp": "2026-03-02T10:00:00Z", "model": "m", "completion": "ok", '
                '"messages": [{"role": "user", "content": "%s"}]}' % (rid, content))

    path = tmp_path / "landing" / "s.canonical.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join([record("a", "fine"), record("b", "x\\ud800y"), record("c", "smile \\ud83d\\ude00"),
                               '{"request_id": "d", "\\udfff": 1}']) + "\n")
    day = ingest_day(tmp_path / "landing", date(2026, 3, 2))
    assert [r["request_id"] for r in day.rows] == ["a", "c"] and json.dumps(day.rows[1]["messages"]).count("ude00")
    bad = {q["source_line"]: q for q in day.quarantined}
    assert bad[2]["reason"] == "invalid_text" and bad[2]["field"] == "messages.0.content"
    assert bad[4]["reason"] == "invalid_text" and "\\udfff" in bad[4]["message"]
    assert day.records_in == 4 and isinstance(frame(day.rows, RAW_LOGS_SCHEMA), pl.DataFrame)


def test_manifest_notices_new_changed_and_gone_files(tmp_path):
    landing = tmp_path / "landing"
    write_mixed_file(landing / "a.canonical.jsonl")
    write_mixed_file(landing / "b.canonical.jsonl")
    cache = tmp_path / "cache"
    first, gone = build_manifest(landing, cache_dir=cache)
    assert [e.status for e in first] == ["new", "new"] and gone == []
    assert first[0].days == {"2026-03-02": 14, "2026-03-03": 1}
    previous_sha = {e.path: e.sha256 for e in first}
    previous_days = {e.path: __import__("json").dumps(e.days) for e in first}

    (landing / "a.canonical.jsonl").write_text('{"request_id": "n", "timestamp": "2026-03-09T00:00:00Z", '
                                                '"messages": [{"role": "user", "content": "hi"}], "completion": "", "model": "m"}\n')
    (landing / "b.canonical.jsonl").unlink()
    write_mixed_file(landing / "c.canonical.jsonl")
    second, gone = build_manifest(landing, previous=previous_sha, cache_dir=cache)
    assert {e.path: e.status for e in second} == {"a.canonical.jsonl": "changed", "c.canonical.jsonl": "new"}
    assert gone == ["b.canonical.jsonl"]
    assert manifest_changed_days(second, gone, previous_days) == ["2026-03-02", "2026-03-03", "2026-03-09"]
    unchanged, _ = build_manifest(landing, previous={e.path: e.sha256 for e in second}, cache_dir=cache)
    assert {e.status for e in unchanged} == {"unchanged"}


def test_validate_files_counts_duplicates_across_files(tmp_path):
    write_mixed_file(tmp_path / "a.canonical.jsonl")
    write_mixed_file(tmp_path / "b.canonical.jsonl")
    report = validate_files([tmp_path / "a.canonical.jsonl", tmp_path / "b.canonical.jsonl"])
    assert report.valid == 3  # ok-1, ok-2, ok-3 once; the second file's copies are duplicates
    # a: ok-1 repeated once; b: ok-1, ok-2, ok-1 again and ok-3 were all seen before
    assert report.reason_counts["duplicate_id"] == 1 + 4
    assert report.records == report.valid + len(report.errors)


def test_deep_nesting_huge_integers_and_a_bom_are_reasons_not_crashes(tmp_path):
    import json

    from conftest import good_record

    from eval_pipeline.lib.ingest.ingestion import MAX_NESTING, _inspect

    def line(rid, **extra):
        return json.dumps(good_record(rid, "2026-03-02T10:00:00Z", **extra)).encode()

    just_fits = [1]
    for _ in range(MAX_NESTING - 1):
        just_fits = {"a": just_fits}
    assert _inspect(just_fits) is None and _inspect([just_fits])[0] == "too_deeply_nested"
    path = tmp_path / "landing" / "h.canonical.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"\n".join([
        b"\xef\xbb\xbf" + line("bom"),
        line("deep-parse")[:-1] + b', "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",  # beyond Python's parser
        line("deep-walk", metadata={"k": json.loads("[" * 500 + "]" * 500)}),  # parses, too deep to store
        line("fits"),
        line("big-int")[:-1] + b', "n": ' + b"9" * 5000 + b"}",
        line("key", metadata={"\\udfff": 1}).replace(b"\\\\udfff", b"\\udfff"),
    ]) + b"\n")
    day = ingest_day(tmp_path / "landing", date(2026, 3, 2))
    assert [r["request_id"] for r in day.rows] == ["bom", "fits"]
    bad = {q["source_line"]: (q["reason"], q["field"]) for q in day.quarantined}
    assert bad == {2: ("too_deeply_nested", ""), 3: ("too_deeply_nested", "metadata.k" + ".0" * (MAX_NESTING - 2)),
                   5: ("invalid_json", ""), 6: ("invalid_text", "metadata.\\udfff")}
    assert day.records_in == 6
    report = validate_files([path])
    assert (report.records, report.valid) == (6, 2)
    assert scan_days(path)[1] == Counter({date(2026, 3, 2): 6})


def test_gzip_files_are_read_and_a_cut_one_keeps_the_lines_before_the_break(tmp_path):
    import gzip
    import json

    from conftest import good_record

    body = b"".join(json.dumps(good_record(f"z-{i}", "2026-03-02T10:00:00Z", completion="c" * (i % 50))).encode()
                    + b"\n" for i in range(300))
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "whole.canonical.jsonl.gz").write_bytes(gzip.compress(body))
    packed = gzip.compress(body.replace(b'"z-', b'"w-'))
    (landing / "cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    (landing / "junk.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    day = ingest_day(landing, date(2026, 3, 2))
    ids = [r["request_id"] for r in day.rows]
    assert [i for i in ids if i.startswith("z-")] == [f"z-{i}" for i in range(300)]
    kept = [i for i in ids if i.startswith("w-")]
    assert 0 < len(kept) < 300 and kept == [f"w-{i}" for i in range(len(kept))]
    bad = sorted((q["source_file"], q["source_line"], q["reason"]) for q in day.quarantined)
    assert bad == [("cut.jsonl.gz", len(kept) + 1, "corrupt_file")]  # junk.jsonl.gz has no record: its mtime day
    entries, _ = build_manifest(landing)
    assert {e.path: (e.format, e.days) for e in entries} == {
        "cut.jsonl.gz": ("canonical", {"2026-03-02": len(kept) + 1}),
        "junk.jsonl.gz": (None, {date.fromtimestamp(os.path.getmtime(landing / "junk.jsonl.gz")).isoformat(): 1}),
        "whole.canonical.jsonl.gz": ("canonical", {"2026-03-02": 300}),
    }


def test_a_line_too_long_is_read_past_not_held_in_plain_and_gzip_files(tmp_path):
    import gzip
    import json

    from conftest import good_record

    from eval_pipeline.lib.ingest.ingestion import iter_outcomes

    ok = json.dumps(good_record("ok", "2026-03-02T10:00:00Z")).encode()
    body = b"\xef\xbb\xbf" + b"x" * 3_000_000 + b"\n" + ok + b"\n" + b"y" * 1001 + b"\n" + b"z" * 999 + b"\n"
    (tmp_path / "a.canonical.jsonl").write_bytes(body)
    (tmp_path / "b.canonical.jsonl.gz").write_bytes(gzip.compress(body))
    for name in ("a.canonical.jsonl", "b.canonical.jsonl.gz"):
        got = [(o.line, o.reason, o.message) for o in iter_outcomes(tmp_path / name, max_line_bytes=1000)]
        assert got[0] == (1, "line_too_long", "line is 3,000,001 bytes; the limit is 1,000")
        assert got[1] == (2, None, None)  # the next line is read whole: a record
        assert got[2] == (3, "line_too_long", "line is 1,002 bytes; the limit is 1,000")
        assert got[3][:2] == (4, "invalid_json") and len(got) == 4
        assert [o.line for o in iter_outcomes(tmp_path / name) if o.record is not None] == [2]


def test_a_timestamp_before_the_first_day_is_quarantined_on_the_files_day_not_lost(tmp_path):
    """A bare number is read as seconds since 1970; a record from before FIRST_DAY would land in no
    partition, so it is quarantined on the file's day and counts still reconcile."""
    import json

    from conftest import good_record

    from eval_pipeline.lib.ingest.ingestion import FIRST_DAY

    def line(rid, ts, **extra):
        return json.dumps(good_record(rid, ts, **extra)).encode()

    path = tmp_path / "landing" / "old.canonical.jsonl"
    path.parent.mkdir()
    path.write_bytes(b"\n".join([
        line("epoch-12", 12),
        line("old-iso", "2019-05-01T10:00:00Z"),
        line("old-and-bad", "2019-05-01T10:00:00Z", latency_ms=-1),  # fails the contract too: no 2019 day either
        line("epoch-now", 1772442000),  # 2026-03-02T09:00:00Z as seconds: a number in range is a time
        line("ok", "2026-03-02T10:00:00Z"),
    ]) + b"\n")
    day = ingest_day(tmp_path / "landing", date(2026, 3, 2))
    assert sorted(r["request_id"] for r in day.rows) == ["epoch-now", "ok"]
    assert {q["source_line"]: (q["reason"], q["field"]) for q in day.quarantined} == {
        1: ("early_timestamp", "timestamp"), 2: ("early_timestamp", "timestamp"), 3: ("invalid_value", "latency_ms")}
    assert "1970-01-01T00:00:12" in day.quarantined[0]["message"] and FIRST_DAY.isoformat() in day.quarantined[0]["message"]
    assert day.records_in == 5 and scan_days(path)[1] == Counter({date(2026, 3, 2): 5})

    # a file of old records only, copied with its old modification time, lands on FIRST_DAY
    archive = tmp_path / "archive" / "2019.canonical.jsonl"
    archive.parent.mkdir()
    archive.write_bytes(line("a", "2019-05-01T10:00:00Z") + b"\n" + line("b", 0) + b"\n")
    os.utime(archive, (1556704800, 1556704800))  # 2019-05-01 UTC
    scan = scan_file(archive)
    assert scan.anchor_day == FIRST_DAY and [o.reason for o in scan.outcomes] == ["early_timestamp"] * 2
    assert validate_files([archive]).valid == 0
