"""The labels sensor: new or changed annotation files in the inbox re-read the labels."""

import hashlib

import dagster as dg

from eval_pipeline.defs.labeling.assets import labeling_job
from eval_pipeline.defs.resources import PipelineSettings

ANNOTATION_SUFFIXES = (".json", ".jsonl", ".csv")


def inbox_fingerprint(settings: PipelineSettings) -> str:
    """A hash of (path, size, mtime) of every annotation file in the inbox ("" when there is none)."""
    inbox = settings.data_home.labels_inbox
    files = sorted(p for p in inbox.rglob("*") if p.is_file() and p.suffix.lower() in ANNOTATION_SUFFIXES) \
        if inbox.is_dir() else []
    if not files:
        return ""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(inbox).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@dg.sensor(job=labeling_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def labels_sensor(context: dg.SensorEvaluationContext, settings: PipelineSettings):
    """Requests a ``labeling_job`` run (human labels, agreement, gold labels) when a file is added
    to, changed in or removed from ``<data home>/labels/inbox/``. The cursor is the inbox's
    fingerprint and the run key carries it, so one state of the inbox is read once."""
    fingerprint = inbox_fingerprint(settings)
    if fingerprint == (context.cursor or ""):
        return dg.SkipReason("no new or changed annotation file in the inbox")
    context.update_cursor(fingerprint)
    if not fingerprint:
        return dg.SkipReason("the inbox is empty")
    return dg.RunRequest(run_key=f"labels-{fingerprint}")
