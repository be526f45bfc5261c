"""Ingest checks: every record accounted for, and the day's records pass the quality suite."""


import json

import dagster as dg
import polars as pl

from eval_pipeline.defs.partitions import daily_partitions
from eval_pipeline.lib.ingest.quality import SUITE_COLUMNS, validate_raw_logs
from eval_pipeline.lib.storage.spool import StoredPartition


@dg.asset_check(
    asset="raw_logs",
    partitions_def=daily_partitions,
    blocking=True,
    additional_ins={"quarantined_logs": dg.AssetIn(), "landing_manifest": dg.AssetIn()},
    description="Records in (per the landing manifest) = rows in raw_logs + rows in quarantined_logs, for the day.",
)
def records_reconcile(context: dg.AssetCheckExecutionContext, raw_logs: StoredPartition,
                      quarantined_logs: StoredPartition, landing_manifest: pl.DataFrame) -> dg.AssetCheckResult:
    day = context.partition_key
    records_in = sum(json.loads(days).get(day, 0) for days in landing_manifest["days"])
    accounted = raw_logs.rows + quarantined_logs.rows  # two count queries: no record is read
    return dg.AssetCheckResult(
        passed=records_in == accounted,
        metadata={
            "records_in": records_in,
            "ingested": raw_logs.rows,
            "quarantined": quarantined_logs.rows,
            "unaccounted": records_in - accounted,
        },
    )


@dg.asset_check(
    asset="raw_logs",
    partitions_def=daily_partitions,
    blocking=True,
    description="Great Expectations suite: ids unique and non-null, timestamps inside the day, "
    "message roles valid, latency >= 0, turn index >= 0, retrieval scores in [0, 1].",
)
def raw_logs_expectations(context: dg.AssetCheckExecutionContext, raw_logs: StoredPartition) -> dg.AssetCheckResult:
    day = context.partition_time_window.start.date()
    checked = raw_logs.frame(*SUITE_COLUMNS)  # the suite's fields only: no text is read
    suite = validate_raw_logs(checked, day)
    return dg.AssetCheckResult(
        passed=suite.success,
        metadata={
            "failed_expectations": len(suite.failed),
            "expectations": len(suite.outcomes),
            "rows": checked.height,
            "results": dg.MetadataValue.md(suite.markdown()),
        },
    )
