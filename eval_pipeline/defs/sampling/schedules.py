"""The monthly refresh: the month's daily partitions first, then its clusters and eval-set version.

A schedule runs one job, and a run holds partitions of one kind, so the refresh is two schedules:

* ``month_end_ingest_schedule`` (03:00 UTC on the 1st) requests an ``ingest_job`` run for every
  day of the month that just ended whose ``log_embeddings`` partition is not materialized yet
  (the landing sensor usually did most days already);
* ``monthly_refresh_schedule`` (hourly on the 1st to the 3rd) requests ``monthly_refresh_job``
  for that month once every day of it is materialized, or at its last tick (the 3rd, 23:00) with
  the missing days in a tag. Its run key is the month, so it runs once per month.
"""

from datetime import date, datetime, timedelta

import dagster as dg

from eval_pipeline.defs.ingest.sensors import ingest_job
from eval_pipeline.defs.partitions import daily_partitions, monthly_partitions
from eval_pipeline.defs.sampling.assets import EVAL_SET_OUTPUTS

# Tagged as the month's run: a deployment's run queue runs one at a time (deploy/dagster.yaml).
monthly_refresh_job = dg.define_asset_job(
    "monthly_refresh_job",
    selection=dg.AssetSelection.assets("log_clusters", "cluster_table", "cluster_drift", *EVAL_SET_OUTPUTS,
                                       "annotation_tasks", "judge_labels", "judge_bias_probes",
                                       "judge_human_gap"),
    partitions_def=monthly_partitions,
    run_tags={"eval_pipeline/run": "month"},
)

LAST_TICK = (3, 23)  # day of month, hour (UTC) of the refresh schedule's last chance


def month_that_ended(when: datetime) -> date:
    """First day of the month before ``when``'s month."""
    first = when.date().replace(day=1)
    return (first - timedelta(days=1)).replace(day=1)


def days_of(month: date) -> list[str]:
    day, out = month, []
    while day.month == month.month:
        if daily_partitions.has_partition_key(day.isoformat()):
            out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def missing_days(instance: dg.DagsterInstance, month: date) -> list[str]:
    """Days of the month whose ``log_embeddings`` partition (the end of a day's ingest) is not materialized."""
    done = instance.get_materialized_partitions(dg.AssetKey("log_embeddings"))
    return [day for day in days_of(month) if day not in done]


@dg.schedule(cron_schedule="0 3 1 * *", job=ingest_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def month_end_ingest_schedule(context: dg.ScheduleEvaluationContext):
    """Ingests every day of the month that just ended that is not ingested yet."""
    month = month_that_ended(context.scheduled_execution_time)
    days = missing_days(context.instance, month)
    if not days:
        return dg.SkipReason(f"every day of {month:%Y-%m} is already ingested")
    return [dg.RunRequest(run_key=f"month-end-{day}", partition_key=day, tags={"refresh_month": f"{month:%Y-%m}"})
            for day in days]


@dg.schedule(cron_schedule="0 * 1-3 * *", job=monthly_refresh_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def monthly_refresh_schedule(context: dg.ScheduleEvaluationContext):
    """Clusters the month that just ended and makes its eval-set version, once its days are in."""
    when = context.scheduled_execution_time
    month = month_that_ended(when)
    key = month.isoformat()
    if not monthly_partitions.has_partition_key(key):
        return dg.SkipReason(f"{month:%Y-%m} has no monthly partition (before {monthly_partitions.start:%Y-%m})")
    missing = missing_days(context.instance, month)
    last = (when.day, when.hour) >= LAST_TICK
    if missing and not last:
        return dg.SkipReason(f"waiting for {len(missing)} days of {month:%Y-%m} to be ingested: "
                             f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    tags = {"refresh_month": f"{month:%Y-%m}"}
    if missing:
        tags["missing_days"] = ",".join(missing)
        context.log.warning(f"{month:%Y-%m}: refreshing without {len(missing)} days that were never ingested")
    return dg.RunRequest(run_key=f"monthly-refresh-{month:%Y-%m}", partition_key=key, tags=tags)
