"""Resources: the settings every asset reads and the IO manager that stores frames in DuckDB."""


import json
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Optional

import dagster as dg
import polars as pl
from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBResource
from dagster_duckdb_polars import DuckDBPolarsIOManager, DuckDBPolarsTypeHandler

from eval_pipeline.lib.ingestion import DEFAULT_MAX_LINE_BYTES
from eval_pipeline.lib.paths import DataHome
from eval_pipeline.lib.redaction import CustomPattern, RedactionConfig
from eval_pipeline.lib.tables import MANIFEST_SCHEMA

__all__ = ["PipelineSettings", "RedactionSettings", "WarehouseIOManager", "build_resources"]


class PipelineSettings(dg.ConfigurableResource):
    """Where the data home is, the knobs of ingestion and how long raw data is kept."""

    home: str
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    raw_retention_days: int = 90

    @property
    def data_home(self) -> DataHome:
        return DataHome.resolve(self.home)

    def retention_cutoff(self, today: date | None = None) -> date:
        """The first day whose raw data is kept: raw partitions before it are deleted."""
        return (today or datetime.now(timezone.utc).date()) - timedelta(days=self.raw_retention_days)


class RedactionSettings(dg.ConfigurableResource):
    """What ``redacted_logs`` redacts (the defaults are documented in ``lib/redaction.py``)."""

    score_threshold: float = 0.5
    entities: Optional[list[str]] = None  # None: the default entity types
    extra_allow_list: list[str] = []  # known false positives of your traffic, kept as they are
    custom_patterns: dict[str, str] = {}  # ENTITY_TYPE -> regex, added to the default account-id pattern

    def config(self) -> RedactionConfig:
        base = RedactionConfig()
        return RedactionConfig(
            entities=tuple(self.entities) if self.entities is not None else base.entities,
            score_threshold=self.score_threshold,
            allow_list=base.allow_list + tuple(self.extra_allow_list),
            custom_patterns=base.custom_patterns + tuple(CustomPattern(k, v) for k, v in sorted(self.custom_patterns.items())),
        )


class _EmptyAwarePolarsTypeHandler(DuckDBPolarsTypeHandler):
    """Creates the table even for an empty frame, so a day with no rows (or no quarantined lines)
    still leaves a readable, typed table behind; the stock handler skips the write."""

    def handle_output(self, context: dg.OutputContext, table_slice: TableSlice, obj: pl.DataFrame, connection):
        if not obj.is_empty():
            return super().handle_output(context, table_slice, obj, connection)
        empty_arrow = obj.to_arrow()  # noqa: F841 - read by name in the SQL below
        connection.execute(f"create schema if not exists {table_slice.schema};")
        connection.execute(
            f"create table if not exists {table_slice.schema}.{table_slice.table} as select * from empty_arrow"
        )
        context.add_output_metadata({"row_count": 0})


class WarehouseIOManager(DuckDBPolarsIOManager):
    """The DuckDB IO manager with polars frames; the schema of each table is its asset's domain."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [_EmptyAwarePolarsTypeHandler()]


def build_resources(home: DataHome) -> dict[str, object]:
    """All resources for a data home. Raw records go to the restricted zone's own DuckDB file."""
    return {
        "io_manager": WarehouseIOManager(database=str(home.warehouse)),
        "raw_io_manager": WarehouseIOManager(database=str(home.raw_warehouse)),
        "warehouse": DuckDBResource(database=str(home.warehouse)),
        "raw_warehouse": DuckDBResource(database=str(home.raw_warehouse)),
        "settings": PipelineSettings(home=str(home.root)),
        "redaction": RedactionSettings(),
    }


def read_table(warehouse: DuckDBResource, table: str, schema: pl.Schema) -> pl.DataFrame:
    """A whole table read directly (for an asset that reads its own earlier state), or an empty
    frame of the given schema when the table does not exist yet."""
    schema_name, table_name = table.split(".")
    with warehouse.get_connection() as con:
        exists = con.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [schema_name, table_name],
        ).fetchone()[0]
        if exists:
            return pl.DataFrame(con.execute(f"select * from {table}").arrow()).cast(schema)
    return pl.DataFrame(schema=schema)


def landing_file_days(warehouse: DuckDBResource) -> dict[str, list[str]]:
    """Path -> days it holds, from the last landing manifest."""
    manifest = read_table(warehouse, "ingest.landing_manifest", MANIFEST_SCHEMA)
    return {path: sorted(json.loads(days)) for path, days in zip(manifest["path"], manifest["days"])}
