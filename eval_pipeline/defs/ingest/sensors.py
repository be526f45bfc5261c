"""The landing sensor: new or changed files are scanned, then the days they touch re-ingested."""


import hashlib
import json

import dagster as dg

from eval_pipeline.defs.partitions import daily_partitions
from eval_pipeline.defs.resources import PipelineSettings
from eval_pipeline.lib.ingest.ingestion import list_landing_files

landing_manifest_job = dg.define_asset_job("landing_manifest_job", selection=["landing_manifest"])
# A day's ingest runs through redaction (so raw text never waits unredacted for a second run)
# and embedding (so the monthly clustering only reads vectors). Its runs are tagged as day runs:
# a deployment's run queue limits how many run at once by this tag (deploy/dagster.yaml).
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_logs", "quarantined_logs", "redacted_logs", "log_embeddings"),
    run_tags={"eval_pipeline/run": "day"},
)


def landing_fingerprint(settings: PipelineSettings) -> str:
    """A hash of (path, size, mtime) of every landing file: cheap, changes when any file does."""
    landing = settings.data_home.landing
    digest = hashlib.sha256()
    for path in list_landing_files(landing):
        stat = path.stat()
        digest.update(f"{path.relative_to(landing).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@dg.sensor(jobs=[landing_manifest_job, ingest_job], minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.STOPPED)
def landing_sensor(context: dg.SensorEvaluationContext, settings: PipelineSettings):
    """Watches the landing folder.

    1. When any file is added, changed or removed, requests a ``landing_manifest`` run.
    2. When a new manifest has been materialized, requests one ingest run per day it lists in
       ``changed_days``. The cursor holds the last fingerprint and the last manifest handled, and
       run keys make each request unique, so nothing runs twice.
    """
    cursor = json.loads(context.cursor) if context.cursor else {}
    requests = []
    fingerprint = landing_fingerprint(settings)
    if fingerprint != cursor.get("fingerprint"):
        requests.append(dg.RunRequest(run_key=f"manifest-{fingerprint}", job_name=landing_manifest_job.name))
        cursor["fingerprint"] = fingerprint

    records = context.instance.fetch_materializations(dg.AssetKey("landing_manifest"), limit=1).records
    latest = records[0] if records else None
    if latest is not None and latest.storage_id != cursor.get("manifest_id"):
        materialization = latest.asset_materialization
        changed = materialization.metadata.get("changed_days") if materialization else None
        for day in (changed.value if changed is not None else []):
            if not daily_partitions.has_partition_key(day):
                context.log.warning(f"{day}: before the first partition ({daily_partitions.start:%Y-%m-%d}) or in the future; not ingested")
                continue
            if day < settings.retention_cutoff().isoformat():
                context.log.info(f"{day}: older than raw_retention_days; raw data of that day is not kept")
                continue
            requests.append(dg.RunRequest(run_key=f"ingest-{day}-{latest.storage_id}",
                                          job_name=ingest_job.name, partition_key=day))
        cursor["manifest_id"] = latest.storage_id
    context.update_cursor(json.dumps(cursor))
    if not requests:
        return dg.SkipReason("landing folder unchanged and no new manifest")
    return requests
