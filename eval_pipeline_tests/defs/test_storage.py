"""The IO manager's day tables in slices, through the real Dagster runtime: a SpooledFrame output
stored as a polars frame would be, read back as StoredPartition, re-runs replacing the partition, and a
killed run's spool file cleaned."""

import subprocess
import sys
from datetime import datetime

import dagster as dg
import duckdb
import polars as pl

from eval_pipeline.defs.resources import WarehouseIOManager
from eval_pipeline.lib.storage.spool import StoredPartition, SpooledFrame, SpoolWriter, spool_dir
from eval_pipeline.lib.storage.tables import REDACTED_LOGS_SCHEMA, frame

DAYS = dg.DailyPartitionsDefinition(start_date="2026-03-01")
META = {"schema": "s", "partition_expr": "timestamp"}


def day_rows(day: str, count: int) -> pl.DataFrame:
    at = datetime.fromisoformat(day)
    return frame([{"request_id": f"{day}-{i}", "conversation_id": f"c{i // 3}", "turn_index": i % 3,
                   "timestamp": at.replace(minute=i % 60), "messages": [{"role": "user", "content": f"text {i}"}],
                   "user_input": f"text {i}", "completion": "ok", "pii_counts": "{}", "withheld": []}
                  for i in range(count)], REDACTED_LOGS_SCHEMA)


def assets(database):
    home = database.parent

    @dg.asset(partitions_def=DAYS, metadata=META)
    def by_polars(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return day_rows(context.partition_key, 50)

    @dg.asset(partitions_def=DAYS, metadata=META)
    def by_spool(context: dg.AssetExecutionContext) -> SpooledFrame:
        with SpoolWriter(spool_dir(home / "warehouse.duckdb"), REDACTED_LOGS_SCHEMA) as out:
            for part in day_rows(context.partition_key, 50).iter_slices(16):
                out.write(part)
            return out.close()

    @dg.asset(partitions_def=DAYS, metadata=META)
    def reader(context: dg.AssetExecutionContext, by_spool: StoredPartition) -> pl.DataFrame:
        sizes = [part.height for part in by_spool.slices(20, columns=("request_id", "turn_index"), order_by="request_id")]
        assert sizes == [20, 20, 10] and by_spool.rows == 50
        return by_spool.frame("request_id", "turn_index").with_columns(timestamp=pl.lit(context.partition_time_window.start.replace(tzinfo=None)))

    return [by_polars, by_spool, reader]


def test_a_spooled_output_is_stored_as_a_polars_frame_would_be_and_read_in_slices(tmp_path):
    database = tmp_path / "warehouse.duckdb"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    spool_dir(database).mkdir(parents=True)
    leftover = spool_dir(database) / f"{int(gone.stdout)}-0123.parquet"  # as a killed run leaves it
    leftover.write_bytes(b"part of a day")
    io_manager = WarehouseIOManager(database=str(database), connection_config={"memory_limit": "256MB"})
    for _ in range(2):  # a re-run replaces the partition
        for day in ("2026-03-02", "2026-03-03"):
            assert dg.materialize(assets(database), partition_key=day, resources={"io_manager": io_manager}).success
    with duckdb.connect(str(database), read_only=True) as con:
        types = {t: con.execute(f"select column_name, data_type from information_schema.columns where table_name = '{t}' "
                                "order by ordinal_position").fetchall() for t in ("by_polars", "by_spool")}
        assert types["by_spool"] == types["by_polars"]
        counts = con.execute("select cast(timestamp as date)::varchar, count(*) from s.by_spool group by 1 order by 1").fetchall()
        assert counts == [("2026-03-02", 50), ("2026-03-03", 50)]
        assert con.execute("select count(*), count(distinct timestamp) from s.reader").fetchone() == (100, 2)
        stored = pl.DataFrame(con.execute("select * from s.by_spool where timestamp < '2026-03-03' order by request_id").arrow())
    assert stored.cast(dict(REDACTED_LOGS_SCHEMA)).equals(day_rows("2026-03-02", 50).sort("request_id"))
    assert not leftover.exists()
    assert not list(spool_dir(database).iterdir())  # nothing left behind by the runs either


def test_an_older_homes_table_gets_the_columns_added_since(tmp_path):
    """A data home made before ``cluster_drift`` had its ``mode`` column: the column is added at
    the table's end, where the frame has it, so the IO manager's insert by position still fits;
    a table not made yet is left to the IO manager."""
    from dagster_duckdb import DuckDBResource

    from eval_pipeline.defs.resources import add_missing_columns
    from eval_pipeline.lib.storage.tables import CLUSTER_DRIFT_SCHEMA

    database = tmp_path / "warehouse.duckdb"
    warehouse = DuckDBResource(database=str(database))
    assert add_missing_columns(warehouse, "clustering.cluster_drift", CLUSTER_DRIFT_SCHEMA) == []
    old = pl.DataFrame(schema={k: v for k, v in CLUSTER_DRIFT_SCHEMA.items() if k != "mode"})  # noqa: F841
    with duckdb.connect(str(database)) as con:
        con.execute("create schema clustering")
        con.execute("create table clustering.cluster_drift as select * from old")
    assert add_missing_columns(warehouse, "clustering.cluster_drift", CLUSTER_DRIFT_SCHEMA) == ["mode"]
    assert add_missing_columns(warehouse, "clustering.cluster_drift", CLUSTER_DRIFT_SCHEMA) == []
    row = frame([{"month": datetime(2026, 3, 1).date(), "month_start": datetime(2026, 3, 1), "cluster_id": "c0001",
                  "status": "continuing", "trend": "stable", "previous_size": 3, "current_size": 4,
                  "mode": "assigned"}], CLUSTER_DRIFT_SCHEMA)  # noqa: F841
    with duckdb.connect(str(database)) as con:
        con.execute("insert into clustering.cluster_drift select * from row")
        assert con.execute("select cluster_id, mode from clustering.cluster_drift").fetchall() == [("c0001", "assigned")]
