"""The pipeline's steps on a Dask cluster (``EVAL_PIPELINE_EXECUTOR=dask``, ``defs/dask_executor.py``):
a month refreshed there gives the eval set the in-process runs give, every step and check ran in
a worker process, a failed blocking check stops the steps after it, and nothing lands outside
the test's folders.

The large tables live on moto's S3-compatible server on 127.0.0.1 (``EVAL_PIPELINE_STORAGE``),
the steps on a two-worker ``LocalCluster``; the reference month is the embedded default (in
process, every table in DuckDB), refreshed once per session (``month_template.py``). About two
minutes on two cores.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
from month_template import MONTH, template_resources, write_month_logs
from scale_out import dask_cluster, home_listing, listing, s3, scale_out_env, storage_env  # noqa: F401 - fixtures

from eval_pipeline.defs.executors import executor_from_env
from eval_pipeline.lib.core.paths import HOME_ENV, DataHome
from eval_pipeline.runs import MonthRefresh, instance_for, load_eval_set, refresh_month, table_counts

# columns that name the run or its moment differ between any two refreshes
VOLATILE = {"created_at", "materialized_at", "run_id"}


def _check(result: MonthRefresh, said) -> None:
    assert result.success, (result.failed, said)
    assert len(result.days) == 28 and result.monthly_jobs == ["monthly_refresh_job"]


def _refresh(home: DataHome) -> tuple[MonthRefresh, float]:
    """The reference month (28 days of 12 records, an eval set of 40: every domain runs, in a few
    minutes on two cores) refreshed as ``month_template.py`` refreshes it, in this environment."""
    write_month_logs(home)
    said: list[str] = []
    began = time.perf_counter()
    result = refresh_month(home, MONTH, log=said.append, workers=1, resources=template_resources())
    _check(result, said)
    return result, time.perf_counter() - began


def _events(home: DataHome, run_ids: list[str], kind: dg.DagsterEventType) -> list[dg.DagsterEvent]:
    with instance_for(home) as instance:
        return [entry.dagster_event for run_id in run_ids for entry in instance.all_logs(run_id, of_type=kind)]


def test_a_month_on_a_dask_cluster_gives_the_in_process_eval_set(refreshed_month, scale_out_env, dask_cluster):
    # the embedded default (in process, every table in DuckDB), refreshed in this process; its
    # refresh, too, wrote nothing to its working folder or the user's home (month_template.py)
    reference, expected = refreshed_month.home, refreshed_month.result
    _check(expected, refreshed_month.said)
    assert refreshed_month.outside == set()
    cwd_before, home_before = listing(scale_out_env.cwd), home_listing()
    got, seconds = _refresh(scale_out_env.home)
    print(f"\nthe month on the Dask cluster: {seconds:.0f} s")

    # every step of every run ran in a worker process, none here; the in-process runs' all here
    started = _events(scale_out_env.home, got.run_ids, dg.DagsterEventType.STEP_START)
    started_here = _events(reference, expected.run_ids, dg.DagsterEventType.STEP_START)
    # the manifest, each day's six steps, the month's five (clusters, eval set, annotation tasks,
    # judge labels, judge bias probes)
    assert len(started) == len(started_here) == 1 + 28 * 6 + 5
    assert {event.pid for event in started} <= dask_cluster.worker_pids
    assert {event.pid for event in started_here} == {os.getpid()}
    # the asset checks ran there too, each day's three, and passed
    checked = _events(scale_out_env.home, got.run_ids, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    assert len(checked) == 28 * 3 and {event.pid for event in checked} <= dask_cluster.worker_pids
    assert all(event.event_specific_data.passed for event in checked)

    # the same tables and the same eval set, row for row
    assert table_counts(scale_out_env.home) == table_counts(reference)
    (version, rows), (expected_version, expected_rows) = load_eval_set(scale_out_env.home), load_eval_set(reference)
    assert version == expected_version == "v1"
    assert [row["example_id"] for row in rows] == [row["example_id"] for row in expected_rows]
    assert len(rows) >= 20
    assert [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows] == \
           [{k: v for k, v in row.items() if k not in VOLATILE} for row in expected_rows]

    # the large tables are objects on the S3 server, the raw zone's under its own prefix
    import boto3

    keys = [o["Key"] for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=scale_out_env.s3.bucket)
            for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    tables = {"/".join(k.split("/")[:-1]) for k in keys}
    assert tables == {"dask-home/restricted/ingest/raw_logs", "dask-home/restricted/ingest/quarantined_logs",
                      "dask-home/privacy/redacted_logs", "dask-home/embeddings/log_embeddings",
                      "dask-home/clustering/log_clusters"}
    assert len(keys) == 28 * 4 + 1
    assert not list(scale_out_env.home.root.rglob("*.parquet"))  # nothing of them left in the data home

    # nothing written to the working folder (this process's and the workers') or the user's home
    assert listing(scale_out_env.cwd) == cwd_before == set()
    assert home_listing() == home_before


def test_the_workers_start_in_the_runs_environment_and_reach_the_s3_endpoint(scale_out_env, dask_cluster):
    from distributed import Client

    with Client(dask_cluster.address) as client:
        seen = client.run(_worker_view, f"s3://{scale_out_env.s3.bucket}/probe/from-worker.parquet")
    assert len(seen) == 2
    for cwd, home, address, rows in seen.values():
        assert Path(cwd) == scale_out_env.cwd and home == str(scale_out_env.home.root)
        assert address == dask_cluster.address and rows == 3
    import boto3

    listed = boto3.client("s3").list_objects_v2(Bucket=scale_out_env.s3.bucket, Prefix="probe/")
    assert [item["Key"] for item in listed["Contents"]] == ["probe/from-worker.parquet"]


def _worker_view(uri: str) -> tuple[str, str | None, str | None, int]:
    """Run on a worker: its working folder, data home and scheduler address as it sees them, and
    a Parquet file written to ``uri`` with pyarrow (the endpoint from ``AWS_ENDPOINT_URL``) and
    read back."""
    import pyarrow as pa
    import pyarrow.fs
    import pyarrow.parquet as pq

    filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
    pq.write_table(pa.table({"n": [1, 2, 3]}), path, filesystem=filesystem)
    rows = pq.read_table(path, filesystem=filesystem).num_rows
    return os.getcwd(), os.environ.get(HOME_ENV), os.environ.get("EVAL_PIPELINE_DASK_ADDRESS"), rows


# A blocking check that fails before a downstream asset, for the gate of the dask executor's steps.

@dg.asset
def upstream_table() -> int:
    return 1


@dg.asset_check(asset=upstream_table, blocking=True)
def upstream_table_is_fine() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="fails on purpose")


@dg.asset(deps=[upstream_table])
def downstream_table() -> None:
    (Path(os.environ[HOME_ENV]) / "downstream_table_ran").write_text(str(os.getpid()))


def gated_job() -> dg.JobDefinition:
    """Rebuilt on the workers from this module (on ``PYTHONPATH`` there)."""
    return dg.Definitions(assets=[upstream_table, downstream_table], asset_checks=[upstream_table_is_fine],
                          jobs=[dg.define_asset_job("gated_job")], executor=executor_from_env()).resolve_job_def("gated_job")


def test_a_failed_blocking_check_stops_the_steps_after_it_on_the_dask_cluster(scale_out_env, dask_cluster):
    home = scale_out_env.home.ensure()
    with instance_for(home) as instance:
        run = dg.execute_job(dg.reconstructable(gated_job), instance=instance, raise_on_error=False)
        notes = [entry.message for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]
    assert not run.success
    assert [e.step_key for e in run.get_step_failure_events()] == ["upstream_table_upstream_table_is_fine"]
    assert [e.pid for e in run.get_step_success_events()][0] in dask_cluster.worker_pids
    assert "downstream_table" not in {e.step_key for e in run.get_step_success_events()}
    assert not (home.root / "downstream_table_ran").exists()
    assert any(note.startswith("Step downstream_table not run: the step(s) it depends on did not succeed "
                               "(upstream_table_upstream_table_is_fine)") for note in notes)
