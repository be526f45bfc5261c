"""Ingest: landing files -> manifest -> daily raw records and quarantined lines."""


import json
from collections import Counter
from datetime import datetime, timezone

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from eval_pipeline.defs.partitions import daily_partitions
from eval_pipeline.defs.resources import PipelineSettings, read_table
from eval_pipeline.lib.ingest.ingestion import build_manifest, ingest_day, manifest_changed_days
from eval_pipeline.lib.storage.spool import SpoolWriter, spool_dir
from eval_pipeline.lib.storage.tables import MANIFEST_SCHEMA, QUARANTINE_SCHEMA, RAW_LOGS_SCHEMA, SLICE, frame, markdown_table

KINDS = {"polars", "duckdb"}


@dg.asset(group_name="ingest", kinds=KINDS, metadata={"schema": "ingest"})
def landing_manifest(context: dg.AssetExecutionContext, settings: PipelineSettings,
                     warehouse: DuckDBResource) -> dg.Output[pl.DataFrame]:
    """Every file under the landing folder: size, content hash, format and the days it holds.

    A day's ingest reads only the files that hold that day. Files whose hash differs from the
    last manifest are marked ``changed``; the days they touched (before and after) are listed in
    the ``changed_days`` metadata, which the landing sensor turns into re-ingest runs.
    """
    home = settings.data_home
    previous = read_table(warehouse, "ingest.landing_manifest", MANIFEST_SCHEMA)
    entries, gone = build_manifest(
        home.landing,
        previous=dict(zip(previous["path"], previous["sha256"])),
        cache_dir=home.cache / "landing_days",
        max_line_bytes=settings.max_line_bytes,
    )
    changed_days = manifest_changed_days(entries, gone, dict(zip(previous["path"], previous["days"])))
    rows = [
        {
            "path": e.path, "size_bytes": e.size_bytes, "mtime_ns": e.mtime_ns, "sha256": e.sha256,
            "format": e.format, "first_day": e.first_day, "last_day": e.last_day,
            "days": json.dumps(e.days, sort_keys=True), "records": sum(e.days.values()), "status": e.status,
        }
        for e in entries
    ]
    df = frame(rows, MANIFEST_SCHEMA)
    statuses = df.group_by("status").len().sort("status")
    context.log.info(f"landing manifest: {df.height} files; changed days: {len(changed_days)}")
    return dg.Output(
        df,
        metadata={
            "dagster/row_count": df.height,
            "landing_folder": str(home.landing),
            "records": int(df["records"].sum() or 0),
            "files_by_status": dg.MetadataValue.json(dict(zip(statuses["status"], statuses["len"]))),
            "gone_files": dg.MetadataValue.json(gone),
            "changed_days": dg.MetadataValue.json(changed_days),
            "preview": dg.MetadataValue.md(
                markdown_table(df.select("path", "format", "first_day", "last_day", "records", "status").head(30))
            ),
        },
    )


@dg.multi_asset(
    outs={
        "raw_logs": dg.AssetOut(
            group_name="ingest", kinds=KINDS, io_manager_key="raw_io_manager",
            metadata={"schema": "ingest", "partition_expr": "timestamp"},
            description="Canonical log records of one UTC day, from every landing file that holds that day (restricted zone: raw text).",
        ),
        "quarantined_logs": dg.AssetOut(
            group_name="ingest", kinds=KINDS, io_manager_key="raw_io_manager",
            metadata={"schema": "ingest", "partition_expr": "partition_day"},
            description="Every record of the day that failed to parse or validate: file, line, field, reason "
            "(restricted zone: the excerpt is raw text).",
        ),
    },
    partitions_def=daily_partitions,
)
def ingested_logs(context: dg.AssetExecutionContext, settings: PipelineSettings, landing_manifest: pl.DataFrame):
    """Parse the day's landing files: valid records to ``raw_logs``, the rest to ``quarantined_logs``."""
    day = context.partition_time_window.start.date()
    home = settings.data_home
    key = day.isoformat()
    holding = [row for row in landing_manifest.iter_rows(named=True) if key in json.loads(row["days"])]
    for row in holding:
        current = home.landing / row["path"]
        if not current.exists() or current.stat().st_size != row["size_bytes"] or current.stat().st_mtime_ns != row["mtime_ns"]:
            raise dg.Failure(
                f"{current}: changed or removed since the landing manifest was built; "
                "materialize landing_manifest first (the landing sensor and `eval-pipeline refresh` do)."
            )
    tallies: dict[str, Counter[str]] = {"task_type": Counter(), "source_format": Counter()}

    def append(rows: list[dict]) -> None:  # SLICE records at a time: the day is never held whole
        part = frame(rows, RAW_LOGS_SCHEMA)
        raw.write(part)
        for column, tally in tallies.items():
            tally.update(str(v) for v in part[column])

    with SpoolWriter(spool_dir(home.raw_warehouse), RAW_LOGS_SCHEMA) as raw:
        result = ingest_day(home.landing, day, files=[row["path"] for row in holding], now=datetime.now(timezone.utc),
                            max_line_bytes=settings.max_line_bytes, batch=SLICE, on_rows=append)
        spooled = raw.close()
    quarantined = frame(result.quarantined, QUARANTINE_SCHEMA)
    context.log.info(f"{key}: {result.records_in} records in, {spooled.rows} ingested, {quarantined.height} quarantined")
    common = {"records_in": result.records_in, "files_read": len(result.files), "skipped_non_llm_spans": result.skipped_spans}
    yield dg.Output(spooled, output_name="raw_logs", metadata={
        **common,
        "dagster/row_count": spooled.rows,
        **{f"by_{column}": dg.MetadataValue.json(dict(sorted(tally.items()))) for column, tally in tallies.items()},
    })
    yield dg.Output(quarantined, output_name="quarantined_logs", metadata={
        **common,
        "dagster/row_count": quarantined.height,
        "by_reason": dg.MetadataValue.json(result.reason_counts),
        "first_errors": dg.MetadataValue.md(
            markdown_table(quarantined.select("source_file", "source_line", "reason", "field", "message").head(20))
            if quarantined.height else "none"
        ),
    })
