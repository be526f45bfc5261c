"""Cluster quality on real text: prints figures (not a test).

    .venv/bin/python benchmarks/clusters.py [--seeds 0,1,2,3] [--draws 24] [--timing]

Every Banking77 query is embedded once with the embedder ``log_embeddings`` uses
(``get_embedder(EmbeddingConfig())``, all-MiniLM-L6-v2) and kept under the system temp folder,
keyed by model, precision and texts (the file ``benchmarks/drift.py`` keeps too).

1. Quality on the long-tailed month: for each seed s, ``long_tail_mix(categories, seed=s)`` (30
   intents, 150 down to 10 queries, about 1,580 queries), every method seeded with the same s:

   * ``epsilon 0 (before)``: ``cluster_embeddings`` with HDBSCAN's ``cluster_selection_epsilon``
     0, the default before this measurement;
   * ``epsilon 0.2`` / ``epsilon 0.25 (default)``: the same with ``cluster_selection_epsilon`` set;
   * ``kmeans-silhouette``: plain scikit-learn ``KMeans`` on the 384-d vectors for k in 5, 10,
     ..., 80, keeping the k with the best cosine silhouette (a naive baseline);
   * ``umap-hdbscan-15``: ``umap.UMAP(n_components=5, n_neighbors=15, min_dist=0, cosine)`` then
     ``hdbscan.HDBSCAN(min_cluster_size=15)`` with its other defaults (a naive baseline).

   Against the true intents: NMI and ARI (HDBSCAN's noise counted as one more label), clusters
   per true intent, rare-intent recall (intents with <= 20 queries whose majority sits in one
   non-noise cluster, of how many), noise share; per seed and the mean over the seeds.
2. New, gone and continuing intents when a month is refitted: ``--draws`` draws of the drift
   test's two months (month A: 25 intents x 40 queries; month B: 24 of them with fresh queries
   plus 3 new intents), each clustered afresh and matched by ``match_clusters``: how many new
   intents have most of their queries in clusters marked new, how many dropped intents have
   most of their month-A queries in clusters marked gone, and how many continuing intents have
   most of their month-B queries in a continuing cluster that was theirs in month A. UMAP does
   not depend on the epsilon: each month is reduced once and HDBSCAN run per epsilon, as
   ``cluster_embeddings`` does for a month below ``max_fit_sample``.
3. ``--timing``: the HDBSCAN fit and the assignment of the rest (``approximate_predict``) on
   100,000 synthetic unit vectors around 60 centres (20,000 fitted, 80,000 assigned, as a
   100k-record month), epsilon 0 against 0.2 on the same reduced space, best of 3.

Sections 1 and 2 take about three minutes on this project's 2-core machine once the vectors are
cached (embedding the 10,003 queries takes a few minutes more the first time); ``--timing``
adds about a minute.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CACHE = Path(tempfile.gettempdir()) / "eval_pipeline_bench_cache"
RARE_LIMIT = 20  # an intent with at most this many queries is "rare"
EPSILONS = (0.0, 0.2, 0.25)


def banking_vectors() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Texts, intents and embeddings of every Banking77 query (embedded once, cached)."""
    from eval_pipeline.demo.banking77 import embedded_queries, load_queries

    texts, categories = load_queries()
    return texts, categories, embedded_queries(texts, CACHE, "banking77_all")


# ------------------------------------------------------------------------------------------
# 1. Quality on the long-tailed month
# ------------------------------------------------------------------------------------------


def _kmeans_silhouette(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    best: tuple[float, np.ndarray] | None = None
    for k in range(5, 81, 5):
        labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
        score = float(silhouette_score(x, labels, metric="cosine"))
        if best is None or score > best[0]:
            best = (score, labels)
    assert best is not None
    return best[1]


def _umap_hdbscan_15(x: np.ndarray, seed: int) -> np.ndarray:
    import hdbscan
    import umap

    reduced = umap.UMAP(n_components=5, n_neighbors=15, min_dist=0.0, metric="cosine",
                        random_state=seed).fit_transform(x)
    return hdbscan.HDBSCAN(min_cluster_size=15).fit_predict(reduced)


def _cluster_embeddings(**settings) -> Callable[[np.ndarray, int], np.ndarray]:
    from eval_pipeline.lib.clustering.clusters import ClusterConfig, cluster_embeddings

    def run(x: np.ndarray, seed: int) -> np.ndarray:
        return cluster_embeddings(x, ClusterConfig(seed=seed, map_method="none", **settings)).labels

    return run


def _scores(labels: np.ndarray, truth: np.ndarray, sizes: dict[str, int]) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from eval_pipeline.lib.clustering.clusters import NOISE

    rare = [intent for intent, n in sizes.items() if n <= RARE_LIMIT]
    kept = 0
    for intent in rare:
        mine = labels[truth == intent]
        clustered = mine[mine != NOISE]
        if len(clustered) and np.bincount(clustered).max() > len(mine) / 2:
            kept += 1
    clusters = len(set(labels.tolist()) - {NOISE})
    return {"nmi": normalized_mutual_info_score(truth, labels), "ari": adjusted_rand_score(truth, labels),
            "per_intent": clusters / len(sizes), "clusters": clusters, "rare": kept, "rare_of": len(rare),
            "noise": float(np.mean(labels == NOISE))}


def _row(name: str, s: dict[str, float], seconds: float) -> str:
    rare = f"{s['rare']:.2f}/{s['rare_of']:.0f}"
    return (f"{name:<24} {s['nmi']:>6.3f} {s['ari']:>6.3f} {s['per_intent']:>10.2f} {s['clusters']:>8.1f} "
            f"{rare:>9} {s['noise']:>6.1%} {seconds:>6.1f}")


def quality(categories: np.ndarray, vectors: np.ndarray, seeds: list[int]) -> None:
    from eval_pipeline.demo.banking77 import long_tail_mix

    mixes = {seed: long_tail_mix(categories, seed=seed) for seed in seeds}
    methods: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
        "epsilon 0 (before)": _cluster_embeddings(cluster_selection_epsilon=0.0),
        "epsilon 0.2": _cluster_embeddings(cluster_selection_epsilon=0.2),
        "epsilon 0.25 (default)": _cluster_embeddings(cluster_selection_epsilon=0.25),
        "kmeans-silhouette": _kmeans_silhouette,
        "umap-hdbscan-15": _umap_hdbscan_15,
    }
    print("== 1. long-tailed Banking77 month ==\n"
          + "; ".join(f"seed {s}: {len(idx)} queries, {len(sizes)} intents, "
                      f"{sum(n <= RARE_LIMIT for n in sizes.values())} with <= {RARE_LIMIT}"
                      for s, (idx, sizes) in mixes.items()))
    header = (f"{'method / seed':<24} {'NMI':>6} {'ARI':>6} {'per intent':>10} {'clusters':>8} "
              f"{'rare kept':>9} {'noise':>6} {'s':>6}")
    means = []
    for name, method in methods.items():
        print(f"\n{header}")
        rows, times = [], []
        for seed, (idx, sizes) in mixes.items():
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                labels = np.asarray(method(vectors[idx], seed))
            times.append(time.perf_counter() - started)
            rows.append(_scores(labels, categories[idx], sizes))
            print(_row(f"{name} / {seed}", rows[-1], times[-1]), flush=True)
        mean = {key: statistics.mean(r[key] for r in rows) for key in rows[0]}
        means.append((name, mean, statistics.mean(times)))
        print(_row(f"{name} / mean", mean, statistics.mean(times)))
    print(f"\nmeans over seeds {seeds}\n{header}")
    for name, mean, seconds in means:
        print(_row(name, mean, seconds))


# ------------------------------------------------------------------------------------------
# 2. New, gone and continuing intents in a refitted month
# ------------------------------------------------------------------------------------------


def _labels_by_epsilon(x: np.ndarray, epsilons: tuple[float, ...]) -> dict[float, np.ndarray]:
    """``cluster_embeddings``' labels of a month below ``max_fit_sample`` for each epsilon (up to
    their numbering), the UMAP done once."""
    from eval_pipeline.lib.clustering import clusters as clustering

    config = clustering.ClusterConfig(map_method="none")
    unit = clustering._unit(x, np.arange(len(x)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reduced, _, _ = clustering._reduce(unit, iter(()), config)
        mcs = clustering.auto_min_cluster_size(len(x))
        out = {}
        for eps in epsilons:
            fitted = clustering._fit_hdbscan(reduced, mcs, max(1, mcs // 4),
                                             clustering.ClusterConfig(cluster_selection_epsilon=eps), predict=False)
            out[eps] = np.asarray(fitted.labels_, dtype=np.int64)
    return out


def _clusters(x: np.ndarray, labels: np.ndarray) -> list[tuple[int, np.ndarray, int]]:
    out = []
    for label in sorted(set(labels.tolist()) - {-1}):
        members = x[labels == label]
        mean = members.mean(axis=0)
        out.append((label, mean / np.linalg.norm(mean), len(members)))
    return out


def _majority(values: np.ndarray) -> str | None:
    return collections.Counter(values.tolist()).most_common(1)[0][0] if len(values) else None


def drift(categories: np.ndarray, vectors: np.ndarray, draws: list[int]) -> None:
    from eval_pipeline.demo.banking77 import drift_months
    from eval_pipeline.lib.clustering.clusters import drift_id_map, match_clusters

    found = {eps: collections.Counter() for eps in EPSILONS}
    for draw in draws:
        a, b, new, dropped = drift_months(categories, draw)
        ta, tb = categories[a], categories[b]
        la, lb = _labels_by_epsilon(vectors[a], EPSILONS), _labels_by_epsilon(vectors[b], EPSILONS)
        for eps in EPSILONS:
            month_a, month_b = _clusters(vectors[a], la[eps]), _clusters(vectors[b], lb[eps])
            ids = drift_id_map(match_clusters([], month_a))
            rows = match_clusters([(ids[label], c, n) for label, c, n in month_a], month_b,
                                  previous_total=len(a), current_total=len(b))
            status_b = {r.local_label: r.status for r in rows if r.local_label is not None}
            id_b = {r.local_label: r.cluster_id for r in rows if r.local_label is not None}
            gone = {r.cluster_id for r in rows if r.status == "gone"}
            intent_of_id = {ids[label]: _majority(ta[la[eps] == label]) for label, _, _ in month_a}
            per_b = np.array([status_b.get(label, "unclustered") for label in lb[eps].tolist()])
            own_b = np.array([intent_of_id.get(id_b[label]) if status_b.get(label) == "continuing" else None
                              for label in lb[eps].tolist()], dtype=object)
            tally = found[eps]
            for intent in new:
                tally["new"] += float(np.mean(per_b[tb == intent] == "new")) > 0.5
            ids_a = np.array([ids.get(label, "unclustered") for label in la[eps].tolist()])
            tally["gone"] += float(np.mean(np.isin(ids_a[ta == dropped], list(gone)))) > 0.5
            for intent in sorted(set(ta.tolist()) - {dropped}):
                tally["continuing"] += float(np.mean(own_b[tb == intent] == intent)) > 0.5
            tally["draws"] += 1
    print(f"\n== 2. refitted months: {len(draws)} draws of the drift test's two months (seeds {draws[0]}-{draws[-1]}) ==")
    print(f"{'epsilon':<10} {'new intents marked new':>24} {'dropped intent gone':>20} {'continuing kept':>16}")
    for eps, t in found.items():
        n = t["draws"]
        print(f"{eps:<10g} {t['new']:>17.0f} of {3 * n:<3} {t['gone']:>13.0f} of {n:<3} {t['continuing']:>9.0f} of {24 * n}")


# ------------------------------------------------------------------------------------------
# 3. Cost on a 100k-record month
# ------------------------------------------------------------------------------------------


def timing(epsilon: float = 0.2, n: int = 100_000, centres: int = 60, dim: int = 384) -> None:
    import hdbscan

    from eval_pipeline.lib.clustering import clusters as clustering

    rng = np.random.default_rng(0)
    middle = clustering._normalize(rng.normal(size=(centres, dim)))
    # cosine about 0.78 between a vector and its centre, about 0.6 between two of one centre
    x = middle[rng.integers(0, centres, n)] + rng.normal(scale=0.8 / np.sqrt(dim), size=(n, dim))
    x = clustering._normalize(x.astype(np.float32))
    config = clustering.ClusterConfig(map_method="none")
    fit_idx = np.sort(rng.choice(n, size=config.max_fit_sample, replace=False))
    rest_idx = np.setdiff1d(np.arange(n), fit_idx)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reduced_fit, reduced_rest, _ = clustering._reduce(x[fit_idx], clustering._batches(x, rest_idx), config)
    print(f"\n== 3. cost on {n:,} synthetic vectors ({centres} centres; {len(fit_idx):,} fitted, "
          f"{len(rest_idx):,} assigned; UMAP {time.perf_counter() - started:.1f} s) ==")
    mcs = clustering.auto_min_cluster_size(len(fit_idx))
    for eps in (0.0, epsilon):
        best = None
        for _ in range(3):
            started = time.perf_counter()
            fitted = clustering._fit_hdbscan(reduced_fit, mcs, max(1, mcs // 4),
                                             clustering.ClusterConfig(cluster_selection_epsilon=eps), predict=True)
            fit_s = time.perf_counter() - started
            rest = clustering._assign_rest(reduced_fit, fitted.labels_, reduced_rest,
                                           lambda points: hdbscan.approximate_predict(fitted, points)[0])
            total = time.perf_counter() - started
            best = min(best or (total, fit_s), (total, fit_s))
        print(f"epsilon {eps:g}: fit + assignment {best[0]:.2f} s (fit {best[1]:.2f} s); "
              f"{int(fitted.labels_.max()) + 1} clusters, {np.mean(rest == -1):.1%} of the rest noise")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--draws", type=int, default=24, help="drift-month draws (seeds 1..draws)")
    parser.add_argument("--timing", action="store_true", help="also time the step on 100k synthetic vectors")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    _, categories, vectors = banking_vectors()
    quality(categories, vectors, seeds)
    if args.draws:
        drift(categories, vectors, list(range(1, args.draws + 1)))
    if args.timing:
        timing()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
