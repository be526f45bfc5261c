"""PII redaction speed, memory and planted-PII recall on demo logs: prints figures (not a test).

    .venv/bin/python benchmarks/redaction.py [--rows 20000] [--days 20] [--seed 1]

Writes demo logs (``generate_logs``) to a temporary folder, parses them day by day with
``ingest_day`` (the rows of ``raw_logs``), then runs ``Redactor.redact_rows`` once per day, as the
``redacted_logs`` asset does per partition. Prints:
  * rows/s and texts/s (every user-data field of a row counts as one text; identical texts in a
    day are analysed once, so distinct texts/s is printed too),
  * peak RSS (``resource.getrusage``) before and after, and the model load time,
  * the leak scan over every redacted field (should be all zero),
  * recall on the PII the generator planted (its truth file lists every inserted value): a value
    counts as found when it no longer appears anywhere in the redacted row.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

START = date(2026, 1, 5)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _texts(row: dict) -> list[str]:
    parts = [m["content"] for m in row["messages"]] + [m["name"] or "" for m in row["messages"]]
    parts += [row["user_input"] or "", row["completion"] or "", row["feedback_comment"] or "", row["metadata"] or ""]
    parts += [c["text"] for c in row["retrieved_chunks"]] + [p["detail"] or "" for p in row["post_processing"]]
    return parts


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    from eval_pipeline.demo.logs import generate_logs
    from eval_pipeline.lib.ingest.ingestion import ingest_day

    work = Path(tempfile.mkdtemp(prefix="redaction-bench-"))
    try:
        t0 = time.perf_counter()
        summary = generate_logs(work / "landing", START, args.days, max(1, args.rows // args.days), seed=args.seed,
                                truth_dir=work / "truth")
        now = datetime.now(timezone.utc) + timedelta(days=3650)
        days = [ingest_day(work / "landing", START + timedelta(days=i), now=now).rows for i in range(args.days)]
        n_rows = sum(len(d) for d in days)
        print(f"demo logs: {summary.records:,} records written, {n_rows:,} rows parsed in "
              f"{time.perf_counter() - t0:.1f} s; peak RSS {_peak_rss_mb():.0f} MB before loading the model")

        from eval_pipeline.demo.settings import demo_resources
        from eval_pipeline.lib.privacy.redaction import Redactor, _text_slots, scan_for_leaks

        t1 = time.perf_counter()
        # the demo's logs are redacted with the demo's settings (its allow-list on top of the default)
        redactor = Redactor(demo_resources()["redaction"].config())
        load_s = time.perf_counter() - t1
        print(f"model load {load_s:.1f} s; peak RSS {_peak_rss_mb():.0f} MB")

        n_texts = n_distinct = 0
        elapsed = 0.0
        out_rows: list[dict] = []
        for rows in days:
            slots = [text for row in rows for _, text, _ in _text_slots(row)]
            n_texts += len(slots)
            n_distinct += len(set(slots))
            t2 = time.perf_counter()
            out_rows += redactor.redact_rows(rows)
            elapsed += time.perf_counter() - t2

        pii = Counter()
        withheld = 0
        for row in out_rows:
            pii.update(json.loads(row["pii_counts"]))
            withheld += len(row["withheld"])
        leaks = scan_for_leaks(t for row in out_rows for t in _texts(row))
        print(f"redact_rows: {n_rows:,} rows, {n_texts:,} texts ({n_distinct:,} distinct per day) in {elapsed:.1f} s "
              f"= {n_rows / elapsed:,.0f} rows/s, {n_texts / elapsed:,.0f} texts/s, "
              f"{n_distinct / elapsed:,.0f} distinct texts/s; peak RSS {_peak_rss_mb():.0f} MB")
        print(f"placeholders per type: {dict(sorted(pii.items()))}; withheld texts: {withheld}")
        print(f"leak scan over every redacted field: {leaks}")

        truth = {}
        with open(work / "truth" / "records.jsonl", encoding="utf-8") as handle:
            for line in handle:
                rec = json.loads(line)
                truth[rec["request_id"]] = rec["pii"]
        planted, found = Counter(), Counter()
        for row in out_rows:
            blob = "\n".join(_texts(row))
            for item in truth.get(row["request_id"], []):
                planted[item["type"]] += 1
                found[item["type"]] += item["value"] not in blob
        recall = {k: f"{found[k]}/{planted[k]} = {found[k] / planted[k]:.4f}" for k in sorted(planted)}
        print(f"planted PII removed (value absent from the redacted row): {recall}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
