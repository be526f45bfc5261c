"""Embeddings: one vector per redacted record, each distinct text embedded once ever."""

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from eval_pipeline.defs.partitions import daily_partitions
from eval_pipeline.defs.resources import EmbeddingSettings, PipelineSettings
from eval_pipeline.lib.embeddings.encode import embed_with_cache, embedding_text, get_embedder
from eval_pipeline.lib.storage.spool import SpooledFrame, SpoolWriter, StoredPartition, spool_dir
from eval_pipeline.lib.storage.tables import LOG_EMBEDDINGS_SCHEMA, SLICE, conform, frame, markdown_table

_CARRIED = ("request_id", "conversation_id", "turn_index", "timestamp", "task_type", "user_segment", "thumbs",
            "abandoned", "clarification_requested", "parse_error", "regenerated", "escalated")


@dg.asset(
    group_name="embeddings",
    kinds={"polars", "duckdb", "pytorch"},
    partitions_def=daily_partitions,
    io_manager_key="lake_io_manager",
    metadata={"schema": "embeddings", "partition_expr": "timestamp"},
)
def log_embeddings(context: dg.AssetExecutionContext, settings: PipelineSettings, embedding: EmbeddingSettings,
                   warehouse: DuckDBResource, redacted_logs: StoredPartition) -> dg.Output[SpooledFrame]:
    """A unit vector (float16 bytes) per redacted record of the day, of the user's turn with the
    previous user turn as context for follow-ups (``lib/embeddings.embedding_text``).

    Vectors come from ``embeddings.embedding_cache``, keyed by the SHA-256 of (model, query
    prefix, text): a re-run of the day, or a text already seen on another day, embeds nothing.
    The day is read and written SLICE records at a time (the text counts in the metadata are
    summed over the slices: a text in two slices is counted in both, a hit in the second).
    """
    embedder = get_embedder(embedding.config(cache_dir=str(settings.data_home.cache / "embeddings")))
    totals = {"distinct_texts": 0, "cache_hits": 0, "texts_embedded": 0, "empty_inputs": 0}
    seconds, preview = 0.0, None
    with SpoolWriter(spool_dir(settings.data_home.warehouse), LOG_EMBEDDINGS_SCHEMA) as out:
        for part in redacted_logs.slices(SLICE, columns=("messages", "user_input", *_CARRIED)):
            texts = [embedding_text(row) for row in part.select("messages", "user_input", "turn_index").iter_rows(named=True)]
            cached = embed_with_cache(texts, embedder, warehouse.get_connection)
            df = conform(part.select(*_CARRIED).with_columns(
                embed_text=pl.Series(texts, dtype=pl.String), content_hash=pl.Series(cached.hashes, dtype=pl.String),
                model_id=pl.lit(embedder.model_id), vector=pl.Series(cached.blobs, dtype=pl.Binary)), LOG_EMBEDDINGS_SCHEMA)
            out.write(df)
            preview = df.head(8) if preview is None else preview
            seconds += cached.seconds
            for key, n in (("distinct_texts", cached.unique), ("cache_hits", cached.cached),
                           ("texts_embedded", cached.embedded), ("empty_inputs", sum(1 for t in texts if not t))):
                totals[key] += n
        vectors = out.close()
    shown = preview if preview is not None else frame([], LOG_EMBEDDINGS_SCHEMA)
    return dg.Output(vectors, metadata={
        "dagster/row_count": vectors.rows,
        **totals,
        "embedding_seconds": round(seconds, 2),
        "texts_per_second": round(totals["texts_embedded"] / seconds, 1) if seconds > 0 else 0.0,
        "model": dg.MetadataValue.json(embedder.info),
        "preview": dg.MetadataValue.md(markdown_table(shown.select("request_id", "embed_text", "content_hash"), max_cell=100)),
    })
