"""The analysis cache: a cached text redacts exactly as a fresh one, a changed configuration
misses it, it holds no text, and long texts are analysed line by line with the right offsets."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timezone

import pytest

from eval_pipeline.demo.logs import generate_logs
from eval_pipeline.lib.ingest.ingestion import ingest_day
from eval_pipeline.lib.privacy.redaction import CustomPattern, RedactionConfig, _segments, get_redactor
from eval_pipeline.lib.privacy.redaction_cache import AnalysisCache, config_fingerprint

DAY = date(2026, 3, 2)


@pytest.fixture(scope="module")
def redactor():
    return get_redactor()


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory):
    """One day of demo logs (every task type, multi-turn conversations, planted PII), as ``raw_logs`` rows."""
    root = tmp_path_factory.mktemp("demo")
    generate_logs(root / "landing", DAY, 1, 120, seed=11, truth_dir=root / "truth")
    rows = ingest_day(root / "landing", DAY, now=datetime.now(timezone.utc)).rows
    truth = [json.loads(line) for line in (root / "truth" / "records.jsonl").read_text().splitlines()]
    planted = {p["value"] for t in truth for p in t["pii"] if p["type"] != "PERSON"}
    assert len(rows) == 120 and planted
    return rows, planted


def test_cached_and_fresh_texts_redact_identically(redactor, demo_rows, tmp_path):
    rows, planted = demo_rows
    plain = redactor.redact_rows(rows)
    with AnalysisCache(tmp_path / "a.sqlite", redactor.fingerprint) as cold:
        first = redactor.redact_rows(rows, cache=cold)
        assert cold.stats.hits == 0 and cold.stats.stored == cold.stats.lookups > 100
    with AnalysisCache(tmp_path / "a.sqlite", redactor.fingerprint) as warm:
        second = redactor.redact_rows(rows, cache=warm)
        assert warm.stats.hits == warm.stats.lookups == cold.stats.lookups and warm.stats.stored == 0
    assert first == plain and second == plain
    # the planted PII is really gone in the cached run (the cache is not an empty result)
    text = json.dumps(second, default=str)
    assert not [v for v in planted if v in text]
    assert sum(sum(json.loads(r["pii_counts"]).values()) for r in second) > 20


def test_a_day_redacted_in_slices_equals_the_day_redacted_at_once(redactor, demo_rows):
    """``redacted_logs`` reads a day in conversation order, slices of whole conversations at a
    time (bounded memory): the rows, placeholders included, are those of one call over the whole
    day in that order, and no conversation is cut between two slices."""
    import polars as pl

    from eval_pipeline.lib.privacy.redaction import redact_slices, whole_conversations
    from eval_pipeline.lib.storage.tables import RAW_LOGS_SCHEMA, REDACTED_LOGS_SCHEMA, frame

    rows, _ = demo_rows
    scope = pl.when(pl.col("conversation_id").fill_null("") != "").then(pl.col("conversation_id")).otherwise(pl.col("request_id"))
    day = frame(rows, RAW_LOGS_SCHEMA).sort(scope, "turn_index", "timestamp", "request_id")  # CONVERSATION_ORDER
    whole = frame(redactor.redact_rows(day.to_dicts()), REDACTED_LOGS_SCHEMA)
    conversations = day.filter(pl.col("turn_index") > 0)["conversation_id"].unique()
    assert conversations.len() >= 3  # multi-turn conversations whose turns must stay together
    cut = [day.slice(i, 7) for i in range(0, day.height, 7)]  # as StoredPartition.slices gives them: 7 rows each
    slices = list(whole_conversations(cut))
    assert len(slices) > 10 and sum(part.height for part in slices) == day.height
    assert any(part.height != 7 for part in slices[:-1])  # some were re-cut at a conversation's end
    seen: set[str] = set()
    for part in slices:  # no conversation is in two slices
        here = set(part["conversation_id"].to_list())
        assert not here & seen
        seen |= here
    assert pl.concat(list(redact_slices(redactor, cut))).equals(whole)


def test_placeholders_are_numbered_per_conversation_from_cached_spans(redactor, tmp_path):
    texts_a = ["My name is Sarah Connor, write to sarah@example.com", "Hi Bob Lee!"]
    texts_b = ["Hi Bob Lee!", "My name is Sarah Connor, write to sarah@example.com"]
    with AnalysisCache(tmp_path / "c.sqlite", redactor.fingerprint) as cache:
        a = [r.text for r in redactor.redact_texts(texts_a, cache=cache)]
        b = [r.text for r in redactor.redact_texts(texts_b, cache=cache)]
        assert cache.stats.hits == 2  # the second scope found both texts in the cache
    assert a == ["My name is <PERSON_1>, write to <EMAIL_ADDRESS_1>", "Hi <PERSON_2>!"]
    assert b == ["Hi <PERSON_1>!", "My name is <PERSON_2>, write to <EMAIL_ADDRESS_1>"]


def test_a_changed_configuration_misses_the_cache(redactor, tmp_path):
    text = "Member MBR-778812 asked about a refund."
    other = get_redactor(RedactionConfig(custom_patterns=(CustomPattern("MEMBER_ID", r"\bMBR-\d{6}\b"),)))
    assert redactor.fingerprint != other.fingerprint
    path = tmp_path / "c.sqlite"
    with AnalysisCache(path, redactor.fingerprint) as cache:
        assert redactor.redact_texts([text], cache=cache)[0].text == text
    with AnalysisCache(path, other.fingerprint) as cache:
        out = other.redact_texts([text], cache=cache)[0].text
        assert cache.stats.hits == 0 and cache.stats.stored == 1
    assert out == "Member <MEMBER_ID_1> asked about a refund."
    # every field that changes findings changes the key; the batch size does not
    base = RedactionConfig()
    for changed in (RedactionConfig(score_threshold=0.6), RedactionConfig(allow_list=base.allow_list + ("Zed",)),
                    RedactionConfig(entities=("PERSON",)), RedactionConfig(segment_chars=2000),
                    RedactionConfig(phone_regions=("US",))):
        assert config_fingerprint(changed) != config_fingerprint(base)
    assert config_fingerprint(RedactionConfig(batch_size=8)) == config_fingerprint(base)


def test_the_cache_holds_offsets_not_text(redactor, tmp_path):
    secret = "My name is Priyanka Raghunathan, write to priyanka.r@example.net or call +44 20 7946 0321."
    path = tmp_path / "c.sqlite"
    with AnalysisCache(path, redactor.fingerprint) as cache:
        redactor.redact_texts([secret], cache=cache)
    raw = path.read_bytes() + (path.with_name(path.name + "-wal").read_bytes()
                               if path.with_name(path.name + "-wal").exists() else b"")
    for value in (b"Priyanka", b"Raghunathan", b"example.net", b"7946", b"My name"):
        assert value not in raw
    with sqlite3.connect(path) as con:
        [(spans,)] = con.execute("select spans from spans").fetchall()
    assert {s[2] for s in json.loads(spans)} == {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"}


def test_withheld_texts_are_not_cached(redactor, tmp_path):
    with AnalysisCache(tmp_path / "c.sqlite", redactor.fingerprint) as cache:
        [out] = redactor.redact_texts(["bad \ud800 text"], cache=cache)
        assert out.withheld and cache.stats.stored == 0 and len(cache) == 0


def test_long_texts_are_analysed_by_lines_with_their_offsets(redactor, tmp_path):
    template = "\n".join(f"Rule {i}: answer politely, in a sentence or two, and cite the knowledge base article that applies."
                         for i in range(12))
    texts = [f"{template}\nThe customer is Maria Gonzalez, email maria.g@example.com.\nThanks,\nOlivia",
             f"{template}\nThe customer is Tomasz Novak, phone +44 20 7946 0958."]
    for text in texts:
        segments = _segments(text, RedactionConfig().segment_chars)
        assert len(segments) > 10 and all(text[s:s + len(seg)] == seg for s, seg in segments)
    assert ("Thanks,\nOlivia" in _segments(texts[0], 1000)[-1][1])  # a short line stays with the next one
    with AnalysisCache(tmp_path / "c.sqlite", redactor.fingerprint) as cache:
        first = redactor.redact_texts(texts[:1], cache=cache)[0].text
        hits_before = cache.stats.hits
        second = redactor.redact_texts(texts[1:], cache=cache)[0].text
        assert cache.stats.hits - hits_before == 12  # the template's lines were analysed once
    assert first.endswith("The customer is <PERSON_1>, email <EMAIL_ADDRESS_1>.\nThanks,\n<PERSON_2>")
    assert second.endswith("The customer is <PERSON_1>, phone <PHONE_NUMBER_1>.")
    assert first.startswith(template) and second.startswith(template)


def _open_and_store(path: str, tag: str) -> None:
    with AnalysisCache(path, "fingerprint") as cache:
        cache.put_many((f"{tag} text {i}", [(0, 1, "PERSON", 0.85)]) for i in range(200))
        assert len(cache.get_many([f"{tag} text {i}" for i in range(200)])) == 200


def test_processes_create_and_fill_one_cache_file_at_once(tmp_path):
    import multiprocessing

    path = str(tmp_path / "new" / "analysis.sqlite")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open_and_store, args=(path, tag)) for tag in "abcd"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with AnalysisCache(path, "fingerprint") as cache:
        assert len(cache) == 800
