"""Tests of the demo log generator (eval_pipeline.demo.logs)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from eval_pipeline.demo import logs as demo_logs
from eval_pipeline.demo.logs import (
    DATA_DIR,
    FORMAT_SHARES,
    HARD_INTENTS,
    NEW_INTENTS_BY_MONTH,
    NEW_VERSION,
    OLD_VERSION,
    TASK_SHARES,
    default_cutover,
    generate_logs,
    iban_valid,
    luhn_valid,
    month_index,
)
from eval_pipeline.lib.ingest.records import LogRecord

START = date(2026, 1, 20)  # spans three calendar months: Jan (month 0), Feb (1), Mar (2)
DAYS = 45
PER_DAY = 40
SEED = 11


def _run(root: Path, seed: int = SEED, **kw: Any) -> demo_logs.GenerationSummary:
    return generate_logs(root / "landing", START, kw.pop("days", DAYS), kw.pop("per_day", PER_DAY), seed,
                         truth_dir=root / "truth", **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("demo")
    summary = _run(root)
    truth = [json.loads(x) for x in (root / "truth" / "records.jsonl").read_text("utf-8").splitlines()]
    malformed = [json.loads(x) for x in (root / "truth" / "malformed.jsonl").read_text("utf-8").splitlines()]
    bad_lines = {(m["file"], m["line"]) for m in malformed}
    records: dict[str, dict[str, Any]] = {}
    for path in sorted((root / "landing").rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(root / "landing").as_posix()
        fmt = _format_of(rel)
        for line_no, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if (rel, line_no) in bad_lines:
                continue
            for rec in _parse(fmt, json.loads(line)):
                rec.update(file=rel, line=line_no, fmt=fmt)
                assert rec["request_id"] not in records
                records[rec["request_id"]] = rec
    return {"root": root, "out": root / "landing", "summary": summary, "truth": truth,
            "malformed": malformed, "records": records}


# ---- a minimal reader of the three formats, independent of the project's adapters ----------------


def _format_of(rel: str) -> str:
    return {"canonical": "canonical", "openai": "openai", "otel": "otlp"}[rel.split("/")[0]]


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for a in span["attributes"]:
        v = a["value"]
        out[a["key"]] = (v.get("stringValue") if "stringValue" in v else int(v["intValue"]) if "intValue" in v
                         else v.get("doubleValue", v.get("boolValue", v.get("arrayValue"))))
    return out


def _parse(fmt: str, obj: dict[str, Any]) -> list[dict[str, Any]]:
    if fmt == "canonical":
        rec = LogRecord.model_validate(obj)
        return [{"request_id": rec.request_id, "conversation_id": rec.conversation_id,
                 "turn_index": rec.turn_index, "timestamp": obj["timestamp"], "task_type": rec.task_type,
                 "messages": [(m.role, m.content) for m in rec.messages], "completion": rec.completion,
                 "model_version": rec.model_version, "feedback": obj.get("feedback", {}),
                 "comment": rec.feedback.comment or "", "spans": 0}]
    if fmt == "openai":
        req, resp, meta = obj["request"], obj["response"], obj["request"]["metadata"]
        assert all(isinstance(v, str) for v in meta.values())
        assert resp["object"] == "chat.completion" and resp["id"].startswith("chatcmpl-")
        return [{"request_id": meta["request_id"], "conversation_id": meta["conversation_id"],
                 "turn_index": int(meta["turn_index"]), "timestamp": obj["timestamp"],
                 "task_type": meta["task_type"], "messages": [(m["role"], m["content"]) for m in req["messages"]],
                 "completion": resp["choices"][0]["message"]["content"], "model_version": resp["model"],
                 "feedback": obj.get("feedback", {}), "comment": obj.get("feedback", {}).get("comment") or "",
                 "spans": 0}]
    out = []
    (rs,) = obj["resourceSpans"]
    (ss,) = rs["scopeSpans"]
    spans = ss["spans"]
    assert len(spans) <= 20
    for span in spans:
        a = _attrs(span)
        if a.get("gen_ai.operation.name") != "chat":
            continue
        system = [("system", p["content"]) for p in json.loads(a["gen_ai.system_instructions"])]
        inputs = [(m["role"], m["parts"][0]["content"]) for m in json.loads(a["gen_ai.input.messages"])]
        (output,) = json.loads(a["gen_ai.output.messages"])
        feedback = json.loads(a.get("app.feedback", "{}"))
        out.append({"request_id": a["gen_ai.response.id"], "conversation_id": a["gen_ai.conversation.id"],
                    "turn_index": a["app.turn_index"], "timestamp": span["startTimeUnixNano"],
                    "task_type": a["app.task_type"], "messages": system + inputs,
                    "completion": output["parts"][0]["content"], "model_version": a["gen_ai.response.model"],
                    "feedback": feedback, "comment": feedback.get("comment") or "", "spans": len(spans)})
    return out


# ---- determinism --------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path: Path, run: dict[str, Any]) -> None:
    _run(tmp_path)
    assert _tree(tmp_path / "landing") == _tree(run["out"])
    assert _tree(tmp_path / "truth") == _tree(run["root"] / "truth")


def test_other_seed_gives_other_files(tmp_path: Path, run: dict[str, Any]) -> None:
    _run(tmp_path, seed=SEED + 1)
    other, mine = _tree(tmp_path / "landing"), _tree(run["out"])
    assert sorted(other) == sorted(mine)  # same names: one layout per date range
    assert all(other[name] != mine[name] for name in mine)


# ---- validity -------------------------------------------------------------------------------------


def test_every_valid_canonical_line_validates_and_malformed_ones_do_not(run: dict[str, Any]) -> None:
    bad = {(m["file"], m["line"]) for m in run["malformed"]}
    checked = rejected = 0
    for path in sorted((run["out"] / "canonical").glob("*.jsonl")):
        rel = path.relative_to(run["out"]).as_posix()
        for line_no, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if (rel, line_no) in bad:
                with pytest.raises((ValidationError, ValueError)):
                    LogRecord.model_validate_json(line)
                rejected += 1
            else:
                rec = LogRecord.model_validate_json(line)
                assert rec.timestamp.date().isoformat() == path.stem
                checked += 1
    assert checked == run["summary"].records_by_format["canonical"]
    assert rejected >= 1


def test_malformed_lines_are_recorded_and_broken(run: dict[str, Any]) -> None:
    malformed = run["malformed"]
    assert len(malformed) == run["summary"].malformed_lines >= 5
    assert len(malformed) <= 0.01 * run["summary"].records + 5
    assert len({m["kind"] for m in malformed}) >= 4
    files = {}
    for m in malformed:
        assert m["line"] > 1  # a file never starts with a broken line (format detection)
        lines = files.setdefault(m["file"], (run["out"] / m["file"]).read_text("utf-8").splitlines())
        raw = lines[m["line"] - 1]
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            assert m["kind"] in ("truncated_json", "not_json")
            continue
        fmt = m["format"]
        if m["kind"] == "missing_completion" and fmt == "canonical":
            assert "completion" not in obj
        elif m["kind"] == "missing_completion" and fmt == "openai":
            assert obj["response"]["choices"] == []
        elif m["kind"] == "invalid_timestamp" and fmt != "otlp":
            assert obj["timestamp"] == "2026-13-45T99:00:00Z"
        elif m["kind"] == "negative_latency" and fmt != "otlp":
            assert obj["latency_ms"] < 0
        elif m["kind"] == "wrong_type" and fmt == "canonical":
            assert obj["turn_index"] == "two"
        if m["request_id"]:
            assert m["request_id"] not in run["records"]


# ---- volumes and shares ---------------------------------------------------------------------------


def test_records_per_day_as_requested(run: dict[str, Any]) -> None:
    per_day = Counter(t["date"] for t in run["truth"])
    expected = {(START + timedelta(days=i)).isoformat(): PER_DAY for i in range(DAYS)}
    assert dict(per_day) == expected
    assert run["summary"].records_by_day == expected
    assert len(run["records"]) == DAYS * PER_DAY == run["summary"].records


def test_task_type_and_format_shares(run: dict[str, Any]) -> None:
    total = run["summary"].records
    by_task = run["summary"].records_by_task_type
    assert set(by_task) == set(TASK_SHARES)
    for task, share in TASK_SHARES.items():
        assert abs(by_task[task] / total - share) < 0.05, (task, by_task[task] / total)
    assert Counter(r["task_type"] for r in run["records"].values()) == Counter(by_task)
    by_fmt = run["summary"].records_by_format
    for fmt, share in FORMAT_SHARES.items():
        assert abs(by_fmt[fmt] / total - share) < 0.06, (fmt, by_fmt[fmt] / total)
    assert Counter(r["fmt"] for r in run["records"].values()) == Counter(by_fmt)


def test_file_layout_and_mixed_dates(run: dict[str, Any]) -> None:
    files = run["summary"].files
    assert files == sorted(_tree(run["out"]))
    for name in files:
        assert re.fullmatch(r"canonical/\d{4}-\d\d-\d\d\.jsonl|openai/week-\d{4}-\d\d-\d\d\.jsonl|"
                            r"otel/spans-\d{4}-\d\d-\d\d_\d{4}-\d\d-\d\d\.otlp\.jsonl", name), name
    dates_per_file = defaultdict(set)
    for t in run["truth"]:
        dates_per_file[t["file"]].add(t["date"])
    assert all(len(d) == 1 for f, d in dates_per_file.items() if f.startswith("canonical/"))
    assert max(len(d) for f, d in dates_per_file.items() if f.startswith("openai/")) == 7
    assert max(len(d) for f, d in dates_per_file.items() if f.startswith("otel/")) == 3
    # OTLP lines hold several calls plus non-LLM spans (HTTP server, retrieval)
    otlp = [r for r in run["records"].values() if r["fmt"] == "otlp"]
    assert otlp and max(r["spans"] for r in otlp) > 2 * 2
    text = (run["out"] / next(f for f in files if f.startswith("otel/"))).read_text("utf-8")
    assert '"name":"POST /chat"' in text and '"kind":2' in text


# ---- content --------------------------------------------------------------------------------------


def _time_key(rec: dict[str, Any]) -> Any:
    return int(rec["timestamp"]) if rec["fmt"] == "otlp" else rec["timestamp"]  # OTLP: unix nanos


def test_multi_turn_records_carry_full_history(run: dict[str, Any]) -> None:
    convs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in run["records"].values():
        if r["task_type"] == "multi_turn":
            convs[r["conversation_id"]].append(r)
    assert len(convs) > 20
    lengths = Counter()
    for turns in convs.values():
        turns.sort(key=lambda r: r["turn_index"])
        assert [r["turn_index"] for r in turns] == list(range(len(turns)))
        assert len({r["fmt"] for r in turns}) == 1
        lengths[len(turns)] += 1
        for k, r in enumerate(turns):
            roles = [role for role, _ in r["messages"]]
            assert roles[0] == "system"
            assert roles.count("user") == k + 1 and roles.count("assistant") == k
            assert roles[-1] == "user"
            if k:
                prev = turns[k - 1]
                assert r["messages"][:-1] == prev["messages"] + [("assistant", prev["completion"])]
                assert _time_key(r) > _time_key(prev)
    assert set(lengths) <= {2, 3, 4} and len(lengths) >= 2


def test_pii_inserted_in_about_the_intended_share(run: dict[str, Any]) -> None:
    truth = run["truth"]
    new_in_user = [t for t in truth
                   if any(p["field"] == "messages" and p["turn_index"] == t["turn_index"] for p in t["pii"])]
    share = len(new_in_user) / len(truth)
    assert 0.10 <= share <= 0.20, share
    types = Counter(p["type"] for t in truth for p in t["pii"])
    assert set(types) == {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE"}
    fields = Counter(p["field"] for t in truth for p in t["pii"])
    assert fields["completion"] > 0 and fields["feedback.comment"] > 0
    for t in truth:
        rec = run["records"][t["request_id"]]
        texts = {"messages": "\n".join(c for _, c in rec["messages"]), "completion": rec["completion"],
                 "feedback.comment": rec["comment"]}
        for p in t["pii"]:
            assert p["value"] in texts[p["field"]], (t["request_id"], p)
            if p["type"] == "CREDIT_CARD":
                assert luhn_valid(p["value"]) and len(re.sub(r"\D", "", p["value"])) == 16
            if p["type"] == "IBAN_CODE":
                assert iban_valid(p["value"])


def test_pii_formats_include_international_phone_numbers(tmp_path: Path) -> None:
    rng_values = [demo_logs._phone(random.Random(i)) for i in range(300)]
    assert any(v.startswith("+44 20 7946 0") for v in rng_values)
    assert any(re.fullmatch(r"\+1 \(\d{3}\) 555-01\d\d", v) for v in rng_values)
    assert luhn_valid("4111 1111 1111 1111") and not luhn_valid("4111 1111 1111 1112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB83 WEST 1234 5698 7654 32")


def test_both_model_versions_around_the_cutover(run: dict[str, Any], tmp_path: Path) -> None:
    cutover = run["summary"].cutover
    assert cutover == default_cutover(START, DAYS) == START + timedelta(days=27)
    for t in run["truth"]:
        assert t["model_version"] == (OLD_VERSION if date.fromisoformat(t["date"]) < cutover else NEW_VERSION)
    assert run["summary"].records_by_model_version == {OLD_VERSION: 27 * PER_DAY, NEW_VERSION: 18 * PER_DAY}
    assert {r["model_version"] for r in run["records"].values()} == {OLD_VERSION, NEW_VERSION}
    # the cutover is a parameter
    summary = _run(tmp_path, days=4, per_day=10, cutover=START + timedelta(days=1))
    assert summary.records_by_model_version == {OLD_VERSION: 10, NEW_VERSION: 30}


def test_open_questions_use_the_version_specific_arena_answers(run: dict[str, Any]) -> None:
    data = demo_logs._data()
    arena = {q["uid"]: q for q in data.arena}
    checked = 0
    for t in run["truth"]:
        if t["source"] == "arena_hard":
            rec = run["records"][t["request_id"]]
            model = demo_logs.ANSWER_MODEL_BY_VERSION[t["model_version"]]
            assert rec["completion"] == arena[t["source_id"]]["answers"][model]
            assert rec["messages"][-1] == ("user", arena[t["source_id"]]["prompt"])
            checked += 1
    assert checked > 10


def test_intent_long_tail_and_new_intents_by_month(run: dict[str, Any]) -> None:
    intents = Counter(t["intent"] for t in run["truth"] if t["intent"])
    top = intents.most_common()
    assert top[0][1] > 10 * top[-1][1]  # skewed
    assert len(intents) >= 60
    for t in run["truth"]:
        if not t["intent"]:
            continue
        m = month_index(START, date.fromisoformat(t["date"]))
        for launch, names in NEW_INTENTS_BY_MONTH.items():
            if t["intent"] in names:
                assert m >= launch, t
    by_month = defaultdict(Counter)
    for t in run["truth"]:
        if t["intent"]:
            by_month[month_index(START, date.fromisoformat(t["date"]))][t["intent"]] += 1
    assert by_month[1]["apple_pay_or_google_pay"] > 5
    assert sum(by_month[2][i] for i in NEW_INTENTS_BY_MONTH[2]) > 0


def test_quality_signals_are_correlated_with_categories(run: dict[str, Any]) -> None:
    def down_rate(pred: Any) -> float:
        sel = [t for t in run["truth"] if pred(t)]
        assert len(sel) > 50
        return sum(run["records"][t["request_id"]]["feedback"].get("thumbs") == "down" for t in sel) / len(sel)

    hard = down_rate(lambda t: t["intent"] in HARD_INTENTS)
    other = down_rate(lambda t: t["intent"] is not None and t["intent"] not in HARD_INTENTS)
    assert hard > 2 * other
    old = down_rate(lambda t: t["task_type"] == "extraction" and t["model_version"] == OLD_VERSION)
    new = down_rate(lambda t: t["task_type"] == "extraction" and t["model_version"] == NEW_VERSION)
    assert old > 2 * new
    flags = Counter(k for r in run["records"].values() for k, v in r["feedback"].items() if v)
    for key in ("thumbs", "abandoned", "clarification_requested", "parse_error", "regenerated", "escalated",
                "comment"):
        assert flags[key] > 0, key


def test_extraction_truth_matches_correct_completions(run: dict[str, Any]) -> None:
    n = errors = 0
    for t in run["truth"]:
        if t["task_type"] != "extraction":
            continue
        rec = run["records"][t["request_id"]]
        fields = {k: t["extraction"][k] for k in ("amount", "currency", "date")}
        if t["error"] is None:
            assert json.loads(rec["completion"]) == fields
            n += 1
        elif t["error"] == "invalid_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(rec["completion"])
            assert rec["feedback"]["parse_error"] is True
            errors += 1
        else:
            assert json.loads(rec["completion"]) != fields
            errors += 1
    assert n > 100 and errors > 0


def test_rag_records_inject_their_chunks_into_the_system_prompt(run: dict[str, Any]) -> None:
    canonical = sorted((run["out"] / "canonical").glob("*.jsonl"))[0].read_text("utf-8").splitlines()
    rag = [json.loads(x) for x in canonical if '"task_type":"rag_qa"' in x]
    assert rag
    for obj in rag:
        chunks = obj["retrieved_chunks"]
        assert 2 <= len(chunks) <= 4
        system = obj["messages"][0]["content"]
        assert "Use the following context:\n[kb-" in system
        for c in chunks:
            assert f"[{c['doc_id']}] {c['text']}" in system and 0 <= c["score"] <= 1


def test_truth_is_consistent_with_the_logs(run: dict[str, Any]) -> None:
    truth = run["truth"]
    assert len({t["request_id"] for t in truth}) == len(truth)
    assert {t["request_id"] for t in truth} == set(run["records"])
    for t in truth:
        rec = run["records"][t["request_id"]]
        assert (rec["file"], rec["line"]) == (t["file"], t["line"])
        assert rec["fmt"] == t["format"] and rec["task_type"] == t["task_type"]
        assert rec["turn_index"] == t["turn_index"] and rec["conversation_id"] == t["conversation_id"]
        if t["source"] == "banking77" and t["turn_index"] == 0:
            assert t["intent"] in demo_logs._data().categories


def test_truth_dir_default_and_never_inside_out_dir(tmp_path: Path) -> None:
    summary = generate_logs(tmp_path / "logs", START, 1, 5, 1)
    assert summary.truth_dir == tmp_path / "demo_truth"
    assert (tmp_path / "demo_truth" / "records.jsonl").exists()
    logs = tmp_path / "logs"
    assert not any("truth" in p.relative_to(logs).as_posix() for p in logs.rglob("*"))
    with pytest.raises(ValueError):
        generate_logs(tmp_path / "logs", START, 1, 5, 1, truth_dir=tmp_path / "logs" / "truth")


# ---- package data ---------------------------------------------------------------------------------


def test_copied_data_files_exist_with_attribution() -> None:
    for rel in ("banking77/train.csv", "banking77/categories.json", "banking77/LICENSE",
                "mt_bench/question.jsonl", "arena_hard/question.jsonl",
                "arena_hard/model_answer_gpt-3.5-turbo-0125.jsonl", "arena_hard/model_answer_gpt-4-0613.jsonl",
                "help_centre_kb.json", "README.md"):
        assert (DATA_DIR / rel).is_file(), rel
    readme = (DATA_DIR / "README.md").read_text("utf-8")
    for needle in ("PolyAI-LDN/task-specific-datasets", "Casanueva et al. 2020",
                   "Efficient Intent Detection with Dual Sentence Encoders", "CC-BY-4.0",
                   "lm-sys/FastChat", "Zheng et al. 2023", "lmarena/arena-hard-auto", "Apache-2.0",
                   "outputs subject to the provider's terms"):
        assert needle in readme, needle
    assert "Attribution 4.0 International" in (DATA_DIR / "banking77" / "LICENSE").read_text("utf-8")
    total = sum(p.stat().st_size for p in DATA_DIR.rglob("*") if p.is_file())
    assert total < 1_500_000
    data = demo_logs._data()
    assert len(data.mt_bench) == 80 and len(data.arena) == 120
    assert sum(len(v) for v in data.queries.values()) == 10_003 and len(data.categories) == 77
    for q in data.arena:
        assert set(q["answers"]) == {"gpt-3.5-turbo-0125", "gpt-4-0613"}
        assert all(len(a) <= 1_520 for a in q["answers"].values())
    # every intent has a help-centre article
    assert set(data.docs_by_intent) == set(data.categories)
