"""Resources: the settings every asset reads and the IO manager that stores frames in DuckDB."""


from collections.abc import Sequence

import dagster as dg
import polars as pl
from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBResource
from dagster_duckdb_polars import DuckDBPolarsIOManager, DuckDBPolarsTypeHandler

from eval_pipeline.lib.ingestion import DEFAULT_MAX_LINE_BYTES
from eval_pipeline.lib.paths import DataHome

__all__ = ["PipelineSettings", "WarehouseIOManager", "build_resources"]


class PipelineSettings(dg.ConfigurableResource):
    """Where the data home is and the knobs of ingestion."""

    home: str
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES

    @property
    def data_home(self) -> DataHome:
        return DataHome.resolve(self.home)


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
    """All resources for a data home."""
    return {
        "io_manager": WarehouseIOManager(database=str(home.warehouse)),
        "warehouse": DuckDBResource(database=str(home.warehouse)),
        "settings": PipelineSettings(home=str(home.root)),
    }
