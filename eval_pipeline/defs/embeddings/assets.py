"""Embeddings: one vector per redacted record, each distinct text embedded once ever."""

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from eval_pipeline.defs.partitions import daily_partitions
from eval_pipeline.defs.resources import EmbeddingSettings, PipelineSettings
from eval_pipeline.lib.embeddings import embed_with_cache, embedding_text, get_embedder
from eval_pipeline.lib.tables import LOG_EMBEDDINGS_SCHEMA, SLICE, conform, frame, markdown_table

_CARRIED = ("request_id", "conversation_id", "turn_index", "timestamp", "task_type", "user_segment", "thumbs",
            "abandoned", "clarification_requested", "parse_error", "regenerated", "escalated")


@dg.asset(
    group_name="embeddings",
    kinds={"polars", "duckdb", "pytorch"},
    partitions_def=daily_partitions,
    metadata={"schema": "embeddings", "partition_expr": "timestamp"},
)
def log_embeddings(context: dg.AssetExecutionContext, settings: PipelineSettings, embedding: EmbeddingSettings,
                   warehouse: DuckDBResource, redacted_logs: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    """A unit vector (float16 bytes) per redacted record of the day, of the user's turn with the
    previous user turn as context for follow-ups (``lib/embeddings.embedding_text``).

    Vectors come from ``embeddings.embedding_cache``, keyed by the SHA-256 of (model, query
    prefix, text): a re-run of the day, or a text already seen on another day, embeds nothing.
    """
    embedder = get_embedder(embedding.config(cache_dir=str(settings.data_home.cache / "embeddings")))
    # the texts are made SLICE records at a time: a day's messages are never all Python objects
    texts = [embedding_text(row) for part in redacted_logs.select("messages", "user_input", "turn_index")
             .iter_slices(SLICE) for row in part.iter_rows(named=True)] if redacted_logs.height else []
    cached = embed_with_cache(texts, embedder, warehouse.get_connection)
    df = frame([], LOG_EMBEDDINGS_SCHEMA) if not texts else conform(redacted_logs.select(*_CARRIED).with_columns(
        embed_text=pl.Series(texts, dtype=pl.String), content_hash=pl.Series(cached.hashes, dtype=pl.String),
        model_id=pl.lit(embedder.model_id), vector=pl.Series(cached.blobs, dtype=pl.Binary)), LOG_EMBEDDINGS_SCHEMA)
    return dg.Output(df, metadata={
        "dagster/row_count": df.height,
        "distinct_texts": cached.unique,
        "cache_hits": cached.cached,
        "texts_embedded": cached.embedded,
        "empty_inputs": sum(1 for t in texts if not t),
        "embedding_seconds": round(cached.seconds, 2),
        "texts_per_second": round(cached.texts_per_second, 1),
        "model": dg.MetadataValue.json(embedder.info),
        "preview": dg.MetadataValue.md(markdown_table(df.select("request_id", "embed_text", "content_hash").head(8), max_cell=100)),
    })
