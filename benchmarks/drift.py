"""Cluster identity over two months of real text: how much of an unchanged topic keeps its id.

The scenario (``banking77.two_months``): month 1 holds 24 Banking77 intents (80 down to 10
queries each); month 2 the same intents with fresh queries, one intent dropped and two new
ones. For seeds 0-3 (the scenario's and the clustering's) this prints:

* continuing: the share of month 2's records of unchanged intents that sit in clusters marked
  ``continuing`` (kept last month's id);
* new in new: the share of the new intents' records in clusters marked ``new``;
* dropped gone: whether the dropped intent's month-1 cluster(s) are marked ``gone``;
* the mode (assigned to last month's clusters, or refitted) and the novel share;
* the same figures for a refit (cluster month 2 afresh, match one-to-one): the previous method.

Run: ``.venv/bin/python benchmarks/drift.py`` (about a minute after the embeddings; the
Banking77 queries are embedded once and cached under the system temp folder).
"""

from __future__ import annotations

import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from eval_pipeline.demo.banking77 import embedded_queries, load_queries, two_months
from eval_pipeline.lib.clustering.clusters import ClusterConfig, cluster_month
from eval_pipeline.lib.clustering.identity import IdentityRules, Reference

CACHE = Path(tempfile.gettempdir()) / "eval_pipeline_bench_cache"


def banking_vectors() -> tuple[list[str], np.ndarray, np.ndarray]:
    texts, categories = load_queries()
    return texts, categories, embedded_queries(texts, CACHE, "banking77_all")


def frame(texts: list[str], idx: np.ndarray, prefix: str) -> pl.DataFrame:
    return pl.DataFrame({"request_id": [f"{prefix}{i}" for i in range(len(idx))],
                         "embed_text": [texts[i] for i in idx]})


def run_scenario(texts, categories, vectors, seed: int, refit: bool = False) -> dict:
    a, b, new, dropped = two_months(categories, seed)
    config = ClusterConfig(map_method="none", seed=seed)
    first = cluster_month(frame(texts, a, "a"), vectors[a], config)
    previous = [(e["cluster_id"], e["centroid"], e["size"]) for e in first.table if e["centroid"] is not None]
    ids_a = np.array(first.assignments["cluster_id"])
    started = time.perf_counter()
    second = cluster_month(frame(texts, b, "b"), vectors[b], config, previous=previous, previous_total=len(a),
                           known_ids=[p[0] for p in previous], reference=Reference(vectors[a], ids_a.tolist()),
                           rules=IdentityRules(refit=refit))
    seconds = time.perf_counter() - started
    status = {r.cluster_id: r.status for r in second.drift}
    ids_b = np.array(second.assignments["cluster_id"])
    status_b = np.array([status.get(i, "unclustered") for i in ids_b])
    truth_b = categories[b]
    is_new = np.isin(truth_b, new)
    dropped_ids = {cid for cid, n in collections.Counter(ids_a[categories[a] == dropped]).items()
                   if cid != "unclustered" and n > 0.5 * sum(ids_a == cid)}
    counts = collections.Counter(r.status for r in second.drift)
    return {
        "continuing": float(np.mean(status_b[~is_new] == "continuing")),
        "new_in_new": float(np.mean(status_b[is_new] == "new")),
        "each_new_intent": min(float(np.mean(status_b[truth_b == intent] == "new")) for intent in new),
        "dropped_gone": all(status.get(cid) == "gone" for cid in dropped_ids) if dropped_ids else None,
        "mode": second.mode, "novel": second.novel_share, "counts": dict(counts), "seconds": seconds,
        "clusters_1": len(previous),
    }


def main() -> int:
    texts, categories, vectors = banking_vectors()
    for label, refit in (("assigned to last month's clusters (default)", False),
                         ("refit: clustered afresh, matched one-to-one", True)):
        print(f"\n{label}")
        rows = [run_scenario(texts, categories, vectors, seed, refit) for seed in range(4)]
        for seed, r in enumerate(rows):
            novel = "" if r["novel"] is None else f", novel {r['novel']:.1%}"
            print(f"  seed {seed}: continuing {r['continuing']:.1%}, new in new {r['new_in_new']:.1%} "
                  f"(weakest new intent {r['each_new_intent']:.0%}), dropped intent gone {r['dropped_gone']}; "
                  f"{r['mode']}{novel}; month 1 {r['clusters_1']} clusters, month 2 {r['counts']}; {r['seconds']:.1f} s")
        print(f"  mean: continuing {statistics.mean(r['continuing'] for r in rows):.1%}, "
              f"new in new {statistics.mean(r['new_in_new'] for r in rows):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
