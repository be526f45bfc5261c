"""The daily retention run of the raw zone."""

import dagster as dg

raw_retention_job = dg.define_asset_job(
    "raw_retention_job",
    selection=dg.AssetSelection.assets("raw_retention_log"),  # with its check, raw_within_retention
    description="Deletes raw data older than raw_retention_days, then proves none remains.",
)

raw_retention_schedule = dg.ScheduleDefinition(
    name="raw_retention_schedule",
    job=raw_retention_job,
    cron_schedule="30 3 * * *",  # daily, 03:30 UTC
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
