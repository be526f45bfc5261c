"""Clusters of a month's embeddings, their description, their map, and their identity over time.

Plain Python for the ``log_clusters`` and ``cluster_drift`` assets (no Dagster import):

* :func:`cluster_embeddings` - UMAP to a few dims, then HDBSCAN (default) or k-means; noise
  (label -1) stays as its own "unclustered" stratum; months larger than
  ``ClusterConfig.max_fit_sample`` are fitted on a seeded random sample and the rest assigned
  to the fitted clusters;
* :func:`describe_clusters` / :func:`cluster_table_markdown` - size, share, c-TF-IDF keywords,
  representative examples, quality-signal rates, task types and user segments per cluster;
* :func:`plot_cluster_map` - a PNG of the 2-D map;
* :func:`match_clusters` - this month's clusters to last month's one-to-one (continuing / new /
  gone, grown or shrunk), keeping stable ids: the first month and a refit;
* :func:`cluster_month` - a month end to end; with a clustered month before it, the records are
  assigned to that month's clusters first and only the novel ones clustered (``lib/clustering/identity.py``).

Measured on this 2-core machine (``shared/DEPENDENCIES.md``): HDBSCAN straight on 384-d is slow
(5k points about 6 s), UMAP to 5 dims on 20k points about 6 s after its 8-30 s numba compile, and
HDBSCAN on that about 1.5 s; hence UMAP first.
"""

from __future__ import annotations

import io
import math
import re
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np

from eval_pipeline.lib.core.settings import choices, setting
from eval_pipeline.lib.embeddings.encode import distinct_rows
from eval_pipeline.lib.ingest.records import FAILURE_SIGNALS

if TYPE_CHECKING:  # identity imports this module: its types only for annotations
    from eval_pipeline.lib.clustering.identity import IdentityRules, Reference

__all__ = [
    "ClusterConfig",
    "ClusterResult",
    "cluster_embeddings",
    "warm_up",
    "auto_min_cluster_size",
    "describe_clusters",
    "cluster_table_markdown",
    "plot_cluster_map",
    "DriftRow",
    "match_clusters",
    "drift_id_map",
    "format_cluster_id",
    "class_tfidf_keywords",
    "NOISE",
    "UNCLUSTERED",
    "MonthClusters",
    "cluster_month",
    "map_records",
    "drift_table_markdown",
    "DRIFT_THRESHOLD",
    "DEFAULT_GROWTH",
]

NOISE = -1
UNCLUSTERED = "unclustered"

# The centroid cosine at which two clusters are one topic: the one drift threshold. It matches a
# refit's clusters one-to-one (match_clusters), keeps a residual cluster's id
# (identity.IdentityRules.match_cosine) and moves a "gone" cluster's eval examples to the cluster
# that continues its topic (sampling.SamplingConfig.merge_cosine). The clustering resource's
# drift_threshold sets all three. Measured on Banking77 (all-MiniLM-L6-v2): centroids of two
# disjoint halves of one intent are 0.965-0.996 apart, the closest different intents 0.39-0.90
# (median 0.80).
DRIFT_THRESHOLD = 0.9
# A continuing cluster has grown (shrunk) when its share of traffic rose (fell) by this factor.
DEFAULT_GROWTH = 1.5


# --------------------------------------------------------------------------------------------
# Configuration and result
# --------------------------------------------------------------------------------------------


ClusterMethod = Literal["hdbscan", "kmeans"]
MapMethod = Literal["umap", "pca", "none"]


@dataclass(frozen=True)
class ClusterConfig:
    """How a month is clustered.

    method              "hdbscan" (default; finds the number of clusters, leaves outliers as
                        noise) or "kmeans" (every record in a cluster).
    k                   k-means clusters; None: k-means on the reduced space for about 16 k
                        over ``k_range``, keeping the k with the best cosine silhouette on the
                        original embeddings (of at most ``silhouette_sample`` points).
    umap_dims           UMAP output dims that the clustering runs on (~5).
    umap_neighbors      UMAP n_neighbors (local vs global structure); umap_min_dist 0 packs
                        clusters tightly, which is what density clustering wants.
    min_cluster_size    HDBSCAN; None: :func:`auto_min_cluster_size` of the fitted points.
    min_samples         HDBSCAN; None: ``max(1, min_cluster_size // 4)``, lower than HDBSCAN's
                        default (= min_cluster_size) so that small intents keep a cluster of their
                        own. Measured on the long-tailed Banking77 mix (30 intents, 150 down to
                        10 queries; 4 seeds; min_cluster_size 8): rare intents (<= 20 queries)
                        that hold the majority of their own cluster 5.8 of 8 with min_samples 2
                        vs 4.8 with 8, for NMI 0.74 vs 0.77 (the larger value merges more).
    cluster_selection   HDBSCAN cluster_selection_method, "eom" or "leaf" ("leaf" cut the
                        long-tailed mix finer still: NMI 0.72 vs 0.76, noise 13% vs 8%).
    cluster_selection_epsilon  HDBSCAN's: a cluster is not split into parts that separate at
                        less than this distance in the UMAP space, so the pieces a large intent
                        breaks into stay one cluster. UMAP keeps its local scale whatever the
                        month's size (median distance to the min_samples-th neighbour 0.04
                        for 1,600 to 10,000 Banking77 queries), so one value serves small and
                        large months.
                        ``benchmarks/clusters.py`` (long-tailed Banking77 mix, 4 seeds): NMI
                        0.769 at 0, 0.814 at 0.2, 0.825 at 0.25 (naive baselines: k-means with
                        k by silhouette 0.788, UMAP + HDBSCAN min_cluster_size 15 0.812);
                        clusters per intent 2.12 / 1.49 / 1.32; noise 6.9% / 2.4% / 1.5%; rare
                        intents kept 7.25 of 8 at all three. On the 100,016-record demo month:
                        59 / 51 / 49 clusters, NMI over its Banking77 records 0.615 / 0.645 /
                        0.645, about 0.1 s more (HDBSCAN fit and assignment of 100,000
                        synthetic vectors 2.31 s at 0, 2.42 s at 0.2). The cost is in telling a
                        new intent from a close older one when a month is refitted: coarser
                        clusters put the new intent into the older one's cluster, which then
                        continues (reverted_card_payment? sits at centroid cosine 0.86-0.87 from
                        declined_card_payment and card_payment_not_recognised, while the pieces
                        of one large intent sit at a median 0.75 from each other, so no
                        threshold on centroids separates the two cases either). In 24 draws of
                        the drift test's two months, new intents marked new: 67 of 72 at 0, 62
                        at 0.2, 63 at 0.25 (64 / 62 / 56 with the same queries embedded in
                        other batches, whose bfloat16 rounding moves UMAP: NMI 0.758 / 0.819 /
                        0.835 there), and ``test_drift_new_continuing_gone``'s own draw fails
                        from 0.15 on. That cost falls on a refit only: a month with a clustered
                        month before it is assigned to that month's clusters first and only its
                        novel records are clustered (``lib/clustering/identity.py``), where the new intents
                        were marked new as often at 0.25 as at 0 (``benchmarks/drift.py``: 82.7%
                        of their records). Default 0.25.
    seed                seeds UMAP, the sample and k-means: same input + config = same labels,
                        in one process and across processes. UMAP's neighbours are exact at
                        every size (UMAP's own search below 4,096 distinct vectors,
                        :class:`_ExactIndex` above, where UMAP's NN-descent gave 66 vs 72
                        clusters for the same 8,000 demo records in two processes), and each
                        distinct vector is fitted once (repeats made the spectral start vary).
    max_fit_sample      months with more records than this are fitted on a seeded random sample
                        of this many; the others are placed by UMAP ``transform`` and
                        ``hdbscan.approximate_predict`` (k-means: nearest centre). 20,000 keeps a
                        fit at roughly 10-20 s on this CPU.
    map_sample          the 2-D map's UMAP is fitted on at most this many records (it is a
                        picture; fitting it on 20,000 took 18 s, on 5,000 about 4).
    map_method          "umap" (2-D UMAP of the reduced space; records outside the fit sample
                        at the mean position of their 5 nearest fit records), "pca" (2-D PCA of
                        the embeddings, fast) or "none" (zeros).
    """

    method: ClusterMethod = setting("hdbscan", doc="hdbscan (finds the number of clusters, outliers stay "
                                    "unclustered) or kmeans (every record in a cluster)")
    k: int | None = setting(None, doc="k-means clusters; empty: picked by cosine silhouette")
    k_range: tuple[int, int] = (5, 80)
    umap_dims: int = setting(5, doc="UMAP dimensions the clustering runs on")
    umap_neighbors: int = 15
    umap_min_dist: float = 0.0
    umap_epochs: int | None = None
    min_cluster_size: int | None = setting(None, doc="HDBSCAN's; empty: max(10, fitted records / 200)")
    min_samples: int | None = setting(None, doc="HDBSCAN's; empty: max(1, min_cluster_size // 4)")
    cluster_selection: Literal["eom", "leaf"] = "eom"
    cluster_selection_epsilon: float = setting(0.25, doc="HDBSCAN's: parts that separate at less than this "
                                               "UMAP distance stay one cluster")
    seed: int = setting(0, doc="seeds UMAP, the fit sample and k-means (same input, same clusters)")
    max_fit_sample: int = setting(20_000, doc="larger months are fitted on a seeded sample of this many "
                                  "records, the rest assigned")
    silhouette_sample: int = 3_000
    map_method: MapMethod = "umap"
    map_sample: int = 5_000

    def __post_init__(self) -> None:
        if self.method not in choices(ClusterMethod):
            raise ValueError(f"method must be one of {', '.join(choices(ClusterMethod))}, not {self.method!r}")
        if self.k is not None and self.k < 1:
            raise ValueError("k must be >= 1")
        if not self.cluster_selection_epsilon >= 0:
            raise ValueError("cluster_selection_epsilon must be >= 0")
        if self.umap_dims < 2:
            raise ValueError("umap_dims must be >= 2")
        if self.max_fit_sample < 100:
            raise ValueError("max_fit_sample must be >= 100")
        if self.map_sample < 100:
            raise ValueError("map_sample must be >= 100")
        if self.map_method not in choices(MapMethod):
            raise ValueError(f"map_method must be one of {', '.join(choices(MapMethod))}, not {self.map_method!r}")


def auto_min_cluster_size(n: int) -> int:
    """HDBSCAN min_cluster_size when not configured: ``max(10, round(n / 200))``.

    A cluster must hold 0.5% of the fitted records and at least 10: 10 in a month of 2,000, 100
    when 20,000 are fitted. Smaller groups are not dropped: they are noise ("unclustered") or join
    a neighbouring cluster. The floor of 10 was measured: with 5, a month of 1,000 queries of 25
    Banking77 intents came out as 79 clusters (each intent cut into fragments that are cut
    differently the next month, so cluster drift reported 37 "new" clusters where 3 intents were
    new); with 10 about 40 clusters, while on the long-tailed mix (1,582 queries) rare intents of
    10-20 queries still kept a majority cluster as often (5.2 vs 5.8 of 8 at 8, NMI 0.75). A
    larger floor merges the pieces of large intents but loses the rare ones: on that mix (4
    seeds, min_samples 3) 12 kept 6.75 and 15 kept 6.0 of 8 rare intents, against 7.25 at 10;
    ``ClusterConfig.cluster_selection_epsilon`` merges the pieces without that loss.
    """
    return max(10, int(round(n / 200)))


@dataclass
class ClusterResult:
    """Labels and summaries of one clustering.

    labels       (n,) int, -1 = noise (the "unclustered" stratum, kept); clusters are numbered
                 0, 1, ... by decreasing size.
    centroids    label -> unit vector: normalised mean of the members' ORIGINAL embeddings.
    sizes        label -> members (noise included under -1 when there is any).
    coords_2d    (n, 2) float32 map coordinates.
    """

    labels: np.ndarray
    centroids: dict[int, np.ndarray]
    sizes: dict[int, int]
    coords_2d: np.ndarray
    method: str
    k: int | None
    min_cluster_size: int | None
    min_samples: int | None
    criterion: str
    n_fit: int
    n_assigned: int
    map_method: str
    reduced_dims: int
    scores: dict[int, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    identical: bool = False  # every input vector was the same: one cluster, nothing was fitted

    @property
    def n(self) -> int:
        return int(len(self.labels))

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)

    @property
    def noise_share(self) -> float:
        return float(np.mean(self.labels == NOISE)) if len(self.labels) else 0.0

    def clusters(self) -> list[tuple[int, np.ndarray, int]]:
        """``(label, centroid, size)`` of each cluster (noise excluded): ``match_clusters``' current."""
        return [(label, self.centroids[label], self.sizes[label]) for label in sorted(self.centroids)]

    def params(self) -> dict[str, Any]:
        """Settings and outcome for asset metadata."""
        return {"method": self.method, "k": self.k, "min_cluster_size": self.min_cluster_size,
                "min_samples": self.min_samples, "criterion": self.criterion, "n": self.n,
                "n_fit": self.n_fit, "n_assigned": self.n_assigned, "n_clusters": self.n_clusters,
                "noise_share": round(self.noise_share, 4), "map_method": self.map_method,
                "reduced_dims": self.reduced_dims,
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()}}


# --------------------------------------------------------------------------------------------
# Clustering
# --------------------------------------------------------------------------------------------


def _normalize(arr: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return arr / norms


def _umap(n_components: int, n_neighbors: int, min_dist: float, seed: int, metric: str,
          n_epochs: int | None = None, knn: tuple[Any, Any, Any] = (None, None, None)):
    import umap

    return umap.UMAP(n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist,
                     metric=metric, random_state=seed, n_jobs=1, low_memory=True, verbose=False,
                     n_epochs=n_epochs, precomputed_knn=knn)


class _ExactIndex:
    """Exact nearest neighbours in the place of pynndescent's NN-descent index, which UMAP builds
    above 4,096 points. NN-descent is numba code compiled in every new process (about 27 of the
    35 CPU-s a UMAP warm-up took on this 2-core machine, during a refresh's day runs, where it
    took a core from the day workers: numba's disk cache does not cover it) and approximate.
    Cosine (the clustering fit on at most ``max_fit_sample`` distinct vectors and the
    ``transform`` of the rest): one float32 matrix product per block of queries and
    ``torch.topk`` (scikit-learn's brute force took 12.8 s for the 100k-record month, mostly a
    float64 clip and ``argpartition``; this took 2.8 s). Euclidean (the 2-D map of the few
    clustering dims, at most ``map_sample`` points): scikit-learn. UMAP's ``transform`` calls
    ``query`` and reads ``_angular_trees``."""

    _angular_trees = True
    BLOCK = 2048  # query rows per matrix product (2048 x 20,000 float32 = 160 MB)

    def __init__(self, data: np.ndarray, metric: str) -> None:
        self._metric = metric
        if metric == "cosine":
            self._data = _normalize(np.asarray(data, dtype=np.float32))
        else:
            from sklearn.neighbors import NearestNeighbors

            self._nn = NearestNeighbors(algorithm="brute", metric=metric).fit(data)

    def query(self, queries: np.ndarray, k: int, epsilon: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self._metric != "cosine":
            dists, idx = self._nn.kneighbors(queries, n_neighbors=k)
            return idx.astype(np.int32), np.maximum(dists, 0.0).astype(np.float32)
        import torch

        q = _normalize(np.asarray(queries, dtype=np.float32))
        k = min(k, len(self._data))
        idx = np.empty((len(q), k), dtype=np.int32)
        dists = np.empty((len(q), k), dtype=np.float32)
        for start in range(0, len(q), self.BLOCK):
            sims = torch.from_numpy(q[start:start + self.BLOCK] @ self._data.T)
            top, where = torch.topk(sims, k, dim=1, largest=True, sorted=True)
            dists[start:start + self.BLOCK] = np.maximum(1.0 - top.numpy(), 0.0)
            idx[start:start + self.BLOCK] = where.numpy()
        return idx, dists


def _fit_umap(x: np.ndarray, n_components: int, n_neighbors: int, min_dist: float, seed: int, metric: str,
              n_epochs: int | None = None):
    """A UMAP fitted on ``x`` with exact neighbours (:class:`_ExactIndex`, each point among its
    own, as in UMAP's own search); returns (reducer, embedding of ``x``)."""
    index = _ExactIndex(x, metric)
    idx, dists = index.query(x, n_neighbors)
    reducer = _umap(n_components, n_neighbors, min_dist, seed, metric, n_epochs, (idx, dists, index))
    with warnings.catch_warnings():  # "not an NNDescent object": transform still works, via query
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        embedding = reducer.fit_transform(x).astype(np.float32)
    return reducer, embedding


# Records outside the fit sample are placed (one UMAP ``transform`` call) and assigned to
# clusters (HDBSCAN's ``approximate_predict``, whose neighbour arrays took 0.95 GB for the
# 980,000 records of a 1M-record month at once) this many at a time: a month's vectors are never
# all in float32 at once, and a month of up to 120,000 records (20,000 fitted) is one call.
TRANSFORM_BATCH = 100_000
# UMAP computes all pairwise distances below this many points and runs NN-descent above.
UMAP_EXACT_BELOW = 4_096
# Rows of a cluster made float32 at once to find its centroid and the examples nearest to it.
DESCRIBE_BATCH = 25_000


def _row_index(rows: np.ndarray) -> dict[bytes, int]:
    """Each row's bytes -> its index (the last of byte-equal rows)."""
    return {row.tobytes(): i for i, row in enumerate(np.ascontiguousarray(rows))}


def _fitted_or_computed(index: dict[bytes, int], fitted_values: np.ndarray, rows: np.ndarray, compute) -> np.ndarray:
    """Values for ``rows``: a row byte-equal to a fitted row (``index``, from :func:`_row_index`)
    takes that row's value in ``fitted_values``; each other distinct row gets ``compute``'s
    value, computed once, in one call over those rows."""
    first, inverse = distinct_rows(rows)
    unique = np.ascontiguousarray(rows[first])
    hit = np.array([index.get(row.tobytes(), -1) for row in unique], dtype=np.int64)
    out = np.empty((len(unique),) + fitted_values.shape[1:], dtype=fitted_values.dtype)
    out[hit >= 0] = fitted_values[hit[hit >= 0]]
    new = np.flatnonzero(hit < 0)
    if len(new):
        out[new] = compute(unique[new])
    return out[inverse]


def _reduce(x_fit: np.ndarray, rest_batches: Iterable[np.ndarray], config: ClusterConfig):
    """UMAP (cosine) of the fit sample, transform of the rest (given as float32 unit-vector
    batches); PCA for tiny inputs. Returns (reduced fit, reduced rest or None, method).

    UMAP sees each distinct vector once: repeated texts (a month of 100,016 generated records
    holds 40,269 distinct vectors, its 20,000-record fit sample 10,996) add no information to the
    layout, and a clique of identical points at distance 0 made the spectral start and so the
    labels differ from run to run of the same input in one process (53 to 59 clusters). A
    repeated vector takes its first copy's position; a rest vector equal to a fitted one takes
    that position without a ``transform``."""
    n = len(x_fit)
    if n < 3:
        rest = [batch for batch in rest_batches if len(batch)]
        return x_fit.astype(np.float32), (np.vstack(rest).astype(np.float32) if rest else None), "none"
    first, inverse = distinct_rows(x_fit)
    distinct = x_fit[first]
    if len(distinct) >= 30 and config.umap_dims < x_fit.shape[1]:
        neighbours = min(config.umap_neighbors, len(distinct) - 1)
        if len(distinct) >= UMAP_EXACT_BELOW:  # where UMAP would take NN-descent: exact neighbours
            reducer, fit_distinct = _fit_umap(distinct, config.umap_dims, neighbours, config.umap_min_dist,
                                              config.seed, "cosine", config.umap_epochs)
        else:  # UMAP's own exact search (all pairwise distances)
            reducer = _umap(config.umap_dims, neighbours, config.umap_min_dist, config.seed, "cosine",
                            config.umap_epochs)
            fit_distinct = reducer.fit_transform(distinct).astype(np.float32)
        index = _row_index(distinct)

        def transform(batch: np.ndarray) -> np.ndarray:
            with _fast_transform_init():
                out = reducer.transform(batch).astype(np.float32)
            if not np.isfinite(out).all():
                # UMAP's transform gives NaN for some points (seen on a 100k-record month): place
                # those among their nearest fitted records in the embedding space instead
                bad = ~np.isfinite(out).all(axis=1)
                out[bad] = _place_by_neighbours(distinct, fit_distinct, batch[bad])
            return out

        def place(batch: np.ndarray) -> np.ndarray:
            return _fitted_or_computed(index, fit_distinct, batch, transform)

        placed = [place(batch) for batch in rest_batches if len(batch)]
        return fit_distinct[inverse], (np.vstack(placed) if placed else None), "umap"
    from sklearn.decomposition import PCA

    dims = max(1, min(config.umap_dims, n - 1, x_fit.shape[1]))
    pca = PCA(n_components=dims, random_state=config.seed).fit(x_fit)
    placed = [pca.transform(batch).astype(np.float32) for batch in rest_batches if len(batch)]
    return pca.transform(x_fit).astype(np.float32), (np.vstack(placed) if placed else None), "pca"


def _unit(x: np.ndarray, rows: Any = slice(None)) -> np.ndarray:
    """Float32 unit vectors of ``x[rows]`` (stored float16 vectors decoded as ``from_storage``
    does, then normalised as every input here is)."""
    from eval_pipeline.lib.embeddings.encode import unit_rows

    return _normalize(unit_rows(np.asarray(x), rows))


def _batches(x: np.ndarray, rows: np.ndarray, size: int = TRANSFORM_BATCH) -> Iterator[np.ndarray]:
    """``_unit(x, rows)`` in consecutive pieces of at most ``size`` rows."""
    for start in range(0, len(rows), size):
        yield _unit(x, rows[start:start + size])


def _choose_k(reduced: np.ndarray, original: np.ndarray, config: ClusterConfig) -> tuple[int, dict[int, float]]:
    """k-means on the reduced space for about 16 k evenly spread over ``k_range``; the k with the best mean silhouette,
    measured with cosine distance on the ORIGINAL embeddings (of up to ``silhouette_sample``
    seeded points). On the long-tailed Banking77 mix the reduced-space silhouette kept choosing
    k of 10-15 for 30 intents (UMAP packs related intents into super-clusters; NMI 0.75), the
    original-space one k of 15-45 (NMI 0.82-0.86)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(reduced)
    lo = max(2, config.k_range[0])
    hi = min(config.k_range[1], n - 1)
    if hi < lo:
        return max(1, min(lo, n)), {}
    step = max(1, math.ceil((hi - lo) / 15))
    candidates = sorted(set(range(lo, hi + 1, step)) | {hi})
    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(n, size=min(config.silhouette_sample, n), replace=False))
    scores: dict[int, float] = {}
    for k in candidates:
        labels = KMeans(n_clusters=k, n_init=3, random_state=config.seed).fit_predict(reduced)
        if len(set(labels[sample].tolist())) < 2:
            continue
        scores[k] = float(silhouette_score(original[sample], labels[sample], metric="cosine"))
    best = max(scores, key=lambda k: (round(scores[k], 6), -k)) if scores else lo
    return best, scores


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Clusters renumbered 0.. by decreasing size (ties: first occurrence); noise stays -1."""
    out = np.full(len(labels), NOISE, dtype=np.int64)
    present = [lab for lab in np.unique(labels) if lab != NOISE]
    first = {lab: int(np.argmax(labels == lab)) for lab in present}
    counts = {lab: int(np.sum(labels == lab)) for lab in present}
    order = sorted(present, key=lambda lab: (-counts[lab], first[lab]))
    for new, old in enumerate(order):
        out[labels == old] = new
    return out


def warm_up(config: ClusterConfig | None = None) -> float:
    """Compile UMAP's numba functions for this process on 4,400 random vectors; returns the
    seconds it took (about 8.5 s on this project's 2-core machine; 35 s while UMAP's fit used
    pynndescent's NN-descent, whose numba code numba's disk cache does not cover, see
    :class:`_ExactIndex`). The first UMAP of a process spends that long compiling, so a month's
    refresh runs this in a thread while the days are processed in worker processes, and the
    clustering step that follows starts compiled."""
    started = time.perf_counter()
    config = config or ClusterConfig()
    # more than UMAP_EXACT_BELOW points: the path of a large month's fit (exact index, transform)
    x = _normalize(np.random.default_rng(0).normal(size=(4_400, 16)).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer, reduced = _fit_umap(x[:4_200], config.umap_dims, 15, config.umap_min_dist, 0, "cosine", 5)
        with _fast_transform_init():
            reducer.transform(x[4_200:])
        _fit_umap(reduced, 2, 15, 0.1, 0, "euclidean", 5)
    return time.perf_counter() - started


def _graph_transform_init(graph, embedding: np.ndarray) -> np.ndarray:
    """What ``umap.umap_.init_graph_transform`` computes (umap-learn 0.5), with the same float32
    operations in the same order, but vectorised over rows: each new point at the weighted mean
    of its neighbours' positions, at a neighbour's position when a weight is exactly 1 (the
    first such), NaN when it has no neighbour. umap-learn loops over the rows in Python: on a
    100k-record month ``transform`` took 11.0 s with it, 7.1 s with this. ``test_clustering``
    checks the two give identical arrays."""
    import scipy.sparse

    csr = scipy.sparse.csr_matrix(graph)
    n, dims = csr.shape[0], embedding.shape[1]
    emb = np.asarray(embedding, dtype=np.float32)
    result = np.zeros((n, dims), dtype=np.float32)
    counts = np.diff(csr.indptr)
    data = csr.data.astype(np.float32, copy=False)
    for length in np.unique(counts[counts > 0]):
        rows = np.flatnonzero(counts == length)
        at = csr.indptr[rows][:, None] + np.arange(length)  # (rows, length) positions in data
        values, cols = data[at], csr.indices[at]
        # numpy sums each row as umap-learn's ``graph_row.sum()`` sums one row's data
        weights = values / values.sum(axis=1, dtype=np.float32)[:, None]
        for j in range(length):
            result[rows] += weights[:, j, None] * emb[cols[:, j]]
        ones = values == 1
        hit = ones.any(axis=1)
        if hit.any():
            result[rows[hit]] = emb[cols[hit, ones[hit].argmax(axis=1)]]
    result[counts == 0] = np.nan
    return result


@contextmanager
def _fast_transform_init():
    """UMAP's ``transform`` with :func:`_graph_transform_init` in place of its Python loop."""
    import umap.umap_ as umap_module

    original = umap_module.init_graph_transform
    umap_module.init_graph_transform = _graph_transform_init
    try:
        yield
    finally:
        umap_module.init_graph_transform = original


def cluster_embeddings(vectors: np.ndarray, config: ClusterConfig | None = None) -> ClusterResult:
    """Cluster unit vectors (one per record) of a month.

    1. If there are more than ``config.max_fit_sample`` vectors, a seeded random sample of that
       many is the fit set; the others are "assigned" at the end.
    2. UMAP (cosine, ``umap_dims`` dims, seeded, single-threaded; see ``ClusterConfig.seed``) of the
       fit set's distinct vectors (repeats take their first copy's place); fewer than 30 distinct
       points use PCA instead.
    3. HDBSCAN (``prediction_data`` when there is a rest to place, then
       ``hdbscan.approximate_predict``) or k-means (k given, or best silhouette over ``k_range``).
    4. Centroids are normalised means of the members' original vectors; the 2-D map is a 2-D
       UMAP of the reduced space (PCA when asked or when UMAP is not possible).

    ``vectors`` may be the stored float16 form (:func:`embeddings.month_vectors`): they are
    turned into float32 unit vectors ``TRANSFORM_BATCH`` rows at a time, never all at once.
    """
    config = config or ClusterConfig()
    timings: dict[str, float] = {}
    x = np.asarray(vectors)
    if x.dtype not in (np.float16, np.float32):
        x = x.astype(np.float32)
    if x.ndim != 2:
        raise ValueError("vectors must be a 2-D array")
    n = len(x)
    if n == 0:
        return ClusterResult(np.zeros(0, dtype=np.int64), {}, {}, np.zeros((0, 2), np.float32),
                             config.method, config.k, None, None, "empty input", 0, 0, "none", 0)
    first = _unit(x, slice(0, 1))
    first16 = first.astype(np.float16)
    if all((batch.astype(np.float16) == first16).all() for batch in _batches(x, np.arange(n))):
        # Every record says the same thing: one cluster, nothing for UMAP or HDBSCAN to separate.
        centroid = {0: first[0].astype(np.float32)}
        return ClusterResult(np.zeros(n, dtype=np.int64), centroid, {0: n}, np.zeros((n, 2), np.float32),
                             config.method, None, None, None, f"all {n} records identical: one cluster",
                             n, 0, "none", 0, identical=True)

    rng = np.random.default_rng(config.seed)
    if n > config.max_fit_sample:
        fit_idx = np.sort(rng.choice(n, size=config.max_fit_sample, replace=False))
        rest_mask = np.ones(n, dtype=bool)
        rest_mask[fit_idx] = False
        rest_idx = np.flatnonzero(rest_mask)
    else:
        fit_idx = np.arange(n)
        rest_idx = np.zeros(0, dtype=np.int64)
    n_fit = len(fit_idx)

    with warnings.catch_warnings():
        # UMAP: "n_jobs value 1 overridden to 1 by setting random_state", spectral-init
        # fallbacks; sklearn / hdbscan deprecation chatter.
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        x_fit = _unit(x, fit_idx)
        reduced_fit, reduced_rest, how = _reduce(x_fit, _batches(x, rest_idx), config)
        timings["reduce"] = time.perf_counter() - started

        started = time.perf_counter()
        labels = np.full(n, NOISE, dtype=np.int64)
        k_used = mcs = ms = None
        scores: dict[int, float] = {}
        if config.method == "kmeans":
            from sklearn.cluster import KMeans

            if config.k is not None:
                k_used = min(config.k, n_fit)
                criterion = f"k={k_used} given"
            else:
                k_used, scores = _choose_k(reduced_fit, x_fit, config)
                criterion = (f"k={k_used}: best cosine silhouette on the embeddings (k-means on the "
                             f"{how} space) over k in [{min(scores, default=k_used)}, "
                             f"{max(scores, default=k_used)}]"
                             + (f" = {scores[k_used]:.3f}" if k_used in scores else ""))
            km = KMeans(n_clusters=k_used, n_init=4, random_state=config.seed).fit(reduced_fit)
            labels[fit_idx] = km.labels_
            if len(rest_idx):
                labels[rest_idx] = _assign_rest(reduced_fit, km.labels_, reduced_rest, km.predict)
        else:
            import hdbscan

            mcs = config.min_cluster_size or auto_min_cluster_size(n_fit)
            ms = config.min_samples or max(1, mcs // 4)
            mcs_eff = max(2, min(mcs, n_fit))
            criterion = (f"HDBSCAN min_cluster_size={mcs}"
                         + (" (auto: max(10, n_fit/200))" if config.min_cluster_size is None else "")
                         + f", min_samples={ms}, selection={config.cluster_selection}"
                         + (f", epsilon={config.cluster_selection_epsilon:g}"
                            if config.cluster_selection_epsilon else ""))
            if n_fit < max(2 * mcs_eff, 3):
                criterion += f"; only {n_fit} records: all unclustered"
            else:
                clusterer = _fit_hdbscan(reduced_fit, mcs_eff, ms, config, predict=bool(len(rest_idx)))
                labels[fit_idx] = clusterer.labels_
                if len(rest_idx):
                    labels[rest_idx] = _assign_rest(reduced_fit, labels[fit_idx], reduced_rest,
                                                    lambda points: hdbscan.approximate_predict(clusterer, points)[0])
        timings["cluster"] = time.perf_counter() - started
        if len(rest_idx):
            criterion += f"; fitted on a seeded sample of {n_fit} of {n}, the rest assigned"

        started = time.perf_counter()
        coords, map_how = _map_2d(x, reduced_fit, reduced_rest, fit_idx, rest_idx, config)
        timings["map"] = time.perf_counter() - started

    labels = _relabel_by_size(labels)
    centroids: dict[int, np.ndarray] = {}
    sizes: dict[int, int] = {}
    for label in np.unique(labels):
        members = labels == label
        sizes[int(label)] = int(members.sum())
        if label != NOISE:
            centroids[int(label)] = _normalize(_unit(x, members).mean(axis=0, keepdims=True))[0].astype(np.float32)
    return ClusterResult(labels=labels, centroids=centroids, sizes=sizes, coords_2d=coords,
                         method=config.method, k=k_used, min_cluster_size=mcs, min_samples=ms,
                         criterion=criterion, n_fit=n_fit, n_assigned=int(len(rest_idx)),
                         map_method=map_how, reduced_dims=int(reduced_fit.shape[1]),
                         scores=scores, seconds=timings)


def _fit_hdbscan(reduced: np.ndarray, min_cluster_size: int, min_samples: int, config: ClusterConfig,
                 predict: bool) -> Any:
    """HDBSCAN fitted on the reduced fit set (``labels_`` are the fit's labels), with
    ``prediction_data`` when the rest of the month is to be assigned by ``approximate_predict``.

    With a ``cluster_selection_epsilon`` and a rest to assign, the fit goes through hdbscan's
    ``flat.HDBSCAN_flat``: plain ``HDBSCAN`` builds its prediction data from the clusters it
    would select without the epsilon, so ``approximate_predict`` places points among clusters
    the fit does not have (given back the long-tailed mix's own fitted points, it returned their
    label for 68% of them at epsilon 0.3); ``HDBSCAN_flat`` rebuilds the prediction data for the
    epsilon's clusters (100% there, and on the 20,000 points fitted of the 100k demo month). Its
    labels are a plain fit's with the epsilon, and it cost 0.07 s more on that fit."""
    import hdbscan

    params = dict(min_cluster_size=min_cluster_size, min_samples=min_samples,
                  cluster_selection_method=config.cluster_selection, core_dist_n_jobs=1)
    if predict and config.cluster_selection_epsilon > 0:
        from hdbscan.flat import HDBSCAN_flat

        return HDBSCAN_flat(reduced, cluster_selection_epsilon=float(config.cluster_selection_epsilon), **params)
    return hdbscan.HDBSCAN(cluster_selection_epsilon=float(config.cluster_selection_epsilon),
                           prediction_data=predict, **params).fit(reduced)


def _assign_rest(reduced_fit: np.ndarray, fit_labels: np.ndarray, reduced_rest: np.ndarray, predict) -> np.ndarray:
    """Labels of the records outside the fit sample: a point at the very place of a fitted one
    (a repeated text) takes its label, each other distinct point is given ``predict``'s label
    (HDBSCAN's ``approximate_predict``, whose neighbour arrays took 0.95 GB for 980,000 points
    at once: ``TRANSFORM_BATCH`` points a call; it can label a copy of a fitted point otherwise)."""

    def predict_in_batches(points: np.ndarray) -> np.ndarray:
        return np.concatenate([predict(points[start:start + TRANSFORM_BATCH])
                               for start in range(0, len(points), TRANSFORM_BATCH)])

    return _fitted_or_computed(_row_index(reduced_fit), np.asarray(fit_labels, dtype=np.int64),
                               reduced_rest, predict_in_batches)


def _place_by_neighbours(space_fit: np.ndarray, map_fit: np.ndarray, space_rest: np.ndarray, k: int = 5) -> np.ndarray:
    """Positions of records outside a fitted sample: the mean position (in ``map_fit``'s space)
    of their ``k`` nearest fitted records in ``space_fit`` (where UMAP's own ``transform``
    starts before it optimises). For the 2-D map of 80,000 records this takes about a second
    where ``transform`` took about 20 (2-core CPU)."""
    from sklearn.neighbors import NearestNeighbors

    k = max(1, min(k, len(space_fit)))
    _, idx = NearestNeighbors(n_neighbors=k).fit(space_fit).kneighbors(space_rest)
    return map_fit[idx].mean(axis=1).astype(np.float32)


def _map_2d(x, reduced_fit, reduced_rest, fit_idx, rest_idx, config: ClusterConfig):
    n = len(x)
    coords = np.zeros((n, 2), dtype=np.float32)
    if config.map_method == "none" or n < 3:
        return coords, "none"
    if config.map_method == "umap" and len(fit_idx) >= 30:
        order = np.concatenate([fit_idx, rest_idx]) if len(rest_idx) else fit_idx
        space = np.vstack([reduced_fit, reduced_rest]) if len(rest_idx) else reduced_fit
        try:
            if space.shape[1] == 2:
                coords[order] = space
                return coords, "umap"
            # a 2-D UMAP of the clustering space, fitted on at most map_sample records; the
            # others placed among their nearest fitted neighbours
            m = min(len(space), config.map_sample)
            pick = np.sort(np.random.default_rng(config.seed).choice(len(space), size=m, replace=False))
            placed = np.zeros((len(space), 2), dtype=np.float32)
            first, inverse = distinct_rows(space[pick])  # each distinct point once, as in _reduce
            if len(first) < 3:
                raise ValueError("too few distinct points for a 2-D UMAP")
            placed[pick] = _fit_umap(space[pick][first], 2, min(config.umap_neighbors, len(first) - 1), 0.1,
                                     config.seed, "euclidean")[1][inverse]
            others = np.setdiff1d(np.arange(len(space)), pick)
            if len(others):
                placed[others] = _place_by_neighbours(space[pick], placed[pick], space[others])
            coords[order] = placed
            return coords, "umap"
        except Exception:  # noqa: BLE001 - a map is a picture: fall back to PCA
            pass
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=config.seed).fit(_unit(x, fit_idx))
    return np.vstack([pca.transform(batch) for batch in _batches(x, np.arange(n))]).astype(np.float32), "pca"


def map_records(x: np.ndarray, config: ClusterConfig) -> tuple[np.ndarray, str]:
    """2-D map coordinates of every record straight from the embeddings (for a month assigned to
    last month's clusters, which has no reduced space of its own): a 2-D cosine UMAP of at most
    ``map_sample`` seeded records (each distinct vector once), the others at the mean position
    of their 5 nearest mapped records, ``TRANSFORM_BATCH`` at a time; PCA when asked or when
    there are too few distinct records."""
    n = len(x)
    coords = np.zeros((n, 2), dtype=np.float32)
    if config.map_method == "none" or n < 3:
        return coords, "none"
    pick = (np.sort(np.random.default_rng(config.seed).choice(n, size=config.map_sample, replace=False))
            if n > config.map_sample else np.arange(n))
    fit = _unit(x, pick)
    first, inverse = distinct_rows(fit)
    if config.map_method == "umap" and len(first) >= 30:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            coords[pick] = _fit_umap(fit[first], 2, min(config.umap_neighbors, len(first) - 1), 0.1, config.seed,
                                     "cosine")[1][inverse]
        rest = np.setdiff1d(np.arange(n), pick)
        for start in range(0, len(rest), TRANSFORM_BATCH):
            part = rest[start:start + TRANSFORM_BATCH]
            coords[part] = _place_by_neighbours(fit, coords[pick], _unit(x, part))
        return coords, "umap"
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=config.seed).fit(fit)
    return np.vstack([pca.transform(batch) for batch in _batches(x, np.arange(n))]).astype(np.float32), "pca"


# --------------------------------------------------------------------------------------------
# Describing clusters
# --------------------------------------------------------------------------------------------


def _column(rows: Any, name: str, n: int) -> list[Any]:
    """One column of a polars/pandas frame or a list of dicts (None where absent)."""
    columns = getattr(rows, "columns", None)
    if columns is not None:
        if name not in list(columns):
            return [None] * n
        col = rows[name]
        to_list = getattr(col, "to_list", None) or getattr(col, "tolist")
        return list(to_list())
    return [r.get(name) if isinstance(r, Mapping) else getattr(r, name, None) for r in rows]


def _iter_rows(rows: Any) -> Iterable[Mapping[str, Any]]:
    if hasattr(rows, "iter_rows"):  # polars
        return rows.iter_rows(named=True)
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # pandas
        return rows.to_dict("records")
    return rows


def _len(rows: Any) -> int:
    height = getattr(rows, "height", None)
    return int(height) if height is not None else len(rows)


# What is left of English contractions once the apostrophe splits them: not in sklearn's list.
_CONTRACTION_STEMS = frozenset(
    "aren couldn didn doesn don hadn hasn haven isn ll mustn needn re shan shouldn ve wasn weren won "
    "wouldn im ive id youre youve theyre".split()
)


def _stem(word: str) -> str:
    """A crude suffix-stripping key so inflections count as one term: arrive / arrived / arrival
    / arriving -> "arriv", rate / rates -> "rat", topped -> "top". Only a grouping key; the
    keyword shown is the group's most frequent spelling in the cluster."""
    w = word
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix, minimum in (("ing", 6), ("ed", 5), ("al", 7)):
        if len(w) >= minimum and w.endswith(suffix):
            w = w[: -len(suffix)]
            if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
                w = w[:-1]
            break
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def class_tfidf_keywords(texts: Sequence[str], labels: Sequence[int], top_n: int = 8,
                         extra_stop_words: Iterable[str] = ()) -> dict[int, list[tuple[str, float]]]:
    """Top terms per class by class-based TF-IDF (BERTopic's c-TF-IDF, Grootendorst 2022,
    arXiv:2203.05794): all texts of a class form one document; the weight of term t in class c is
    tf(t, c) x log(1 + A / f(t)), where tf is the term's count in c divided by the class's word
    count, A the average number of words per class and f(t) the term's count over all classes.
    Words come from scikit-learn's CountVectorizer with English stop words; inflections of one
    word are counted as one term (:func:`_stem`), shown in their most frequent spelling.
    """
    from scipy import sparse
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    labels = np.asarray(labels)
    classes = sorted(set(labels.tolist()))
    docs = [" ".join(t for t, lab in zip(texts, labels) if lab == c) for c in classes]
    stop = sorted(set(ENGLISH_STOP_WORDS) | _CONTRACTION_STEMS | {w.lower() for w in extra_stop_words})
    # words of 2+ characters that start with a letter (no bare numbers or ids); an apostrophe
    # splits ("haven't" -> "haven", a stop word here)
    vectorizer = CountVectorizer(stop_words=stop, token_pattern=r"(?u)\b[^\W\d_][^\W_]+\b")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "stop_words may be inconsistent with your preprocessing"
            surface = vectorizer.fit_transform(docs).tocsc().astype(np.float64)
    except ValueError:  # empty vocabulary (only stop words or no text)
        return {c: [] for c in classes}
    terms = vectorizer.get_feature_names_out()
    keys = [_stem(t) for t in terms]
    key_index = {k: i for i, k in enumerate(sorted(set(keys)))}
    group = sparse.csr_matrix((np.ones(len(terms)), ([key_index[k] for k in keys], np.arange(len(terms)))),
                              shape=(len(key_index), len(terms)))
    counts = np.asarray((surface @ group.T).todense())  # classes x stems
    words_per_class = counts.sum(axis=1, keepdims=True)
    tf = counts / np.where(words_per_class == 0, 1.0, words_per_class)
    avg_words = max(float(words_per_class.mean()), 1e-12)
    freq = counts.sum(axis=0)
    idf = np.log(1.0 + avg_words / np.where(freq == 0, 1.0, freq))
    weights = tf * idf
    surface = surface.toarray()
    total = surface.sum(axis=0)
    members: dict[int, list[int]] = {}
    for t, k in enumerate(keys):
        members.setdefault(key_index[k], []).append(t)
    stems = sorted(key_index, key=key_index.get)
    out: dict[int, list[tuple[str, float]]] = {}
    for row, c in enumerate(classes):
        order = np.lexsort((stems, -weights[row]))  # by weight, ties alphabetical
        best = []
        for j in order[:top_n]:
            if weights[row, j] <= 0:
                break
            spelling = max(members[j], key=lambda t: (surface[row, t], total[t], -len(terms[t])))
            best.append((str(terms[spelling]), float(weights[row, j])))
        out[int(c)] = best
    return out


def describe_clusters(
    rows: Any,
    labels: Sequence[int],
    vectors: np.ndarray,
    *,
    texts: Sequence[str] | None = None,
    ids: Mapping[int, str] | None = None,
    n_keywords: int = 8,
    n_examples: int = 5,
    example_chars: int = 200,
) -> list[dict[str, Any]]:
    """One dict per cluster, largest first, the noise stratum ("unclustered") last.

    ``rows``: a polars or pandas frame or a list of dicts, aligned with ``labels`` and ``vectors``
    (redacted records: ``request_id``, ``messages``/``user_input``, ``turn_index``, ``thumbs``,
    the boolean signals, ``task_type``, ``user_segment``; missing columns count as absent).
    ``texts``: the texts that were embedded (default: :func:`embedding_text` of each row).
    ``ids``: label -> stable cluster id (from :func:`match_clusters`); default ``"k<label>"``.

    Keys: ``label``, ``cluster_id``, ``name`` (top 3 keywords, or "unclustered"), ``size``,
    ``share``, ``keywords``, ``examples`` (the ``n_examples`` distinct texts nearest the
    centroid, cut to ``example_chars``), ``example_request_ids``, ``<signal>_rate`` for each of
    ``FAILURE_SIGNALS`` (share of the cluster's records with the signal; ``thumbs_down`` is
    thumbs == "down", unrated counts as not down), ``failure_rate`` (any of them),
    ``task_types`` and ``user_segments`` ({value: count}, most common first; None as "(none)").
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if _len(rows) != n or len(vectors) != n:
        raise ValueError(f"rows ({_len(rows)}), labels ({n}) and vectors ({len(vectors)}) differ in length")
    if n == 0:
        return []
    if texts is None:
        from eval_pipeline.lib.embeddings.encode import embedding_text

        texts = [embedding_text(r) for r in _iter_rows(rows)]
    texts = ["" if t is None else str(t) for t in texts]
    request_ids = _column(rows, "request_id", n)
    thumbs = _column(rows, "thumbs", n)
    signals = {"thumbs_down": np.array([t == "down" for t in thumbs], dtype=bool)}
    for name in FAILURE_SIGNALS:
        if name != "thumbs_down":
            signals[name] = np.array([bool(v) for v in _column(rows, name, n)], dtype=bool)
    any_failure = np.logical_or.reduce(list(signals.values()))
    task_types = _column(rows, "task_type", n)
    segments = _column(rows, "user_segment", n)

    keywords = class_tfidf_keywords(texts, labels, top_n=n_keywords)
    present = sorted(set(labels.tolist()), key=lambda lab: (lab == NOISE, -int(np.sum(labels == lab)), lab))
    table = []
    for label in present:
        members = np.flatnonzero(labels == label)
        # a cluster's vectors in float32 TRANSFORM_BATCH rows at a time (the 'unclustered' group
        # of a 1M-record month is 1.5 GB of them at once): the centroid, then each one's cosine to it
        total = np.zeros(vectors.shape[1], dtype=np.float64)
        for part in _batches(vectors, members, DESCRIBE_BATCH):
            total += part.sum(axis=0, dtype=np.float64)
        centroid = _normalize((total / len(members)).astype(np.float32)[None, :])[0]
        closeness = np.concatenate([part @ centroid for part in _batches(vectors, members, DESCRIBE_BATCH)])
        order = members[np.argsort(-closeness, kind="stable")]
        examples, example_ids, seen = [], [], set()
        for i in order:
            key = texts[i].strip().lower()
            if key in seen:
                continue
            seen.add(key)
            text = texts[i]
            examples.append(text if len(text) <= example_chars else text[: example_chars - 1] + "…")
            example_ids.append(request_ids[i])
            if len(examples) >= n_examples:
                break
        words = [w for w, _ in keywords.get(int(label), [])]
        entry: dict[str, Any] = {
            "label": int(label),
            "cluster_id": (ids or {}).get(int(label), UNCLUSTERED if label == NOISE else f"k{label}"),
            "name": UNCLUSTERED if label == NOISE else (" / ".join(words[:3]) or f"cluster {label}"),
            "size": int(len(members)),
            "share": float(len(members) / n),
            "keywords": words,
            "examples": examples,
            "example_request_ids": example_ids,
        }
        for name, flags in signals.items():
            entry[f"{name}_rate"] = float(flags[members].mean())
        entry["failure_rate"] = float(any_failure[members].mean())
        entry["task_types"] = _counts(task_types[i] for i in members)
        entry["user_segments"] = _counts(segments[i] for i in members)
        table.append(entry)
    return table


def _counts(values: Iterable[Any]) -> dict[str, int]:
    counter = Counter("(none)" if v is None else str(v) for v in values)
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def cluster_table_markdown(table: Sequence[Mapping[str, Any]], max_rows: int = 40) -> str:
    """The cluster table as markdown for Dagster metadata (one line per cluster)."""
    import polars as pl

    from eval_pipeline.lib.storage.tables import markdown_table

    def pct(v: float) -> str:
        return f"{100 * v:.1f}%"

    lines = []
    for entry in list(table)[:max_rows]:
        signal_bits = [f"{name.replace('_', ' ')} {pct(entry[f'{name}_rate'])}"
                       for name in FAILURE_SIGNALS if entry.get(f"{name}_rate", 0) > 0]
        lines.append({
            "cluster": entry["cluster_id"],
            "size": entry["size"],
            "share": pct(entry["share"]),
            "keywords": ", ".join(entry["keywords"][:6]),
            "failure": pct(entry["failure_rate"]),
            "signals": "; ".join(signal_bits) or "-",
            "task types": ", ".join(f"{k} {v}" for k, v in list(entry["task_types"].items())[:3]),
            "example": entry["examples"][0] if entry["examples"] else "",
        })
    text = markdown_table(pl.DataFrame(lines), max_cell=90) if lines else "(no clusters)"
    if len(table) > max_rows:
        text += f"\n\n({len(table) - max_rows} more clusters not shown)"
    return text


def plot_cluster_map(
    coords_2d: np.ndarray,
    labels: Sequence[int],
    path: Any = None,
    *,
    names: Mapping[int, str] | None = None,
    max_names: int = 12,
    title: str | None = None,
) -> bytes:
    """The 2-D map as PNG bytes (also written to ``path`` when given).

    Clusters are coloured (tab20, cycling), noise is small grey points, and the ``max_names``
    largest clusters are labelled at their median position with ``names[label]`` (e.g. the top
    keyword from :func:`describe_clusters`) or their label number. Uses matplotlib's Agg canvas
    directly (no pyplot state, no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    coords = np.asarray(coords_2d, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(labels, dtype=np.int64)
    fig = Figure(figsize=(9, 7), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    noise = labels == NOISE
    size = 6 if len(labels) < 5000 else 2
    if noise.any():
        ax.scatter(coords[noise, 0], coords[noise, 1], s=size * 0.6, c="#bbbbbb", alpha=0.5,
                   linewidths=0, label=f"{UNCLUSTERED} ({int(noise.sum())})")
    from matplotlib import colormaps

    palette = colormaps["tab20"]
    present = [lab for lab in np.unique(labels) if lab != NOISE]
    for lab in present:
        members = labels == lab
        ax.scatter(coords[members, 0], coords[members, 1], s=size, color=palette(int(lab) % 20),
                   alpha=0.8, linewidths=0)
    by_size = sorted(present, key=lambda lab: -int(np.sum(labels == lab)))[:max_names]
    for lab in by_size:
        members = labels == lab
        cx, cy = np.median(coords[members, 0]), np.median(coords[members, 1])
        text = (names or {}).get(int(lab), str(lab))
        ax.annotate(text, (cx, cy), fontsize=8, ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": palette(int(lab) % 20), "alpha": 0.85})
    ax.set_title(title or f"{len(present)} clusters, {int(noise.sum())} unclustered of {len(labels)}")
    ax.set_xticks([])
    ax.set_yticks([])
    if noise.any():
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    png = buffer.getvalue()
    if path is not None:
        with open(path, "wb") as handle:
            handle.write(png)
    return png


# --------------------------------------------------------------------------------------------
# Identity over time
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftRow:
    """One cluster's fate between two months.

    status      "continuing" (matched to last month's cluster: keeps its id), "new" or "gone".
    trend       for continuing clusters: "grown" when its traffic share rose by the growth
                factor or more (current >= growth x previous), "shrunk" when it fell by it
                (current <= previous / growth), else "stable"; "new"/"gone" otherwise.
    local_label this month's label (None when gone); similarity: centroid cosine of the match.
    note        possible split (a new cluster close to a matched previous one) or merge (a gone
                cluster close to a matched current one), else "".
    """

    cluster_id: str
    status: str
    trend: str
    local_label: int | None
    similarity: float | None
    previous_size: int
    current_size: int
    previous_share: float
    current_share: float
    share_ratio: float | None
    note: str = ""
    nearest_id: str | None = None  # the closest cluster on the other side (new: last month's; gone: this month's)
    nearest_similarity: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_ID_RE = re.compile(r"^c(\d+)$")


def _unpack(items: Iterable[Any]) -> list[tuple[Any, np.ndarray, int]]:
    out = []
    for item in items:
        if isinstance(item, Mapping):
            key = item.get("cluster_id", item.get("label"))
            out.append((key, np.asarray(item["centroid"], dtype=np.float64), int(item["size"])))
        else:
            key, centroid, size = item
            out.append((key, np.asarray(centroid, dtype=np.float64), int(size)))
    return out


def format_cluster_id(number: int) -> str:
    """``c0001`` style ids (more digits once past 9999)."""
    return f"c{number:04d}"


def match_clusters(
    previous: Iterable[Any],
    current: Iterable[Any],
    threshold: float = DRIFT_THRESHOLD,
    growth: float = DEFAULT_GROWTH,
    *,
    related: float = 0.8,
    known_ids: Iterable[str] = (),
    previous_total: int | None = None,
    current_total: int | None = None,
) -> list[DriftRow]:
    """Match this month's clusters to last month's and give every cluster a stable id.

    ``previous``: ``(cluster_id, centroid, size)`` of last month's clusters; ``current``:
    ``(local_label, centroid, size)`` of this month's (``ClusterResult.clusters()``); dicts with
    those keys work too. Centroids are unit vectors in the embedding space.

    * One-to-one matching by centroid cosine similarity: Hungarian assignment
      (``scipy.optimize.linear_sum_assignment``) maximising the summed similarity; an assigned
      pair below ``threshold`` is rejected (both sides unmatched).
    * Matched: "continuing", the previous id kept; trend grown/shrunk/stable by the share rule
      (see :class:`DriftRow`) with ``growth`` = :data:`DEFAULT_GROWTH` (1.5) by default.
    * Unmatched current: "new", with a fresh id ``c<number>`` numbered on from the largest number
      among the previous ids and ``known_ids`` - pass every id ever issued as ``known_ids`` so an
      id that disappeared months ago is never reused. Fresh ids go to the new clusters in order of
      decreasing size.
    * Unmatched previous: "gone".
    * Notes: a new cluster within ``threshold`` of a previous cluster that continues elsewhere is
      a "possible split from" it, a gone cluster within ``threshold`` of a current cluster that
      continues another is a "possible merge into" it; otherwise the nearest cluster on the other
      side is named when its cosine is at least ``related``.
    * Default threshold :data:`DRIFT_THRESHOLD` (0.9), measured on Banking77 (all-MiniLM-L6-v2): centroids of two disjoint
      halves of one intent have cosine 0.965-0.996; the closest centroid of a different intent
      0.39-0.90 (median 0.80). HDBSCAN splits large intents into several clusters whose split
      differs month to month, so some "new"/"gone" rows are re-cut fragments of one intent: the
      note then names the nearest cluster.
    * Shares: size / total, with totals ``previous_total``/``current_total`` (the month's record
      count, noise included) or by default the sum of the given sizes.

    Rows: continuing and new clusters in this month's label order, then the gone ones.
    """
    from scipy.optimize import linear_sum_assignment

    prev = _unpack(previous)
    cur = _unpack(current)
    if not 0 < growth:
        raise ValueError("growth must be > 0")
    prev_total = previous_total or sum(s for _, _, s in prev) or 1
    cur_total = current_total or sum(s for _, _, s in cur) or 1

    sims = np.zeros((len(prev), len(cur)))
    if prev and cur:
        a = _normalize(np.stack([c for _, c, _ in prev]))
        b = _normalize(np.stack([c for _, c, _ in cur]))
        sims = a @ b.T
    matched_prev: dict[int, int] = {}
    matched_cur: dict[int, int] = {}
    if prev and cur:
        rows, cols = linear_sum_assignment(-sims)
        for i, j in zip(rows, cols):
            if sims[i, j] >= threshold:
                matched_prev[i] = j
                matched_cur[j] = i

    numbers = [int(m.group(1)) for m in (_ID_RE.match(str(k)) for k in [p[0] for p in prev] + list(known_ids)) if m]
    next_number = max(numbers, default=0) + 1
    new_ids: dict[int, str] = {}
    for j in sorted((j for j in range(len(cur)) if j not in matched_cur), key=lambda j: (-cur[j][2], j)):
        new_ids[j] = format_cluster_id(next_number)
        next_number += 1

    def share(size: int, total: int) -> float:
        return size / total if total else 0.0

    current_ids = {j: (str(prev[matched_cur[j]][0]) if j in matched_cur else new_ids[j]) for j in range(len(cur))}
    out: list[DriftRow] = []
    order = sorted(range(len(cur)), key=lambda j: (str(type(cur[j][0])), cur[j][0]))
    for j in order:
        label, _, size = cur[j]
        cshare = share(size, cur_total)
        if j in matched_cur:
            i = matched_cur[j]
            pid, _, psize = prev[i]
            pshare = share(psize, prev_total)
            # sizes x totals, not shares: 150/1000 over 100/1000 is exactly 1.5
            ratio = (size * prev_total) / (psize * cur_total) if psize else math.inf
            trend = ("grown" if ratio >= growth * (1 - 1e-12) else
                     "shrunk" if ratio <= (1 / growth) * (1 + 1e-12) else "stable")
            out.append(DriftRow(str(pid), "continuing", trend, _as_label(label), float(sims[i, j]),
                                psize, size, pshare, cshare, ratio))
        else:
            note = ""
            if prev:
                i = int(np.argmax(sims[:, j]))
                if sims[i, j] >= threshold and i in matched_prev:
                    note = f"possible split from {prev[i][0]} (cosine {sims[i, j]:.2f})"
                elif sims[i, j] >= related:
                    note = f"nearest previous {prev[i][0]} (cosine {sims[i, j]:.2f})"
            nearest = (str(prev[i][0]), float(sims[i, j])) if prev else (None, None)
            out.append(DriftRow(new_ids[j], "new", "new", _as_label(label), None, 0, size, 0.0, cshare, None, note,
                                *nearest))
    for i, (pid, _, psize) in enumerate(prev):
        if i in matched_prev:
            continue
        note = ""
        if cur:
            j = int(np.argmax(sims[i]))
            if sims[i, j] >= threshold and j in matched_cur:
                note = f"possible merge into {current_ids[j]} (cosine {sims[i, j]:.2f})"
            elif sims[i, j] >= related:
                note = f"nearest current {current_ids[j]} (cosine {sims[i, j]:.2f})"
        nearest = (current_ids[j], float(sims[i, j])) if cur else (None, None)
        out.append(DriftRow(str(pid), "gone", "gone", None, None, psize, 0, share(psize, prev_total), 0.0, 0.0, note,
                            *nearest))
    return out


def _as_label(label: Any) -> Any:
    try:
        return int(label)
    except (TypeError, ValueError):
        return label


def drift_id_map(rows: Iterable[DriftRow]) -> dict[int, str]:
    """This month's label -> stable cluster id, from :func:`match_clusters` rows."""
    return {r.local_label: r.cluster_id for r in rows if r.local_label is not None}


# --------------------------------------------------------------------------------------------
# A month, end to end (what the log_clusters asset calls)
# --------------------------------------------------------------------------------------------


@dataclass
class MonthClusters:
    """Everything ``log_clusters``, ``cluster_table`` and ``cluster_drift`` hold for one month.

    assignments  columns, one value per record: request_id, timestamp, cluster_id, map_x, map_y
    table        :func:`describe_clusters` entries with stable ``cluster_id``, ``status`` and
                 ``centroid`` (None for the unclustered stratum)
    drift        :class:`DriftRow` of every cluster of this month and every gone one
    messages     what a person should know (empty month, too few records, all identical...)
    mode         "initial" (no previous month), "assigned" (to the previous month's clusters,
                 see ``lib/clustering/identity.py``) or "refit" (clustered afresh and matched one-to-one)
    mode_reason  why that mode
    continuing_share  share of this month's records in continuing clusters
    novel_share  share of the sampled records the novelty test found novel (None: not assigned)
    """

    result: ClusterResult
    assignments: dict[str, Any]
    table: list[dict[str, Any]]
    drift: list[DriftRow]
    messages: list[str]
    png: bytes | None = None
    mode: str = "initial"
    mode_reason: str = ""
    continuing_share: float = 0.0
    novel_share: float | None = None


def cluster_month(
    rows: Any,
    vectors: np.ndarray,
    config: ClusterConfig,
    *,
    previous: Sequence[tuple[str, np.ndarray, int]] = (),
    previous_total: int = 0,
    known_ids: Iterable[str] = (),
    reference: "Reference | None" = None,
    rules: "IdentityRules | None" = None,
    growth: float = DEFAULT_GROWTH,
    title: str = "",
) -> MonthClusters:
    """Cluster one month's records, give the clusters stable ids and describe them.

    ``rows`` are the month's embedded records (``request_id``, ``timestamp``, ``embed_text``,
    the quality signals, ``task_type``, ``user_segment``) aligned with ``vectors``: a polars or
    pandas frame (read column by column, never turned into one dict per record) or a list of
    dicts. ``previous`` holds last month's clusters as ``(cluster_id, centroid, size)`` with
    ``previous_total`` its record count; ``known_ids`` every id issued before, so none is reused;
    ``reference`` a sample of last month's records (``identity.Reference``) for the novelty test;
    ``rules`` the ``identity.IdentityRules``.

    With a previous month the records are first assigned to its clusters and only the novel
    residual is clustered (``identity.assign_to_known``); the month is clustered afresh and
    matched one-to-one (:func:`match_clusters`, ``rules.match_cosine``) when there is no
    previous month, when ``rules.refit`` asks for it, or when the novel share passes
    ``rules.refit_share``.
    """
    from eval_pipeline.lib.clustering.identity import IdentityRules, assign_to_known

    rules = rules or IdentityRules()
    known_ids = list(known_ids)
    n = _len(rows)
    x = np.asarray(vectors).reshape(n, -1) if n else np.zeros((0, 1), np.float32)
    messages: list[str] = []
    assigned = None
    mode, reason = "initial", "no clusters in the previous month: clustered afresh"
    if previous and n:
        if rules.refit:
            mode, reason = "refit", "a refit was asked for: clustered afresh and matched one-to-one"
        else:
            assigned = assign_to_known(x, previous, previous_total, config, rules, reference=reference,
                                       known_ids=known_ids, growth=growth)
            if assigned is None:
                mode, reason = "refit", (f"more than {rules.refit_share:.0%} of the month is novel: "
                                         "clustered afresh and matched one-to-one")
            else:
                mode, reason = "assigned", (f"assigned to the previous month's clusters first; "
                                            f"{assigned.novel_share:.1%} novel, clustered on their own")
                messages += assigned.messages
    if assigned is not None:
        result = assigned.result
        result.coords_2d, result.map_method = map_records(x, config)
        drift, ids = assigned.drift, assigned.ids
    else:
        result = cluster_embeddings(x, config)
        drift = match_clusters(previous, result.clusters(), threshold=rules.match_cosine, growth=growth,
                               known_ids=known_ids, previous_total=previous_total, current_total=n)
        ids = drift_id_map(drift)
    if n == 0:
        messages.append("no records in this month: nothing to cluster")
        if previous:
            messages.append(f"all {len(previous)} clusters of the previous month are marked gone")
    elif result.n_clusters == 0:
        messages.append(f"{n} records are too few to form a cluster ({result.criterion}): "
                        "they form one stratum, 'unclustered'")
    elif result.identical:
        messages.append(result.criterion)
    if n:
        messages.append(f"{mode}: {reason}")
    status = {r.local_label: r.status for r in drift if r.local_label is not None}
    continuing = sum(r.current_size for r in drift if r.status == "continuing")
    texts = [t or "" for t in _column(rows, "embed_text", n)]
    table = describe_clusters(rows, result.labels, x, texts=texts, ids=ids) if n else []
    for entry in table:
        label = entry["label"]
        entry["status"] = UNCLUSTERED if label == NOISE else status[label]
        entry["centroid"] = None if label == NOISE else result.centroids[label]
    cluster_of = {label: ids.get(label, UNCLUSTERED) for label in set(result.labels.tolist())}
    assignments = {"request_id": _column(rows, "request_id", n), "timestamp": _column(rows, "timestamp", n),
                   "cluster_id": [cluster_of[label] for label in result.labels.tolist()],
                   "map_x": result.coords_2d[:, 0].astype(np.float64),
                   "map_y": result.coords_2d[:, 1].astype(np.float64)}
    png = None
    if n:
        names = {e["label"]: f"{e['cluster_id']} {e['keywords'][0]}" if e["keywords"] else e["cluster_id"]
                 for e in table if e["label"] != NOISE}
        png = plot_cluster_map(result.coords_2d, result.labels, names=names,
                               title=f"{title} {result.n_clusters} clusters, "
                                     f"{int(np.sum(result.labels == NOISE))} unclustered of {n}".strip())
    return MonthClusters(result, assignments, table, drift, messages, png, mode=mode, mode_reason=reason,
                         continuing_share=continuing / n if n else 0.0,
                         novel_share=assigned.novel_share if assigned is not None else None)


def drift_table_markdown(rows: Sequence[DriftRow]) -> str:
    """The drift rows as markdown for Dagster metadata."""
    import polars as pl

    from eval_pipeline.lib.storage.tables import markdown_table

    if not rows:
        return "(no clusters this month or last)"
    return markdown_table(pl.DataFrame([{
        "cluster": r.cluster_id, "status": r.status, "trend": r.trend,
        "size before": r.previous_size, "size now": r.current_size,
        "share before": f"{100 * r.previous_share:.1f}%", "share now": f"{100 * r.current_share:.1f}%",
        "similarity": "" if r.similarity is None else f"{r.similarity:.2f}", "note": r.note,
    } for r in rows]), max_cell=70)
