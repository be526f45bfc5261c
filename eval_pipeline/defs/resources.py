"""Resources: the settings every asset reads and the IO manager that stores frames in DuckDB."""


import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import dagster as dg
import duckdb
import polars as pl
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBResource
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_polars import DuckDBPolarsIOManager, DuckDBPolarsTypeHandler
from pydantic import Field, ValidationError, create_model

from eval_pipeline.lib.clustering.clusters import DEFAULT_GROWTH, DRIFT_THRESHOLD, ClusterConfig
from eval_pipeline.lib.clustering.identity import IdentityRules, Reference
from eval_pipeline.lib.core.locks import file_lock
from eval_pipeline.lib.core.paths import DataHome, make_folder
from eval_pipeline.lib.core.settings import build, declared
from eval_pipeline.lib.core.yamlfile import YAMLFileError, read_yaml_file
from eval_pipeline.lib.embeddings.encode import EmbeddingConfig, rows_with_vectors
from eval_pipeline.lib.evaluation.runner import CONTINUOUS_MAX, CONTINUOUS_MIN, Tier
from eval_pipeline.lib.ingest.ingestion import DEFAULT_MAX_LINE_BYTES
from eval_pipeline.lib.privacy.redaction import CustomPattern, RedactionConfig
from eval_pipeline.lib.sampling.draw import SamplingConfig
from eval_pipeline.lib.storage.lake import LAKE_TABLES, Lake, StorageLocations, attach, ensure_view
from eval_pipeline.lib.storage.spool import SpooledFrame, StoredPartition, clean_spool, spool_dir
from eval_pipeline.lib.storage.tables import MANIFEST_SCHEMA

__all__ = ["PipelineSettings", "RedactionSettings", "EmbeddingSettings", "ClusteringSettings", "SamplingSettings",
           "LabelingSettings", "JudgeSettings", "SettingsError", "settings_from_file", "with_overrides", "EvaluationSettings", "LakeIOManager", "WarehouseIOManager", "WarehouseResource",
           "build_resources"]


# Settings. A setting that a lib config also has is declared there, once, with its type (a
# Literal for a choice), default and doc (lib/core/settings.py: ``setting``); the resource classes
# below take those fields from it (``_settings_class``), so the launchpad shows and validates each
# field, a bad choice is refused when the resource is built or the run config validated, and the
# resource builds the lib config back (``config()``, ``rules()``). Fields that only a resource has
# are declared on the resource.


def _values(resource: dg.ConfigurableResource, names: Mapping[str, str]) -> dict[str, Any]:
    """The lib config's keyword arguments from the resource: setting name -> lib field name."""
    return {field_name: getattr(resource, setting_name) for setting_name, field_name in names.items()}


def _settings_class(name: str, base: type, sources: Mapping[type, Mapping[str, str]], **own: Any) -> Any:
    """A settings resource class ``name``: ``base`` (its methods and docstring) with the fields
    that the lib configs in ``sources`` declare (lib class -> {setting name: its field name}),
    then the resource's ``own`` (``name=(type, pydantic.Field(...))``)."""
    fields: dict[str, Any] = {}
    for owner, names in sources.items():
        for setting_name, field_name in names.items():
            d = declared(owner, field_name)
            fields[setting_name] = (d.annotation, Field(d.default, description=d.doc))
    return create_model(name, __base__=base, __module__=__name__, __doc__=base.__doc__, **fields, **own)


class PipelineSettings(dg.ConfigurableResource):
    """Where the data home is, the knobs of ingestion and how long raw data is kept."""

    home: str = Field(description="the data home: DuckDB files, landing folders, reports and caches")
    max_line_bytes: int = Field(DEFAULT_MAX_LINE_BYTES, description="a longer JSONL line is quarantined unread")
    raw_retention_days: int = Field(90, description="raw partitions older than this many days are deleted")

    @property
    def data_home(self) -> DataHome:
        return DataHome.resolve(self.home)

    def retention_cutoff(self, today: date | None = None) -> date:
        """The first day whose raw data is kept: raw partitions before it are deleted."""
        return (today or datetime.now(timezone.utc).date()) - timedelta(days=self.raw_retention_days)


class _Redaction(dg.ConfigurableResource):
    """What ``redacted_logs`` redacts (``lib/privacy/redaction.py: RedactionConfig`` declares the shared settings)."""

    def config(self) -> RedactionConfig:
        base = RedactionConfig()
        return build(RedactionConfig, _values(self, _REDACTION),
                     entities=tuple(self.entities) if self.entities is not None else base.entities,
                     allow_list=base.allow_list + tuple(self.extra_allow_list),
                     custom_patterns=base.custom_patterns + tuple(CustomPattern(k, v) for k, v in
                                                                  sorted(self.custom_patterns.items())))


_REDACTION = {"score_threshold": "score_threshold"}
RedactionSettings = _settings_class(
    "RedactionSettings", _Redaction, {RedactionConfig: _REDACTION},
    entities=(Optional[list[str]], Field(None, description="entity types to redact; empty: the default types")),
    extra_allow_list=(list[str], Field([], description="known false positives of your traffic, kept as they are")),
    custom_patterns=(dict[str, str], Field({}, description="ENTITY_TYPE -> regex, added to the default "
                                           "account-id pattern")),
)


class _Embedding(dg.ConfigurableResource):
    """How ``log_embeddings`` embeds (``lib/embeddings/encode.py: EmbeddingConfig`` declares the settings
    and the measurements behind their defaults). BGE and E5 models want ``query_prefix``."""

    def config(self, cache_dir: str | None = None) -> EmbeddingConfig:
        return build(EmbeddingConfig, _values(self, _EMBEDDING), cache_dir=cache_dir)


_EMBEDDING = {name: name for name in ("model", "query_prefix", "precision", "mode", "batch_size", "max_seq_length")}
EmbeddingSettings = _settings_class("EmbeddingSettings", _Embedding, {EmbeddingConfig: _EMBEDDING})


class _Clustering(dg.ConfigurableResource):
    """How ``log_clusters`` clusters a month and keeps last month's cluster ids.

    The clustering settings are declared by ``lib/clustering/clusters.py: ClusterConfig``, those of the
    ids by ``lib/clustering/identity.py: IdentityRules``. ``drift_threshold`` (``clustering.DRIFT_THRESHOLD``)
    is the one threshold of cluster identity: it keeps a residual cluster's id, matches a refit
    one-to-one, sets the drift table's matches and moves the eval examples of a "gone" cluster to
    the cluster that continues its topic (``eval_set``).
    """

    def config(self) -> ClusterConfig:
        return build(ClusterConfig, _values(self, _CLUSTER))

    def rules(self) -> IdentityRules:
        return build(IdentityRules, _values(self, _IDENTITY))


_CLUSTER = {name: name for name in ("method", "k", "min_cluster_size", "min_samples", "umap_dims",
                                    "cluster_selection_epsilon", "max_fit_sample", "seed")}
_IDENTITY = {"drift_threshold": "match_cosine", "novelty_ratio": "novelty_ratio", "attach_cosine": "attach_cosine",
             "refit_share": "refit_share", "refit": "refit"}
ClusteringSettings = _settings_class(
    "ClusteringSettings", _Clustering, {ClusterConfig: _CLUSTER, IdentityRules: _IDENTITY},
    growth=(float, Field(DEFAULT_GROWTH, gt=0, description="a cluster has grown (shrunk) when its share of "
                         "traffic rose (fell) by this factor")),
)


class _Sampling(dg.ConfigurableResource):
    """How ``eval_set`` draws and refreshes the eval set (``lib/sampling/draw.py: SamplingConfig``
    declares the settings). Which "gone" cluster's examples move to a continuing cluster is the
    clustering resource's ``drift_threshold``, not a sampling setting."""

    def config(self, merge_cosine: float = DRIFT_THRESHOLD) -> SamplingConfig:
        """The lib config; ``merge_cosine``: the clustering resource's ``drift_threshold`` (the
        ``eval_set`` asset passes it)."""
        return build(SamplingConfig, _values(self, _SAMPLING), merge_cosine=merge_cosine)


_SAMPLING = {name: name for name in ("target_size", "floor", "signal_weights", "slice_keys", "dedup_cosine",
                                     "refresh_size", "seed")}
SamplingSettings = _settings_class("SamplingSettings", _Sampling, {SamplingConfig: _SAMPLING})


class LabelingSettings(dg.ConfigurableResource):
    """Where the rubrics are: ``rubrics_dir`` (a folder of YAML files), or the packaged defaults.
    ``relabel_size``: how many already-labelled examples per rubric ``annotation_tasks`` sends to be
    labelled again when the rubric's version changed (all of them when fewer)."""

    rubrics_dir: Optional[str] = None
    relabel_size: int = 30

    def rubrics(self):
        from eval_pipeline.lib.labeling.rubrics import load_rubrics

        return load_rubrics(self.rubrics_dir)


# Where the judge's endpoint, model and key come from when a JudgeSettings field is left unset.
JUDGE_ENV = ("EVAL_PIPELINE_JUDGE_BASE_URL", "EVAL_PIPELINE_JUDGE_MODEL", "EVAL_PIPELINE_JUDGE_API_KEY")


class JudgeSettings(dg.ConfigurableResource):
    """The LLM judge: any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server...).

    ``base_url``, ``model`` and ``api_key`` left unset (None, the default) are read when a run
    uses the judge, each from its variable in :data:`JUDGE_ENV` (``EVAL_PIPELINE_JUDGE_BASE_URL``,
    ``EVAL_PIPELINE_JUDGE_MODEL``, ``EVAL_PIPELINE_JUDGE_API_KEY``) through ``dg.EnvVar``: none of
    them is in the definitions, the run config or the UI, and an unset or empty variable means no
    judge (a field bound to ``dg.EnvVar`` itself would fail every run that uses the resource while
    its variable is unset). A value given here takes precedence, ``dg.EnvVar("OTHER")`` included
    (Dagster resolves that one when the run starts, and refuses the run while it is unset).
    No ``base_url`` or no ``model`` means no judge: ``judge_labels`` says so and skips.
    """

    base_url: Optional[str] = None
    model: Optional[str] = None
    api_key: Optional[str] = None
    max_workers: int = 4
    timeout: float = 60.0
    max_retries: int = 4

    def endpoint(self) -> tuple[str, str, str]:
        """(base_url, model, api_key) as this process sees them now; "" for what is not set."""
        given = (self.base_url, self.model, self.api_key)
        return tuple(value if value is not None else (dg.EnvVar(name).get_value() or "")  # type: ignore[return-value]
                     for value, name in zip(given, JUDGE_ENV))

    @property
    def configured(self) -> bool:
        base_url, model, _ = self.endpoint()
        return bool(base_url and model)

    def judge(self, cache_dir):
        from eval_pipeline.lib.labeling.judge import Judge, JudgeCache, OpenAICompatibleProvider

        base_url, model, api_key = self.endpoint()
        provider = OpenAICompatibleProvider(base_url, model, api_key=api_key or None,
                                            timeout=self.timeout, max_retries=self.max_retries)
        return Judge(provider, JudgeCache(cache_dir))


class EvaluationSettings(dg.ConfigurableResource):
    """How model versions are run and gated."""

    max_workers: int = Field(4, ge=1, description="requests in flight per model version")
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    max_retries: int = Field(3, ge=0, description="retries of a failed request (the openai client's own, with its own backoff)")
    thresholds: str = Field("", description="the gates file; empty: the packaged eval_pipeline/thresholds.yaml")
    continuous_size: int = Field(150, ge=CONTINUOUS_MIN, le=CONTINUOUS_MAX,
                                 description=f"the continuous tier's size ({CONTINUOUS_MIN}-{CONTINUOUS_MAX})")
    sensor_tier: Tier = Field("deep", description="the tier the registry sensor runs for a new model version")

    def load_thresholds(self):
        from eval_pipeline.lib.evaluation.gates import load_thresholds

        return load_thresholds(self.thresholds or None)


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
    """Partitions in slices (``lib/storage/spool.py``): an input annotated :class:`StoredPartition` is a
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
    """Dagster's DuckDB client, each connection taken under the file's process lock (``lib/core/locks.py``):
    the days of a month run in parallel processes and one DuckDB file takes one writer at a time."""

    @staticmethod
    @contextmanager
    def connect(context, table_slice):
        with file_lock(f"{context.resource_config['database']}.lock"):
            with DuckDbClient.connect(context, table_slice) as conn:
                yield conn


def _database_folder(database: str, owner_only: bool = False) -> None:
    """Create the folder of a DuckDB file (DuckDB will not) when a resource first opens it, not when
    the definitions are built; the raw zone's owner-only. Nothing for an in-memory database."""
    if database and not database.startswith((":", "md:")) and "://" not in database:
        make_folder(Path(database).expanduser().parent, owner_only=owner_only)


class WarehouseIOManager(DuckDBPolarsIOManager):
    """The DuckDB IO manager with polars frames, and day tables in slices (:class:`StoredPartition` in,
    :class:`SpooledFrame` out); the schema of each table is its asset's domain. ``restricted``: the
    raw zone's file, whose folder is created owner-only (0700) when a run first opens it."""

    restricted: bool = False

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [_EmptyAwarePolarsTypeHandler(), _SpoolTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        _database_folder(self.database, owner_only=self.restricted)
        return DbIOManager(db_client=_LockedDuckDbClient(), database=self.database, schema=self.schema_,
                           type_handlers=self.type_handlers(), default_load_type=self.default_load_type(),
                           io_manager_name="DuckDBIOManager")


class WarehouseResource(DuckDBResource):
    """A DuckDB connection for assets that query directly, taken under the file's process lock.

    With a lake (``lake``: its URL, ``restricted`` for the raw zone), the zone's lake tables are
    registered on every connection, so ``<schema>.<table>`` reads their objects (``lib/storage/lake.py``)."""

    lake: str = ""
    restricted: bool = False

    def lake_zone(self) -> Lake | None:
        """The zone's lake, or None when its tables are in the DuckDB file."""
        return _lake(self.lake, self.restricted) if self.lake else None

    @contextmanager
    def get_connection(self):
        _database_folder(self.database, owner_only=self.restricted)
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
    """Stores each partition of a large table as one Parquet object in a lake (``lib/storage/lake.py``):
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
        _database_folder(self.catalog, owner_only=self.restricted)
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


class SettingsError(ValueError):
    """The data home's ``settings.yaml`` cannot be used; the message names the file and the field."""


# The settings groups a data home's ``settings.yaml`` may set, and the fields each may not: the
# data home is where the file is, and a secret never goes into a file (the judge's key is
# ``EVAL_PIPELINE_JUDGE_API_KEY``).
_FILE_GROUPS: dict[str, tuple[type[dg.ConfigurableResource], tuple[str, ...]]] = {
    "settings": (PipelineSettings, ("home",)),
    "redaction": (RedactionSettings, ()),
    "embedding": (EmbeddingSettings, ()),
    "clustering": (ClusteringSettings, ()),
    "sampling": (SamplingSettings, ()),
    "labeling": (LabelingSettings, ()),
    "judge": (JudgeSettings, ("api_key",)),
    "evaluation": (EvaluationSettings, ()),
}


def settings_from_file(home: DataHome) -> dict[str, dg.ConfigurableResource]:
    """The settings groups the data home's ``settings.yaml`` sets (none when there is no file),
    each a resource of its group's type built from the file's fields on top of the defaults::

        clustering:
          method: kmeans
        redaction:
          extra_allow_list: [Acme]
          custom_patterns: {MEMBER_ID: "\\bM-\\d{6}\\b"}

    Every command and every run on the home (day workers, out-of-process steps) builds its
    definitions from the same file, so e.g. ``eval-pipeline redact`` redacts as the pipeline does.

    Raises:
        SettingsError: unreadable YAML, an unknown group or field, a field that may not be in a
            file, or a value its declaration refuses (a choice not among the allowed ones, a
            number out of range); the message names the file and ``group.field``.
    """
    path = home.settings_file
    if not path.is_file():
        return {}
    try:
        doc = read_yaml_file(path)
    except YAMLFileError as err:
        raise SettingsError(str(err)) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise SettingsError(f"{path}: expected a mapping of settings groups ({', '.join(_FILE_GROUPS)}), "
                            f"got {type(doc).__name__}")
    out: dict[str, dg.ConfigurableResource] = {}
    for group, fields in doc.items():
        if group not in _FILE_GROUPS:
            raise SettingsError(f"{path}: {group}: not a settings group (one of: {', '.join(_FILE_GROUPS)})")
        cls, refused = _FILE_GROUPS[group]
        if fields is None:
            continue
        if not isinstance(fields, dict):
            raise SettingsError(f"{path}: {group}: expected a mapping of fields, got {type(fields).__name__}")
        for name in fields:
            if name in refused:
                why = ("the data home is where this file is" if name == "home"
                       else f"a secret never goes into a file: set {JUDGE_ENV[2]}")
                raise SettingsError(f"{path}: {group}.{name}: not settable here ({why})")
            if name not in cls.model_fields:
                known = ", ".join(sorted(f for f in cls.model_fields if f not in refused))
                raise SettingsError(f"{path}: {group}.{name}: unknown field (the fields of {group}: {known})")
        try:
            out[group] = cls(**({"home": str(home.root)} if group == "settings" else {}), **fields)
        except ValidationError as err:
            problems = "; ".join(f"{group}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise SettingsError(f"{path}: {problems}") from None
    return out


def with_overrides(resources: Mapping[str, object], overrides: Mapping[str, object] | None) -> dict[str, object]:
    """``resources`` with ``overrides``: a settings group given as a resource of its own type sets
    its fields on top of what the group already has (so ``SamplingSettings(target_size=120)`` on a
    home whose ``settings.yaml`` sets ``sampling.floor`` keeps that floor); anything else replaces."""
    out = dict(resources)
    for key, resource in (overrides or {}).items():
        current = out.get(key)
        if (key in _FILE_GROUPS and isinstance(resource, dg.ConfigurableResource)
                and type(resource) is type(current)):
            resource = type(resource)(**{**current.model_dump(exclude_unset=True),  # type: ignore[union-attr]
                                         **resource.model_dump(exclude_unset=True)})
        out[key] = resource
    return out


def build_resources(home: DataHome, io_memory_limit: str = IO_MEMORY_LIMIT,
                    storage: StorageLocations | None = None) -> dict[str, object]:
    """All resources for a data home. Raw records go to the restricted zone's own DuckDB file.
    The IO managers' DuckDB connections are limited to ``io_memory_limit`` of buffer memory.

    ``storage`` (default: ``EVAL_PIPELINE_STORAGE`` / ``EVAL_PIPELINE_RAW_STORAGE``, see
    ``lib/storage/lake.py``) moves the large tables (``lake_io_manager`` and ``raw_io_manager``) to a
    lake; without it they stay in the DuckDB files, as every other table does. It is read here,
    when the definitions are built (it decides which IO manager class stores those tables), as is
    the data home's ``settings.yaml`` (:func:`settings_from_file`; a bad one raises
    :class:`SettingsError`); the judge's endpoint is read later, by the resource, when a run uses
    it. Nothing is created on disk: each resource creates its file's folder when it first opens it."""
    storage = StorageLocations.resolve() if storage is None else storage
    limited = {"memory_limit": io_memory_limit}
    main = WarehouseIOManager(database=str(home.warehouse), connection_config=limited)
    raw = WarehouseIOManager(database=str(home.raw_warehouse), connection_config=limited, restricted=True)
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
        "judge": JudgeSettings(),  # endpoint, model and key read when a run uses it (JUDGE_ENV)
        "evaluation": EvaluationSettings(),
        **settings_from_file(home),
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


def stored_columns(warehouse: DuckDBResource, table: str, columns: Iterable[str], where: str = "",
                   params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Rows of ``table`` as it stands (read straight from the warehouse, for an asset that needs
    another table's last state without depending on it), optionally ``where`` a condition holds
    (with ``params``); a column an older table lacks is None, and no table gives no rows."""
    schema_name, table_name = table.split(".")
    with warehouse.get_connection() as con:
        have = {r[0] for r in con.execute("select column_name from information_schema.columns where table_schema = ? "
                                          "and table_name = ?", [schema_name, table_name]).fetchall()}
        if not have:
            return []
        select = ", ".join(f'"{c}"' if c in have else f'null as "{c}"' for c in columns)
        return con.execute(f"select {select} from {table}" + (f" where {where}" if where else ""),
                           list(params)).pl().to_dicts()


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
    with their stored vectors: last month's traffic in the novelty tests of ``lib/clustering/identity.py``.
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
