"""What a month of N records costs past one machine: objects, bytes, memory and wall time on N
workers. Prints figures (not a test).

    .venv/bin/python benchmarks/scale_plan.py [--records 10000000] [--days 31] [--workers 1 2 4 8 16 32]
    .venv/bin/python benchmarks/scale_plan.py --measure [--sample-records 14000] [--sample-days 7]

The plan is arithmetic over measured inputs, the named constants below; each says which command
measured it. ``--measure`` re-measures the storage inputs: it generates a small demo month and runs
``refresh_month`` on it (as ``eval-pipeline refresh`` does) with the large tables in a lake on a
local folder (``EVAL_PIPELINE_STORAGE``, ``lib/storage/lake.py``: one Parquet object per partition, the
spool file as written, pyarrow's defaults: snappy, a row group per slice of 5,000 rows). It prints
bytes per row of the objects as written, and of each table rewritten as one object (as a large
day's would be; snappy, and zstd for comparison), with the peak RSS of the refresh's main process
(where the monthly jobs run) and of its largest day worker.

The model (one "worker" is one process on one core, as in the measured runs: two workers with one
thread each on two cores):

    objects  = days x 4 daily tables + 1 (log_clusters, monthly)
    t_day    = (records / days) x c + f
    T(N)     = T_serial + ceil(days / min(N, days)) x t_day
    T_serial = sum over the serial steps of (a + b x records)

``c`` is the day steps' seconds per record (summed over the runs of a measured month), ``f`` a day
run's fixed cost (models loaded in a fresh run process, Dagster's bookkeeping). One run per daily
partition is the unit of parallelism (the landing sensor and the month-end schedule request one
per day; the run queue caps how many run at once), so past ``days`` workers nothing gets faster,
and the day phase falls in whole rounds. The serial steps are the landing manifest (one scan of
the landing folder) and the monthly steps: ``log_clusters`` (UMAP + HDBSCAN fitted on a bounded
sample, then every record assigned in batches) and ``eval_set`` (the draw). Their ``a`` and ``b``
are the line through their measured times at 100k and 1M records. Not modelled: queueing on the
data home's DuckDB lock (the small tables and the embedding cache), storage bandwidth, run launch
latency.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

__all__ = ["DAILY_TABLES", "MONTHLY_TABLES", "Plan", "plan", "objects_per_month", "main"]

DAILY_TABLES = ("raw_logs", "quarantined_logs", "redacted_logs", "log_embeddings")
MONTHLY_TABLES = ("log_clusters",)
RAW_ZONE = ("raw_logs", "quarantined_logs")

# --- Measured inputs --------------------------------------------------------------------------

# Parquet bytes per row, one object per table partition. Measured by
#   .venv/bin/python benchmarks/scale_plan.py --measure --sample-records 14000 --sample-days 7
# (14,000 demo records over 7 days of 2026-02, seed 5, the large tables in a lake on a local
# folder). BYTES_PER_ROW: the objects as LakeIOManager wrote them (snappy), except
# quarantined_logs, whose sample objects held 1-2 rows each (per-object overhead): there, the
# table rewritten as one object, as a large day's would be. BYTES_PER_ROW_ZSTD: each table
# rewritten as one zstd object, for comparison. quarantined_logs is per quarantined line;
# QUARANTINED_PER_RECORD is the demo's share of malformed lines. Every day of the month gets an
# object, an empty day too (the sample's 7 days made 28 objects per daily table in February).
BYTES_PER_ROW_SNAPPY = {"raw_logs": 282, "quarantined_logs": 211, "redacted_logs": 287, "log_embeddings": 782,
                        "log_clusters": 39}
BYTES_PER_ROW_ZSTD = {"raw_logs": 137, "quarantined_logs": 179, "redacted_logs": 135, "log_embeddings": 710,
                      "log_clusters": 28}
QUARANTINED_PER_RECORD = 0.0030
# The data home's caches per distinct text (same command): the embedding cache's rows as Parquet
# (zstd; in DuckDB it is a table of warehouse.duckdb) and the redaction cache's SQLite file.
EMBEDDING_CACHE_BYTES_PER_TEXT = 748
REDACTION_CACHE_BYTES_PER_TEXT = 52

# Day steps, seconds summed over the day runs of one month. README, Benchmarks:
#   .venv/bin/python benchmarks/pipeline.py --records 1000000 --skip-naive
# (1,000,000 demo records over 28 days, two day workers with one thread each on 2 cores; the test
# suite ran beside it for 17 of its 41 minutes, so these are upper bounds for that version).
MEASURED_RECORDS = 1_000_000
DAY_STEP_SECONDS = {"log_embeddings": 1_875.0, "redacted_logs": 1_688.0, "ingested_logs": 321.0,
                    "no_pii_leak": 104.0, "raw_logs_expectations": 84.0, "records_reconcile": 12.0}
# The same run's cache figures: texts (or lines of long texts) the redaction asked its cache for,
# of them analysed; distinct embedding texts, of them embedded.
TEXTS_ANALYSED, REDACTION_CACHE_HITS = 404_110, 769_028
TEXTS_EMBEDDED = 276_834
# A day run's fixed cost: about 4 CPU-s of Dagster's bookkeeping, IO manager writes and Great
# Expectations per day run (README, Benchmarks: py-spy over benchmarks/pipeline.py --records 100000),
# and about 10 CPU-s to load the models in a fresh process (runs.py, RECYCLE_RECORDS): in a
# deployment every run starts a fresh process.
DAY_RUN_FIXED_SECONDS = 4.0 + 10.0

# Serial steps, seconds at 100k and at 1M records. README, Benchmarks:
#   .venv/bin/python benchmarks/pipeline.py --records 100000 --days 28 --skip-naive   (299.9 s refresh)
#   .venv/bin/python benchmarks/pipeline.py --records 1000000 --skip-naive            (2,475.5 s refresh)
# The 1M run is of an earlier version than the 100k one (before the cluster-identity work), so
# the slopes are estimates.
SERIAL_STEP_SECONDS = {"landing_manifest": (6.0, 54.0), "log_clusters": (18.4, 96.0), "eval_set": (3.7, 47.0)}
SERIAL_AT = (100_000, 1_000_000)

# Memory. A day worker's peak within a cold 36k-record day (a 1M month's day) was 1,361 MB, and
# rose to 1,701 MB over the next three such days in the same process: native memory (PyTorch's,
# oneDNN's, the allocator's) grows with the records a process has run (runs.py, RECYCLE_RECORDS;
# measured with benchmarks/pipeline.py --records 1000000 before worker recycling).
DAY_WORKER_PEAK_MB, DAY_WORKER_PEAK_AT = 1_361.0, 36_000
DAY_WORKER_GROWTH_MB_PER_RECORD = (1_701.0 - 1_361.0) / (3 * 36_000)
# The monthly steps hold the month's vectors as float16 (384 x 2 bytes a record) and the main
# process reached 3.23 GB in the monthly job of the 1M run (README, "Both cores"; taken here as
# 3,230 MiB, like the RSS figures); the small sample's figure is from --measure above.
VECTOR_BYTES_PER_RECORD = 768
MONTHLY_PEAK_MB = {1_000_000: 3_230.0}


# --- The plan ---------------------------------------------------------------------------------


def objects_per_month(days: int) -> dict[str, int]:
    """Objects a month writes, one per table partition: ``days`` per daily table, one for a monthly one."""
    return {**{table: days for table in DAILY_TABLES}, **{table: 1 for table in MONTHLY_TABLES}}


def _line(points: tuple[float, float], at: tuple[int, int] = SERIAL_AT) -> tuple[float, float]:
    """Intercept and slope of the line through two measured points (never a negative intercept)."""
    slope = (points[1] - points[0]) / (at[1] - at[0])
    return max(0.0, points[0] - slope * at[0]), slope


def seconds_per_record(cold: bool = False) -> float:
    """Day steps' seconds per record. Measured (the demo's repeats: about a third of the texts
    analysed, 28% of the records embedded), or ``cold``: every text analysed and every record
    embedded, at the measured cost per analysed and per embedded text."""
    total = sum(DAY_STEP_SECONDS.values()) / MEASURED_RECORDS
    if not cold:
        return total
    per_analysed = DAY_STEP_SECONDS["redacted_logs"] / TEXTS_ANALYSED
    per_embedded = DAY_STEP_SECONDS["log_embeddings"] / TEXTS_EMBEDDED
    rest = total - (DAY_STEP_SECONDS["redacted_logs"] + DAY_STEP_SECONDS["log_embeddings"]) / MEASURED_RECORDS
    return texts_per_record() * per_analysed + per_embedded + rest


def texts_per_record() -> float:
    """Distinct texts (or lines of long texts) the redaction looks up per record (the 1M run)."""
    return (TEXTS_ANALYSED + REDACTION_CACHE_HITS) / MEASURED_RECORDS


@dataclass(frozen=True)
class WorkerRow:
    workers: int
    rounds: int  # day runs one after another on the busiest worker
    day_phase_s: float
    day_phase_cold_s: float
    total_s: float
    total_cold_s: float


@dataclass(frozen=True)
class Plan:
    records: int
    days: int
    objects: dict[str, int]
    bytes: dict[str, float]  # table -> bytes for the month (snappy)
    bytes_zstd: dict[str, float]
    day_seconds: float  # one day run, measured mix
    day_seconds_cold: float
    serial_seconds: dict[str, float]
    day_worker_mb: float  # MiB, as the RSS figures
    monthly_mb: tuple[float, float]  # MiB: (only the vectors grow, the line through the measured peaks)
    rows: list[WorkerRow]

    @property
    def serial_s(self) -> float:
        return sum(self.serial_seconds.values())

    @property
    def total_objects(self) -> int:
        return sum(self.objects.values())


def plan(records: int, days: int, workers: list[int], small_month: tuple[int, float] | None = None) -> Plan:
    """Objects, bytes, memory and wall time of a month of ``records`` over ``days`` days on each
    count of ``workers``. ``small_month`` is (records, MB) of a measured monthly peak at a small
    size (default: the one ``--measure`` printed)."""
    if records < 1 or days < 1 or not workers or min(workers) < 1:
        raise ValueError("records, days and every worker count must be at least 1")
    per_day = records / days
    rows_of = {table: float(records) for table in (*DAILY_TABLES, *MONTHLY_TABLES)}
    rows_of["quarantined_logs"] = records * QUARANTINED_PER_RECORD
    size = {t: rows_of[t] * BYTES_PER_ROW_SNAPPY[t] for t in rows_of}
    size_zstd = {t: rows_of[t] * BYTES_PER_ROW_ZSTD[t] for t in rows_of}

    day_s = per_day * seconds_per_record() + DAY_RUN_FIXED_SECONDS
    day_cold_s = per_day * seconds_per_record(cold=True) + DAY_RUN_FIXED_SECONDS
    serial = {}
    for step, points in SERIAL_STEP_SECONDS.items():
        a, b = _line(points)
        serial[step] = a + b * records
    rows = []
    for n in sorted(set(workers)):
        rounds = math.ceil(days / min(n, days))
        rows.append(WorkerRow(n, rounds, rounds * day_s, rounds * day_cold_s,
                              sum(serial.values()) + rounds * day_s, sum(serial.values()) + rounds * day_cold_s))

    worker_mb = DAY_WORKER_PEAK_MB + max(0.0, per_day - DAY_WORKER_PEAK_AT) * DAY_WORKER_GROWTH_MB_PER_RECORD
    (big_n, big_mb), = MONTHLY_PEAK_MB.items()
    only_vectors = big_mb + (records - big_n) * VECTOR_BYTES_PER_RECORD / 2**20
    small_n, small_mb = small_month or (SMALL_MONTH_RECORDS, SMALL_MONTH_PEAK_MB)
    slope = (big_mb - small_mb) / (big_n - small_n)
    line = small_mb + slope * (records - small_n)
    return Plan(records, days, objects_per_month(days), size, size_zstd, day_s, day_cold_s, serial, worker_mb,
                (only_vectors, line), rows)


# The main process's peak RSS in the refresh of the --measure sample (the monthly jobs run there).
SMALL_MONTH_RECORDS, SMALL_MONTH_PEAK_MB = 14_000, 1_065.0


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def _duration(seconds: float) -> str:
    h, rest = divmod(round(seconds), 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def print_plan(p: Plan) -> None:
    print(f"A month of {p.records:,} records over {p.days} days ({p.records / p.days:,.0f} records a day)\n")
    print(f"Objects: {p.days} days x {len(DAILY_TABLES)} daily tables + {len(MONTHLY_TABLES)} monthly = "
          f"{p.total_objects} a month (raw zone {sum(p.objects[t] for t in RAW_ZONE)}, "
          f"main store {p.total_objects - sum(p.objects[t] for t in RAW_ZONE)})")
    print(f"{'table':<18} {'zone':<6} {'objects':>7} {'B/row':>7} {'month (snappy)':>15} {'month (zstd)':>13} "
          f"{'one object':>11}")
    for table in (*DAILY_TABLES, *MONTHLY_TABLES):
        print(f"{table:<18} {'raw' if table in RAW_ZONE else 'main':<6} {p.objects[table]:>7} "
              f"{BYTES_PER_ROW_SNAPPY[table]:>7,} {_human(p.bytes[table]):>15} {_human(p.bytes_zstd[table]):>13} "
              f"{_human(p.bytes[table] / p.objects[table]):>11}")
    print(f"{'all':<18} {'':<6} {p.total_objects:>7} {'':>7} {_human(sum(p.bytes.values())):>15} "
          f"{_human(sum(p.bytes_zstd.values())):>13}")
    print(f"Caches on the data home volume, per distinct text: embeddings {EMBEDDING_CACHE_BYTES_PER_TEXT:,} B, "
          f"redaction {REDACTION_CACHE_BYTES_PER_TEXT:,} B (every record distinct: "
          f"{_human(p.records * EMBEDDING_CACHE_BYTES_PER_TEXT)} and "
          f"{_human(p.records * texts_per_record() * REDACTION_CACHE_BYTES_PER_TEXT)} a month)\n")

    print(f"Memory: a day worker about {p.day_worker_mb / 1024:.1f} GiB at its peak "
          f"({p.records / p.days:,.0f} records in one run); the monthly steps "
          f"{p.monthly_mb[0] / 1024:.1f} GiB if only the float16 vectors grow, "
          f"{p.monthly_mb[1] / 1024:.1f} GiB on the line through the measured peaks "
          f"({SMALL_MONTH_PEAK_MB:,.0f} MiB at {SMALL_MONTH_RECORDS:,}, {MONTHLY_PEAK_MB[1_000_000]:,.0f} at 1M)\n")

    print(f"Wall time: one day run {_duration(p.day_seconds)} (measured mix), {_duration(p.day_seconds_cold)} "
          f"(every text new); serial {_duration(p.serial_s)} ("
          + ", ".join(f"{k} {_duration(v)}" for k, v in p.serial_seconds.items()) + ")")
    print(f"{'workers':>7} {'rounds':>6} {'days (mix)':>11} {'days (cold)':>11} {'total (mix)':>11} "
          f"{'total (cold)':>12} {'speed-up':>8}")
    base = p.rows[0].total_s
    for r in p.rows:
        print(f"{r.workers:>7} {r.rounds:>6} {_duration(r.day_phase_s):>11} {_duration(r.day_phase_cold_s):>11} "
              f"{_duration(r.total_s):>11} {_duration(r.total_cold_s):>12} {base / r.total_s:>7.1f}x")
    print("\n  T(N) = T_serial + ceil(days / min(N, days)) x ((records / days) x c + f); "
          f"c = {seconds_per_record() * 1000:.2f} ms/record measured, {seconds_per_record(cold=True) * 1000:.2f} "
          f"cold; f = {DAY_RUN_FIXED_SECONDS:.0f} s")


# --- Measuring the storage inputs -------------------------------------------------------------


def measure(sample_records: int, sample_days: int, start: date) -> None:
    """Run a small demo month through the pipeline, its large tables in a lake on a local folder
    (``EVAL_PIPELINE_STORAGE``), and print the storage and memory inputs."""
    import sqlite3

    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from eval_pipeline.demo.logs import generate_logs
    from eval_pipeline.lib.core.paths import DataHome
    from eval_pipeline.lib.storage.lake import LAKE_TABLES, STORAGE_ENV, Lake, StorageLocations
    from eval_pipeline.runs import refresh_month

    if (start + timedelta(days=sample_days - 1)).month != start.month:
        raise SystemExit("--sample-days must fit in the month of --start")
    work = Path(tempfile.mkdtemp(prefix="scale-plan-"))
    try:
        home = DataHome.resolve(work / "home").ensure()
        os.environ[STORAGE_ENV] = str(work / "lake")  # the day workers inherit it
        os.environ.pop("EVAL_PIPELINE_RAW_STORAGE", None)
        storage = StorageLocations.resolve()
        summary = generate_logs(home.landing / "demo", start, sample_days, -(-sample_records // sample_days),
                                seed=5, truth_dir=home.demo_truth)
        t = time.perf_counter()
        result = refresh_month(home, start.strftime("%Y-%m"), log=lambda *_: None)
        wall = time.perf_counter() - t
        if not result.success:
            raise SystemExit(f"the refresh failed: {', '.join(result.failed)}")
        main_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"{summary.records:,} records over {sample_days} days refreshed in {wall:.0f} s; peak RSS: main process "
              f"{main_mb:,.0f} MiB (monthly jobs), largest day worker {child_mb:,.0f} MiB")

        out = work / "rewritten"
        out.mkdir()
        rows_of: dict[str, int] = {}
        print(f"{'table':<18} {'rows':>7} {'objects':>7} {'B/row as written':>16} "
              f"{'B/row one object snappy':>23} {'zstd':>5}")
        for table, (zone, _) in LAKE_TABLES.items():
            lake = Lake(storage.raw if zone == "raw" else storage.main, restricted=zone == "raw")
            paths = [lake.object_path(table, key) for key in lake.keys(table)]
            written = sum(Path(path).stat().st_size for path in paths)
            whole = pa.concat_tables([pq.read_table(path) for path in paths])
            sizes = {}
            for codec in ("snappy", "zstd"):  # as one large object: a large day's row groups of 5,000
                target = out / f"{table}.{codec}.parquet"
                pq.write_table(whole, target, row_group_size=5_000, compression=codec)
                sizes[codec] = target.stat().st_size
            name = table.split(".")[1]
            rows_of[name] = n = whole.num_rows
            print(f"{name:<18} {n:>7,} {len(paths):>7} {written / max(1, n):>16,.0f} "
                  f"{sizes['snappy'] / max(1, n):>23,.0f} {sizes['zstd'] / max(1, n):>5,.0f}")
        print(f"quarantined lines per record: {rows_of['quarantined_logs'] / max(1, rows_of['raw_logs']):.4f}")

        with duckdb.connect(str(home.warehouse), read_only=True) as con:
            cache = con.sql("select * from embeddings.embedding_cache").arrow()
            if hasattr(cache, "read_all"):
                cache = cache.read_all()
        target = out / "embedding_cache.parquet"
        pq.write_table(cache, target, row_group_size=5_000, compression="zstd")
        with sqlite3.connect(home.redaction_cache) as con:
            tables = [r[0] for r in con.execute("select name from sqlite_master where type = 'table'")]
            texts = max(con.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables)
            con.execute("pragma wal_checkpoint(truncate)")
        print(f"embedding cache: {cache.num_rows:,} texts, {target.stat().st_size / max(1, cache.num_rows):,.0f} B/text "
              f"(zstd Parquet); redaction cache: {texts:,} texts, "
              f"{home.redaction_cache.stat().st_size / max(1, texts):,.0f} B/text (SQLite file)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=31, help="days in the month (30 or 31)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--measure", action="store_true", help="re-measure the storage and memory inputs")
    parser.add_argument("--sample-records", type=int, default=14_000)
    parser.add_argument("--sample-days", type=int, default=7)
    parser.add_argument("--start", default="2026-02-01")
    args = parser.parse_args(argv)
    if args.measure:
        warnings.filterwarnings("ignore")
        measure(args.sample_records, args.sample_days, date.fromisoformat(args.start))
        return 0
    print_plan(plan(args.records, args.days, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
