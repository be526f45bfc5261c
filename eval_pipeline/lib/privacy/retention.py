"""Retention of the raw zone: delete raw records, quarantined lines and landing files older than a cutoff day.

Works on a DuckDB connection to the restricted zone's database, or on the raw zone's lake
(``lib/storage/lake.py``: one object per day, deleted whole), and on the landing folder; the day index
of each landing file comes from the landing manifest (path -> days it holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Mapping

__all__ = ["RAW_TABLES", "PurgeResult", "purge_raw_zone", "raw_older_than"]

# table -> its day column: the raw zone's tables and how their rows are dated
RAW_TABLES = {"ingest.raw_logs": "timestamp", "ingest.quarantined_logs": "partition_day"}


@dataclass
class PurgeResult:
    """Rows deleted per (table, day) and landing files deleted."""

    rows: list[tuple[str, date, int]] = field(default_factory=list)
    files_deleted: list[str] = field(default_factory=list)


def _existing(con: Any) -> list[str]:
    names = {f"{s}.{t}" for s, t in con.execute("select table_schema, table_name from information_schema.tables").fetchall()}
    return [t for t in RAW_TABLES if t in names]


def _expired_files(landing: Path, file_days: Mapping[str, list[str]], cutoff: date) -> list[str]:
    # a file is deleted only when every day it holds is before the cutoff
    return sorted(path for path, days in file_days.items()
                  if days and max(days) < cutoff.isoformat() and (landing / path).exists())


def _expired_keys(lake: Any, table: str, cutoff: date) -> list[str]:
    # a lake partition's key is its day (the partitions are daily)
    return [key for key in lake.keys(table) if key < cutoff.isoformat()]


def raw_older_than(con: Any, landing: Path, file_days: Mapping[str, list[str]], cutoff: date,
                   lake: Any = None) -> dict[str, int]:
    """What the raw zone still holds from before the cutoff: rows per table, and landing files
    (``lake``: the raw zone's :class:`~eval_pipeline.lib.storage.lake.Lake`, when it is one)."""
    found = {table: 0 for table in RAW_TABLES}
    for table in RAW_TABLES if lake is not None else _existing(con):
        if lake is not None:
            found[table] = sum(lake.rows(table, _expired_keys(lake, table, cutoff)).values())
            continue
        found[table] = con.execute(f'select count(*) from {table} where "{RAW_TABLES[table]}" < ?', [cutoff]).fetchone()[0]
    found["landing_files"] = len(_expired_files(landing, file_days, cutoff))
    return found


def purge_raw_zone(con: Any, landing: Path, file_days: Mapping[str, list[str]], cutoff: date,
                   lake: Any = None) -> PurgeResult:
    """Delete everything of the raw zone dated before ``cutoff`` (in ``lake``, its objects, when
    the raw zone is one); returns what was deleted."""
    result = PurgeResult()
    if lake is not None:
        for table in RAW_TABLES:
            deleted = lake.delete(table, _expired_keys(lake, table, cutoff))
            result.rows += [(table, date.fromisoformat(key), n) for key, n in deleted.items()]
    for table in _existing(con) if lake is None else []:
        column = RAW_TABLES[table]
        counts = con.execute(
            f'select cast("{column}" as date) as day, count(*) from {table} where "{column}" < ? group by 1 order by 1',
            [cutoff],
        ).fetchall()
        con.execute(f'delete from {table} where "{column}" < ?', [cutoff])
        result.rows += [(table, day, n) for day, n in counts]
    for path in _expired_files(landing, file_days, cutoff):
        (landing / path).unlink()
        result.files_deleted.append(path)
    return result
