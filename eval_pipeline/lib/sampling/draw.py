"""Stratified sampling of eval examples from a month's clustered records, and the monthly refresh.

Plain Python for the ``eval_set`` asset (no Dagster import):

* :func:`allocate` - examples per stratum: proportional to the stratum's traffic, with a floor so
  small strata are over-sampled;
* :func:`pps_sample` - within a stratum, systematic sampling with probability proportional to a
  weight (failure signals weigh more), which gives every record an exact, known inclusion
  probability;
* :func:`dedupe` - near-duplicate texts (embedding cosine >= a threshold) collapse to one
  representative that stands for the group;
* :func:`draw_sample` - all of the above for a target size;
* :func:`plan_refresh` - a new version from the previous one: prune examples of gone or
  over-represented clusters, add a few from new, grown or under-covered clusters, keep the rest.

Inclusion probabilities. Within stratum h with n_h examples to draw from records of weights w_i
(after near-duplicate collapse), pi_i = n_h * w_i / sum(w) (units whose pi would exceed 1 are
taken with certainty and the rest recomputed). Systematic PPS (Madow 1949) over a seeded random
order realises exactly these pi_i. A representative of a near-duplicate group of size m stands
for m records, so the traffic weight of an example is ``represents / inclusion_probability``;
sums of these weights estimate traffic totals (Horvitz-Thompson), so a re-weighted pass rate
estimates the pass rate of real traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from eval_pipeline.lib.clustering.clusters import DRIFT_THRESHOLD
from eval_pipeline.lib.core.settings import setting
from eval_pipeline.lib.embeddings.encode import distinct_rows, unit_rows
from eval_pipeline.lib.ingest.records import FAILURE_SIGNALS

__all__ = [
    "DEFAULT_SIGNAL_WEIGHTS",
    "SamplingConfig",
    "fields_read",
    "Selected",
    "SampleResult",
    "allocate",
    "pps_inclusion",
    "pps_sample",
    "dedupe",
    "record_weight",
    "stratum_of",
    "draw_sample",
    "RefreshPlan",
    "plan_refresh",
    "neyman_allocate",
    "outcome_sd",
    "half_width",
    "reweight",
    "horvitz_thompson_share",
]

# Extra selection weight of a record with a failure signal (a record with several takes the
# largest). A thumbs-down or a parse error is the clearest sign the model failed.
DEFAULT_SIGNAL_WEIGHTS: dict[str, float] = {
    "thumbs_down": 3.0,
    "parse_error": 3.0,
    "abandoned": 2.0,
    "clarification_requested": 2.0,
    "escalated": 2.0,
    "regenerated": 1.5,
}


@dataclass(frozen=True)
class SamplingConfig:
    """How the eval set is drawn.

    target_size     examples in the initial set (the seed's 200-500).
    floor           at least this many examples per stratum (all of its records when it has
                    fewer), so small clusters are over-sampled.
    signal_weights  selection weight of a record with that failure signal (1 without any).
    slice_keys      record fields that split strata further (e.g. ("task_type",)); the stratum
                    is ``cluster_id`` alone by default.
    dedup_cosine    records of one stratum at least this similar are near-duplicates.
    refresh_size    at most this many examples of topics still in traffic a refresh removes to
                    make room for new topics when the set would leave its band (below).
    noise_group     the "unclustered" stratum (HDBSCAN noise) is split by k-means into groups of
                    about this many records for the draw, each with a floor of ``noise_floor``:
                    noise holds the rare topics too small to form a cluster, and a proportional
                    draw from it would miss them as a uniform sample does. There are at most
                    target / ``noise_floor`` groups (the set has no room for more).
    merge_cosine    a "gone" cluster whose centroid is at least this similar to a cluster of this
                    month was re-cut by the clustering, not gone: its examples move to that
                    cluster. It is the drift threshold (``clustering.DRIFT_THRESHOLD``), not a
                    setting of its own: the ``eval_set`` asset passes the clustering resource's
                    ``drift_threshold`` in (``SamplingSettings.config``).
    over_coverage   a stratum holding more than this many times what a fresh draw of the set's
                    size would give it this month is trimmed.
    under_coverage  a stratum holding fewer than this fraction of that gets refresh examples.
    band            a refresh keeps the set within ``target_size x (1 +- band)``: removals are
                    refilled, new topics get their floor.
    """

    target_size: int = setting(300, doc="examples in the first version")
    floor: int = setting(5, doc="at least this many examples per stratum (all its records when it has fewer)")
    signal_weights: Mapping[str, float] = setting(default_factory=lambda: dict(DEFAULT_SIGNAL_WEIGHTS),
                                                  doc="selection weight of a record with that failure signal "
                                                  "(1 without any)")
    slice_keys: tuple[str, ...] = setting((), doc='record fields that split strata beyond the cluster, e.g. '
                                          '["task_type"]')
    dedup_cosine: float = setting(0.95, doc="records of one stratum at least this similar are near-duplicates")
    seed: int = setting(0, doc="seeds the draw: same month and settings, same examples")
    refresh_size: int = setting(25, doc="at most this many examples of topics still in traffic a refresh "
                                "removes to make room for new topics")
    noise_group: int = 10
    noise_floor: int = 2
    merge_cosine: float = DRIFT_THRESHOLD
    over_coverage: float = 2.0
    under_coverage: float = 0.5
    band: float = 0.1

    def __post_init__(self) -> None:
        if self.target_size < 1:
            raise ValueError(f"target_size must be at least 1, not {self.target_size}")
        if self.floor < 0:
            raise ValueError(f"floor must be >= 0, not {self.floor}")
        if self.refresh_size < 0:
            raise ValueError(f"refresh_size must be >= 0, not {self.refresh_size}")
        bad = {k: v for k, v in self.signal_weights.items() if not v > 0}
        if bad:
            raise ValueError(f"signal weights must be > 0: {bad}")
        if not 0 < self.dedup_cosine <= 1:
            raise ValueError(f"dedup_cosine must be in (0, 1], not {self.dedup_cosine}")


@dataclass(frozen=True)
class Selected:
    """One chosen record."""

    index: int  # row index in the records given
    stratum: str
    inclusion_probability: float
    represents: int  # records of its near-duplicate group (itself included)

    @property
    def weight(self) -> float:
        """Traffic weight: records this example stands for."""
        return self.represents / self.inclusion_probability


@dataclass
class SampleResult:
    selected: list[Selected]
    allocation: dict[str, int]
    strata_sizes: dict[str, int]
    messages: list[str]


def stratum_of(row: Mapping[str, Any], slice_keys: Sequence[str] = ()) -> str:
    """``cluster_id``, then ``|key=value`` for each slice key."""
    parts = [str(row.get("cluster_id") or "unclustered")]
    parts += [f"{key}={row.get(key) if row.get(key) is not None else '(none)'}" for key in slice_keys]
    return "|".join(parts)


def fields_read(config: SamplingConfig) -> set[str]:
    """The record fields the draw and the examples read (:func:`stratum_of`, :func:`record_weight`,
    the failure signals, an example's identity; its texts are read for drawn records only)."""
    return {"request_id", "conversation_id", "turn_index", "timestamp", "task_type", "cluster_id", "thumbs",
            *FAILURE_SIGNALS, *config.slice_keys, *config.signal_weights}


def record_weight(row: Mapping[str, Any], signal_weights: Mapping[str, float]) -> float:
    """1, or the largest weight among the failure signals the record has."""
    weight = 1.0
    for signal, w in signal_weights.items():
        value = row.get("thumbs") == "down" if signal == "thumbs_down" and "thumbs_down" not in row else row.get(signal)
        if value:
            weight = max(weight, float(w))
    return weight


def allocate(sizes: Mapping[str, int], target: int, floor: int = 5,
             floors: Mapping[str, int] | None = None) -> tuple[dict[str, int], list[str]]:
    """Examples per stratum: a floor of ``min(floor, size)`` each (``floors`` overrides it per
    stratum), the rest proportional to size (largest remainders), never more than a stratum
    holds. Returns the allocation and messages.

    * More examples asked than records exist: every record is taken (and a message says so).
    * More strata than the floor allows: the floor shrinks to ``target // strata`` (at least 1);
      with more strata than examples, the largest strata get one each (a message names how many
      strata are left out).
    """
    if target < 0:
        raise ValueError("target must be >= 0")
    sizes = {k: int(v) for k, v in sizes.items() if v > 0}
    messages: list[str] = []
    total = sum(sizes.values())
    if total <= target:
        if total < target:
            messages.append(f"asked for {target} examples but only {total} records exist: all of them are taken")
        return dict(sizes), messages
    order = sorted(sizes, key=lambda k: (-sizes[k], k))
    if len(order) > target:
        messages.append(f"{len(order)} strata but only {target} examples: the {target} largest strata get one "
                        f"each, {len(order) - target} strata get none")
        return {k: (1 if i < target else 0) for i, k in enumerate(order)}, messages
    wanted = {k: (floors or {}).get(k, floor) for k in order}
    if sum(min(wanted[k], sizes[k]) for k in order) > target:
        floor_used = max(1, target // len(order))
        messages.append(f"a floor of {floor} per stratum over {len(order)} strata exceeds {target}: floor {floor_used}")
        wanted = {k: min(wanted[k], floor_used) for k in order}
    alloc = {k: min(wanted[k], sizes[k]) for k in order}
    remaining = target - sum(alloc.values())
    # proportional shares of the rest, capped by what each stratum still has
    while remaining > 0:
        open_ = [k for k in order if alloc[k] < sizes[k]]
        if not open_:
            break
        weight = sum(sizes[k] for k in open_)
        quotas = {k: remaining * sizes[k] / weight for k in open_}
        granted = 0
        for k in open_:
            add = min(int(math.floor(quotas[k])), sizes[k] - alloc[k])
            alloc[k] += add
            granted += add
        left = remaining - granted
        if left > 0:
            by_rest = sorted(open_, key=lambda k: (-(quotas[k] - math.floor(quotas[k])), -sizes[k], k))
            for k in by_rest:
                if left == 0:
                    break
                if alloc[k] < sizes[k]:
                    alloc[k] += 1
                    left -= 1
        remaining = target - sum(alloc.values())  # each pass grants at least one while a stratum has room
    return alloc, messages


def pps_inclusion(weights: Sequence[float], n: int) -> np.ndarray:
    """Inclusion probabilities pi_i = n w_i / sum(w) for a sample of n, with units whose pi would
    exceed 1 taken with certainty and the others recomputed (so sum(pi) = n exactly)."""
    w = np.asarray(weights, dtype=np.float64)
    if (w <= 0).any():
        raise ValueError("weights must be > 0")
    if n > len(w):
        raise ValueError(f"cannot draw {n} of {len(w)}")
    pi = np.zeros(len(w))
    if n == 0:
        return pi
    certain = np.zeros(len(w), dtype=bool)
    while True:
        rest = ~certain
        k = n - int(certain.sum())
        pi[certain] = 1.0
        pi[rest] = k * w[rest] / w[rest].sum() if k > 0 else 0.0
        over = rest & (pi >= 1.0 - 1e-12)
        if not over.any():
            return np.minimum(pi, 1.0)
        certain |= over


def pps_sample(weights: Sequence[float], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Systematic PPS over a random order: indices of n units and every unit's inclusion
    probability (:func:`pps_inclusion`). Deterministic for a given generator state."""
    pi = pps_inclusion(weights, n)
    if n == 0:
        return np.zeros(0, dtype=np.int64), pi
    order = rng.permutation(len(pi))
    cumulative = np.cumsum(pi[order])
    start = rng.uniform(0.0, 1.0)
    points = start + np.arange(n)
    # unit j is chosen when a point falls in (cumulative[j-1], cumulative[j]]
    picks = np.searchsorted(cumulative, points - 1e-12, side="left")
    picks = np.clip(picks, 0, len(order) - 1)
    chosen = order[np.unique(picks)]
    if len(chosen) != n:  # float edge: fill deterministically with the largest pi left
        missing = [i for i in np.argsort(-pi, kind="stable") if i not in set(chosen.tolist())][: n - len(chosen)]
        chosen = np.concatenate([chosen, np.asarray(missing, dtype=np.int64)])
    return np.sort(chosen), pi


def dedupe(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate groups: rows linked when their cosine is >= ``threshold`` (transitively:
    the connected components of that graph). Returns each group's first row index (its
    representative) and how many rows the group holds.

    Identical rows (the same text has the same stored vector) are collapsed first, so the graph
    is built over distinct vectors only: the groups are the same (an identical row is always
    linked), but a stratum of 85,000 records that repeat far fewer distinct texts no longer
    makes a graph with an edge between every two copies (on a 1M-record month the draw's
    graphs took 150 s before; see the README). The graph comes from
    scikit-learn's ``radius_neighbors_graph`` on the unit vectors (for unit vectors, cosine >= t
    exactly when the euclidean distance <= sqrt(2 - 2t)), built ``DEDUPE_ROWS`` rows at a time.
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.int64)
    first_of, inverse = distinct_rows(x)
    distinct = x[first_of]
    norms = np.linalg.norm(distinct, axis=1, keepdims=True)
    distinct /= np.where(norms == 0, 1, norms)
    if len(distinct) > 1:
        radius = max(math.sqrt(max(0.0, 2.0 - 2.0 * threshold)), 1e-4)
        distinct_labels = _linked_groups(distinct, radius)
    else:
        distinct_labels = np.zeros(1, dtype=np.int64)
    labels = np.asarray(distinct_labels)[inverse]
    # each group's representative is its first row: the smallest row index with its label
    _, reps = np.unique(labels, return_index=True)
    reps = np.sort(reps).astype(np.int64)
    counts = np.bincount(labels)[labels[reps]]
    return reps, counts.astype(np.int64)


# Rows whose neighbours are found at once in dedupe: the graph of a stratum whose distinct texts
# are near one another holds an edge per close pair, and one stratum of a 1M-record month had
# 1.3 GB of them when the graph was built whole.
DEDUPE_ROWS = 4_096


def _linked_groups(x: np.ndarray, radius: float) -> np.ndarray:
    """Connected components of the graph linking rows of ``x`` within euclidean ``radius``: the
    edges of ``DEDUPE_ROWS`` rows at a time, each batch merged into the components found so far
    (every row also linked to its component's first row), so only one batch's edges exist at once."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    index = NearestNeighbors(radius=radius, algorithm="brute", n_jobs=1).fit(x)
    labels = np.arange(n)
    for start in range(0, n, DEDUPE_ROWS):
        edges = index.radius_neighbors_graph(x[start:start + DEDUPE_ROWS], mode="connectivity").tocoo()
        _, first = np.unique(labels, return_index=True)
        anchors = first[labels]  # each row's component, as the component's first row
        graph = coo_matrix((np.ones(len(edges.row) + n, dtype=np.int8),
                            (np.concatenate([edges.row + start, np.arange(n)]), np.concatenate([edges.col, anchors]))),
                           shape=(n, n))
        _, labels = connected_components(graph.tocsr(), directed=False)
    return labels


def _draw_from(rows: Sequence[Mapping[str, Any]], members: np.ndarray, kept: np.ndarray, counts: np.ndarray,
               n: int, stratum: str, config: SamplingConfig, rng: np.random.Generator) -> list[Selected]:
    """PPS draw of n among a stratum's near-duplicate representatives (``members[kept]``)."""
    reps = members[kept]
    n = min(n, len(reps))
    weights = [record_weight(rows[i], config.signal_weights) for i in reps]
    chosen, pi = pps_sample(weights, n, rng)
    return [Selected(int(reps[c]), stratum, float(pi[c]), int(counts[c])) for c in chosen]


def draw_sample(rows: Sequence[Mapping[str, Any]], vectors: np.ndarray, config: SamplingConfig,
                target: int | None = None) -> SampleResult:
    """The stratified sample of ``target`` (default ``config.target_size``) examples.

    ``rows`` need ``cluster_id``, the failure-signal fields (``thumbs`` for thumbs-down) and the
    slice keys; ``vectors`` (aligned unit vectors) drive near-duplicate removal. Strata are
    allocated on their distinct (de-duplicated) records, so a stratum of 40 copies of one text
    yields one example.
    """
    target = config.target_size if target is None else target
    rng = np.random.default_rng(config.seed)
    strata: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        strata.setdefault(stratum_of(row, config.slice_keys), []).append(i)
    if not rows:
        return SampleResult([], {}, {}, ["no records to sample from"])
    vectors = np.asarray(vectors)  # float16 as stored (embeddings.month_vectors): rows made float32 per stratum
    groups_of = _draw_groups(strata, vectors, config, max_groups=max(2, target // max(1, config.noise_floor)))
    dedup = {g: dedupe(unit_rows(vectors, members), config.dedup_cosine) for g, (_, members) in groups_of.items()}
    distinct = {g: len(kept) for g, (kept, _) in dedup.items()}
    messages: list[str] = []
    dropped = len(rows) - sum(distinct.values())
    if dropped:
        messages.append(f"{dropped} near-duplicate records (cosine >= {config.dedup_cosine}) are represented by "
                        "another record of their stratum")
    floors = {g: config.noise_floor for g, (stratum, _) in groups_of.items() if g != stratum}
    allocation, alloc_messages = allocate(distinct, target, config.floor, floors)
    messages += alloc_messages
    singles = [k for k, v in distinct.items() if v == 1]
    if singles:
        messages.append(f"{len(singles)} strata hold a single distinct record: it is taken with certainty")
    selected: list[Selected] = []
    for group in sorted(groups_of):
        n = allocation.get(group, 0)
        if n:
            stratum, members = groups_of[group]
            kept, counts = dedup[group]
            selected += _draw_from(rows, members, kept, counts, n, stratum, config, rng)
    by_stratum: dict[str, int] = {}
    for group, n in allocation.items():
        by_stratum[groups_of[group][0]] = by_stratum.get(groups_of[group][0], 0) + n
    return SampleResult(selected, by_stratum, {k: len(v) for k, v in strata.items()}, messages)


def _draw_groups(strata: Mapping[str, list[int]], vectors: np.ndarray, config: SamplingConfig,
                 max_groups: int | None = None) -> dict[str, tuple[str, np.ndarray]]:
    """Draw group -> (stratum, member rows). A group is its stratum, except that an
    "unclustered" stratum of more than 2 x ``noise_group`` records is split by seeded k-means
    into groups of about ``noise_group`` (``unclustered#0``, ...), at most ``max_groups`` of
    them: more groups than the set has room for at their floor would only be left empty, and
    k-means++ costs grow with n x k (a 35,000-record noise stratum split into 3,500 groups took
    over two minutes; capped at the draw's 150, a few seconds). A large stratum's k-means is
    fitted on a sample (:data:`KMEANS_FIT_ROWS`)."""
    out: dict[str, tuple[str, np.ndarray]] = {}
    for key, members in strata.items():
        members = np.asarray(members, dtype=np.int64)
        if key.split("|", 1)[0] != "unclustered" or len(members) <= 2 * config.noise_group:
            out[key] = (key, members)
            continue
        k = int(math.ceil(len(members) / config.noise_group))
        if max_groups is not None:
            k = min(k, max_groups)
        labels = _kmeans_labels(vectors, members, k, config.seed)
        for label in range(k):
            part = members[labels == label]
            if len(part):
                out[f"{key}#{label}"] = (key, part)
    return out


# k-means for the noise split is fitted on at most this many of the stratum's records (seeded
# draw), then every record gets its nearest centre, a batch at a time. Fitted on all 329,000
# noise records of a 1M-record month it took 2.6 GB (float32 copies of the stratum inside
# scikit-learn); at most 150 centres are asked for, so 20,000 records are over 130 per centre.
KMEANS_FIT_ROWS = 20_000


def _kmeans_labels(vectors: np.ndarray, members: np.ndarray, k: int, seed: int,
                   fit_rows: int = KMEANS_FIT_ROWS, batch: int = 50_000) -> np.ndarray:
    """k-means labels of ``vectors[members]``: fitted on all of them when they are at most
    ``max(fit_rows, 20 * k)``, otherwise on a seeded sample of that many, and predicted for all
    in batches (so memory does not grow with the stratum)."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=1, random_state=seed)
    cap = max(fit_rows, 20 * k)
    if len(members) <= cap:
        return model.fit_predict(unit_rows(vectors, members))
    fit_on = np.sort(np.random.default_rng(seed).choice(members, size=cap, replace=False))
    model.fit(unit_rows(vectors, fit_on))
    return np.concatenate([model.predict(unit_rows(vectors, members[i:i + batch]))
                           for i in range(0, len(members), batch)])


def horvitz_thompson_share(selected: Sequence[Selected], in_slice: Sequence[bool]) -> float:
    """Estimated share of traffic in a slice: sum of weights in the slice over all weights."""
    weights = np.array([s.weight for s in selected])
    flags = np.asarray(in_slice, dtype=bool)
    return float(weights[flags].sum() / weights.sum()) if len(weights) else 0.0


# --------------------------------------------------------------------------------------------
# The monthly refresh
# --------------------------------------------------------------------------------------------


@dataclass
class RefreshPlan:
    """What a new version does to the previous one.

    keep      example ids kept (unchanged, or moved to another cluster when in ``reassign``)
    remove    (example_id, reason)
    add       :class:`Selected` rows of this month's records, with ``reasons[index]`` why
    desired   stratum -> examples the allocation wants there (Neyman or proportional, floored)
    """

    keep: list[str]
    remove: list[tuple[str, str]]
    add: list[Selected]
    reasons: dict[int, str]
    messages: list[str]
    reassign: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # example_id -> (cluster, stratum, reason)
    desired: dict[str, int] = field(default_factory=dict)
    allocation: str = "proportional"


# A new cluster gets at least this many examples in its first version, even when the band is
# short of room for its full floor (later refreshes give it more as an under-covered stratum).
NEW_TOPIC_MINIMUM = 2


def neyman_allocate(caps: Mapping[str, int], weights: Mapping[str, float], target: int,
                    floors: Mapping[str, int] | None = None) -> dict[str, int]:
    """Integer examples per stratum: each stratum first gets its floor (``floors``, at most its
    cap), the rest of ``target`` in proportion to ``weights`` (largest remainders), never more
    than ``caps`` (records a stratum has); what a capped stratum cannot take goes to the others.

    With weights N_h x S_h (traffic x standard deviation of the outcome) this is Neyman's
    allocation (Neyman 1934; Cochran, *Sampling Techniques*, 3rd ed., sec. 5.5), which minimises
    the variance of the stratified estimate for a given total; with weights N_h it is the
    proportional allocation."""
    caps = {k: max(0, int(v)) for k, v in caps.items()}
    alloc = {k: min(int((floors or {}).get(k, 0)), caps[k]) for k in caps}
    goal = min(target, sum(caps.values()))
    while goal > sum(alloc.values()):
        remaining = goal - sum(alloc.values())
        open_ = [k for k in sorted(caps) if alloc[k] < caps[k]]
        weight = {k: float(weights.get(k, 0) or 0) for k in open_}
        if not sum(weight.values()):
            weight = {k: 1.0 for k in open_}  # no weight left: evenly
        total = sum(weight.values())
        quota = {k: remaining * weight[k] / total for k in open_}
        capped = [k for k in open_ if quota[k] >= caps[k] - alloc[k]]
        if capped:  # these take all they can; the rest is shared again among the others
            for k in capped:
                alloc[k] = caps[k]
            continue
        for k in open_:
            alloc[k] += int(math.floor(quota[k]))
        left = goal - sum(alloc.values())
        for k in sorted(open_, key=lambda k: (-(quota[k] - math.floor(quota[k])), -weight[k], k))[:left]:
            alloc[k] += 1
    return alloc


def outcome_sd(passed: int, scored: int, prior: float = 0.5, prior_weight: float = 2.0, floor: float = 0.1) -> float:
    """Standard deviation sqrt(p (1 - p)) of a stratum's pass/fail outcome, p the pass rate
    shrunk towards ``prior`` by ``prior_weight`` pseudo-examples (a stratum with 3 of 3 passed is
    not known to be certain), floored at ``floor`` so no stratum is left out of the allocation."""
    p = (passed + prior * prior_weight) / (scored + prior_weight)
    return max(floor, math.sqrt(p * (1 - p)))


def half_width(rate: float, n: int, confidence: float = 0.95) -> float | None:
    """Half-width of the Wilson interval at pass rate ``rate`` on ``n`` examples (None for n=0):
    what a slice's interval is expected to be with n examples if its rate stays."""
    if n <= 0:
        return None
    from eval_pipeline.lib.evaluation.stats import wilson_interval

    interval = wilson_interval(int(round(rate * n)), n, confidence=confidence)
    return (interval.high - interval.low) / 2


def reweight(examples: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]],
             config: SamplingConfig) -> dict[str, tuple[float, int]]:
    """example_id -> (inclusion probability, represents) of a refreshed version's examples.

    In a stratum with traffic this month, with n_h examples in the version and record weights
    w (:func:`record_weight`) over the stratum's N_h records this month, an example's
    probability is that of a PPS draw of n_h from them: pi_i = n_h w_i / sum(w) (capped at 1, as
    :func:`pps_inclusion`), standing for one record; so the weights 1 / pi of a stratum sum to
    about N_h however the refresh allocated its examples (Neyman puts more where the outcome is
    uncertain; the weights take that back out). Exact for the examples drawn this month; for
    kept ones it treats a continuing topic's traffic as the same population month to month.
    Examples of strata without traffic this month keep their probabilities."""
    weights: dict[str, list[float]] = {}
    for row in rows:
        weights.setdefault(stratum_of(row, config.slice_keys), []).append(record_weight(row, config.signal_weights))
    by_stratum: dict[str, list[Mapping[str, Any]]] = {}
    for ex in examples:
        by_stratum.setdefault(ex["stratum"], []).append(ex)
    out: dict[str, tuple[float, int]] = {}
    for key, members in by_stratum.items():
        if key not in weights:
            continue
        total = float(sum(weights[key]))
        n_h = len(members)
        own = [record_weight({signal: True for signal in (ex.get("failure_signals") or [])}, config.signal_weights)
               for ex in members]
        for ex, w in zip(members, own):
            out[ex["example_id"]] = (min(1.0, n_h * w / total), 1)
    return out


def plan_refresh(
    previous: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    vectors: np.ndarray,
    drift: Sequence[Mapping[str, Any]],
    config: SamplingConfig,
    taken_request_ids: set[str] | frozenset[str] = frozenset(),
    outcomes: Mapping[str, tuple[int, int]] | None = None,
    stale: Mapping[str, str] | None = None,
) -> RefreshPlan:
    """Plan the next version from the previous one and this month's clustered records, keeping
    the set within ``band`` of ``target_size``.

    ``previous``: the current examples (``example_id``, ``cluster_id``, ``stratum``).
    ``rows``/``vectors``: this month's records with ``cluster_id`` (and ``request_id``).
    ``drift``: this month's ``cluster_drift`` rows (``cluster_id``, ``status``, ``trend``,
    ``current_share``, ``previous_share``, ``nearest_id``, ``nearest_similarity``, ``mode``).
    ``outcomes``: stratum -> (passed, scored) of the last scorecard on the previous version;
    with it the additions follow Neyman's allocation, without it the proportional one.
    ``stale``: example_id -> why its topic left the traffic (``identity.stale_examples``): such
    examples go, whatever their cluster.

    1. Move: examples of a ``gone`` cluster whose topic continues in another cluster (its
       ``nearest_id`` within ``merge_cosine``; after a refit, the one-to-one match's nearest
       cluster) go there (changelog ``reassigned``).
    2. Prune: examples of a truly gone cluster; then in a stratum holding more than
       ``over_coverage`` times what its traffic warrants (a proportional draw of the set's size;
       Neyman's wish for more never counts as over-representation elsewhere), the excess
       (seeded). Nothing else of a topic still in traffic is removed, except to make room (step 4).
    3. Want: the allocation of ``target_size`` over this month's strata: without ``outcomes``
       a fresh proportional draw's (:func:`draw_sample`: near-duplicates collapsed, noise split
       in groups), with them Neyman's, weights N_h x S_h (records x :func:`outcome_sd`) with a
       floor of ``floor`` per stratum.
    4. Add: what refills the set to ``target_size``, plus the floor of each new cluster on top
       (so new topics never crowd out the refill; when the band has no room for every new
       cluster's floor, each gets an equal share of the room, at least
       :data:`NEW_TOPIC_MINIMUM`); first the new clusters' floors and the
       deficits of under-covered strata (fewer than ``under_coverage`` x wanted), the rest to
       the strata furthest below what the allocation wants. When that would take the set past
       ``target_size x (1 + band)``, the most over-represented strata (against traffic) give up
       examples to make room, at most ``refresh_size`` of them; beyond that the band wins.
    """
    rng = np.random.default_rng(config.seed + 1)
    messages: list[str] = []
    status = {d["cluster_id"]: d for d in drift}
    refit = any(d.get("mode") == "refit" for d in drift)
    follow = 0.8 if refit else config.merge_cosine  # a refit's nearest cluster is the topic's new cut
    gone = {cid for cid, d in status.items() if d["status"] == "gone"}
    remove: list[tuple[str, str]] = []
    kept_examples = []
    reassign: dict[str, tuple[str, str, str]] = {}
    for ex in previous:
        cid = ex["cluster_id"]
        d = status.get(cid)
        if stale and ex["example_id"] in stale:
            remove.append((ex["example_id"], stale[ex["example_id"]]))
        elif cid not in gone:
            kept_examples.append(ex)
        elif d.get("nearest_id") and (d.get("nearest_similarity") or 0.0) >= follow:
            target = d["nearest_id"]
            stratum = "|".join([target] + ex["stratum"].split("|")[1:])
            why = ("refit" if refit else "re-cut")
            reassign[ex["example_id"]] = (target, stratum, f"{why}: cluster {cid} -> {target} (centroid cosine "
                                          f"{d['nearest_similarity']:.2f}); the topic continues there")
            kept_examples.append({**ex, "cluster_id": target, "stratum": stratum})
        else:
            note = d.get("note") or ""
            remove.append((ex["example_id"], f"cluster {cid} is gone this month" + (f" ({note})" if note else "")))

    strata: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        strata.setdefault(stratum_of(row, config.slice_keys), []).append(i)
    total = sum(len(v) for v in strata.values())
    if not total:
        removed = {eid for eid, _ in remove}
        return RefreshPlan([ex["example_id"] for ex in previous if ex["example_id"] not in removed], sorted(remove), [],
                           {}, ["no records this month: nothing to add"], reassign)

    # what the set should hold per stratum this month
    vectors = np.asarray(vectors)
    fair = draw_sample(rows, vectors, config, target=config.target_size)  # proportional, floored, as a fresh draw
    traffic = {k: len(v) for k, v in strata.items()}
    if outcomes:
        overall_p = sum(p for p, _ in outcomes.values()) / max(1, sum(n for _, n in outcomes.values()))
        sd = {k: outcome_sd(*outcomes.get(k, (0, 0)), prior=overall_p) for k in strata}
        floors = {k: min(config.floor, traffic[k]) for k in strata}
        desired = neyman_allocate(traffic, {k: traffic[k] * sd[k] for k in strata}, config.target_size, floors)
        allocation = "neyman"
    else:
        sd = {}
        desired = dict(fair.allocation)
        allocation = "proportional"

    by_stratum: dict[str, list[Mapping[str, Any]]] = {}
    for ex in kept_examples:
        by_stratum.setdefault(ex["stratum"], []).append(ex)
    # over-representation is against traffic (the proportional draw), whatever the allocation
    proportional = fair.allocation
    for key, examples in sorted(by_stratum.items()):
        limit = max(int(math.ceil(config.over_coverage * proportional.get(key, 0))), config.floor)
        if key in proportional and len(examples) > limit:
            ids = sorted(e["example_id"] for e in examples)
            for eid in sorted(rng.choice(ids, len(examples) - limit, replace=False).tolist()):
                remove.append((eid, f"stratum {key} over-represented: {len(examples)} examples where this month's "
                                    f"traffic ({len(strata[key]) / total:.1%}) warrants about {proportional[key]}"))
    removed = {eid for eid, _ in remove}
    have = {k: 0 for k in strata}
    for ex in kept_examples:
        if ex["example_id"] not in removed:
            have[ex["stratum"]] = have.get(ex["stratum"], 0) + 1
    kept_count = sum(1 for ex in kept_examples if ex["example_id"] not in removed)

    # the records each stratum can still give (not in the set; near-duplicates collapsed)
    available = {k: np.asarray([i for i in strata[k] if rows[i].get("request_id") not in taken_request_ids],
                               dtype=np.int64) for k in strata}
    groups = {k: dedupe(unit_rows(vectors, v), config.dedup_cosine) if len(v) else (np.zeros(0, np.int64), np.zeros(0, np.int64))
              for k, v in available.items()}
    room = {k: len(groups[k][0]) for k in strata}
    need: dict[str, int] = {}
    reasons_by_stratum: dict[str, str] = {}
    for key in strata:
        cid = key.split("|", 1)[0]
        d = status.get(cid)
        share = len(strata[key]) / total
        if d is not None and d["status"] == "new" and have.get(key, 0) < min(config.floor, room[key]):
            need[key] = min(config.floor, room[key]) - have.get(key, 0)
            reasons_by_stratum[key] = f"new cluster {cid} ({share:.1%} of traffic)"
        elif have.get(key, 0) < config.under_coverage * desired.get(key, 0):
            need[key] = min(desired[key] - have.get(key, 0), room[key])
            reasons_by_stratum[key] = (f"stratum {key} under-covered: {have.get(key, 0)} examples where its traffic "
                                       f"({share:.1%}) warrants about {desired[key]}")
    upper = int(math.floor(config.target_size * (1 + config.band)))
    new_need = {k: n for k, n in need.items() if reasons_by_stratum[k].startswith("new cluster")}
    under_need = {k: n for k, n in need.items() if k not in new_need}
    space = max(upper - kept_count, 0)
    if sum(new_need.values()) > space and new_need:
        # more new clusters than the band has room for at their floor: each gets an equal share
        # of the room, at least NEW_TOPIC_MINIMUM (a topic cut in several new clusters would
        # otherwise push out examples of topics still in traffic)
        share = max(NEW_TOPIC_MINIMUM, space // len(new_need))
        new_need = {k: min(n, share) for k, n in new_need.items()}
    new_topics = sum(new_need.values())
    # the refill to the target and new topics' floors on top of it, as far as the band allows;
    # under-covered strata within the band too
    n_add = min(max(config.target_size - kept_count, 0) + new_topics, space)
    n_add = max(n_add, min(sum(need.values()), space))
    short = new_topics - n_add  # new topics that do not fit even in the band: make room
    trimmed = 0
    while short > 0 and trimmed < config.refresh_size:
        # the most over-represented strata (against traffic) give one example at a time
        over = [(have[k] / max(proportional.get(k, 0), 1), k) for k in have
                if have[k] > max(proportional.get(k, 0), 1)]
        if not over:
            break
        _, key = max(over)
        candidates = sorted(ex["example_id"] for ex in kept_examples
                            if ex["stratum"] == key and ex["example_id"] not in removed)
        eid = candidates[int(rng.integers(len(candidates)))]
        remove.append((eid, f"room for new topics: stratum {key} holds {have[key]} examples where its traffic "
                            f"warrants about {proportional.get(key, 0)}"))
        removed.add(eid)
        have[key] -= 1
        kept_count -= 1
        short -= 1
        trimmed += 1
        n_add += 1
    # additions: new topics' floors first, then under-covered strata, the rest to the strata
    # furthest below what the allocation wants
    deficits = {k: max(0, desired.get(k, 0) - have.get(k, 0) - need.get(k, 0)) for k in strata}
    first = neyman_allocate({k: min(n, room[k]) for k, n in new_need.items()}, new_need, min(n_add, new_topics))
    under = neyman_allocate({k: min(n, room[k]) for k, n in under_need.items()}, under_need,
                            min(n_add - sum(first.values()), sum(under_need.values())))
    first = {**first, **under}
    rest_caps = {k: min(room[k] - first.get(k, 0), deficits[k]) for k in strata}
    second = neyman_allocate(rest_caps, {k: float(deficits[k]) for k in strata}, n_add - sum(first.values()))
    if n_add - sum(first.values()) - sum(second.values()) > 0:  # every stratum at what it wants: by traffic
        more = neyman_allocate({k: room[k] - first.get(k, 0) - second.get(k, 0) for k in strata},
                               {k: float(len(strata[k])) for k in strata}, n_add - sum(first.values()) - sum(second.values()))
        second = {k: second.get(k, 0) + more.get(k, 0) for k in strata}
    add: list[Selected] = []
    reasons: dict[int, str] = {}
    for key in sorted(strata):
        n = first.get(key, 0) + second.get(key, 0)
        if not n:
            continue
        kept, counts = groups[key]
        why = reasons_by_stratum.get(key) or (
            f"refill to {config.target_size}: stratum {key} holds {have.get(key, 0)} where {desired.get(key, 0)} are wanted"
            + (f" (Neyman: pass-rate sd {sd[key]:.2f})" if key in sd else ""))
        for s in _draw_from(rows, available[key], kept, counts, n, key, config, rng):
            add.append(s)
            reasons[s.index] = why
    if not add:
        messages.append(f"the set holds {kept_count} examples (target {config.target_size}) and no new or "
                        "under-covered stratum: nothing added")
    keep = [ex["example_id"] for ex in previous if ex["example_id"] not in removed]
    return RefreshPlan(keep, sorted(remove), add, reasons, messages, reassign, desired, allocation)
