"""An eval-set version reaches the append-only tables whole or not at all, and only once."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from eval_pipeline.defs.resources import WarehouseResource
from eval_pipeline.defs.sampling.assets import _append_version


def _rows(path, table):
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(f"select * from {table} order by all").fetchall()


def test_a_version_appended_again_replaces_its_rows_and_keeps_the_others(tmp_path):
    warehouse = WarehouseResource(database=str(tmp_path / "w.duckdb"))
    v1 = pl.DataFrame({"eval_set_version": ["v1", "v1"], "example_id": ["a", "b"]})
    log = pl.DataFrame({"eval_set_version": ["v1"], "example_id": ["a"], "action": ["added"]})
    _append_version(warehouse, "v1", {"s.versions": v1, "s.changelog": log})
    _append_version(warehouse, "v2", {"s.versions": v1.with_columns(pl.lit("v2").alias("eval_set_version")),
                                      "s.changelog": log.clear()})
    _append_version(warehouse, "v1", {"s.versions": v1, "s.changelog": log})  # a retried month
    assert _rows(tmp_path / "w.duckdb", "s.versions") == [("v1", "a"), ("v1", "b"), ("v2", "a"), ("v2", "b")]
    assert _rows(tmp_path / "w.duckdb", "s.changelog") == [("v1", "a", "added")]


def test_a_failure_part_way_leaves_none_of_the_versions_rows(tmp_path):
    warehouse = WarehouseResource(database=str(tmp_path / "w.duckdb"))
    v1 = pl.DataFrame({"eval_set_version": ["v1"], "example_id": ["a"]})
    _append_version(warehouse, "v1", {"s.versions": v1, "s.changelog": v1})
    v2 = v1.with_columns(pl.lit("v2").alias("eval_set_version"))
    with pytest.raises(duckdb.Error):  # the second table's insert fails: its columns do not match
        _append_version(warehouse, "v2", {"s.versions": v2, "s.changelog": v2.with_columns(pl.lit(1).alias("extra"))})
    assert _rows(tmp_path / "w.duckdb", "s.versions") == [("v1", "a")]
    assert _rows(tmp_path / "w.duckdb", "s.changelog") == [("v1", "a")]
