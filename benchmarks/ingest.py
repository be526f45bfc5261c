"""Ingest speed and memory on demo logs: prints records/s and peak memory (not a test).

    .venv/bin/python benchmarks/ingest.py [--records 100000] [--days 100] [--skip-dagster]

Each phase runs in its own process, so its peak RSS is its own:
  library  parse and validate every day with the library alone (manifest scan + ingest_day per day)
  dagster  the real thing: the landing manifest, then one Dagster run per day into a DuckDB file,
           with both checks, as `eval-pipeline refresh` does month by month
"""

import argparse
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

START = date(2026, 1, 1)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_library(root: str, days: int, queue) -> None:
    from eval_pipeline.lib.core.paths import DataHome
    from eval_pipeline.lib.ingest.ingestion import build_manifest, ingest_day

    home = DataHome.resolve(root)
    t0 = time.perf_counter()
    entries, _ = build_manifest(home.landing)
    t_manifest = time.perf_counter() - t0
    rows = quarantined = 0
    t1 = time.perf_counter()
    for i in range(days):
        day = START + timedelta(days=i)
        result = ingest_day(home.landing, day, files=[e.path for e in entries if day.isoformat() in e.days])
        rows += len(result.rows)
        quarantined += len(result.quarantined)
    queue.put({"manifest_s": t_manifest, "days_s": time.perf_counter() - t1, "rows": rows,
               "quarantined": quarantined, "peak_mb": _peak_rss_mb()})


def phase_dagster(root: str, days: int, queue) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    from eval_pipeline.lib.core.paths import DataHome
    from eval_pipeline.runs import refresh_month, table_counts

    home = DataHome.resolve(root)
    months = sorted({(START + timedelta(days=i)).strftime("%Y-%m") for i in range(days)})
    t0 = time.perf_counter()
    failed = []
    for month in months:
        failed += refresh_month(home, month, log=lambda *_: None).failed
    counts = table_counts(home)
    queue.put({"elapsed_s": time.perf_counter() - t0, "months": len(months), "failed": failed,
               "rows": counts.get("ingest.raw_logs", 0), "quarantined": counts.get("ingest.quarantined_logs", 0),
               "peak_mb": _peak_rss_mb()})


def run(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--skip-dagster", action="store_true")
    args = parser.parse_args()
    from eval_pipeline.demo.logs import generate_logs

    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    try:
        root = work / "home"
        t0 = time.perf_counter()
        summary = generate_logs(root / "landing" / "demo", START, args.days, args.records // args.days, seed=1,
                                truth_dir=work / "truth")
        size_mb = sum(p.stat().st_size for p in (root / "landing").rglob("*") if p.is_file()) / 2**20
        print(f"generated {summary.records:,} records (+{summary.malformed_lines} malformed lines) in "
              f"{summary.files_written} files, {size_mb:.0f} MB, in {time.perf_counter() - t0:.1f} s")

        lib = run(phase_library, str(root), args.days)
        total = lib["rows"] + lib["quarantined"]
        print(f"library: manifest scan {lib['manifest_s']:.1f} s ({total / lib['manifest_s']:,.0f} records/s); "
              f"daily ingest {lib['days_s']:.1f} s ({total / lib['days_s']:,.0f} records/s; files spanning "
              f"several days are read once per day); {lib['rows']:,} ingested + {lib['quarantined']:,} quarantined; "
              f"peak RSS {lib['peak_mb']:.0f} MB")
        if not args.skip_dagster:
            dag = run(phase_dagster, str(root), args.days)
            print(f"dagster: {dag['months']} monthly refreshes, one run per day with both checks, into DuckDB: "
                  f"{dag['elapsed_s']:.1f} s = {total / dag['elapsed_s']:,.0f} records/s end to end; "
                  f"{dag['rows']:,} rows + {dag['quarantined']:,} quarantined; peak RSS {dag['peak_mb']:.0f} MB"
                  + (f"; FAILED {dag['failed']}" if dag["failed"] else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
