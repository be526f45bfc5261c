"""Privacy: raw records -> redacted records (the only asset that reads raw text), and the raw zone's retention."""

import json
import time
from collections import Counter
from datetime import datetime, timezone

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from eval_pipeline.defs.partitions import daily_partitions
from eval_pipeline.defs.resources import (PipelineSettings, RedactionSettings, WarehouseResource, landing_file_days,
                                          read_table)
from eval_pipeline.lib.privacy.redaction import CONVERSATION_ORDER, get_redactor, redact_slices
from eval_pipeline.lib.privacy.redaction_cache import AnalysisCache
from eval_pipeline.lib.privacy.retention import purge_raw_zone
from eval_pipeline.lib.storage.spool import SpooledFrame, SpoolWriter, StoredPartition, clean_spool, spool_dir
from eval_pipeline.lib.storage.tables import REDACTED_LOGS_SCHEMA, RETENTION_LOG_SCHEMA, SLICE, frame, markdown_table

KINDS = {"polars", "duckdb", "presidio"}


@dg.asset(
    group_name="privacy",
    kinds=KINDS,
    partitions_def=daily_partitions,
    io_manager_key="lake_io_manager",
    metadata={"schema": "privacy", "partition_expr": "timestamp"},
)
def redacted_logs(context: dg.AssetExecutionContext, settings: PipelineSettings, redaction: RedactionSettings,
                  raw_logs: StoredPartition) -> dg.Output[SpooledFrame]:
    """The day's records with PII replaced by typed placeholders, consistent within a conversation.

    Every text that can carry user data is redacted: messages (system prompt included),
    completion, retrieved chunks, the feedback comment, string metadata. A text that cannot be
    analysed is withheld (``[WITHHELD: reason]``), never passed on raw.

    Each distinct text (a line of a long text) is analysed once, ever: what the analyzer found
    is kept in ``<data home>/cache/redaction/`` keyed by the SHA-256 of the configuration and the
    text, and placeholders are numbered per conversation from it (``cache_hits`` in the metadata).
    The day is read and written SLICE records (whole conversations) at a time, never held whole.
    """
    redactor = get_redactor(redaction.config())
    started = time.perf_counter()
    found: Counter[str] = Counter()
    withheld: Counter[str] = Counter()
    with_pii, preview = 0, []
    with AnalysisCache(settings.data_home.redaction_cache, redactor.fingerprint) as cache, \
            SpoolWriter(spool_dir(settings.data_home.warehouse), REDACTED_LOGS_SCHEMA) as out:
        for df in redact_slices(redactor, raw_logs.slices(SLICE, order_by=CONVERSATION_ORDER), cache=cache):
            out.write(df)
            for counts in df["pii_counts"]:
                found.update(json.loads(counts))
            withheld.update(reason for reasons in df["withheld"] for reason in reasons)
            flagged = df.filter(pl.col("pii_counts") != "{}")
            with_pii += flagged.height
            if sum(p.height for p in preview) < 10:
                preview.append(flagged.select("request_id", "user_input", "pii_counts").head(10))
        redacted = out.close()
        lookups, hits = cache.stats.lookups, cache.stats.hits
    seconds = time.perf_counter() - started
    shown = pl.concat(preview).head(10) if preview else frame([], REDACTED_LOGS_SCHEMA).select("request_id", "user_input", "pii_counts")
    return dg.Output(redacted, metadata={
        "dagster/row_count": redacted.rows,
        "records_with_pii": with_pii,
        "placeholders_by_type": dg.MetadataValue.json(dict(sorted(found.items()))),
        "withheld_texts": dg.MetadataValue.json(dict(sorted(withheld.items()))),
        "distinct_texts": lookups,
        "cache_hits": hits,
        "texts_analysed": lookups - hits,
        "redaction_seconds": round(seconds, 2),
        "records_per_second": round(redacted.rows / seconds, 1) if seconds > 0 and redacted.rows else 0.0,
        "preview": dg.MetadataValue.md(markdown_table(shown, max_cell=120)),
    })


@dg.asset(group_name="privacy", kinds={"polars", "duckdb"}, metadata={"schema": "privacy"})
def raw_retention_log(context: dg.AssetExecutionContext, settings: PipelineSettings,
                      warehouse: DuckDBResource, raw_warehouse: WarehouseResource) -> dg.Output[pl.DataFrame]:
    """Deletes raw data older than ``raw_retention_days`` and keeps the record of what it deleted.

    Deletes the rows of ``raw_logs`` and ``quarantined_logs`` before the cutoff day, landing
    files whose every day is before it, Dagster's materializations of those partitions, and
    raw spool files a killed run left behind (``lib/storage/spool.py``).
    Redacted data is kept. Runs daily on ``raw_retention_schedule``; ``raw_within_retention``
    proves nothing older remains. It does not read raw text (only counts and deletes), so it
    takes no input from ``raw_logs``.
    """
    home = settings.data_home
    cutoff = settings.retention_cutoff()
    previous = read_table(warehouse, "privacy.raw_retention_log", RETENTION_LOG_SCHEMA)
    with raw_warehouse.get_connection() as con:
        purge = purge_raw_zone(con, home.landing, landing_file_days(warehouse), cutoff, lake=raw_warehouse.lake_zone())
    spooled = clean_spool(spool_dir(home.raw_warehouse))  # raw rows a killed run left in transit
    days = sorted({d.isoformat() for _, d, _ in purge.rows})
    for key in ("raw_logs", "quarantined_logs"):
        if days:
            _mark_deleted(context, dg.AssetKey(key), days, cutoff.isoformat())
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    deleted = frame([{"run_at": now, "cutoff_day": cutoff, "table": t, "day": d, "rows_deleted": n} for t, d, n in purge.rows],
                    RETENTION_LOG_SCHEMA)
    df = pl.concat([previous, deleted])  # the log accumulates: one row per table and day ever deleted
    return dg.Output(df, metadata={
        "cutoff_day": cutoff.isoformat(),
        "raw_retention_days": settings.raw_retention_days,
        "rows_deleted": int(deleted["rows_deleted"].sum() or 0),
        "days_deleted": len(days),
        "landing_files_deleted": dg.MetadataValue.json(purge.files_deleted),
        "spool_files_deleted": spooled,
    })


def _mark_deleted(context: dg.AssetExecutionContext, key: dg.AssetKey, days: list[str], cutoff: str) -> None:
    """Tell Dagster the partitions' data is gone: wiped where the instance's storage supports it
    (Postgres), otherwise an observation on each partition saying it was deleted (SQLite)."""
    try:
        context.instance.wipe_asset_partitions(key, days)
    except NotImplementedError:
        for day in days:
            context.instance.report_runless_asset_event(
                dg.AssetObservation(asset_key=key, partition=day,
                                    metadata={"deleted_by_retention": True, "cutoff_day": cutoff}))
