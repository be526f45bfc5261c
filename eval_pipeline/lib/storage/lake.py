"""Object storage for the large, daily-partitioned tables: one Parquet object per partition.

The embedded default keeps every table in the data home's DuckDB files. Past one machine, the
large tables (raw records, quarantined lines, redacted records, embeddings, cluster assignments)
go to a *lake*: a local folder or an S3-compatible bucket, chosen by one setting
(``EVAL_PIPELINE_STORAGE``). Each partition is one object, ``<root>/<schema>/<table>/<key>.parquet``
(``<key>`` the Dagster partition key: a day, or the first day of a month), so days are written by
separate processes or machines at once with no lock, and a re-run of a day replaces its object.

The restricted raw zone (``ingest.raw_logs``, ``ingest.quarantined_logs``) is a lake of its own
(``EVAL_PIPELINE_RAW_STORAGE``; by default ``restricted/`` under the main one) with its own
credentials (``EVAL_PIPELINE_RAW_AWS_ACCESS_KEY_ID`` ...; each falls back to the plain AWS variable).
Credentials are read from the environment when a filesystem is opened, never stored in any
configuration. S3 goes through pyarrow's S3 filesystem, which takes the usual AWS variables
(``AWS_ENDPOINT_URL`` for an S3-compatible server such as MinIO).

Reads are lazy: a table is a ``pyarrow.dataset`` over its objects, which DuckDB scans (with
column projection) wherever SQL names it: :func:`attach` registers every lake table of a zone on
a DuckDB connection and keeps a view ``<schema>.<table>`` over it, so the SQL that reads the
embedded default's tables reads the lake's unchanged. This module imports no Dagster.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from eval_pipeline.lib.storage.tables import (LOG_CLUSTERS_SCHEMA, LOG_EMBEDDINGS_SCHEMA, QUARANTINE_SCHEMA, RAW_LOGS_SCHEMA,
                                      REDACTED_LOGS_SCHEMA)

__all__ = ["LakeConflict", "PARTITION_COLUMN", "move_to_lake", "STORAGE_ENV", "RAW_STORAGE_ENV", "RAW_CREDENTIAL_ENV", "LAKE_TABLES", "StorageLocations", "Lake",
           "arrow_schema", "attach", "ensure_view", "registered_name", "zone_tables"]

STORAGE_ENV = "EVAL_PIPELINE_STORAGE"
RAW_STORAGE_ENV = "EVAL_PIPELINE_RAW_STORAGE"
# the raw zone's own credentials: (its variable, the plain AWS variable it falls back to)
RAW_CREDENTIAL_ENV = (("EVAL_PIPELINE_RAW_AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
                      ("EVAL_PIPELINE_RAW_AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
                      ("EVAL_PIPELINE_RAW_AWS_SESSION_TOKEN", "AWS_SESSION_TOKEN"))

# The column that dates a row into its partition (a day; log_clusters: the month's first day).
PARTITION_COLUMN = {"ingest.raw_logs": "timestamp", "ingest.quarantined_logs": "partition_day",
                    "privacy.redacted_logs": "timestamp", "embeddings.log_embeddings": "timestamp",
                    "clustering.log_clusters": "month"}

# The tables kept in a lake when one is configured: "schema.table" -> (zone, layout).
LAKE_TABLES: dict[str, tuple[str, pl.Schema]] = {
    "ingest.raw_logs": ("raw", RAW_LOGS_SCHEMA),
    "ingest.quarantined_logs": ("raw", QUARANTINE_SCHEMA),
    "privacy.redacted_logs": ("main", REDACTED_LOGS_SCHEMA),
    "embeddings.log_embeddings": ("main", LOG_EMBEDDINGS_SCHEMA),
    "clustering.log_clusters": ("main", LOG_CLUSTERS_SCHEMA),
}


@dataclass(frozen=True)
class StorageLocations:
    """Where the large tables live: ``main`` and ``raw`` lake URLs, or both empty for the embedded
    default (DuckDB files in the data home)."""

    main: str = ""
    raw: str = ""

    @property
    def lake(self) -> bool:
        return bool(self.main)

    @classmethod
    def resolve(cls, env: Mapping[str, str] | None = None) -> "StorageLocations":
        """From ``EVAL_PIPELINE_STORAGE`` and ``EVAL_PIPELINE_RAW_STORAGE``. A raw location without a
        main one is refused (the raw zone would be in a lake that nothing downstream reads)."""
        env = os.environ if env is None else env
        main = _normalise(env.get(STORAGE_ENV, "").strip())
        raw = _normalise(env.get(RAW_STORAGE_ENV, "").strip())
        if raw and not main:
            raise ValueError(f"{RAW_STORAGE_ENV} is set but {STORAGE_ENV} is not: set both, or neither for the "
                             "embedded default")
        if main and not raw:
            raw = main.rstrip("/") + "/restricted"
        if main and raw == main:
            raise ValueError(f"{RAW_STORAGE_ENV} is the same place as {STORAGE_ENV} ({main}): the raw zone needs "
                             "its own prefix or bucket")
        if main and _inside(raw, main):
            raise ValueError(f"{STORAGE_ENV}={main} lies inside the raw zone {RAW_STORAGE_ENV}={raw}: "
                             "redacted data would sit in the restricted zone")
        return cls(main, raw)


class LakeConflict(RuntimeError):
    """A DuckDB file holds a lake table's rows as a table of its own (filled before the lake was set)."""


def _normalise(url: str) -> str:
    """A URL as given, or an absolute path for a local folder (``file://`` stripped)."""
    if not url:
        return ""
    if url.startswith("file://"):
        url = url[len("file://"):]
    if "://" in url:
        scheme = url.split("://", 1)[0]
        if scheme not in ("s3",):
            raise ValueError(f"{url}: storage must be a local folder or an s3:// URL (got scheme {scheme!r})")
        if not url[len("s3://"):].split("/", 1)[0]:
            raise ValueError(f"{url}: an s3:// URL needs a bucket (s3://bucket/prefix)")
        return url.rstrip("/")
    return str(Path(url).expanduser().resolve())


def _inside(parent: str, child: str) -> bool:
    return child.rstrip("/").startswith(parent.rstrip("/") + "/")


class Lake:
    """One zone's objects: a local folder or an ``s3://bucket/prefix``.

    ``restricted``: the raw zone. Its S3 credentials are :data:`RAW_CREDENTIAL_ENV` (read when
    the filesystem is first used; otherwise the default AWS chain), and its local folders are
    owner-only."""

    def __init__(self, url: str, restricted: bool = False):
        self.url = _normalise(url)
        if not self.url:
            raise ValueError("a lake needs a location (a local folder or s3://bucket/prefix)")
        self.remote = self.url.startswith("s3://")
        self.restricted = restricted
        self._fs: Any = None

    def __repr__(self) -> str:
        return f"Lake({self.url})"

    @property
    def fs(self) -> Any:
        """The pyarrow filesystem (opened on first use)."""
        if self._fs is None:
            import pyarrow.fs as pfs

            if not self.remote:
                self._fs = pfs.LocalFileSystem()
            elif not self.restricted:
                self._fs = pfs.S3FileSystem(**_endpoint())
            else:
                own = {key: os.environ.get(name) or os.environ.get(fallback) for (name, fallback), key
                       in zip(RAW_CREDENTIAL_ENV, ("access_key", "secret_key", "session_token"))}
                self._fs = pfs.S3FileSystem(**{k: v for k, v in own.items() if v}, **_endpoint())
        return self._fs

    @property
    def _root(self) -> str:
        return self.url[len("s3://"):] if self.remote else self.url

    def folder(self, table: str) -> str:
        schema, name = table.split(".")
        return f"{self._root}/{schema}/{name}"

    def object_path(self, table: str, key: str) -> str:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"{table}: {key!r} is not a partition key")
        return f"{self.folder(table)}/{key}.parquet"

    def describe(self, table: str, key: str) -> str:
        """The object's address as a person would write it (for messages and metadata)."""
        path = self.object_path(table, key)
        return f"s3://{path}" if self.remote else path

    def keys(self, table: str) -> list[str]:
        """The partition keys of ``table`` that have an object, in order."""
        import pyarrow.fs as pfs

        infos = self.fs.get_file_info(pfs.FileSelector(self.folder(table), allow_not_found=True))
        return sorted(info.base_name[: -len(".parquet")] for info in infos
                      if info.type == pfs.FileType.File and info.base_name.endswith(".parquet")
                      and not info.base_name.startswith("."))

    def write(self, table: str, key: str, source: Path | Any) -> int:
        """Store a partition: ``source`` a local Parquet file (uploaded or moved into place as it is)
        or a pyarrow table. The object replaces the partition's object whole: a local file is
        written beside it and renamed, an S3 object is one PUT (or a multipart upload completed at
        the end), so a reader never sees half an object and a killed write leaves the old one.
        Returns the object's bytes."""
        import pyarrow.parquet as pq

        target = self.object_path(table, key)
        if self.remote:  # no folders on S3 (creating one would leave an empty "folder/" marker object)
            partial = target
        else:
            self.fs.create_dir(self.folder(table), recursive=True)
            if self.restricted:
                Path(self._root).chmod(0o700)
            _clean_partials(Path(self.folder(table)))
            partial = f"{self.folder(table)}/.{key}.{_HOST}.{os.getpid()}-{uuid.uuid4().hex}.partial"
        try:
            if isinstance(source, Path):
                with open(source, "rb") as src, self.fs.open_output_stream(partial) as out:
                    while chunk := src.read(8 << 20):
                        out.write(chunk)
            else:
                pq.write_table(source, partial, filesystem=self.fs)
            if partial != target:
                self.fs.move(partial, target)
        except BaseException:
            if partial != target and Path(partial).exists():
                Path(partial).unlink()
            raise
        return int(self.fs.get_file_info(target).size or 0)

    def rows(self, table: str, keys: Sequence[str]) -> dict[str, int]:
        """Rows of each partition that has an object (read from the Parquet footers, no data)."""
        import pyarrow.parquet as pq

        present = set(self.keys(table))
        return {key: pq.ParquetFile(self.object_path(table, key), filesystem=self.fs).metadata.num_rows
                for key in keys if key in present}

    def delete(self, table: str, keys: Sequence[str]) -> dict[str, int]:
        """Delete the partitions' objects; rows each held (partitions without an object are skipped)."""
        counts = self.rows(table, keys)
        for key in counts:
            self.fs.delete_file(self.object_path(table, key))
        return counts

    def dataset(self, table: str, schema: pl.Schema, keys: Sequence[str] | None = None) -> Any:
        """A lazy ``pyarrow.dataset`` of ``table``'s partitions (``keys``; None: every partition),
        with the table's layout even when no partition exists yet."""
        import pyarrow.dataset as ds

        present = self.keys(table)
        have = set(present)
        chosen = present if keys is None else [k for k in keys if k in have]
        return ds.dataset([self.object_path(table, k) for k in chosen], schema=arrow_schema(schema),
                          format="parquet", filesystem=self.fs)


_HOST = socket.gethostname() or "localhost"


def _clean_partials(folder: Path) -> None:
    """Delete the partial files that writers on this host left when they were killed (their
    process is gone); another host's are left to it."""
    from eval_pipeline.lib.storage.spool import process_alive

    for path in folder.glob(".*.partial"):
        writer, _, owner = path.name[: -len(".partial")].rpartition(".")  # ".<key>.<host>", "<pid>-<random>"
        pid = owner.split("-", 1)[0]
        if writer.endswith(f".{_HOST}") and pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)


def _endpoint() -> dict[str, str]:
    """pyarrow's S3 filesystem reads the AWS credentials and region itself; the endpoint of an
    S3-compatible server comes from ``AWS_ENDPOINT_URL`` (``http://`` allowed for a local one)."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return {}
    scheme, _, rest = url.partition("://")
    return {"endpoint_override": rest.rstrip("/"), "scheme": scheme} if rest else {"endpoint_override": url}


def arrow_schema(schema: pl.Schema) -> Any:
    return pl.DataFrame(schema=schema).to_arrow().schema


def registered_name(table: str) -> str:
    """The name a lake table's dataset is registered under on a connection."""
    return "lake__" + table.replace(".", "__")


def zone_tables(zone: str) -> list[str]:
    return [table for table, (table_zone, _) in LAKE_TABLES.items() if table_zone == zone]


def attach(con: Any, lake: Lake, zone: str) -> list[str]:
    """Register every lake table of ``zone`` on the DuckDB connection ``con``, each a dataset over
    its objects (scanned lazily), under :func:`registered_name`; the registrations live as long
    as the connection. With :func:`ensure_view`'s views, SQL that names ``<schema>.<table>``
    reads the lake. Returns the tables attached."""
    for table in zone_tables(zone):
        con.register(registered_name(table), lake.dataset(table, LAKE_TABLES[table][1]))
    return zone_tables(zone)


def _kind(con: Any, table: str) -> str | None:
    """``table``'s type in the DuckDB file of ``con`` ("BASE TABLE", "VIEW"), None when absent."""
    schema_name, name = table.split(".")
    row = con.execute("select table_type from information_schema.tables where table_schema = ? and table_name = ?",
                      [schema_name, name]).fetchone()
    return row[0] if row else None


def ensure_view(con: Any, table: str) -> None:
    """The view ``<schema>.<table>`` over the table's registered dataset, in the DuckDB file of
    ``con`` (created once, when the table's first partition is stored): the file is the catalog
    of the tables its zone keeps in the lake. Read without :func:`attach` it fails, naming
    :func:`registered_name`."""
    kind = _kind(con, table)
    if kind not in (None, "VIEW"):
        raise LakeConflict(f"{table} is a table in this DuckDB file: the data home was filled without "
                           f"{STORAGE_ENV}, and its rows would hide the lake's. Move them to the lake first "
                           "(`eval-pipeline move-to-lake`), or use a fresh data home.")
    if kind is None:
        schema_name = table.split(".")[0]
        con.execute(f"create schema if not exists {schema_name}")
        con.execute(f"create view {table} as select * from {registered_name(table)}")


def move_to_lake(con: Any, lake: Lake, zone: str, spool: Path) -> dict[str, dict[str, int]]:
    """Move the zone's lake tables that a DuckDB file still holds as tables (a data home filled
    before ``EVAL_PIPELINE_STORAGE`` was set) into ``lake``: one object per partition (the day
    of :data:`PARTITION_COLUMN`), each checked to hold the partition's row count, then the
    table dropped and replaced by its view. ``spool``: a local folder for the files in transit.
    Safe to run again after an interruption: a partition is rewritten whole, and a table is
    dropped only once every one of its partitions is in the lake. Returns table -> key -> rows."""
    moved: dict[str, dict[str, int]] = {}
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    for table in zone_tables(zone):
        if _kind(con, table) in (None, "VIEW"):
            continue
        column = PARTITION_COLUMN[table]
        counts = dict(con.execute(f'select strftime(cast("{column}" as date), \'%Y-%m-%d\'), count(*) from {table} '
                                  "group by 1 order by 1").fetchall())
        if None in counts:
            raise ValueError(f"{table}: {counts[None]} rows have no {column}, so no partition: fix or delete them first")
        layout = LAKE_TABLES[table][1]
        for key, rows in counts.items():
            path = spool / f"{os.getpid()}-{uuid.uuid4().hex}.parquet"
            try:
                con.execute(f"copy (select {', '.join(chr(34) + c + chr(34) for c in layout)} from {table} "
                            f'where cast("{column}" as date) = cast(? as date)) to \'{path}\' (format parquet)', [key])
                lake.write(table, key, path)
            finally:
                path.unlink(missing_ok=True)
            stored = lake.rows(table, [key]).get(key)
            if stored != rows:
                raise RuntimeError(f"{lake.describe(table, key)}: {stored} rows stored, {rows} expected; {table} kept")
        con.execute(f"drop table {table}")
        con.register(registered_name(table), lake.dataset(table, LAKE_TABLES[table][1]))
        ensure_view(con, table)
        moved[table] = counts
    return moved
