"""Property-based tests of every log reader: on any input, no exception, and every line accounted for.

The readers are the line parser (``iter_outcomes``), the manifest scan (``scan_days``,
``build_manifest``), a day's ingest (``ingest_day``), ``validate_files`` and the format adapters.
Inputs are arbitrary bytes, and valid records of each format (the fixtures) mutated: fields
deleted, renamed or retyped, values nested deeply, holding control or surrogate characters,
huge numbers and very long strings. The "ci" profile (conftest.py) fixes the examples drawn.
"""

import copy
import gzip
import json
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from conftest import FIXTURES
from hypothesis import event, given
from hypothesis import strategies as st

from eval_pipeline.lib.ingest.adapters import FORMATS, adapt, count_skipped_spans, detect_format
from eval_pipeline.lib.ingest.ingestion import (REASONS, _validate, build_manifest, ingest_day, iter_outcomes, scan_days,
                                        scan_file, validate_files)

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
NAMES = {"canonical": "f.canonical.jsonl", "openai": "f.openai.jsonl", "otlp": "f.otlp.jsonl",
         "openinference": "f.openinference.jsonl", "langfuse": "f.langfuse.jsonl", None: "f.jsonl"}
SEEDS = {
    fmt: [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]
    for fmt, name in {"canonical": "landing/support.canonical.jsonl", "openai": "landing/traffic.openai.jsonl",
                      "otlp": "landing/spans.otlp.jsonl",
                      "openinference": "traces/rag_and_chat.openinference.jsonl",
                      "langfuse": "traces/billing.langfuse.jsonl"}.items()
}
# Formats where one line holds several parts (spans, observations), some of which are not records.
MULTI = ("otlp", "openinference", "langfuse")

# Raw JSON text put in place of a value: what json.dumps cannot write, or would not.
RAW_VALUES = [
    "9" * 5000,  # beyond Python's int-from-string limit
    "-" + "1" * 400, "1e999", "-1e999", "1e-400", "NaN", "Infinity", "-0",
    "[" * 5000 + "]" * 5000,  # deeper than Python's parser goes
    '{"a": ' * 80 + "1" + "}" * 80,  # parses, deeper than a record may be
    '"\\ud800"', '"tail \\udfff"', '"\\ud83d"', '{"\\udc00": 1}', '["ok", "\\ud800x"]',
    '"' + "x" * 200_000 + '"', '"\\u0000\\u0007\\u001b\\u007f\\u2028"', '"\\ud83d\\ude00"',
    "true", "null", "[]", "{}", '""', "0", "-1", "1.5",
]
AWKWARD_TEXT = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(categories=["Cs", "Cc", "Zl", "Zp", "Co"]), max_size=5),
    st.sampled_from(["", "2026-13-45T99:00:00Z", "2099-01-01T00:00:00Z", "\ufeff", "\x00"]),
    st.integers(10_000, 100_000).map("x".__mul__),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=10**30, max_value=10**300)
    | st.floats(allow_nan=True, allow_infinity=True) | AWKWARD_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(AWKWARD_TEXT, inner, max_size=3),
    max_leaves=8,
)


def _slots(obj):
    """Every (container, key) of a parsed JSON value, iteratively."""
    found, stack = [], [obj]
    while stack:
        value = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in items:
            found.append((value, key))
            stack.append(child)
    return found


@st.composite
def mutated_line(draw, fmt):
    """One line of the format: a fixture record with up to three random mutations."""
    record = copy.deepcopy(draw(st.sampled_from(SEEDS[fmt])))
    raw: dict[str, str] = {}
    for _ in range(draw(st.integers(0, 3))):
        slots = _slots(record)
        if not slots:
            break
        container, key = slots[draw(st.integers(0, len(slots) - 1))]
        action = draw(st.sampled_from(["delete", "retype", "raw", "rename"]))
        if action == "delete":
            del container[key]
        elif action == "retype":
            container[key] = draw(JSON_VALUES)
        elif action == "raw":
            token = f"@@raw{len(raw)}@@"
            raw[token] = draw(st.sampled_from(RAW_VALUES))
            container[key] = token
        elif isinstance(container, dict):
            container[draw(AWKWARD_TEXT)] = container.pop(key)
    text = json.dumps(record)  # ensure_ascii: surrogates and controls are written as \u escapes
    for token, value in raw.items():
        text = text.replace(json.dumps(token), value)
    return text.encode("utf-8")


BYTE_LINES = st.binary(max_size=300).map(lambda b: b.replace(b"\n", b" "))


@st.composite
def landing_file(draw):
    """(file name, file bytes): a few lines, valid, mutated or arbitrary bytes, maybe gzip'd or cut."""
    fmt = draw(st.sampled_from([*FORMATS, None]))
    line_fmt = fmt or draw(st.sampled_from(FORMATS))
    lines = draw(st.lists(st.one_of(mutated_line(line_fmt), BYTE_LINES,
                                    st.sampled_from(SEEDS[line_fmt]).map(lambda r: json.dumps(r).encode())),
                          min_size=1, max_size=5))
    data = b"\n".join(lines) + draw(st.sampled_from([b"\n", b"", b"\r\n"]))
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    name = NAMES[fmt]
    packing = draw(st.sampled_from(["plain", "plain", "gzip", "cut_gzip"]))
    if packing != "plain":
        name += ".gz"
        data = gzip.compress(data)
        if packing == "cut_gzip":
            data = data[: draw(st.integers(0, len(data) - 1))]
    return name, data


def _nonblank_lines(data: bytes) -> list[int]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return [n for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()]


def _storable(value) -> None:
    """Everything a reader hands on can be written as UTF-8 (a stored row, a printed message)."""
    json.dumps(value, default=str, ensure_ascii=False).encode("utf-8")


def read_everything(landing: Path, name: str) -> list:
    """Run every reader on one file; assert they agree and that every record is accounted for."""
    path = landing / name
    outcomes = [o for o in iter_outcomes(path, name, now=NOW) if not isinstance(o, int)]
    for outcome in outcomes:
        assert (outcome.record is None) == (outcome.reason is not None)
        assert outcome.reason is None or outcome.reason in REASONS
        assert outcome.source_file == name and outcome.line >= 1
        _storable([outcome.field, outcome.message, outcome.raw_excerpt, outcome.request_id])
        event(outcome.reason or "record")

    fmt, days, _ = scan_days(path, name, now=NOW)
    assert fmt is None or fmt in FORMATS
    assert sum(days.values()) == len(outcomes) == len(scan_file(path, name, now=NOW).outcomes)
    entries, _ = build_manifest(landing, now=NOW)
    assert [e.days for e in entries] == [{d.isoformat(): n for d, n in sorted(days.items())}]

    report = validate_files([path], now=NOW)
    assert report.records == len(outcomes) == report.valid + len(report.errors)

    for day, count in days.items():
        ingest = ingest_day(landing, day, [name], now=NOW)
        assert ingest.records_in == count == len(ingest.rows) + len(ingest.quarantined)
        _storable(ingest.rows)
        _storable(ingest.quarantined)
    return outcomes


def _check_file(name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        landing = Path(folder)
        (landing / name).write_bytes(data)
        outcomes = read_everything(landing, name)
    if name.endswith(".gz"):
        return  # a cut stream's lines are not known in advance; the readers' agreement is checked above
    per_line = Counter(o.line for o in outcomes)
    lines = _nonblank_lines(data)
    assert set(per_line) <= set(lines)
    for line in set(lines) - set(per_line):
        # Only a trace line without any model call yields no record (its spans are counted as skipped).
        obj = json.loads(data.removeprefix(b"\xef\xbb\xbf").split(b"\n")[line - 1])
        fmt = next((f for f in MULTI if name == NAMES[f]), None) or detect_format(obj)
        assert fmt in MULTI
        assert adapt(fmt, obj) == []
    if name in (NAMES["canonical"], NAMES["openai"]):
        assert set(per_line.values()) <= {1}  # one line, one record


@given(landing_file())
def test_every_reader_accounts_for_every_line_of_any_file(file):
    _check_file(*file)


@given(st.sampled_from(sorted(NAMES.values(), key=str)), st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(name, data):
    _check_file(name, data)


# Values shaped like each format at the top, anything below: where an adapter's assumptions break.
# Each field of a trace part is plausible nine times in ten, anything the tenth, so the draws reach
# the adapters' inner fields and still break each of them.
def _or_any(*plausible):
    return st.integers(0, 9).flatmap(lambda n: JSON_VALUES if n == 0 else st.sampled_from(plausible))


_ATTR_VALUE = st.one_of(
    st.fixed_dictionaries({"stringValue": _or_any("LLM", "RETRIEVER", "CHAIN", "user", "assistant", "application/json",
                                                  "{}", "[1]", '{"temperature": [1, {"a": null}]}', "2")}),
    st.fixed_dictionaries({"intValue": _or_any("7", "-1", "x")}),
    st.fixed_dictionaries({"doubleValue": _or_any(0.5, 3.0, -0.1, "nan")}),
    st.fixed_dictionaries({"arrayValue": JSON_VALUES | st.fixed_dictionaries({"values": st.lists(
        st.fixed_dictionaries({"stringValue": AWKWARD_TEXT}) | JSON_VALUES, max_size=2)})}),
    JSON_VALUES,
)
_ATTRIBUTE = st.fixed_dictionaries({"key": st.sampled_from(
    ["openinference.span.kind", "llm.input_messages.0.message.role", "llm.input_messages.0.message.content",
     "llm.output_messages.0.message.content", "llm.input_messages.1.message.contents.0.message_content.text",
     "retrieval.documents.0.document.score", "retrieval.documents.0.document.content", "llm.invocation_parameters",
     "input.value", "input.mime_type", "output.value", "output.mime_type", "metadata", "session.id", "tag.tags",
     "llm.input_messages", "annotations.0.annotation.name", "annotations.0.annotation.label"]) | AWKWARD_TEXT,
    "value": _ATTR_VALUE})
_LLM_ATTRS = [{"key": "openinference.span.kind", "value": {"stringValue": "LLM"}},
              {"key": "llm.input_messages.0.message.role", "value": {"stringValue": "user"}},
              {"key": "llm.input_messages.0.message.content", "value": {"stringValue": "hi"}},
              {"key": "llm.model_name", "value": {"stringValue": "m"}}]
_SPAN = st.fixed_dictionaries(
    {"attributes": st.one_of(st.lists(_ATTRIBUTE, max_size=3).map(lambda extra: _LLM_ATTRS + extra),
                             st.lists(_ATTRIBUTE, max_size=3).map(lambda extra: _LLM_ATTRS[:1] + extra),
                             st.lists(_ATTRIBUTE, max_size=5), JSON_VALUES),
     "traceId": _or_any("t1", "t2"), "spanId": _or_any("s1", "s2", "s3"),
     "startTimeUnixNano": _or_any("1772445600000000000", "1772445601000000000", 1772445600000000000),
     "endTimeUnixNano": _or_any("1772445602000000000", "1772445599000000000"),
     "status": _or_any({"code": 2, "message": "boom"}, {"code": 1}, {})})
_OBSERVATION = st.fixed_dictionaries(
    {"type": _or_any("GENERATION", "GENERATION", "SPAN", "generation"), "id": _or_any("o1", "o2"),
     "input": _or_any([{"role": "user", "content": "hi"}], "a prompt", {"messages": [{"role": "user", "content": []}]}),
     "output": _or_any({"role": "assistant", "content": "ok"}, "ok", {"choices": [{"message": {"content": "x"}}]}),
     "startTime": _or_any("2026-03-02T10:00:00Z", "2026-03-02T10:00:00"), "traceId": _or_any("t1"),
     "model": _or_any("m")},
    optional={"endTime": _or_any("2026-03-02T10:00:01.5Z", "2026-03-02T09:00:00Z"), "level": _or_any("ERROR"),
              "usage": _or_any({"input": 1}), "usageDetails": _or_any({"input": 1, "output": 2}),
              "modelParameters": _or_any({"temperature": 0.1, "stop": ["x"]}), "metadata": _or_any({"task_type": "qa"}),
              "completionStartTime": _or_any("2026-03-02T10:00:00.2Z")})
_SCORE = st.fixed_dictionaries({"name": _or_any("user-feedback", "escalated", "other"),
                                "value": _or_any(0, 1, 0.5, True), "observationId": _or_any(None, "o1", "o2")},
                               optional={"stringValue": _or_any("up", "meh"), "dataType": _or_any("CATEGORICAL"),
                                         "comment": _or_any("why")})
_OI_LINE = st.fixed_dictionaries({"resourceSpans": st.lists(st.fixed_dictionaries(
    {"resource": _or_any({}, {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]}),
     "scopeSpans": st.lists(st.fixed_dictionaries({"spans": st.lists(_SPAN | JSON_VALUES, max_size=4)}), max_size=2)}),
    max_size=2)})
_LANGFUSE_TRACE = st.fixed_dictionaries(
    {"id": _or_any("t1"), "observations": _or_any([]).flatmap(lambda bad: st.just(bad) if bad else st.lists(
        st.integers(0, 9).flatmap(lambda n: JSON_VALUES if n == 0 else _OBSERVATION), max_size=3)),
     "scores": _or_any([]).flatmap(lambda bad: st.just(bad) if bad else st.lists(
        st.integers(0, 9).flatmap(lambda n: JSON_VALUES if n == 0 else _SCORE), max_size=3))},
    optional={"sessionId": _or_any("s1"), "tags": _or_any(["a", "b"]), "metadata": _or_any({"user_segment": "x"})})
TRACE_SHAPED = st.one_of(_OI_LINE, _LANGFUSE_TRACE, _OBSERVATION)
SHAPED = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"resourceSpans": st.lists(JSON_VALUES | st.fixed_dictionaries(
        {"scopeSpans": st.lists(JSON_VALUES | st.fixed_dictionaries({"spans": JSON_VALUES}), max_size=2)}), max_size=2)}),
    st.fixed_dictionaries({"request": JSON_VALUES | st.fixed_dictionaries({"messages": JSON_VALUES}),
                           "response": JSON_VALUES | st.fixed_dictionaries({"choices": JSON_VALUES})}),
    TRACE_SHAPED,
)


@given(st.sampled_from(FORMATS), st.one_of(SHAPED, st.sampled_from([s for f in MULTI + ("openai",) for s in SEEDS[f]])))
def test_adapters_turn_any_json_value_into_candidates_or_errors(fmt, value):
    candidates = adapt(fmt, value)
    assert count_skipped_spans(value, fmt) >= 0
    assert all(isinstance(index, int) and isinstance(c, (dict, Exception)) for index, c in candidates)
    assert [index for index, _ in candidates] == list(range(len(candidates)))


@given(st.one_of(_OI_LINE.map(lambda v: ("openinference", v)), _LANGFUSE_TRACE.map(lambda v: ("langfuse", v)),
                 _OBSERVATION.map(lambda v: ("langfuse", v))))
def test_trace_formats_account_for_every_part_of_a_line(drawn):
    """Every span or observation of a line is a candidate record (valid or not) or skipped, never both or neither;
    every candidate is a valid record or one quarantined with a known reason."""
    fmt, value = drawn
    outcomes = [_validate(c, {"source_file": "f", "line": 1}, i, json.dumps(value, default=str), NOW)
                for i, c in adapt(fmt, value)]
    assert all((o.record is None) == (o.reason in REASONS) for o in outcomes)
    event(f"{fmt}: {'records' if any(o.record for o in outcomes) else 'no record'}")
    candidates = adapt(fmt, value)
    skipped = count_skipped_spans(value, fmt)
    if fmt == "openinference" and isinstance(value, dict) and isinstance(value.get("resourceSpans"), list):
        spans = value["resourceSpans"]
        if all(isinstance(rs, dict) and isinstance(rs.get("scopeSpans"), list) and isinstance(rs.get("resource"), dict)
               and all(isinstance(ss, dict) and isinstance(ss.get("spans"), list) for ss in rs["scopeSpans"])
               for rs in spans):
            total = sum(len(ss["spans"]) for rs in spans for ss in rs["scopeSpans"])
            assert len(candidates) + skipped == total
    if fmt == "langfuse" and isinstance(value, dict) and isinstance(value.get("observations"), list) \
            and isinstance(value.get("scores") or [], list):
        assert len(candidates) + skipped == len(value["observations"])
