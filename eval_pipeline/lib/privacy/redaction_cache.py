"""A content-addressed cache of what the PII analyzer found in a text (plain Python, no Dagster).

Redaction has two halves: *analysis* (spaCy NER and Presidio's recognizers find entity spans:
the expensive half) and *application* (spans become placeholders numbered per conversation:
cheap, and it depends on the conversation, so it is never cached). Production logs repeat
most of their text (prompt templates, a fixed knowledge base, earlier turns of a conversation
copied into every later record), so each distinct text is analysed once, ever, as embeddings
already are.

Key: SHA-256 of (:func:`config_fingerprint`, the text). The fingerprint covers every setting
that changes what is found (entity types, threshold, allow list, custom patterns and extra
recognizers, chunking and segmenting, phone regions, the spaCy model) plus the versions of the
analysing packages and :data:`ANALYSIS_VERSION` (bumped when the project's recognizer code
changes), so a changed configuration is a different key and never reads stale findings.

Value: the spans as ``[[start, end, entity_type, score], ...]``: offsets into the text, never
the text or the value. A text that was withheld (could not be analysed) is not cached: it is
retried on the next run.

Storage: one SQLite file (WAL mode), safe for several processes at once (the days of a month
are redacted in parallel); a write waits for the lock up to ``timeout`` seconds.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sqlite3
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

from eval_pipeline.lib.core.locks import file_lock

__all__ = ["ANALYSIS_VERSION", "AnalysisCache", "CacheStats", "config_fingerprint", "text_key"]

# Bump when the project's own recognizers or span cleaning change what is found.
ANALYSIS_VERSION = "2"  # 2: nine bare digits next to "SSN" are a US_SSN

_PACKAGES = ("presidio-analyzer", "spacy", "phonenumbers")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _describe(value: Any) -> Any:
    """A stable, JSON-able description of one config value (callables by name and source)."""
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if callable(value):
        name = f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
        try:
            source = inspect.getsource(value)
        except (OSError, TypeError):
            source = ""
        return {"callable": name, "source_sha256": hashlib.sha256(source.encode()).hexdigest()}
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _describe(getattr(value, f.name)) for f in fields(value)}
    return value


def config_fingerprint(config: Any, ignore: Iterable[str] = ("batch_size",)) -> str:
    """SHA-256 over a redaction config's fields that change findings, the analysing packages'
    versions (the spaCy model's included) and :data:`ANALYSIS_VERSION`."""
    skip = set(ignore)
    described = {f.name: _describe(getattr(config, f.name)) for f in fields(config) if f.name not in skip}
    packages = {p: _version(p) for p in _PACKAGES}
    model = getattr(config, "spacy_model", "")
    packages[model] = _version(model.replace("_", "-")) if model else ""
    payload = json.dumps({"config": described, "packages": packages, "analysis": ANALYSIS_VERSION},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def text_key(fingerprint: str, text: str) -> bytes:
    """The cache key of one text under one configuration (32 bytes)."""
    return hashlib.sha256(fingerprint.encode() + b"\0" + text.encode("utf-8", "surrogatepass")).digest()


@dataclass
class CacheStats:
    """Texts looked up, found, and analysed then stored, since the cache object was made."""

    lookups: int = 0
    hits: int = 0
    stored: int = 0


class AnalysisCache:
    """Spans per text, in a SQLite file shared by every process of a data home.

    ``fingerprint`` is :func:`config_fingerprint` of the redactor's config; a cache object is
    bound to one fingerprint, so one configuration never reads another's findings.
    """

    def __init__(self, path: str | Path, fingerprint: str, timeout: float = 120.0) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.stats = CacheStats()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Two processes creating the file at once: switching it to WAL fails at once ("database
        # is locked", the busy timeout does not cover it), so the set-up is taken in turn.
        with file_lock(f"{self.path}.lock"):
            self._con = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
            self._con.execute("pragma journal_mode=wal")
            self._con.execute("pragma synchronous=normal")
            self._con.execute("create table if not exists spans (key blob primary key, spans text not null) without rowid")

    def get_many(self, texts: Sequence[str]) -> dict[str, list[tuple[int, int, str, float]]]:
        """Text -> cached spans, for the texts that are in the cache."""
        keys = {text_key(self.fingerprint, t): t for t in texts}
        found: dict[str, list[tuple[int, int, str, float]]] = {}
        items = list(keys)
        for i in range(0, len(items), 500):
            batch = items[i:i + 500]
            marks = ",".join("?" * len(batch))
            for key, spans in self._con.execute(f"select key, spans from spans where key in ({marks})", batch):
                found[keys[bytes(key)]] = [tuple(s) for s in json.loads(spans)]  # type: ignore[misc]
        self.stats.lookups += len(keys)
        self.stats.hits += len(found)
        return found

    def put_many(self, items: Iterable[tuple[str, Sequence[tuple[int, int, str, float]]]]) -> None:
        """Store the spans of texts (an existing key is kept: the same key has the same spans)."""
        rows = [(text_key(self.fingerprint, t), json.dumps([list(s) for s in spans])) for t, spans in items]
        if not rows:
            return
        self._con.execute("begin immediate")
        try:
            self._con.executemany("insert or ignore into spans (key, spans) values (?, ?)", rows)
            self._con.execute("commit")
        except BaseException:
            self._con.execute("rollback")
            raise
        self.stats.stored += len(rows)

    def __len__(self) -> int:
        return self._con.execute("select count(*) from spans").fetchone()[0]

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "AnalysisCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
