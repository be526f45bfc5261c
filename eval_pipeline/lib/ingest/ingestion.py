"""Reading log files into canonical records, with every bad line quarantined and accounted for.

The unit of account is the *record*: one line of a canonical or OpenAI file, one model-call
span of an OTLP or OpenInference line, or one generation of a Langfuse line (with, for these
three, each part of the line too malformed to tell what it is). Every record ends in exactly one place: a valid :class:`LogRecord`, or a
:class:`Quarantined` entry with a reason code, the file, the line, the field and a message.

Each record belongs to the UTC day of its own timestamp. A line whose timestamp cannot be read
(broken JSON, a missing or invalid timestamp, a time in the future) belongs to the file's
*anchor day*: the earliest day of the file's valid records, or, when it has none, the UTC day
of the file's modification time. So every line lands in exactly one daily partition.

No line can stop a file: nesting too deep to parse, a huge integer, an unpaired surrogate escape
and an adapter's surprise are each a quarantined record. A UTF-8 byte-order mark at the start of
a file is dropped; gzip'd files are read by their magic bytes, and one that is cut off or corrupt
keeps the lines before the break, the rest becoming one ``corrupt_file`` record.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pydantic import TypeAdapter, ValidationError

from eval_pipeline.lib.ingest.adapters import AdapterError, adapt, count_skipped_spans, detect_format, format_from_name
from eval_pipeline.lib.ingest.records import LogRecord, record_to_row

__all__ = [
    "REASONS",
    "DEFAULT_MAX_LINE_BYTES",
    "MAX_NESTING",
    "FUTURE_SKEW",
    "FIRST_DAY",
    "Outcome",
    "FileScan",
    "ManifestEntry",
    "DayIngest",
    "iter_outcomes",
    "scan_file",
    "scan_days",
    "list_landing_files",
    "build_manifest",
    "manifest_changed_days",
    "ingest_day",
    "validate_files",
]

# Reason codes a quarantined record can carry, with what a person should do about each.
REASONS: dict[str, str] = {
    "not_utf8": "the line is not valid UTF-8; re-export the file as UTF-8",
    "line_too_long": "the line is longer than the configured limit (max_line_bytes)",
    "invalid_json": "the line is not valid JSON",
    "too_deeply_nested": "objects and lists are nested deeper than the contract allows (MAX_NESTING); flatten the value",
    "invalid_text": "a string holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff): not text, cannot be stored",
    "not_an_object": "the line is JSON but not an object",
    "unknown_format": "the format could not be detected; name the file *.canonical.jsonl, *.openai.jsonl, *.otlp.jsonl, "
                      "*.openinference.jsonl or *.langfuse.jsonl",
    "missing_field": "a required field is missing",
    "unknown_field": "a field the contract does not know (misspelt?)",
    "wrong_type": "a field has the wrong type",
    "invalid_value": "a field's value is outside what the contract allows",
    "invalid_timestamp": "the timestamp cannot be read as a date and time",
    "future_timestamp": "the timestamp is in the future (clock skew or a bad value)",
    "early_timestamp": "the timestamp is before FIRST_DAY, the first day the pipeline has partitions for (a bare "
                       "number is read as seconds since 1970); move FIRST_DAY back if your history is older",
    "duplicate_id": "another record of the same day already has this request_id",
    "adapter_error": "the adapter could not read the record's structure",
    "corrupt_file": "the compressed file is truncated or corrupt from this line on; the lines before it are kept; re-copy the file",
}

DEFAULT_MAX_LINE_BYTES = 2 * 1024 * 1024  # a 128k-token prompt with RAG context is about 0.5 MB
FUTURE_SKEW = timedelta(minutes=5)
# The first day the pipeline has a daily partition for (defs/partitions.py builds its partitions
# from it). A record from before it would land in no partition, so it is quarantined instead.
FIRST_DAY = date(2025, 1, 1)
# The deepest nesting of objects and lists a record may have. Real records are a few levels deep
# (an OTLP span about ten); the limit keeps every later step (validation, JSON columns) far from
# Python's recursion limit.
MAX_NESTING = 64
_DATETIME = TypeAdapter(datetime)
_WRONG_TYPE_SUFFIXES = ("_type", "_parsing", "_from_float")


@dataclass(frozen=True)
class Outcome:
    """What became of one record of a file."""

    source_file: str
    line: int
    index: int
    record: LogRecord | None = None
    reason: str | None = None
    field: str | None = None
    message: str | None = None
    day: date | None = None
    raw_excerpt: str | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        # A quarantined line's field path, message or excerpt may quote an unpaired surrogate;
        # escape it so the row can still be stored and printed.
        for name in ("field", "message", "raw_excerpt", "request_id", "source_file"):
            value = getattr(self, name)
            if isinstance(value, str) and _SURROGATE.search(value):
                object.__setattr__(self, name, _escape_surrogates(value))


@dataclass
class FileScan:
    """A whole file read once: its format, records per day and anchor day."""

    source_file: str
    format: str | None
    outcomes: list[Outcome]
    anchor_day: date
    skipped_spans: int = 0

    @property
    def days(self) -> Counter[date]:
        return Counter(o.day for o in self.outcomes if o.day is not None)

    @property
    def stable(self) -> bool:
        """True when re-reading the same bytes later gives the same days (safe to cache)."""
        has_own_day = any(o.record is not None for o in self.outcomes)
        return has_own_day and not any(o.reason == "future_timestamp" for o in self.outcomes)


@dataclass(frozen=True)
class ManifestEntry:
    """One landing file as last seen: identity, content hash and the days it holds."""

    path: str
    size_bytes: int
    mtime_ns: int
    sha256: str
    format: str | None
    days: dict[str, int]
    status: str = "new"

    @property
    def first_day(self) -> str | None:
        return min(self.days) if self.days else None

    @property
    def last_day(self) -> str | None:
        return max(self.days) if self.days else None


@dataclass
class DayIngest:
    """The result of ingesting one day: rows for ``raw_logs`` and ``quarantined_logs``."""

    day: date
    rows: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    records_in: int = 0
    skipped_spans: int = 0
    files: list[str] = field(default_factory=list)

    @property
    def reason_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(q["reason"] for q in self.quarantined).items()))


# --------------------------------------------------------------------------------------------
# one file


def _excerpt(raw: bytes | str, limit: int = 300) -> str:
    if isinstance(raw, bytes):
        raw = raw[: limit * 4].decode("utf-8", errors="replace")
    return raw[:limit]


def _timestamp_hint(candidate: Any) -> datetime | None:
    if not isinstance(candidate, dict) or "timestamp" not in candidate:
        return None
    try:
        value = _DATETIME.validate_python(candidate["timestamp"])
    except ValidationError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _validation_outcome(err: ValidationError) -> tuple[str, str, str]:
    """Reason code, field path and message for the first problem pydantic found."""
    problems = err.errors(include_url=False)
    first = problems[0]
    path = ".".join(str(p) for p in first["loc"])
    kind = first["type"]
    if kind == "missing":
        reason = "missing_field"
    elif kind == "extra_forbidden":
        reason = "unknown_field"
    elif first["loc"] and first["loc"][0] == "timestamp":
        reason = "invalid_timestamp"
    elif kind.endswith(_WRONG_TYPE_SUFFIXES):
        reason = "wrong_type"
    else:
        reason = "invalid_value"
    parts = []
    for problem in problems[:3]:
        where = ".".join(str(p) for p in problem["loc"]) or "(record)"
        got = "" if problem["type"] == "missing" else f" (got {_excerpt(repr(problem.get('input')), 60)})"
        parts.append(f"{where}: {problem['msg']}{got}")
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    return reason, path, "; ".join(parts) + more


_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class _Corrupt:
    """Where a compressed file stops being readable: the line it would have been, and why."""

    line: int
    message: str


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


def _raw_lines(path: Path, limit: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[tuple[int, bytes, int] | _Corrupt]:
    """``(line number, bytes, size)`` for each line of a file, gzip'd or not, numbered from 1,
    after a leading UTF-8 byte-order mark. A line longer than ``limit`` is read past, never held
    whole: its bytes are only its start. A gzip'd file that is truncated or corrupt midway yields
    its readable lines, then one :class:`_Corrupt` for the rest."""
    done = 0  # lines handed on
    with (gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")) as handle:
        try:
            if handle.read(len(_BOM)) != _BOM:
                handle.seek(0)
            while head := handle.readline(limit + 1):
                size = len(head)
                if size > limit:
                    tail = head
                    while not tail.endswith(b"\n") and (tail := handle.readline(1 << 20)):
                        size += len(tail)
                    head = head[:4096]  # enough for the excerpt
                done += 1
                yield done, head, size
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
            yield _Corrupt(done + 1, f"gzip stream unreadable after line {done} ({type(err).__name__}: {err})")


def _parse(text: str) -> tuple[Any, tuple[str, str, str] | None]:
    """The JSON value of a line, or ``(reason, field, message)`` when it is not one a record can be
    made of. Never raises: deep nesting and oversized integers are reasons, not crashes."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        return None, ("invalid_json", "", f"column {err.colno}: {err.msg}")
    except RecursionError:
        return None, ("too_deeply_nested", "", f"objects and lists nested deeper than Python can parse; the limit is {MAX_NESTING}")
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        return None, ("invalid_json", "", f"{err}")
    return obj, (_inspect(obj) if _may_be_unstorable(text, obj) else None)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _may_be_unstorable(text: str, obj: Any) -> bool:
    """Whether a parsed line (or what an adapter decoded from its strings) can hold a surrogate or
    nest too deep, so that :func:`_inspect` must look: decoded UTF-8 has no surrogate but an
    escaped one, and nesting needs brackets. A C-speed scan, then for lines with many brackets
    (OTLP and OpenAI lines have dozens) a walk over the containers alone, spare the full walk,
    which builds a field path for every value, for nearly every record."""
    if _SURROGATE_ESCAPE.search(text):
        return True
    return text.count("[") + text.count("{") > MAX_NESTING and _deeper_than(obj, MAX_NESTING)


def _deeper_than(obj: Any, limit: int) -> bool:
    """Whether objects and lists nest more than ``limit`` levels, level by level."""
    level, depth = ([obj] if isinstance(obj, (dict, list)) else []), 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below = []
        for value in level:
            below.extend(c for c in (value.values() if isinstance(value, dict) else value) if isinstance(c, (dict, list)))
        level = below
    return False


def _inspect(obj: Any) -> tuple[str, str, str] | None:
    """``(reason, field, message)`` for the first value of a parsed record that nothing downstream
    can take: nesting deeper than :data:`MAX_NESTING`, or a string (key or value) holding an
    unpaired UTF-16 surrogate. JSON can escape one (``"\\ud800"``) although it is not text, and
    it cannot be encoded as UTF-8. Iterative, so no depth of input can exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(obj, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            found = _SURROGATE.search(value)
            if found:
                return ("invalid_text", path, f"{path or '(record)'}: unpaired surrogate \\u{ord(found.group()):04x} "
                        "in a string (not text; cannot be stored as UTF-8)")
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth >= MAX_NESTING:
            return ("too_deeply_nested", path, f"{path or '(record)'}: nested more than {MAX_NESTING} levels deep")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        children = []
        for key, child in items:
            inner = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _SURROGATE.search(key):
                return ("invalid_text", inner, f"{inner}: unpaired surrogate \\u{ord(_SURROGATE.search(key).group()):04x} "
                        "in a key (not text; cannot be stored as UTF-8)")
            children.append((child, inner, depth + 1))
        stack.extend(reversed(children))
    return None


def iter_outcomes(
    path: Path,
    source_file: str | None = None,
    fmt: str | None = None,
    now: datetime | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[Outcome | int]:
    """Parse and validate every record of a file, in file order.

    Yields :class:`Outcome` objects, and plain ints for spans skipped as not model calls.
    ``day`` is set when the record's own timestamp is usable; None otherwise. Never raises on
    the file's content: every line ends as a record or a quarantined outcome.
    """
    name = source_file or str(path)
    now = now or datetime.now(timezone.utc)
    file_format = fmt or format_from_name(path.name)
    for item in _raw_lines(path, max_line_bytes):
        if isinstance(item, _Corrupt):
            yield Outcome(source_file=name, line=item.line, index=0, reason="corrupt_file", field="",
                          message=item.message)
            return
        lineno, raw, size = item
        base = {"source_file": name, "line": lineno}
        if size > max_line_bytes:
            yield Outcome(**base, index=0, reason="line_too_long", field="",
                          message=f"line is {size:,} bytes; the limit is {max_line_bytes:,}",
                          raw_excerpt=_excerpt(raw))
            continue
        if not raw.strip():
            continue  # blank lines are not records
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            yield Outcome(**base, index=0, reason="not_utf8", field="",
                          message=f"byte {err.start}: {err.reason}", raw_excerpt=_excerpt(raw))
            continue
        obj, problem = _parse(text)
        if problem is not None:
            reason, where, message = problem
            yield Outcome(**base, index=0, reason=reason, field=where, message=message, raw_excerpt=_excerpt(text))
            continue
        line_format = file_format or detect_format(obj)
        if line_format is None:
            yield Outcome(**base, index=0, reason="unknown_format", field="",
                          message="not a canonical record, an OpenAI request/response pair, OTLP or OpenInference spans, "
                                  "or a Langfuse trace or observation",
                          raw_excerpt=_excerpt(text))
            continue
        file_format = file_format or line_format  # the first recognised line fixes the file's format
        try:
            skipped = count_skipped_spans(obj, line_format)
            candidates = adapt(line_format, obj)
        except Exception as err:  # noqa: BLE001 - any structural surprise is quarantined, not raised
            skipped = 0
            candidates = [(0, AdapterError("adapter_error", "", f"{type(err).__name__}: {err}"))]
        if skipped:
            yield skipped
        for index, candidate in candidates:
            yield _validate(candidate, base, index, text, now)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogates(text: str) -> str:
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def _validate(candidate: dict[str, Any] | AdapterError, base: dict[str, Any], index: int,
              text: str, now: datetime) -> Outcome:
    if isinstance(candidate, AdapterError):
        return Outcome(**base, index=index, reason=candidate.reason, field=candidate.field,
                       message=candidate.message, raw_excerpt=_excerpt(text))
    # An adapter may decode JSON held in a string (OTLP attributes): check what it made, too.
    problem = _inspect(candidate) if _may_be_unstorable(text, candidate) else None
    if problem is not None:
        reason, where, message = problem
        return Outcome(**base, index=index, reason=reason, field=where, message=message, raw_excerpt=_excerpt(text))
    try:
        return _check(candidate, base, index, text, now)
    except Exception as err:  # noqa: BLE001 - one odd record costs one record, never the file
        return Outcome(**base, index=index, reason="adapter_error", field="",
                       message=f"{type(err).__name__}: {_excerpt(str(err), 200)}", raw_excerpt=_excerpt(text))


def _check(candidate: dict[str, Any], base: dict[str, Any], index: int, text: str, now: datetime) -> Outcome:
    hint = _timestamp_hint(candidate)
    hint_day = hint.date() if hint is not None and FIRST_DAY <= hint.date() and hint <= now + FUTURE_SKEW else None
    request_id = candidate.get("request_id")
    request_id = request_id if isinstance(request_id, str) else None
    try:
        record = LogRecord.model_validate(candidate)
    except ValidationError as err:
        reason, where, message = _validation_outcome(err)
        return Outcome(**base, index=index, reason=reason, field=where, message=message, day=hint_day,
                       raw_excerpt=_excerpt(text), request_id=request_id)
    if record.timestamp > now + FUTURE_SKEW:
        return Outcome(**base, index=index, reason="future_timestamp", field="timestamp",
                       message=f"timestamp: {record.timestamp.isoformat()} is in the future (beyond {FUTURE_SKEW} of clock skew)",
                       raw_excerpt=_excerpt(text), request_id=record.request_id)
    if record.timestamp.date() < FIRST_DAY:
        return Outcome(**base, index=index, reason="early_timestamp", field="timestamp",
                       message=f"timestamp: {record.timestamp.isoformat()} is before the first day with partitions "
                               f"({FIRST_DAY.isoformat()}, FIRST_DAY in lib/ingest/ingestion.py)",
                       raw_excerpt=_excerpt(text), request_id=record.request_id)
    return Outcome(**base, index=index, record=record, day=record.timestamp.date(), request_id=record.request_id)


def scan_file(path: Path, source_file: str | None = None, fmt: str | None = None,
              now: datetime | None = None, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> FileScan:
    """Read a whole file and give every record a day (its own, or the file's anchor day)."""
    outcomes: list[Outcome] = []
    skipped = 0
    for item in iter_outcomes(path, source_file, fmt, now, max_line_bytes):
        if isinstance(item, int):
            skipped += item
        else:
            outcomes.append(item)
    own_days = [o.day for o in outcomes if o.record is not None and o.day is not None]
    anchor = _anchor(path, min(own_days) if own_days else None)
    dated = [o if o.day is not None else _with_day(o, anchor) for o in outcomes]
    detected = fmt or format_from_name(path.name) or _first_format(path)
    return FileScan(source_file or str(path), detected, dated, anchor, skipped)


def _anchor(path: Path, first_own: date | None) -> date:
    """The day of a file's lines that have none of their own: its earliest record's day, else
    the day the file was last modified; never before FIRST_DAY (an archive copied with its old
    modification time still lands in a partition)."""
    if first_own is not None:
        return first_own
    return max(FIRST_DAY, datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).date())


def scan_days(path: Path, source_file: str | None = None, now: datetime | None = None,
              max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> tuple[str | None, Counter[date], bool]:
    """What :func:`scan_file` says of a file's days, ``(format, records per day, stable)``, in one
    pass that keeps no record: the manifest of a folder of week-long files reads them in
    constant memory."""
    days: Counter[date] = Counter()
    undated = 0
    first_own: date | None = None
    future = False
    for item in iter_outcomes(path, source_file, None, now, max_line_bytes):
        if isinstance(item, int):
            continue
        future = future or item.reason == "future_timestamp"
        if item.record is not None and item.day is not None:
            first_own = item.day if first_own is None else min(first_own, item.day)
        if item.day is None:
            undated += 1
        else:
            days[item.day] += 1
    if undated:
        days[_anchor(path, first_own)] += undated
    detected = format_from_name(path.name) or _first_format(path)
    return detected, days, first_own is not None and not future


def _with_day(outcome: Outcome, day: date) -> Outcome:
    return Outcome(**{**outcome.__dict__, "day": day})


def _first_format(path: Path) -> str | None:
    for item in _raw_lines(path):
        if isinstance(item, _Corrupt):
            return None
        if item[2] > DEFAULT_MAX_LINE_BYTES:
            continue
        try:
            text = item[1].decode("utf-8")
        except UnicodeDecodeError:
            continue
        obj, problem = _parse(text)
        found = detect_format(obj) if problem is None else None
        if found:
            return found
    return None


# --------------------------------------------------------------------------------------------
# the landing folder and its manifest


def list_landing_files(landing: Path) -> list[Path]:
    """Every regular file under the landing folder, in a stable order (hidden files skipped)."""
    if not landing.exists():
        return []
    found = []
    for root, dirs, files in os.walk(landing):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
    return sorted(found, key=lambda p: p.relative_to(landing).as_posix())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(
    landing: Path,
    previous: dict[str, str] | None = None,
    cache_dir: Path | None = None,
    now: datetime | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> tuple[list[ManifestEntry], list[str]]:
    """Scan the landing folder into manifest entries.

    Args:
        landing: the folder log files are dropped into.
        previous: path -> sha256 from the last manifest, to mark files new/changed/unchanged.
        cache_dir: a content-addressed cache (sha256 -> days) so unchanged files are not re-parsed.

    Returns:
        The entries, and the paths of files that were in ``previous`` but are gone now.
    """
    previous = previous or {}
    entries = []
    for path in list_landing_files(landing):
        rel = path.relative_to(landing).as_posix()
        stat = path.stat()
        sha = _sha256(path)
        cached = _cache_get(cache_dir, sha, max_line_bytes)
        if cached is None:
            fmt, days, stable = scan_days(path, rel, now=now, max_line_bytes=max_line_bytes)
            cached = {"format": fmt, "days": {d.isoformat(): n for d, n in sorted(days.items())}}
            if stable:
                _cache_put(cache_dir, sha, max_line_bytes, cached)
        status = "new" if rel not in previous else ("unchanged" if previous[rel] == sha else "changed")
        entries.append(ManifestEntry(rel, stat.st_size, stat.st_mtime_ns, sha, cached["format"], cached["days"], status))
    gone = sorted(set(previous) - {e.path for e in entries})
    return entries, gone


def manifest_changed_days(entries: list[ManifestEntry], gone: list[str],
                          previous_days: dict[str, str] | None = None) -> list[str]:
    """Days whose records may differ from the last ingest: every day a new, changed or removed
    file holds now or held before (``previous_days`` maps path -> the old JSON day index)."""
    previous_days = previous_days or {}
    days: set[str] = set()
    for entry in entries:
        if entry.status in ("new", "changed"):
            days |= set(entry.days)
            days |= set(json.loads(previous_days.get(entry.path) or "{}"))
    for path in gone:
        days |= set(json.loads(previous_days.get(path) or "{}"))
    return sorted(days)


def _cache_key(cache_dir: Path, sha: str, max_line_bytes: int) -> Path:
    return cache_dir / f"{sha}-{max_line_bytes}.json"


def _cache_get(cache_dir: Path | None, sha: str, max_line_bytes: int) -> dict[str, Any] | None:
    if cache_dir is None:
        return None
    key = _cache_key(cache_dir, sha, max_line_bytes)
    return json.loads(key.read_text()) if key.exists() else None


def _cache_put(cache_dir: Path | None, sha: str, max_line_bytes: int, value: dict[str, Any]) -> None:
    # Callers cache only stable scans: an anchor day taken from the mtime moves when the file is
    # touched, and a future timestamp becomes valid later, so such files are always re-read.
    if cache_dir is None:
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    _cache_key(cache_dir, sha, max_line_bytes).write_text(json.dumps(value, sort_keys=True))


# --------------------------------------------------------------------------------------------
# one day


def ingest_day(
    landing: Path,
    day: date,
    files: Iterable[str] | None = None,
    now: datetime | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
    batch: int = 5_000,
) -> DayIngest:
    """Ingest one UTC day from the landing folder.

    Each file is read once, line by line, keeping only what belongs to ``day``: a week-long file
    costs a day's records, not a week's. Lines without a usable day of their own (quarantined)
    belong to the file's anchor day (:func:`scan_file`), known at the end of the file.

    Args:
        landing: the landing folder.
        day: the partition's day.
        files: relative paths of the files that hold this day (from the manifest); all files
            when None.
        now: the reference time for future timestamps.
        on_rows: given, valid rows are handed to it ``batch`` at a time, in file order, instead
            of being collected in ``rows`` (a day is then never all in Python objects at once).
    """
    now = now or datetime.now(timezone.utc)
    rels = sorted(files) if files is not None else [p.relative_to(landing).as_posix() for p in list_landing_files(landing)]
    result = DayIngest(day=day, files=rels)
    seen: dict[str, tuple[str, int]] = {}
    pending: list[dict[str, Any]] = []

    def emit(row: dict[str, Any] | None = None, flush: bool = False) -> None:
        if row is not None:
            (pending if on_rows else result.rows).append(row)
        if on_rows and pending and (flush or len(pending) >= batch):
            on_rows(pending[:])
            pending.clear()

    for rel in rels:
        path = landing / rel
        if not path.exists():
            raise FileNotFoundError(f"{path}: listed in the landing manifest but gone; re-materialize landing_manifest")
        fmt = format_from_name(path.name) or _first_format(path)
        quarantined: list[tuple[int, dict[str, Any]]] = []  # (position in the file, row)
        undated: list[tuple[int, Outcome]] = []
        first_own: date | None = None
        skipped = records = 0
        for position, outcome in enumerate(iter_outcomes(path, rel, None, now, max_line_bytes)):
            if isinstance(outcome, int):
                skipped += outcome
                continue
            if outcome.record is not None and outcome.day is not None:
                first_own = outcome.day if first_own is None else min(first_own, outcome.day)
            if outcome.day is None:
                undated.append((position, outcome))
                continue
            if outcome.day != day:
                continue
            records += 1
            if outcome.record is not None:
                first = seen.get(outcome.record.request_id)
                if first is None:
                    seen[outcome.record.request_id] = (rel, outcome.line)
                    emit(_raw_row(outcome, fmt))
                    continue
                outcome = Outcome(**{**outcome.__dict__, "record": None, "reason": "duplicate_id",
                                     "field": "request_id",
                                     "message": f"request_id {outcome.record.request_id!r} already seen at {first[0]}:{first[1]}"})
            quarantined.append((position, _quarantine_row(outcome, fmt, day)))
        if _anchor(path, first_own) == day:
            records += len(undated)
            quarantined += [(position, _quarantine_row(_with_day(o, day), fmt, day)) for position, o in undated]
        result.quarantined += [row for _, row in sorted(quarantined, key=lambda item: item[0])]
        result.records_in += records
        if records:
            result.skipped_spans += skipped
    emit(flush=True)
    return result


def _raw_row(outcome: Outcome, fmt: str | None) -> dict[str, Any]:
    assert outcome.record is not None
    return {
        **record_to_row(outcome.record),
        "source_file": outcome.source_file,
        "source_line": outcome.line,
        "source_index": outcome.index,
        "source_format": fmt,
    }


def _quarantine_row(outcome: Outcome, fmt: str | None, day: date) -> dict[str, Any]:
    return {
        "partition_day": datetime(day.year, day.month, day.day),
        "source_file": outcome.source_file,
        "source_line": outcome.line,
        "source_index": outcome.index,
        "source_format": fmt,
        "reason": outcome.reason,
        "field": outcome.field or "",
        "message": outcome.message or "",
        "request_id": outcome.request_id,
        "raw_excerpt": outcome.raw_excerpt,
    }


# --------------------------------------------------------------------------------------------
# validation outside Dagster


@dataclass
class ValidationReport:
    """What ``eval-pipeline validate-logs`` prints."""

    files: int = 0
    records: int = 0
    valid: int = 0
    skipped_spans: int = 0
    errors: list[Outcome] = field(default_factory=list)

    @property
    def reason_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(o.reason for o in self.errors).items()))


def validate_files(paths: Iterable[Path], fmt: str | None = None, now: datetime | None = None,
                   max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> ValidationReport:
    """The same parsing and validation as ingestion, with duplicates checked per file set."""
    report = ValidationReport()
    seen: dict[str, str] = {}
    for path in paths:
        report.files += 1
        for item in iter_outcomes(path, str(path), fmt, now, max_line_bytes):
            if isinstance(item, int):
                report.skipped_spans += item
                continue
            report.records += 1
            if item.record is None:
                report.errors.append(item)
            elif item.record.request_id in seen:
                report.errors.append(Outcome(**{**item.__dict__, "record": None, "reason": "duplicate_id",
                                                "field": "request_id",
                                                "message": f"request_id {item.record.request_id!r} already seen at {seen[item.record.request_id]}"}))
            else:
                seen[item.record.request_id] = f"{path}:{item.line}"
                report.valid += 1
    return report
