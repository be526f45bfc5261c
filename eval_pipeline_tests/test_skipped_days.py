"""Days of a month's refresh with nothing to do are not run.

Which days run, from a real landing manifest table, real day tables (DuckDB, and a local lake
through its catalog views) and a real Dagster instance; then one small month refreshed through
Dagster with records on three days only, against the same month with every day run, and again
after one day's file is removed (that day runs, to empty its partitions)."""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime

import dagster as dg
import duckdb
import polars as pl
import pytest

from eval_pipeline.lib.core.paths import DataHome
from eval_pipeline.lib.storage.lake import Lake, attach, ensure_view
from eval_pipeline.lib.storage.tables import REDACTED_LOGS_SCHEMA
from eval_pipeline.runs import month_days, plan_month

FEB = month_days("2026-02")


def write_manifest(home: DataHome, *indexes: dict[str, int]) -> None:
    with duckdb.connect(str(home.warehouse)) as con:
        con.execute("create schema if not exists ingest")
        con.execute("create or replace table ingest.landing_manifest (path varchar, days varchar)")
        for n, held in enumerate(indexes):
            con.execute("insert into ingest.landing_manifest values (?, ?)", [f"f{n}.jsonl", json.dumps(held)])


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.delenv("EVAL_PIPELINE_STORAGE", raising=False)
    monkeypatch.delenv("EVAL_PIPELINE_RAW_STORAGE", raising=False)
    return DataHome.resolve(tmp_path / "home").ensure()


def test_only_days_with_records_or_something_stored_run(home):
    instance = dg.DagsterInstance.ephemeral()
    # records on the 3rd and 4th; only unreadable lines (quarantined) anchored to the 10th
    write_manifest(home, {"2026-02-03": 5, "2026-02-04": 1}, {"2026-02-10": 2}, {})
    with duckdb.connect(str(home.raw_warehouse)) as con:  # rows of the 12th and 13th from an earlier ingest
        con.execute("create schema ingest")
        con.execute("create table ingest.raw_logs (request_id varchar, timestamp timestamp)")
        con.execute("insert into ingest.raw_logs values ('a', '2026-02-12 23:59:59'), ('b', '2026-01-31 23:00:00')")
        con.execute("create table ingest.quarantined_logs (partition_day timestamp)")
        con.execute("insert into ingest.quarantined_logs values ('2026-02-13 00:00:00'), ('2026-03-01 00:00:00')")
    with duckdb.connect(str(home.warehouse)) as con:
        con.execute("create schema embeddings")
        con.execute("create table embeddings.log_embeddings (timestamp timestamp)")
        con.execute("insert into embeddings.log_embeddings values ('2026-02-20 08:00:00')")
    # the 25th: materialized (empty) on the instance, no rows anywhere
    instance.report_runless_asset_event(dg.AssetMaterialization("redacted_logs", partition="2026-02-25"))

    plan = plan_month(home, instance, FEB, log=print)
    assert plan.run == ["2026-02-03", "2026-02-04", "2026-02-10", "2026-02-12", "2026-02-13", "2026-02-20",
                        "2026-02-25"]
    assert len(plan.skipped) == 21 and not set(plan.skipped) & set(plan.run)


def test_no_manifest_table_means_every_day_runs(home):
    assert plan_month(home, dg.DagsterInstance.ephemeral(), FEB, log=print).run == FEB


def test_an_unreadable_table_means_every_day_runs(home):
    write_manifest(home, {"2026-02-03": 1})
    home.raw_warehouse.parent.mkdir(parents=True, exist_ok=True)
    home.raw_warehouse.write_bytes(b"not a duckdb file")
    said = []
    plan = plan_month(home, dg.DagsterInstance.ephemeral(), FEB, log=said.append)
    assert plan.run == FEB and not plan.skipped
    assert len(said) == 1 and said[0].startswith("  could not tell which days have records or stored rows (") and \
        said[0].endswith("every day runs")


def test_rows_in_the_lake_count_as_stored(home, tmp_path, monkeypatch):
    monkeypatch.setenv("EVAL_PIPELINE_STORAGE", str(tmp_path / "lake"))
    write_manifest(home, {"2026-02-03": 1})
    lake = Lake(str(tmp_path / "lake"))
    row = pl.DataFrame({name: [None] for name in REDACTED_LOGS_SCHEMA}, schema=REDACTED_LOGS_SCHEMA)
    lake.write("privacy.redacted_logs", "2026-02-09",
               row.with_columns(timestamp=pl.lit(datetime(2026, 2, 9, 12))).to_arrow())
    lake.write("privacy.redacted_logs", "2026-02-11", row.clear().to_arrow())  # an emptied day's object
    with duckdb.connect(str(home.warehouse)) as con:
        attach(con, lake, "main")
        ensure_view(con, "privacy.redacted_logs")
    plan = plan_month(home, dg.DagsterInstance.ephemeral(), FEB, log=print)
    assert plan.run == ["2026-02-03", "2026-02-09"]


# day table -> the columns that identify a row, by the DuckDB file that holds it
DAY_TABLES = {
    "restricted": {"ingest.raw_logs": "request_id", "ingest.quarantined_logs": "source_file, source_line"},
    "warehouse": {"privacy.redacted_logs": "request_id", "embeddings.log_embeddings": "request_id"},
}
# columns that name the run or its moment: they differ between two refreshes by construction
RUN_COLUMNS = ("created_at", "materialized_at", "run_id")


def read_tables(home: DataHome) -> dict[str, pl.DataFrame]:
    out = {}
    for zone, tables in DAY_TABLES.items():
        path = home.raw_warehouse if zone == "restricted" else home.warehouse
        with duckdb.connect(str(path), read_only=True) as con:
            for table, order in tables.items():
                frame = con.execute(f"select * from {table} order by {order}").pl()
                out[table] = frame.drop([c for c in RUN_COLUMNS if c in frame.columns])
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        out["sampling.eval_set"] = con.execute(
            "select eval_set_version, example_id, request_id, cluster_id, stratum, inclusion_probability, weight "
            "from sampling.eval_set order by 1, 2").pl()
        out["manifest"] = con.execute("select path, days from ingest.landing_manifest order by path").pl()
    return out


def day_runs(home: DataHome) -> list[str]:
    from eval_pipeline.runs import instance_for

    records = instance_for(home).get_run_records(dg.RunsFilter(job_name="ingest_job"))
    return sorted(r.dagster_run.tags["dagster/partition"] for r in records)


def test_a_month_with_records_on_three_days_runs_only_those_days(tmp_path, monkeypatch):
    from eval_pipeline.defs.resources import SamplingSettings
    from eval_pipeline.demo.logs import generate_logs
    from eval_pipeline.runs import refresh_month, table_counts

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    monkeypatch.delenv("EVAL_PIPELINE_STORAGE", raising=False)
    monkeypatch.delenv("EVAL_PIPELINE_RAW_STORAGE", raising=False)
    resources = {"sampling": SamplingSettings(target_size=12)}
    sparse = DataHome.resolve(tmp_path / "sparse").ensure()
    # two days of a new team's logs (the 10th and 11th), and one day of a backfill (the 20th) in a folder of its own
    generate_logs(sparse.landing / "team", date(2026, 2, 10), 2, 6, seed=4, truth_dir=tmp_path / "truth_team")
    generate_logs(sparse.landing / "backfill", date(2026, 2, 20), 1, 6, seed=5, truth_dir=tmp_path / "truth_backfill")
    every = DataHome.resolve(tmp_path / "every").ensure()
    shutil.copytree(sparse.landing, every.landing, dirs_exist_ok=True)  # copy2: the same bytes and times

    said: list[str] = []
    result = refresh_month(sparse, "2026-02", log=said.append, workers=1, resources=resources)
    assert result.success, result.failed
    with duckdb.connect(str(sparse.warehouse), read_only=True) as con:
        indexes = [row[0] for row in con.execute("select days from ingest.landing_manifest").fetchall()]
        records_in = con.execute("select sum(records) from ingest.landing_manifest").fetchone()[0]
    held = sorted(d for d in days_in_manifest_of(indexes) if d.startswith("2026-02"))
    assert held == ["2026-02-10", "2026-02-11", "2026-02-20"]
    assert result.days == held and result.skipped == [d for d in FEB if d not in held]
    assert result.monthly_jobs == ["monthly_refresh_job"]
    assert day_runs(sparse) == held  # one Dagster run per day with records, none for the others
    assert said == ["  25 of 28 days skipped: no records in the landing manifest and nothing stored "
                    "(2026-02-01 to 2026-02-09, 2026-02-12 to 2026-02-19, 2026-02-21 to 2026-02-28)"]
    counts = table_counts(sparse)
    assert counts["ingest.raw_logs"] == 3 * 6
    assert counts["ingest.raw_logs"] + counts["ingest.quarantined_logs"] == records_in  # every line accounted for

    # the same landing folder with every day run: the same day tables and the same eval set
    reference = refresh_month(every, "2026-02", log=print, workers=1, resources=resources, skip_empty_days=False)
    assert reference.success and len(reference.days) == 28 and not reference.skipped
    got, expected = read_tables(sparse), read_tables(every)
    assert got["sampling.eval_set"].height > 0
    for table in expected:
        left, right = got[table], expected[table]
        if "vector" in left.columns:  # the same texts embedded in the same process: the same bytes
            assert left["vector"].to_list() == right["vector"].to_list(), table
        assert left.equals(right), table
    assert table_counts(sparse) == table_counts(every)

    # the backfill is withdrawn: the 20th had rows, so it runs and its partitions are emptied
    shutil.rmtree(sparse.landing / "backfill")
    again = refresh_month(sparse, "2026-02", log=print, workers=1, resources=resources)
    assert again.success and again.days == held and "2026-02-20" not in again.skipped
    assert len(again.skipped) == 25
    for zone, tables in DAY_TABLES.items():
        path = sparse.raw_warehouse if zone == "restricted" else sparse.warehouse
        with duckdb.connect(str(path), read_only=True) as con:
            for table in tables:
                column = "partition_day" if table == "ingest.quarantined_logs" else "timestamp"
                left = con.execute(f"select count(*) from {table} where cast({column} as date) = date '2026-02-20'")
                assert left.fetchone()[0] == 0, table
    assert table_counts(sparse)["ingest.raw_logs"] == 2 * 6


def days_in_manifest_of(indexes: list[str]) -> set[str]:
    found: set[str] = set()
    for index in indexes:
        found |= set(json.loads(index))
    return found
