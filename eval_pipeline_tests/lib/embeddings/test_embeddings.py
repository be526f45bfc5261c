"""Tests for eval_pipeline.lib.embeddings.encode with the packaged all-MiniLM-L6-v2 (no download)."""

from __future__ import annotations

import numpy as np
import pytest

from eval_pipeline.lib.embeddings.encode import (
    DEFAULT_MODEL,
    Embedder,
    EmbeddingConfig,
    content_hash,
    cpu_bf16_support,
    embedding_text,
    from_storage,
    get_embedder,
    month_vectors,
    rows_with_vectors,
    to_storage,
    unit_rows,
)

QUERIES = [
    "I am still waiting on my card?",
    "My card has not arrived yet, it has been two weeks",
    "What exchange rate do you use for euros?",
    "How do I convert dollars to pounds in the app?",
]


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content, "name": None}


def test_embedding_text_is_the_user_turn_with_previous_context():
    single = {"turn_index": 0, "user_input": "ignored when messages exist",
              "messages": [msg("system", "You are a bank assistant."), msg("user", "  where is   my card? ")]}
    assert embedding_text(single) == "where is my card?"
    follow_up = {"turn_index": 1, "messages": [
        msg("system", "You are a bank assistant."), msg("user", "I ordered a card for <PERSON_2>"),
        msg("assistant", "It ships in 3 days."), msg("user", "and how long does that take?")]}
    # the previous user turn in front, placeholder numbers dropped, system and assistant left out
    assert embedding_text(follow_up) == "I ordered a card for <PERSON>\nand how long does that take?"
    assert embedding_text({"turn_index": 0, "messages": [], "user_input": None}) == ""
    assert embedding_text({"turn_index": 0, "messages": [], "user_input": "only field"}) == "only field"
    long = {"turn_index": 1, "messages": [msg("user", "x " * 1000), msg("user", "word " * 400)]}
    text = embedding_text(long)
    previous, current = text.split("\n")
    assert len(previous) <= 200 and len(current) <= 800 and current.startswith("word word")


def test_content_hash_separates_model_prefix_and_text():
    base = content_hash("hello", "m")
    assert len(base) == 64 and base == content_hash("hello", "m")
    assert len({base, content_hash("hello", "m2"), content_hash("hello", "m", "query: "),
                content_hash("hello ", "m"), content_hash("m\x1fhello", "")}) == 5


def test_storage_round_trip_is_compact_and_close():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    blobs = to_storage(x)
    assert all(len(b) == 768 for b in blobs)
    back = from_storage(blobs, dim=384)
    assert back.dtype == np.float32 and back.shape == x.shape
    assert np.min(np.sum(back * x, axis=1)) > 0.9999
    assert from_storage([], dim=384).shape == (0, 384)
    with pytest.raises(ValueError, match="384"):
        from_storage(blobs, dim=128)


def test_a_month_of_stored_vectors_reads_into_one_float16_array(tmp_path):
    """month_vectors (read by (request id, timestamp) from the table, in batches) gives the
    float16 rows that from_storage decodes, aligned with their keys; a key without a vector is
    reported, not invented; a stored vector of another length is an error."""
    from contextlib import contextmanager
    from datetime import datetime, timedelta

    import duckdb
    import polars as pl

    rng = np.random.default_rng(1)
    x = rng.normal(size=(250, 16)).astype(np.float32)
    blobs = to_storage(x)
    expected = from_storage(blobs)
    order = rng.permutation(250)
    start = datetime(2026, 2, 1)
    stored = pl.DataFrame({"request_id": [f"r{i}" for i in range(250)],
                          "timestamp": [start + timedelta(minutes=i) for i in range(250)],
                          "vector": blobs}, schema={"request_id": pl.String, "timestamp": pl.Datetime("us"),
                                                    "vector": pl.Binary})
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("create schema embeddings")
        con.execute("create table embeddings.log_embeddings as select * from stored")

    limits = []

    @contextmanager
    def connect():
        with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
            yield con
            limits.append(con.execute("select current_setting('memory_limit')").fetchone()[0])

    keys = stored.select("request_id", "timestamp")[order.tolist()]
    # one key names a record of another day (same id, other timestamp): it has no vector
    keys = pl.concat([keys, pl.DataFrame({"request_id": ["r3"], "timestamp": [start + timedelta(days=9)]},
                                         schema=keys.schema)])
    vectors, found = month_vectors(connect, keys, batch=30)
    assert vectors.dtype == np.float16 and found[:250].all() and not found[250]
    assert limits == ["488.2 MiB"]  # READ_MEMORY_LIMIT, 512 MB, as DuckDB reports it
    same, _ = month_vectors(connect, keys, batch=30, memory_limit="8MB")
    assert np.array_equal(same, vectors) and limits[-1] == "7.6 MiB"
    assert np.array_equal(unit_rows(vectors[:250]), expected[order])
    # rows_with_vectors keeps the rows that have one, aligned, and counts the other
    rows, kept, missing = rows_with_vectors(connect, keys)
    assert missing == 1 and rows.equals(keys.head(250)) and np.array_equal(kept, vectors[:250])

    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("update embeddings.log_embeddings set vector = unhex('0011223344556677') where request_id = 'r7'")
    with pytest.raises(ValueError, match="length"):
        month_vectors(connect, keys, batch=30)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="precision"):
        EmbeddingConfig(precision="fp8")
    with pytest.raises(ValueError, match="mode"):
        EmbeddingConfig(mode="sparse")
    with pytest.raises(ValueError, match="batch_size"):
        EmbeddingConfig(batch_size=0)


def test_packaged_model_float32_and_auto_agree():
    reference = get_embedder(EmbeddingConfig(precision="float32"))
    auto = get_embedder(EmbeddingConfig())
    assert reference.model_id == DEFAULT_MODEL and reference.dim == 384 and reference.precision == "float32"
    native, why = cpu_bf16_support()
    assert auto.precision == ("bfloat16" if native else "float32"), auto.precision_reason
    assert auto.precision_reason.startswith("auto")
    # float32 and bf16 share a cache id: their vectors agree (checked again here)
    assert auto.model_id == reference.model_id
    a, b = reference.encode(QUERIES), auto.encode(QUERIES)
    assert a.shape == (4, 384) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.min(np.sum(a * b, axis=1)) > 0.999
    # the card questions are closer to each other than to the exchange-rate ones
    sims = a @ a.T
    assert sims[0, 1] > max(sims[0, 2], sims[0, 3]) and sims[2, 3] > max(sims[2, 0], sims[2, 1])
    assert reference.encode([]).shape == (0, 384)
    assert set(reference.info) >= {"model_id", "precision", "precision_reason", "dim", "load_seconds"}


def test_query_prefix_changes_vectors_and_cache_key():
    plain = get_embedder(EmbeddingConfig(precision="float32"))
    prefixed = get_embedder(EmbeddingConfig(precision="float32", query_prefix="query: "))
    assert plain.hash("card") != prefixed.hash("card")
    v1, v2 = plain.encode(["card"]), prefixed.encode(["card"])
    assert float(v1[0] @ v2[0]) < 0.9999


def test_static_mode_distils_once_and_keeps_meaning(tmp_path):
    config = EmbeddingConfig(mode="static", cache_dir=str(tmp_path))
    static = get_embedder(config)
    assert static.model_id == f"{DEFAULT_MODEL}@static256" and static.dim == 256
    assert "distilled" in static.precision_reason and list(tmp_path.glob("static_table_*.npz"))
    x = static.encode(QUERIES + ["", "!!!"])
    assert x.shape == (6, 256) and np.isfinite(x).all()
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    sims = x[:4] @ x[:4].T
    assert sims[0, 1] > max(sims[0, 2], sims[0, 3]) and sims[2, 3] > max(sims[2, 0], sims[2, 1])
    # a second embedder with the same settings (built directly: get_embedder would hand back the
    # first) loads the table instead of distilling it
    again = Embedder(config)
    assert "loaded" in again.precision_reason
    assert np.allclose(again.encode(QUERIES), x[:4], atol=1e-6)
