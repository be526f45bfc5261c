"""The progress watcher on a real Dagster instance: it follows only the runs tagged for it, says
a day failed when a step of its run failed or one of its checks did, shows the days a command
will not run as skipped, and takes a job's last step times as the basis of its estimate."""


import io
import re

import dagster as dg

from eval_pipeline.lib.runs.progress import Display, Stage
from eval_pipeline.progress import PROGRESS_TAG, expected_steps, job_steps, skip_days, watch_runs

DAYS = ["2026-02-01", "2026-02-02", "2026-02-03"]
days = dg.DailyPartitionsDefinition(start_date=DAYS[0], end_date="2026-02-04")


@dg.asset(partitions_def=days)
def parsed(context: dg.AssetExecutionContext) -> None:
    if context.partition_key == DAYS[1]:
        raise ValueError("a broken day")


@dg.asset(partitions_def=days, deps=[parsed], check_specs=[dg.AssetCheckSpec("small", asset="cleaned")])
def cleaned(context: dg.AssetExecutionContext):
    yield dg.MaterializeResult()
    yield dg.AssetCheckResult(check_name="small", passed=context.partition_key != DAYS[2])


@dg.asset
def summary() -> None:
    """The monthly part: two steps, one after the other."""


@dg.asset(deps=[summary])
def report() -> None:
    pass


day_job = dg.define_asset_job("day_job", selection=[parsed, cleaned], partitions_def=days)
month_job = dg.define_asset_job("month_job", selection=[summary, report])
defs = dg.Definitions(assets=[parsed, cleaned, summary, report], jobs=[day_job, month_job])


def test_the_watcher_follows_its_tagged_runs_and_says_what_failed(tmp_path):
    instance = dg.DagsterInstance.local_temp(tempdir=str(tmp_path))  # SQLite storage under tmp_path
    month = defs.resolve_job_def("month_job")
    assert job_steps(defs, "month_job") == ["summary", "report"] and expected_steps(instance, "month_job") == {}
    month.execute_in_process(instance=instance)  # an earlier run: the steps' times to estimate from
    assert set(expected_steps(instance, "month_job")) == {"summary", "report"}

    out = io.StringIO()
    stages = [Stage("day_job", DAYS, per_day=True), Stage("month_job", job_steps(defs, "month_job"))]
    with watch_runs(instance, Display(out, live=False), "refresh 2026-02", stages) as tags:
        assert set(tags) == {PROGRESS_TAG}
        for day in DAYS:
            defs.resolve_job_def("day_job").execute_in_process(partition_key=day, instance=instance, tags=tags,
                                                               raise_on_error=False)
        month.execute_in_process(instance=instance)  # someone else's run of the same job: not this command's
        month.execute_in_process(instance=instance, tags=tags)
    said = [re.sub(r"^\d\d:\d\d:\d\d \+\S+( \S+)? ", "", line) for line in out.getvalue().splitlines()]
    durations = [re.sub(r" in \d+(\.\d)? s", " in T", line) for line in said]
    assert [re.sub(r", ~\d+ s left", "", line) for line in durations] == [
        "refresh 2026-02: 3 days (2026-02-01 to 2026-02-03); then summary, report",
        "refresh 2026-02: day 2026-02-01 done in T (days 1/3)",
        "refresh 2026-02: day 2026-02-02 FAILED in T (step parsed failed) (days 2/3, 1 failed)",
        "refresh 2026-02: day 2026-02-03 FAILED in T (check small failed) (days 3/3, 2 failed)",
        "refresh 2026-02: step summary done in T (steps 1/2)",
        "refresh 2026-02: step report done in T (steps 2/2)",
        durations[-1],
    ]
    assert re.fullmatch(r"refresh 2026-02: FAILED after \d+ s \(3 days, 2 steps; failed: 2026-02-02, 2026-02-03\)",
                        said[-1])
    tagged = instance.get_run_records(dg.RunsFilter(tags={PROGRESS_TAG: tags[PROGRESS_TAG]}))
    assert len(tagged) == 4 and len(instance.get_run_records(dg.RunsFilter(job_name="month_job"))) == 3


def test_days_skipped_by_the_command_are_shown_as_skipped_not_left(tmp_path):
    instance = dg.DagsterInstance.local_temp(tempdir=str(tmp_path))
    out = io.StringIO()
    stages = [Stage("day_job", DAYS, per_day=True), Stage("month_job", job_steps(defs, "month_job"))]
    with watch_runs(instance, Display(out, live=False), "refresh 2026-02", stages) as tags:
        skip_days(tags, [DAYS[1], DAYS[2]])  # found to have no records: never run
        defs.resolve_job_def("day_job").execute_in_process(partition_key=DAYS[0], instance=instance, tags=tags)
        defs.resolve_job_def("month_job").execute_in_process(instance=instance, tags=tags)
    said = [re.sub(r"^\d\d:\d\d:\d\d \+\S+( \S+)? ", "", line) for line in out.getvalue().splitlines()]
    assert said[1] == "refresh 2026-02: 2 days skipped (no records): 2026-02-02 to 2026-02-03 (1 day to run)"
    assert re.fullmatch(r"refresh 2026-02: day 2026-02-01 done in \d+(\.\d)? s \(days 1/1\)", said[2]), said[2]
    assert re.fullmatch(r"refresh 2026-02: done in \d+ s \(1 day, 2 skipped, 2 steps\)", said[-1]), said[-1]
    skip_days({}, [DAYS[0]])  # a command not watched: nothing to show, no error
