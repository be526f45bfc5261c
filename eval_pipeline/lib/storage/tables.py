"""Column layouts of the ingest tables, as polars schemas (so an empty day still has its columns)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Iterable

import polars as pl

__all__ = ["RAW_LOGS_SCHEMA", "REDACTED_LOGS_SCHEMA", "RETENTION_LOG_SCHEMA", "QUARANTINE_SCHEMA", "MANIFEST_SCHEMA",
           "LOG_EMBEDDINGS_SCHEMA", "LOG_CLUSTERS_SCHEMA", "CLUSTER_TABLE_SCHEMA", "CLUSTER_DRIFT_SCHEMA",
           "EVAL_SET_SCHEMA", "EVAL_SET_CHANGELOG_SCHEMA", "EVAL_SET_SUMMARY_SCHEMA",
           "SLICE", "ColumnRows", "conform", "frame", "markdown_table"]

_MESSAGE = pl.Struct({"role": pl.String, "content": pl.String, "name": pl.String})
_CHUNK = pl.Struct({"doc_id": pl.String, "text": pl.String, "score": pl.Float64})
_STEP = pl.Struct({"name": pl.String, "ok": pl.Boolean, "detail": pl.String})

RAW_LOGS_SCHEMA = pl.Schema(
    {
        "request_id": pl.String,
        "conversation_id": pl.String,
        "turn_index": pl.Int32,
        "timestamp": pl.Datetime("us"),
        "messages": pl.List(_MESSAGE),
        "user_input": pl.String,
        "completion": pl.String,
        "model": pl.String,
        "model_version": pl.String,
        "params": pl.String,
        "latency_ms": pl.Float64,
        "task_type": pl.String,
        "retrieved_chunks": pl.List(_CHUNK),
        "post_processing": pl.List(_STEP),
        "thumbs": pl.String,
        "abandoned": pl.Boolean,
        "clarification_requested": pl.Boolean,
        "parse_error": pl.Boolean,
        "regenerated": pl.Boolean,
        "escalated": pl.Boolean,
        "feedback_comment": pl.String,
        "user_segment": pl.String,
        "metadata": pl.String,
        "source_file": pl.String,
        "source_line": pl.Int64,
        "source_index": pl.Int32,
        "source_format": pl.String,
    }
)

QUARANTINE_SCHEMA = pl.Schema(
    {
        "partition_day": pl.Datetime("us"),
        "source_file": pl.String,
        "source_line": pl.Int64,
        "source_index": pl.Int32,
        "source_format": pl.String,
        "reason": pl.String,
        "field": pl.String,
        "message": pl.String,
        "request_id": pl.String,
        "raw_excerpt": pl.String,
    }
)

# redacted_logs: the raw layout with every user-data text redacted, plus what was found.
REDACTED_LOGS_SCHEMA = pl.Schema(
    {
        **RAW_LOGS_SCHEMA,
        "pii_counts": pl.String,  # JSON: entity type -> placeholders put in this record
        "withheld": pl.List(pl.String),  # reasons a text was withheld instead of redacted
    }
)

RETENTION_LOG_SCHEMA = pl.Schema(
    {
        "run_at": pl.Datetime("us"),
        "cutoff_day": pl.Date,
        "table": pl.String,
        "day": pl.Date,
        "rows_deleted": pl.Int64,
    }
)

MANIFEST_SCHEMA = pl.Schema(
    {
        "path": pl.String,
        "size_bytes": pl.Int64,
        "mtime_ns": pl.Int64,
        "sha256": pl.String,
        "format": pl.String,
        "first_day": pl.String,
        "last_day": pl.String,
        "days": pl.String,  # JSON object day -> records, so a day's run reads only its files
        "records": pl.Int64,
        "status": pl.String,
    }
)

# One row per redacted record: the text that stands for it, its cache key, its vector (float16
# bytes) and the fields the cluster table describes clusters by.
LOG_EMBEDDINGS_SCHEMA = pl.Schema(
    {
        **{k: RAW_LOGS_SCHEMA[k] for k in ("request_id", "conversation_id", "turn_index", "timestamp")},
        "embed_text": pl.String,
        "content_hash": pl.String,
        "model_id": pl.String,
        "vector": pl.Binary,
        **{k: RAW_LOGS_SCHEMA[k] for k in ("task_type", "user_segment", "thumbs", "abandoned", "clarification_requested",
                                           "parse_error", "regenerated", "escalated")},
    }
)

# Cluster of each record of a month (stable cluster ids; "unclustered" for HDBSCAN noise).
LOG_CLUSTERS_SCHEMA = pl.Schema(
    {
        "month": pl.Date,
        "request_id": pl.String,
        "timestamp": pl.Datetime("us"),
        "cluster_id": pl.String,
        "map_x": pl.Float32,
        "map_y": pl.Float32,
    }
)

# One row per cluster of a month (the "unclustered" stratum included, with no centroid).
CLUSTER_TABLE_SCHEMA = pl.Schema(
    {
        "month": pl.Date,
        "month_start": pl.Datetime("us"),  # partition_expr of the monthly tables
        "cluster_id": pl.String,
        "name": pl.String,
        "size": pl.Int64,
        "share": pl.Float64,
        "keywords": pl.List(pl.String),
        "examples": pl.List(pl.String),
        "example_request_ids": pl.List(pl.String),
        "thumbs_down_rate": pl.Float64,
        "abandoned_rate": pl.Float64,
        "clarification_requested_rate": pl.Float64,
        "parse_error_rate": pl.Float64,
        "regenerated_rate": pl.Float64,
        "escalated_rate": pl.Float64,
        "failure_rate": pl.Float64,
        "task_types": pl.String,  # JSON value -> count
        "user_segments": pl.String,  # JSON value -> count
        "status": pl.String,  # continuing / new (from cluster_drift); "unclustered" for noise
        "centroid": pl.Binary,  # float16 unit vector, null for the unclustered stratum
    }
)

CLUSTER_DRIFT_SCHEMA = pl.Schema(
    {
        "month": pl.Date,
        "month_start": pl.Datetime("us"),
        "cluster_id": pl.String,
        "status": pl.String,  # continuing / new / gone
        "trend": pl.String,  # grown / shrunk / stable for continuing; new / gone otherwise
        "similarity": pl.Float64,
        "previous_size": pl.Int64,
        "current_size": pl.Int64,
        "previous_share": pl.Float64,
        "current_share": pl.Float64,
        "share_ratio": pl.Float64,
        "note": pl.String,
        "nearest_id": pl.String,  # the closest cluster on the other side (new: last month's; gone: this month's)
        "nearest_similarity": pl.Float64,
        "mode": pl.String,  # how the month got its clusters: initial / assigned (to last month's) / refit
    }
)

# The eval-example contract (DESIGN.md): one row per example of one eval-set version. Versions are
# append-only in ``sampling.eval_set_versions``; ``eval_set`` holds the version a month produced.
EVAL_SET_SCHEMA = pl.Schema(
    {
        "eval_set_version": pl.String,
        "month": pl.Date,
        "month_start": pl.Datetime("us"),
        "example_id": pl.String,
        "request_id": pl.String,
        "conversation_id": pl.String,
        "turn_index": pl.Int32,
        "timestamp": pl.Datetime("us"),
        "messages": pl.List(_MESSAGE),  # the redacted conversation up to and including the user's turn
        "context_chunks": pl.List(_CHUNK),
        "production_output": pl.String,
        "reference": pl.String,  # filled by labeling for task types with one correct answer
        "task_type": pl.String,
        "category": pl.String,
        "slice": pl.String,  # JSON: category and the configured slice keys
        "cluster_id": pl.String,
        "stratum": pl.String,
        "inclusion_probability": pl.Float64,
        "represents": pl.Int64,  # records of its near-duplicate group
        "weight": pl.Float64,  # represents / inclusion_probability: traffic it stands for
        "failure_signals": pl.List(pl.String),
        "added_in": pl.String,
        "removed_in": pl.String,  # null in a version's own rows; export fills it from later versions
        "reason": pl.String,  # why it was added
    }
)

# One row per eval-set version: how it relates to the one before (append-only, like the versions).
EVAL_SET_SUMMARY_SCHEMA = pl.Schema(
    {
        "eval_set_version": pl.String,
        "month": pl.Date,
        "based_on": pl.String,
        "size": pl.Int64,
        "target_size": pl.Int64,
        "previous_size": pl.Int64,
        "added": pl.Int64,
        "removed": pl.Int64,
        "moved": pl.Int64,
        "churn": pl.Float64,  # (added + removed + moved) / previous size
        "continuing_share": pl.Float64,  # share of the month's traffic in continuing clusters
        "cluster_mode": pl.String,  # initial / assigned / refit (cluster_drift.mode)
        "allocation": pl.String,  # initial / proportional / neyman
    }
)

EVAL_SET_CHANGELOG_SCHEMA = pl.Schema(
    {
        "eval_set_version": pl.String,
        "month": pl.Date,
        "created_at": pl.Datetime("us"),
        "example_id": pl.String,
        "action": pl.String,  # added / removed / reassigned (moved to the cluster its topic was re-cut into)
        "reason": pl.String,
        "cluster_id": pl.String,
        "stratum": pl.String,
    }
)


# Records a day's steps turn into Python objects at a time (redaction, embedding texts): a day's
# memory is bounded by this, not by the day's size.
SLICE = 5_000


class ColumnRows(Sequence[Mapping[str, Any]]):
    """The rows of a frame as read-only mappings, made when a row is asked for: what
    ``df.to_dicts()`` gives, in about a fifth of the memory (the eval set's per-record rows of a
    1M-record month: 1.4 GB as dicts). The values are kept column by column as Python objects;
    a string column with fewer distinct values than ``shared_below`` of its rows (task types,
    segments, cluster ids) holds one string object per distinct value."""

    def __init__(self, df: pl.DataFrame, shared_below: float = 0.1):
        self._columns: dict[str, list[Any]] = {}
        for name in df.columns:
            values = df[name].to_list()
            if df[name].dtype == pl.String and df[name].n_unique() < shared_below * max(1, df.height):
                shared: dict[Any, Any] = {}
                values = [shared.setdefault(v, v) for v in values]
            self._columns[name] = values
        self._height = df.height

    def __len__(self) -> int:
        return self._height

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._height))]
        if index < 0:
            index += self._height
        if not 0 <= index < self._height:
            raise IndexError(index)
        return _Row(self._columns, index)


class _Row(Mapping[str, Any]):
    __slots__ = ("_columns", "_index")

    def __init__(self, columns: dict[str, list[Any]], index: int):
        self._columns, self._index = columns, index

    def __getitem__(self, key: str) -> Any:
        return self._columns[key][self._index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def __repr__(self) -> str:
        return repr(dict(self))


def conform(df: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """A frame built column-wise, as :func:`frame` builds one from rows: exactly the schema's
    columns, in its order, cast to its types."""
    return df.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


def frame(rows: Iterable[dict[str, Any]], schema: pl.Schema) -> pl.DataFrame:
    """Rows to a frame with exactly the schema's columns and types."""
    return pl.DataFrame(list(rows), schema=schema)


def markdown_table(df: pl.DataFrame, max_cell: int = 80) -> str:
    """A small frame as a markdown table (for Dagster metadata); cells are cut to ``max_cell``."""
    if df.height == 0:
        return "(no rows)"

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= max_cell else text[: max_cell - 1] + "…"

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.iter_rows()]
    return "\n".join(lines)
