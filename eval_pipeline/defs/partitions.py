"""Partition definitions shared by every domain."""

import dagster as dg

from eval_pipeline.lib.ingest.ingestion import FIRST_DAY

# The first day the pipeline knows about: records from before it are quarantined as
# early_timestamp. Move FIRST_DAY back if your history is older (the Dagster UI lists one
# partition per day from here).
PARTITIONS_START = FIRST_DAY.isoformat()

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START)
monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=PARTITIONS_START)
# One partition per registered model version ("name:version"), added by the registry sensor
# (or by `eval-pipeline evaluate`) when the version is registered.
model_versions = dg.DynamicPartitionsDefinition(name="model_versions")
