"""Stored partitions read and written in slices, so no step holds a whole day (or month) of records.

A step that reads a partitioned table takes :class:`StoredPartition` (a day of a daily table, or
a month of it for a monthly step): its row count, a few small columns of every row at once
(:meth:`StoredPartition.frame`), or every row in slices of N (:meth:`StoredPartition.slices`). The slices come from a Parquet file that DuckDB writes from the
partition in one short connection (under the warehouse's file lock, within the connection's
memory limit) and that is read back one row group at a time; nothing else holds the database
while the step works on them.

A step that writes such a table appends each finished slice to a :class:`SpoolWriter` and returns
the :class:`SpooledFrame` it closes to; the IO manager inserts the file into the table (DuckDB
reads Parquet as a stream) and deletes it.

Spool files live in a ``spool/<host>/`` folder beside their DuckDB file (the raw zone's in the
restricted folder) and are named ``<pid>-<random>.parquet``: a file whose process is gone is
left over from a killed run, and :func:`clean_spool` (called by the IO manager before each use)
deletes it. Everything here is plain DuckDB, pyarrow and polars; the Dagster side is in
``defs/resources.py``.
"""

from __future__ import annotations

import os
import socket
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import polars as pl

__all__ = ["StoredPartition", "SpoolWriter", "SpooledFrame", "clean_spool", "process_alive", "spool_dir"]


def spool_dir(database: str | os.PathLike[str]) -> Path:
    """Where this host's spool files of a DuckDB file go: ``spool/<host>/`` beside it (same access
    rights). One folder per host: :func:`clean_spool` judges a file by whether its process runs,
    which only the host (or container) that started it can tell, so processes on other machines
    sharing the data home never delete each other's files in transit."""
    return Path(database).parent / "spool" / (socket.gethostname() or "localhost")


def _new_path(directory: Path, suffix: str = ".parquet") -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory / f"{os.getpid()}-{uuid.uuid4().hex}{suffix}"


def process_alive(pid: int) -> bool:
    """Whether a process of this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_spool(directory: Path) -> int:
    """Delete the spool files of processes that no longer run (a killed run's); how many."""
    removed = 0
    if not directory.is_dir():
        return 0
    for path in [*directory.glob("*.parquet"), *directory.glob("*.arrow")]:
        owner = path.name.split("-", 1)[0]
        if owner.isdigit() and int(owner) != os.getpid() and not process_alive(int(owner)):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class SpooledFrame:
    """A frame written slice by slice to a Parquet file (``rows`` rows of ``schema``): what a step
    returns instead of a DataFrame it should not hold whole. The IO manager stores and deletes it;
    the file is also deleted when the object is garbage collected."""

    def __init__(self, path: Path, rows: int, schema: pl.Schema):
        self.path, self.rows, self.schema = path, rows, schema
        self._finalizer = weakref.finalize(self, _unlink, str(path))

    def read(self) -> pl.DataFrame:
        """The whole frame (for small outputs and tests)."""
        return pl.read_parquet(self.path).cast(dict(self.schema))  # type: ignore[arg-type]

    def discard(self) -> None:
        self._finalizer()

    def __repr__(self) -> str:
        return f"SpooledFrame({self.path.name}, rows={self.rows})"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class SpoolWriter:
    """Appends frames of ``schema`` to a new spool file in ``directory``, one row group each.

    Use as a context manager: :meth:`close` gives the :class:`SpooledFrame`; an exception inside
    the block deletes the file."""

    def __init__(self, directory: Path, schema: pl.Schema):
        self.path = _new_path(directory)
        self.schema = schema
        self.rows = 0
        self._writer: Any = None
        self._closed: SpooledFrame | None = None

    def write(self, df: pl.DataFrame) -> None:
        import pyarrow.parquet as pq

        table = df.select(list(self.schema)).cast(dict(self.schema)).to_arrow()  # type: ignore[arg-type]
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        if df.height:
            self._writer.write_table(table)
            self.rows += df.height

    def close(self) -> SpooledFrame:
        if self._closed is None:
            if self._writer is None:  # nothing written: an empty file that still has the columns
                self.write(pl.DataFrame(schema=self.schema))
            self._writer.close()
            self._closed = SpooledFrame(self.path, self.rows, self.schema)
        return self._closed

    def __enter__(self) -> "SpoolWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            if self._writer is not None:
                self._writer.close()
            _unlink(str(self.path))


class StoredPartition:
    """The rows of a stored table's partition (or range of partitions), read without holding them whole.

    ``connect`` opens a DuckDB connection (a context manager; the IO manager's takes the file
    lock), ``select`` is the SQL that selects the partition's rows (every column), ``spool`` the
    folder of the spool files. A table that does not exist yet reads as no rows."""

    def __init__(self, connect: Callable[[], AbstractContextManager[Any]], select: str, spool: Path):
        self._connect, self._select, self._spool = connect, select, spool
        self._rows: int | None = None

    @property
    def rows(self) -> int:
        """The partition's row count (one count query, nothing read)."""
        if self._rows is None:
            import duckdb

            try:
                with self._connect() as con:
                    self._rows = int(con.execute(f"select count(*) from ({self._select})").fetchone()[0])
            except duckdb.CatalogException:
                self._rows = 0
        return self._rows

    def frame(self, *columns: str) -> pl.DataFrame:
        """``columns`` (names or SQL expressions with ``as``) of every row of the partition at once:
        for columns small enough to hold at once (keys, numbers, a field of a list of structs)."""
        import duckdb

        try:
            with self._connect() as con:
                return pl.DataFrame(con.execute(f"select {', '.join(columns)} from ({self._select})").arrow())
        except duckdb.CatalogException:
            return pl.DataFrame()

    def slices(self, size: int, columns: Sequence[str] = ("*",), order_by: str | None = None) -> Iterator[pl.DataFrame]:
        """Every row of the partition in frames of at most ``size`` rows (the given ``columns``; in
        ``order_by`` order when given: a SQL order-by list over those columns, ties in stored
        order). DuckDB writes the selection to a spool file in one connection, in stored order;
        the file is read back a row group at a time (in another order: see
        :func:`_ordered_slices`) and deleted at the end (or when the iterator is dropped)."""
        import duckdb
        import pyarrow.parquet as pq

        path = _new_path(self._spool)
        buckets: list[Path] = []
        try:
            try:
                with self._connect() as con:
                    # one thread: with two, DuckDB held row groups back to keep the stored order,
                    # and a day of 800 MB failed under a 192 MB limit (one thread: 0.5 s, no failure)
                    con.execute("set threads = 1")
                    try:
                        con.execute(f"copy (select {', '.join(columns)} from ({self._select})) to "
                                    f"'{_quoted(path)}' (format parquet, row_group_size {int(size)})")
                    finally:
                        con.execute("reset threads")
            except duckdb.CatalogException:
                return
            if order_by:
                yield from _ordered_slices(path, size, order_by, buckets)
                return
            with pq.ParquetFile(path) as source:
                for batch in source.iter_batches(batch_size=size):
                    yield pl.from_arrow(batch)  # type: ignore[misc]
        finally:
            for made in (path, *buckets):
                _unlink(str(made))


# At most this many bucket files are open at once when a partition is read in another order.
MAX_BUCKETS = 256
# DuckDB's buffer memory for sorting the order keys (it spills to the spool folder beyond it).
KEYS_MEMORY_LIMIT = "256MB"


def _ordered_slices(path: Path, size: int, order_by: str, buckets: list[Path]) -> Iterator[pl.DataFrame]:
    """The rows of the spool file ``path`` (in stored order) in frames of at most ``size`` rows, in
    ``order_by`` order. DuckDB sorts only the order keys and the row numbers (a sort of whole
    rows needs memory near their size: of 2 KB rows, DuckDB 1.5 sorted 100 MB under a 192 MB
    limit and failed to pin blocks at 200 MB; 800 MB failed under 512 MB); each row's place in that order
    sends it to one of at most :data:`MAX_BUCKETS` Arrow files (``buckets``: the caller deletes
    them) of consecutive places, each then read and sorted alone. Memory: the places (8 bytes a
    row), one row group, one bucket (``size`` rows while the partition has at most ``size`` x
    MAX_BUCKETS rows: 1.28M at 5,000)."""
    import duckdb
    import numpy as np
    import pyarrow as pa
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    with duckdb.connect(config={"memory_limit": KEYS_MEMORY_LIMIT, "temp_directory": str(path.parent)}) as con:
        order = con.execute(f"select file_row_number from read_parquet('{_quoted(path)}', file_row_number = true) "
                            f"order by {order_by}, file_row_number").fetchnumpy()["file_row_number"]
    n = len(order)
    if not n:
        return
    place = np.empty(n, dtype=np.int64)
    place[order] = np.arange(n)
    del order
    slices = -(-n // size)
    span = size * -(-slices // MAX_BUCKETS)  # rows of a bucket: whole slices, at most MAX_BUCKETS buckets
    writers: dict[int, Any] = {}
    files: dict[int, Path] = {}
    try:
        with pq.ParquetFile(path) as source:
            offset = 0
            for batch in source.iter_batches(batch_size=size):
                where = place[offset:offset + batch.num_rows]
                offset += batch.num_rows
                by_bucket = np.argsort(where // span, kind="stable")
                table = pa.Table.from_batches([batch]).append_column("__place", pa.array(where)).take(by_bucket)
                bucket_of = where[by_bucket] // span
                ends = np.flatnonzero(np.diff(bucket_of)) + 1
                for start, stop in zip([0, *ends], [*ends, len(bucket_of)]):
                    bucket = int(bucket_of[start])
                    if bucket not in writers:
                        files[bucket] = _new_path(path.parent, ".arrow")
                        buckets.append(files[bucket])
                        writers[bucket] = ipc.new_file(str(files[bucket]), table.schema)
                    writers[bucket].write_table(table.slice(start, stop - start))
    finally:
        for writer in writers.values():
            writer.close()
    for bucket in sorted(files):
        file = files[bucket]
        with ipc.open_file(str(file)) as reader:
            rows = pl.from_arrow(reader.read_all()).sort("__place").drop("__place")  # type: ignore[union-attr]
        _unlink(str(file))
        for start in range(0, rows.height, size):
            yield rows.slice(start, size)


def _quoted(path: Path) -> str:
    """A path inside a SQL string literal."""
    return str(path).replace("'", "''")
