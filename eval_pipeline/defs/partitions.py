"""Partition definitions shared by every domain."""

import dagster as dg

# The first day the pipeline knows about. Logs older than this land in no partition; move it
# back if your history is older (the Dagster UI lists one partition per day from here).
PARTITIONS_START = "2025-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START)
monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=PARTITIONS_START)
# One partition per registered model version ("name:version"), added by the registry sensor
# (or by `eval-pipeline evaluate`) when the version is registered.
model_versions = dg.DynamicPartitionsDefinition(name="model_versions")
