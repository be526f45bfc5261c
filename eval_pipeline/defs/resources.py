"""Resources: the settings every asset reads and the IO manager that stores frames in DuckDB."""


import json
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import dagster as dg
import duckdb
import polars as pl
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBResource
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_polars import DuckDBPolarsIOManager, DuckDBPolarsTypeHandler

from eval_pipeline.lib.clustering import ClusterConfig
from eval_pipeline.lib.embeddings import DEFAULT_MODEL, EmbeddingConfig, rows_with_vectors
from eval_pipeline.lib.identity import IdentityRules, Reference
from eval_pipeline.lib.ingestion import DEFAULT_MAX_LINE_BYTES
from eval_pipeline.lib.locks import file_lock
from eval_pipeline.lib.paths import DataHome
from eval_pipeline.lib.redaction import CustomPattern, RedactionConfig
from eval_pipeline.lib.sampling import DEFAULT_SIGNAL_WEIGHTS, SamplingConfig
from eval_pipeline.lib.spool import SpooledFrame, StoredPartition, clean_spool, spool_dir
from eval_pipeline.lib.storage import LAKE_TABLES, Lake, StorageLocations, attach, ensure_view
from eval_pipeline.lib.tables import MANIFEST_SCHEMA

__all__ = ["PipelineSettings", "RedactionSettings", "EmbeddingSettings", "ClusteringSettings", "SamplingSettings",
           "LabelingSettings", "JudgeSettings", "LakeIOManager", "WarehouseIOManager", "WarehouseResource",
           "build_resources"]


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


class EmbeddingSettings(dg.ConfigurableResource):
    """How ``log_embeddings`` embeds (see ``lib/embeddings.py`` for the measurements behind the defaults).

    model: a sentence-transformers model directory or name; the default is all-MiniLM-L6-v2 from
    its PyPI package (offline). BGE and E5 models want ``query_prefix`` ("query: " for E5).
    precision: "auto" takes bfloat16 when the CPU runs it natively and a self-test agrees with
    float32, else float32. mode "static" is the distilled token table for very large months.
    max_seq_length: word pieces read per text (None: the model's maximum, 256 for MiniLM). 128 is
    the length all-MiniLM-L6-v2 was trained on; its maintainers report that longer inputs embed
    worse than inputs truncated there (huggingface.co/sentence-transformers/all-MiniLM-L6-v2/
    discussions/52). Measured on a 100k-record demo month: the embedding step 7% faster at 128
    (223 s of step time against 240), with different clusters (so a different eval set) on the
    demo's months; not the default, so existing caches and sets stay as they are. Part of the
    cache key.
    """

    model: str = DEFAULT_MODEL
    query_prefix: str = ""
    precision: str = "auto"
    mode: str = "transformer"
    batch_size: int = 16
    max_seq_length: Optional[int] = None

    def config(self, cache_dir: str | None = None) -> EmbeddingConfig:
        return EmbeddingConfig(model=self.model, query_prefix=self.query_prefix, precision=self.precision,  # type: ignore[arg-type]
                               mode=self.mode, batch_size=self.batch_size, cache_dir=cache_dir,  # type: ignore[arg-type]
                               max_seq_length=self.max_seq_length)


class ClusteringSettings(dg.ConfigurableResource):
    """How ``log_clusters`` clusters a month and keeps last month's cluster ids.

    method "hdbscan" (default) or "kmeans" (k: None picks it by cosine silhouette); months with
    more than ``max_fit_sample`` records are fitted on a seeded sample of that many and the rest
    assigned. A month with a clustered month before it is assigned to that month's clusters
    first and only its novel records are clustered (``lib/identity.py``: ``novelty_ratio``,
    ``attach_cosine``, ``refit_share``); two clusters are one topic at centroid cosine
    ``drift_threshold``; a cluster has grown (shrunk) when its share of traffic rose (fell) by
    ``growth``x. ``refit`` clusters the month afresh and matches it one-to-one (recorded as a
    refit in the drift table and the changelog).
    """

    method: str = "hdbscan"
    k: Optional[int] = None
    min_cluster_size: Optional[int] = None
    min_samples: Optional[int] = None
    umap_dims: int = 5
    cluster_selection_epsilon: float = 0.25
    max_fit_sample: int = 20_000
    seed: int = 0
    drift_threshold: float = 0.9
    growth: float = 1.5
    novelty_ratio: float = 0.4
    attach_cosine: float = 0.5
    refit_share: float = 0.3
    refit: bool = False

    def config(self) -> ClusterConfig:
        return ClusterConfig(method=self.method, k=self.k, min_cluster_size=self.min_cluster_size,  # type: ignore[arg-type]
                             min_samples=self.min_samples, umap_dims=self.umap_dims,
                             cluster_selection_epsilon=self.cluster_selection_epsilon,
                             max_fit_sample=self.max_fit_sample, seed=self.seed)

    def rules(self) -> IdentityRules:
        return IdentityRules(match_cosine=self.drift_threshold, novelty_ratio=self.novelty_ratio,
                             attach_cosine=self.attach_cosine, refit_share=self.refit_share, refit=self.refit)


class SamplingSettings(dg.ConfigurableResource):
    """How ``eval_set`` draws and refreshes the eval set (see ``lib/sampling.py``).

    target_size examples in the first version, at least ``floor`` per stratum; failure signals
    weigh ``signal_weights`` in selection; ``slice_keys`` split strata beyond the cluster (e.g.
    ["task_type"]); a refresh adds ``refresh_size`` examples.
    """

    target_size: int = 300
    floor: int = 5
    signal_weights: dict[str, float] = dict(DEFAULT_SIGNAL_WEIGHTS)
    slice_keys: list[str] = []
    dedup_cosine: float = 0.95
    refresh_size: int = 25
    seed: int = 0

    def config(self) -> SamplingConfig:
        return SamplingConfig(target_size=self.target_size, floor=self.floor, signal_weights=dict(self.signal_weights),
                              slice_keys=tuple(self.slice_keys), dedup_cosine=self.dedup_cosine,
                              refresh_size=self.refresh_size, seed=self.seed)


class LabelingSettings(dg.ConfigurableResource):
    """Where the rubrics are: ``rubrics_dir`` (a folder of YAML files), or the packaged defaults."""

    rubrics_dir: Optional[str] = None

    def rubrics(self):
        from eval_pipeline.lib.rubrics import load_rubrics

        return load_rubrics(self.rubrics_dir)


class JudgeSettings(dg.ConfigurableResource):
    """The LLM judge: any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server...).

    Empty ``base_url`` or ``model`` means no judge: ``judge_labels`` says so and skips. The
    defaults come from ``EVAL_PIPELINE_JUDGE_BASE_URL``, ``EVAL_PIPELINE_JUDGE_MODEL`` and
    ``EVAL_PIPELINE_JUDGE_API_KEY`` (see ``build_resources``).
    """

    base_url: str = ""
    model: str = ""
    api_key: str = ""
    max_workers: int = 4
    timeout: float = 60.0
    max_retries: int = 4

    @property
    def configured(self) -> bool:
        return bool(self.base_url and self.model)

    def judge(self, cache_dir):
        from eval_pipeline.lib.judge import Judge, JudgeCache, OpenAICompatibleProvider

        provider = OpenAICompatibleProvider(self.base_url, self.model, api_key=self.api_key or None,
                                            timeout=self.timeout, max_retries=self.max_retries)
        return Judge(provider, JudgeCache(cache_dir))


class EvaluationSettings(dg.ConfigurableResource):
    """How model versions are run and gated.

    ``max_workers`` requests in flight per version, each with ``timeout`` seconds and
    ``max_retries`` retries (the ``openai`` client's own, with its own backoff); ``thresholds`` is the
    gates file (empty: the packaged ``eval_pipeline/thresholds.yaml``); ``continuous_size`` the
    continuous tier's size (100-200); ``sensor_tier`` the tier the registry sensor runs.
    """

    max_workers: int = 4
    timeout: float = 60.0
    max_retries: int = 3
    thresholds: str = ""
    continuous_size: int = 150
    sensor_tier: str = "deep"

    def load_thresholds(self):
        from eval_pipeline.lib.gates import load_thresholds

        return load_thresholds(self.thresholds or None)


JUDGE_ENV = ("EVAL_PIPELINE_JUDGE_BASE_URL", "EVAL_PIPELINE_JUDGE_MODEL", "EVAL_PIPELINE_JUDGE_API_KEY")


def _judge_settings() -> JudgeSettings:
    """The judge from the environment, as EnvVar references (the key is never stored in config);
    an unset variable leaves its field empty (EnvVar of an unset variable fails at run time)."""
    import os

    base_url, model, api_key = (dg.EnvVar(name) if os.environ.get(name) else "" for name in JUDGE_ENV)
    return JudgeSettings(base_url=base_url, model=model, api_key=api_key)


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

    def load_input(self, context: dg.InputContext, table_slice: TableSlice, connection) -> pl.DataFrame:
        # An upstream table that was never written (no day of it materialized yet) reads as no rows:
        # the asset reading it reports an empty month instead of failing on a missing table.
        try:
            return super().load_input(context, table_slice, connection)
        except duckdb.CatalogException:
            context.log.warning(f"{table_slice.schema}.{table_slice.table} does not exist yet: read as empty")
            return pl.DataFrame()


class _SpoolTypeHandler(DbTypeHandler):
    """Partitions in slices (``lib/spool.py``): an input annotated :class:`StoredPartition` is a
    handle on its partitions' rows (a count, chosen columns, or slices through a spool file),
    read when the step asks; an output returned as :class:`SpooledFrame`
    (a Parquet file a step wrote slice by slice) is inserted by DuckDB from the file, which is
    then deleted. Spool files of processes that are gone (a killed run's) are deleted first."""

    def handle_output(self, context: dg.OutputContext, table_slice: TableSlice, obj: SpooledFrame, connection):
        if not isinstance(obj, SpooledFrame):
            raise TypeError(f"{type(obj).__name__} is read only; return a SpooledFrame or a polars DataFrame")
        clean_spool(spool_dir(context.resource_config["database"]))
        table = f"{table_slice.schema}.{table_slice.table}"
        try:
            connection.execute(f"create schema if not exists {table_slice.schema}")
            connection.execute(f"create table if not exists {table} as select * from read_parquet(?) limit 0", [str(obj.path)])
            connection.execute(f"insert into {table} select * from read_parquet(?)", [str(obj.path)])
        finally:
            obj.discard()
        context.add_output_metadata({"row_count": obj.rows, "dataframe_columns": dg.MetadataValue.table_schema(
            dg.TableSchema(columns=[dg.TableColumn(name=n, type=str(t)) for n, t in obj.schema.items()]))})

    def load_input(self, context: dg.InputContext, table_slice: TableSlice, connection) -> StoredPartition:
        if context.dagster_type.typing_type is not StoredPartition:
            raise TypeError("a SpooledFrame is only an output; read the table as StoredPartition or a polars DataFrame")
        spool = spool_dir(context.resource_config["database"])
        clean_spool(spool)
        return StoredPartition(lambda: _LockedDuckDbClient.connect(context, table_slice),
                               DuckDbClient.get_select_statement(table_slice), spool)

    @property
    def supported_types(self):
        return [StoredPartition, SpooledFrame]


class _LockedDuckDbClient(DuckDbClient):
    """Dagster's DuckDB client, each connection taken under the file's process lock (``lib/locks.py``):
    the days of a month run in parallel processes and one DuckDB file takes one writer at a time."""

    @staticmethod
    @contextmanager
    def connect(context, table_slice):
        with file_lock(f"{context.resource_config['database']}.lock"):
            with DuckDbClient.connect(context, table_slice) as conn:
                yield conn


class WarehouseIOManager(DuckDBPolarsIOManager):
    """The DuckDB IO manager with polars frames, and day tables in slices (:class:`StoredPartition` in,
    :class:`SpooledFrame` out); the schema of each table is its asset's domain."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [_EmptyAwarePolarsTypeHandler(), _SpoolTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return DbIOManager(db_client=_LockedDuckDbClient(), database=self.database, schema=self.schema_,
                           type_handlers=self.type_handlers(), default_load_type=self.default_load_type(),
                           io_manager_name="DuckDBIOManager")


class WarehouseResource(DuckDBResource):
    """A DuckDB connection for assets that query directly, taken under the file's process lock.

    With a lake (``lake``: its URL, ``restricted`` for the raw zone), the zone's lake tables are
    registered on every connection, so ``<schema>.<table>`` reads their objects (``lib/storage.py``)."""

    lake: str = ""
    restricted: bool = False

    def lake_zone(self) -> Lake | None:
        """The zone's lake, or None when its tables are in the DuckDB file."""
        return _lake(self.lake, self.restricted) if self.lake else None

    @contextmanager
    def get_connection(self):
        with file_lock(f"{self.database}.lock"):
            with super().get_connection() as conn:
                if self.lake:
                    attach(conn, _lake(self.lake, self.restricted), "raw" if self.restricted else "main")
                yield conn


_LAKES: dict[tuple[str, bool], Lake] = {}


def _lake(url: str, restricted: bool) -> Lake:
    """One :class:`Lake` per location and process (its filesystem opened once)."""
    if (url, restricted) not in _LAKES:
        _LAKES[(url, restricted)] = Lake(url, restricted=restricted)
    return _LAKES[(url, restricted)]


class LakeIOManager(dg.ConfigurableIOManager):
    """Stores each partition of a large table as one Parquet object in a lake (``lib/storage.py``):
    ``<lake>/<schema>/<table>/<partition key>.parquet``, the schema being the asset's domain.

    An output is a :class:`SpooledFrame` (its file uploaded or moved into place as it is) or a
    polars frame; a re-run of a partition replaces its object, so materializing twice never
    duplicates. Inputs are read lazily: :class:`StoredPartition` (DuckDB over the partitions'
    objects, in slices, spooled under ``spool``) or a polars frame of the input's ``columns``
    metadata. The first write of a table creates its view in ``catalog`` (the zone's DuckDB file),
    so direct SQL reads it too. Days write their own objects: no lock, no single writer."""

    lake: str
    restricted: bool = False
    catalog: str
    spool: str

    def _table(self, metadata, key: dg.AssetKey) -> str:
        table = f"{(metadata or {}).get('schema', 'public')}.{key.path[-1]}"
        if table not in LAKE_TABLES:
            raise dg.Failure(f"{table} is not a lake table (those are: {', '.join(LAKE_TABLES)}); "
                             "give its asset another io_manager_key")
        return table

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if not context.has_asset_partitions:
            raise dg.Failure(f"{context.asset_key.to_user_string()}: the lake stores partitioned tables only")
        table = self._table(context.definition_metadata, context.asset_key)
        lake = _lake(self.lake, self.restricted)
        key = context.asset_partition_key
        schema = LAKE_TABLES[table][1]
        if isinstance(obj, SpooledFrame):
            rows = obj.rows
            try:
                size = lake.write(table, key, obj.path)
            finally:
                obj.discard()
        elif isinstance(obj, pl.DataFrame):
            rows = obj.height
            size = lake.write(table, key, obj.select(list(schema)).cast(dict(schema)).to_arrow())  # type: ignore[arg-type]
        else:
            raise TypeError(f"{type(obj).__name__}: return a SpooledFrame or a polars DataFrame")
        with file_lock(f"{self.catalog}.lock"), duckdb.connect(self.catalog) as con:
            attach(con, lake, "raw" if self.restricted else "main")
            ensure_view(con, table)
        context.add_output_metadata({"row_count": rows, "object": lake.describe(table, key), "object_bytes": size})

    def load_input(self, context: dg.InputContext):
        upstream = context.upstream_output
        table = self._table(upstream.definition_metadata if upstream else None, context.asset_key)
        lake = _lake(self.lake, self.restricted)
        keys = context.asset_partition_keys if context.has_asset_partitions else None
        schema = LAKE_TABLES[table][1]
        if context.dagster_type.typing_type is StoredPartition:
            clean_spool(Path(self.spool))

            @contextmanager
            def connect():
                with duckdb.connect(config={"memory_limit": IO_MEMORY_LIMIT}) as con:
                    con.register("lake_input", lake.dataset(table, schema, keys))
                    yield con

            return StoredPartition(connect, "select * from lake_input", Path(self.spool))
        columns = (context.definition_metadata or {}).get("columns")
        arrow = lake.dataset(table, schema, keys).to_table(columns=columns)
        return pl.from_arrow(arrow).cast({k: v for k, v in schema.items() if k in arrow.column_names})  # type: ignore[arg-type]


# DuckDB's buffer memory for the IO managers' connections. Its default (80% of RAM) let the
# checkpoint that runs when such a connection closes after writing a day hold 0.5-1.0 GB more for
# a second or two in a worker (measured on 36k-record days of a 1M-record month: day peaks of
# 2.6-2.85 GB, 1.8-2.2 GB at 512 MB). At 192 MB, four cold 36k-record days in one process peaked
# at 1,361/1,567/1,567/1,701 MB against 1,342/1,593/1,593/1,905 at 512 MB (the last day's peak
# is such a checkpoint), in 476 s against 460; a sort that outgrows it spills to disk. What they
# do stays within it at any size: append a frame, delete a partition, sort a day for the spool,
# scan a table into Arrow (a 1M-record month of redacted_logs, 2 GB, reads under it). The direct
# query resources keep DuckDB's default: a sort or join larger than the limit can fail ("failed
# to pin block") instead of spilling.
IO_MEMORY_LIMIT = "192MB"


def build_resources(home: DataHome, io_memory_limit: str = IO_MEMORY_LIMIT,
                    storage: StorageLocations | None = None) -> dict[str, object]:
    """All resources for a data home. Raw records go to the restricted zone's own DuckDB file.
    The IO managers' DuckDB connections are limited to ``io_memory_limit`` of buffer memory.

    ``storage`` (default: ``EVAL_PIPELINE_STORAGE`` / ``EVAL_PIPELINE_RAW_STORAGE``, see
    ``lib/storage.py``) moves the large tables (``lake_io_manager`` and ``raw_io_manager``) to a
    lake; without it they stay in the DuckDB files, as every other table does."""
    storage = StorageLocations.resolve() if storage is None else storage
    limited = {"memory_limit": io_memory_limit}
    main = WarehouseIOManager(database=str(home.warehouse), connection_config=limited)
    raw = WarehouseIOManager(database=str(home.raw_warehouse), connection_config=limited)
    lake, raw_lake = main, raw
    if storage.lake:
        lake = LakeIOManager(lake=storage.main, catalog=str(home.warehouse), spool=str(spool_dir(home.warehouse)))
        raw_lake = LakeIOManager(lake=storage.raw, restricted=True, catalog=str(home.raw_warehouse),
                                 spool=str(spool_dir(home.raw_warehouse)))
    return {
        "io_manager": main,
        "lake_io_manager": lake,
        "raw_io_manager": raw_lake,
        "warehouse": WarehouseResource(database=str(home.warehouse), lake=storage.main),
        "raw_warehouse": WarehouseResource(database=str(home.raw_warehouse), lake=storage.raw, restricted=True),
        "settings": PipelineSettings(home=str(home.root)),
        "redaction": RedactionSettings(),
        "embedding": EmbeddingSettings(),
        "clustering": ClusteringSettings(),
        "sampling": SamplingSettings(),
        "labeling": LabelingSettings(),
        "judge": _judge_settings(),
        "evaluation": EvaluationSettings(),
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


_DUCKDB_TYPES = {pl.String: "VARCHAR", pl.Int64: "BIGINT", pl.Int32: "INTEGER", pl.Float64: "DOUBLE",
                 pl.Boolean: "BOOLEAN", pl.Date: "DATE"}


def add_missing_columns(warehouse: DuckDBResource, table: str, schema: pl.Schema) -> list[str]:
    """Columns of ``schema`` that an existing ``table`` of an older data home lacks, added to it
    (the IO manager inserts a frame's columns by position, so a column added to a layout goes at
    its end, and here at the table's end); returns their names. Nothing when the table does not
    exist yet (the IO manager creates it with the whole layout)."""
    schema_name, table_name = table.split(".")
    with warehouse.get_connection() as con:
        have = [r[0] for r in con.execute("select column_name from information_schema.columns where table_schema = ? "
                                          "and table_name = ? order by ordinal_position", [schema_name, table_name]).fetchall()]
        if not have:
            return []
        missing = [name for name in schema if name not in have]
        for name in missing:
            con.execute(f'alter table {table} add column "{name}" {_DUCKDB_TYPES[schema[name]]}')
    return missing


def clustered_sample(warehouse: DuckDBResource, month: date | None, size: int, seed: int,
                     before: date | None = None) -> Reference | None:
    """A seeded sample of at most ``size`` of a month's clustered records (``clustering.log_clusters``)
    with their stored vectors: last month's traffic in the novelty tests of ``lib/identity.py``.
    ``month`` None with ``before``: the latest clustered month before that one. None when there
    is no such month or no vector (the tests then fall back to centroid cosine)."""
    with warehouse.get_connection() as con:
        exists = con.execute("select count(*) from information_schema.tables where table_schema = 'clustering' "
                             "and table_name = 'log_clusters'").fetchone()[0]
        if not exists:
            return None
        if month is None and before is not None:
            month = con.execute("select max(month) from clustering.log_clusters where month < ?", [before]).fetchone()[0]
        if month is None:
            return None
        keys = pl.DataFrame(con.execute("select request_id, timestamp, cluster_id from clustering.log_clusters "
                                        "where month = ? order by request_id", [month]).arrow())
    if keys.height > size:
        keys = keys.sample(n=size, seed=seed).sort("request_id")
    if not keys.height:
        return None
    kept, vectors, _ = rows_with_vectors(warehouse.get_connection, keys.with_columns(pl.col("timestamp").cast(pl.Datetime("us"))))
    return Reference(vectors, kept["cluster_id"].to_list()) if kept.height else None


def landing_file_days(warehouse: DuckDBResource) -> dict[str, list[str]]:
    """Path -> days it holds, from the last landing manifest."""
    manifest = read_table(warehouse, "ingest.landing_manifest", MANIFEST_SCHEMA)
    return {path: sorted(json.loads(days)) for path, days in zip(manifest["path"], manifest["days"])}
