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

from eval_pipeline.lib.adapters import FORMATS, adapt, count_skipped_spans, detect_format
from eval_pipeline.lib.ingestion import (REASONS, build_manifest, ingest_day, iter_outcomes, scan_days, scan_file,
                                        validate_files)

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
NAMES = {"canonical": "f.canonical.jsonl", "openai": "f.openai.jsonl", "otlp": "f.otlp.jsonl", None: "f.jsonl"}
SEEDS = {
    fmt: [json.loads(line) for line in (FIXTURES / "landing" / name).read_text().splitlines() if line.strip()]
    for fmt, name in {"canonical": "support.canonical.jsonl", "openai": "traffic.openai.jsonl",
                      "otlp": "spans.otlp.jsonl"}.items()
}

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
        # Only an OTLP line without any model-call span yields no record (its spans are counted as skipped).
        obj = json.loads(data.removeprefix(b"\xef\xbb\xbf").split(b"\n")[line - 1])
        assert detect_format(obj) == "otlp" or name == NAMES["otlp"]
        assert adapt("otlp", obj) == []
    if name in (NAMES["canonical"], NAMES["openai"]):
        assert set(per_line.values()) <= {1}  # one line, one record


@given(landing_file())
def test_every_reader_accounts_for_every_line_of_any_file(file):
    _check_file(*file)


@given(st.sampled_from(sorted(NAMES.values(), key=str)), st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(name, data):
    _check_file(name, data)


# Values shaped like each format at the top, anything below: where an adapter's assumptions break.
SHAPED = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"resourceSpans": st.lists(JSON_VALUES | st.fixed_dictionaries(
        {"scopeSpans": st.lists(JSON_VALUES | st.fixed_dictionaries({"spans": JSON_VALUES}), max_size=2)}), max_size=2)}),
    st.fixed_dictionaries({"request": JSON_VALUES | st.fixed_dictionaries({"messages": JSON_VALUES}),
                           "response": JSON_VALUES | st.fixed_dictionaries({"choices": JSON_VALUES})}),
)


@given(st.sampled_from(FORMATS), st.one_of(SHAPED, st.sampled_from(SEEDS["otlp"] + SEEDS["openai"])))
def test_adapters_turn_any_json_value_into_candidates_or_errors(fmt, value):
    candidates = adapt(fmt, value)
    assert count_skipped_spans(value) >= 0
    assert all(isinstance(index, int) and isinstance(c, (dict, Exception)) for index, c in candidates)
