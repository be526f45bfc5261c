"""Privacy checks: no PII left in redacted records; no raw data older than the retention."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from eval_pipeline.defs.partitions import daily_partitions
from eval_pipeline.defs.resources import PipelineSettings, WarehouseResource, landing_file_days
from eval_pipeline.lib.privacy.redaction import TEXT_COLUMNS, scan_for_leaks, slice_texts
from eval_pipeline.lib.privacy.retention import raw_older_than
from eval_pipeline.lib.storage.spool import StoredPartition
from eval_pipeline.lib.storage.tables import SLICE


@dg.asset_check(
    asset="redacted_logs",
    partitions_def=daily_partitions,
    blocking=True,
    description="Re-scans every redacted text with high-precision recognizers (emails, phone numbers, "
    "Luhn-valid cards); fails on any residual PII.",
)
def no_pii_leak(context: dg.AssetCheckExecutionContext, redacted_logs: StoredPartition) -> dg.AssetCheckResult:
    # the text columns a slice at a time; each distinct text of the day scanned once
    counts = scan_for_leaks(slice_texts(redacted_logs.slices(SLICE, columns=TEXT_COLUMNS)))
    return dg.AssetCheckResult(
        passed=sum(counts.values()) == 0,
        metadata={"residual_by_type": dg.MetadataValue.json(counts), "rows_scanned": redacted_logs.rows},
    )


@dg.asset_check(
    asset="raw_retention_log",
    description="No raw record, quarantined line or landing file older than raw_retention_days remains.",
)
def raw_within_retention(settings: PipelineSettings, warehouse: DuckDBResource,
                         raw_warehouse: WarehouseResource) -> dg.AssetCheckResult:
    cutoff = settings.retention_cutoff()
    with raw_warehouse.get_connection() as con:
        found = raw_older_than(con, settings.data_home.landing, landing_file_days(warehouse), cutoff,
                               lake=raw_warehouse.lake_zone())
    return dg.AssetCheckResult(
        passed=sum(found.values()) == 0,
        metadata={"cutoff_day": cutoff.isoformat(), "older_than_cutoff": dg.MetadataValue.json(found)},
    )
