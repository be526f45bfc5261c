"""Day tables in slices: spool files written and read back, DuckDB partitions read slice by slice."""

import gc
import os
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime

import duckdb
import polars as pl
import pytest

from eval_pipeline.lib.storage import spool
from eval_pipeline.lib.storage.spool import StoredPartition, SpoolWriter, clean_spool, spool_dir

SCHEMA = pl.Schema({"id": pl.String, "n": pl.Int64, "ts": pl.Datetime("us"),
                    "items": pl.List(pl.Struct({"role": pl.String, "score": pl.Float64}))})


def rows(start: int, count: int) -> pl.DataFrame:
    return pl.DataFrame([{"id": f"r{i:04d}", "n": i, "ts": datetime(2026, 3, 2, 0, 0, i % 60),
                          "items": [{"role": "user", "score": i / 1000}] * (i % 3)} for i in range(start, start + count)],
                        schema=SCHEMA)


def test_a_spooled_frame_holds_every_slice_written_in_order(tmp_path):
    with SpoolWriter(tmp_path / "spool", SCHEMA) as out:
        for start in (0, 40, 90):
            out.write(rows(start, 40 if start < 90 else 7).select("n", "id", "items", "ts"))  # any column order
        spooled = out.close()
    assert spooled.rows == 87 and spooled.path.exists()
    back = spooled.read()
    assert back.schema == SCHEMA
    assert back.equals(pl.concat([rows(0, 40), rows(40, 40), rows(90, 7)]))
    spooled.discard()
    assert not spooled.path.exists()


def test_an_empty_spool_still_has_its_columns_and_a_failed_step_leaves_no_file(tmp_path):
    with SpoolWriter(tmp_path, SCHEMA) as out:
        empty = out.close()
    assert empty.rows == 0 and empty.read().schema == SCHEMA and empty.read().height == 0
    with pytest.raises(RuntimeError):
        with SpoolWriter(tmp_path, SCHEMA) as out:
            out.write(rows(0, 5))
            raise RuntimeError("the step failed")
    assert [p.name for p in tmp_path.glob("*.parquet")] == [empty.path.name]
    del empty
    gc.collect()
    assert not list(tmp_path.glob("*.parquet"))  # dropped without being stored: deleted too


@pytest.fixture
def table(tmp_path):
    """A DuckDB file with 1,000 rows over two days; connections as the IO manager opens them."""
    database = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(database)) as con:
        day = rows(0, 1000)  # noqa: F841 - read by name in the SQL
        con.execute("create schema s")
        con.execute("create table s.t as select * from day")
        con.execute("update s.t set ts = ts + interval 1 day where n >= 600")  # 600 rows on the 2nd, 400 on the 3rd

    @contextmanager
    def connect():
        with duckdb.connect(str(database), config={"memory_limit": "64MB"}) as con:
            yield con

    return database, connect


def test_day_slices_read_a_partition_in_slices_of_at_most_n_rows(table):
    database, connect = table
    day = StoredPartition(connect, "select * from s.t where ts >= '2026-03-02' and ts < '2026-03-03'", spool_dir(database))
    assert day.rows == 600
    keys = day.frame("id", "list_transform(items, x -> struct_pack(role := x.role)) as items")
    assert keys.columns == ["id", "items"] and keys.height == 600
    assert keys["items"].dtype == pl.List(pl.Struct({"role": pl.String}))
    parts = list(day.slices(128, columns=("id", "n"), order_by="n desc"))
    assert [p.height for p in parts] == [128, 128, 128, 128, 88]
    assert pl.concat(parts)["n"].to_list() == list(range(599, -1, -1))
    whole = pl.concat(list(day.slices(250)))
    assert whole.schema == SCHEMA and whole.sort("n").equals(rows(0, 600))
    assert not list(spool_dir(database).glob("*.parquet"))  # each spool file deleted once read


def test_slices_in_another_order_are_dealt_through_buckets_and_leave_no_file(table, monkeypatch):
    database, connect = table
    monkeypatch.setattr(spool, "MAX_BUCKETS", 3)  # 600 rows in slices of 7: 86 slices, 29 a bucket
    day = StoredPartition(connect, "select * from s.t where ts >= '2026-03-02' and ts < '2026-03-03'", spool_dir(database))
    parts = list(day.slices(7, order_by="n % 13, ts desc"))
    assert [p.height for p in parts] == [7] * 85 + [5]
    expected = rows(0, 600).with_columns(key=pl.col("n") % 13).sort(["key", "ts", "n"], descending=[False, True, False])
    assert pl.concat(parts).equals(expected.drop("key"))  # ties (same key and time) in stored order
    assert not list(spool_dir(database).iterdir())


def test_a_day_wider_than_the_memory_limit_is_read_in_order(tmp_path):
    """DuckDB cannot sort whole rows much larger than its memory limit; the keys alone it can."""
    database = tmp_path / "wide.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("create table t as select (i * 7919) % 30011 as k, i as n, repeat('x', 4000) || i::varchar as body "
                    "from range(30000) r(i)")  # 120 MB of rows

    @contextmanager
    def connect():
        with duckdb.connect(str(database), config={"memory_limit": "48MB"}) as con:
            yield con

    with connect() as con, pytest.raises(duckdb.OutOfMemoryException):
        con.execute(f"copy (select * from t order by k) to '{tmp_path / 'sorted.parquet'}' (format parquet)")
    day = StoredPartition(connect, "select * from t", spool_dir(database))
    keys = [part["k"].to_list() for part in day.slices(2000, order_by="k")]
    assert [len(k) for k in keys] == [2000] * 15
    assert sum(keys, []) == sorted(sum(keys, [])) and len(set(sum(keys, []))) == 30000


def test_a_slice_iterator_dropped_half_way_deletes_its_spool_file(table):
    database, connect = table
    day = StoredPartition(connect, "select * from s.t", spool_dir(database))
    parts = day.slices(100)
    assert next(parts).height == 100
    assert len(list(spool_dir(database).glob("*.parquet"))) == 1
    del parts
    gc.collect()
    assert not list(spool_dir(database).glob("*.parquet"))


def test_a_table_never_written_reads_as_no_rows(table):
    database, connect = table
    missing = StoredPartition(connect, "select * from s.never_written", spool_dir(database))
    assert missing.rows == 0 and missing.frame("id").height == 0 and list(missing.slices(10)) == []


def test_spool_files_of_a_gone_process_are_cleaned_and_live_ones_kept(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    (tmp_path / f"{dead_pid}-abc.parquet").write_bytes(b"raw text of a killed run")
    (tmp_path / f"{os.getpid()}-mine.parquet").write_bytes(b"in use")
    (tmp_path / "notes.txt").write_text("not a spool file")
    assert clean_spool(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{os.getpid()}-mine.parquet", "notes.txt"])
    assert clean_spool(tmp_path / "absent") == 0
