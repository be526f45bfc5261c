"""Tests for eval_pipeline.lib.sampling.draw, on a long-tailed month of real Banking77 queries."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest

from eval_pipeline.demo.banking77 import load_queries, long_tail_mix
from eval_pipeline.lib.clustering.clusters import ClusterConfig, cluster_embeddings
from eval_pipeline.lib.embeddings.encode import EmbeddingConfig, get_embedder
from eval_pipeline.lib.sampling.draw import (
    NEW_TOPIC_MINIMUM,
    SamplingConfig,
    allocate,
    dedupe,
    draw_sample,
    half_width,
    horvitz_thompson_share,
    neyman_allocate,
    outcome_sd,
    plan_refresh,
    pps_inclusion,
    pps_sample,
    reweight,
)

SEEDS = range(5)


@pytest.fixture(scope="module")
def month():
    """40 intents, 150 down to 5 queries each (1,600-odd records); every 7th record has a thumbs-down."""
    texts, categories = load_queries()
    idx, sizes = long_tail_mix(categories, seed=4, n_intents=40, largest=150, smallest=5)
    vectors = get_embedder(EmbeddingConfig()).encode([texts[i] for i in idx])
    rows = [{"request_id": f"r{n}", "intent": categories[i], "text": texts[i],
             "thumbs": "down" if n % 7 == 0 else None, "task_type": "card" if "card" in categories[i] else "other"}
            for n, i in enumerate(idx)]
    return rows, vectors, sizes


def with_strata(rows, labels):
    return [{**row, "cluster_id": label} for row, label in zip(rows, labels)]


def test_allocate_proportional_with_a_floor():
    alloc, messages = allocate({"big": 1000, "mid": 100, "small": 3, "tiny": 1}, 100, floor=5)
    assert alloc["small"] == 3 and alloc["tiny"] == 1  # all they have
    # floors 5 + 5 + 3 + 1 = 14; the other 86 split 1000 : 100 -> 78.2 + 7.8 -> 78 + 8
    assert alloc == {"big": 83, "mid": 13, "small": 3, "tiny": 1}
    assert messages == []
    everything, messages = allocate({"a": 10, "b": 5}, 50)
    assert everything == {"a": 10, "b": 5} and "only 15 records" in messages[0]
    crowded, messages = allocate({f"s{i}": 10 + i for i in range(30)}, 20, floor=5)
    assert sum(crowded.values()) == 20 and sum(v == 0 for v in crowded.values()) == 10
    assert "get none" in messages[0]
    shrunk, messages = allocate({f"s{i}": 50 for i in range(10)}, 30, floor=5)
    assert set(shrunk.values()) == {3} and "floor 3" in messages[0]
    empty, messages = allocate({}, 10)
    assert empty == {} and "only 0 records" in messages[0]


def test_pps_inclusion_probabilities_are_exact():
    weights = [3.0] * 20 + [1.0] * 80
    pi = pps_inclusion(weights, 10)
    assert pi.sum() == pytest.approx(10)
    assert pi[0] / pi[-1] == pytest.approx(3.0)
    # a heavy unit is taken with certainty and the others share the rest
    capped = pps_inclusion([100.0, 1, 1, 1, 1], 2)
    assert capped[0] == 1.0 and capped[1:] == pytest.approx([0.25] * 4)
    # the realised frequencies of systematic PPS match pi
    counts = np.zeros(100)
    for seed in range(3000):
        chosen, _ = pps_sample(weights, 10, np.random.default_rng(seed))
        assert len(chosen) == 10 and len(set(chosen.tolist())) == 10
        counts[chosen] += 1
    assert np.abs(counts / 3000 - pi).max() < 0.03
    with pytest.raises(ValueError, match="cannot draw"):
        pps_inclusion([1, 1], 3)


def test_dedupe_collapses_near_duplicates(month):
    _, vectors, _ = month
    base = vectors[:5]
    assert (base @ base.T - np.eye(5)).max() < 0.95  # five different queries
    near = base[0] * 0.999 + base[1] * 0.001
    x = np.concatenate([base, base[:1], (near / np.linalg.norm(near))[None, :], base[3:4]])
    kept, counts = dedupe(x, 0.95)
    assert kept.tolist() == [0, 1, 2, 3, 4] and counts.tolist() == [3, 1, 1, 2, 1]
    exact, exact_counts = dedupe(x, 1.0)  # only exact copies
    assert exact.tolist() == [0, 1, 2, 3, 4, 6] and exact_counts.tolist() == [2, 1, 1, 2, 1, 1]
    assert dedupe(np.zeros((0, 4)), 0.9)[0].size == 0


@pytest.mark.parametrize("batch", [4_096, 7])
def test_dedupe_collapses_copies_first_with_the_same_groups_as_a_graph_over_every_row(month, monkeypatch, batch):
    """Identical rows are collapsed before the graph is built, and its edges are found
    ``DEDUPE_ROWS`` rows at a time (here also 7, so groups are merged across many batches): the
    groups, representatives and counts equal those of the graph over all rows at once
    (connected components, first row of each)."""
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import radius_neighbors_graph

    from eval_pipeline.lib.sampling import draw as sampling

    monkeypatch.setattr(sampling, "DEDUPE_ROWS", batch)
    _, vectors, _ = month
    rng = np.random.default_rng(3)
    x = vectors[rng.integers(0, 60, size=900)].astype(np.float32)  # 900 rows, at most 60 distinct
    x[::50] = vectors[600:618]  # and some rows found once
    for threshold in (0.8, 0.95, 1.0):
        kept, counts = dedupe(x, threshold)
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        radius = max(np.sqrt(max(0.0, 2 - 2 * threshold)), 1e-4)
        _, labels = connected_components(radius_neighbors_graph(unit, radius=radius, include_self=False), directed=False)
        firsts = sorted({label: i for i, label in reversed(list(enumerate(labels)))}.values())
        assert kept.tolist() == firsts
        assert counts.tolist() == [int((labels == labels[i]).sum()) for i in firsts]
    assert dedupe(np.repeat(x[:1], 5, axis=0), 0.95)[1].tolist() == [5]  # one distinct row


def test_noise_split_k_means_is_fitted_on_a_sample_of_a_large_stratum():
    """Above its cap the k-means of the noise split is fitted on a seeded sample and predicts
    every member (in batches); at or below the cap it is the plain fit on all members."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from eval_pipeline.lib.embeddings.encode import unit_rows
    from eval_pipeline.lib.sampling.draw import _kmeans_labels

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 5
    truth = rng.integers(0, 4, size=3000)
    vectors = (centres[truth] + rng.normal(size=(3000, 16))).astype(np.float16)
    members = np.arange(0, 3000, 2)  # every other row: 1,500 members
    sampled = _kmeans_labels(vectors, members, k=4, seed=1, fit_rows=200, batch=400)
    assert sampled.shape == (1500,) and set(sampled.tolist()) == {0, 1, 2, 3}
    assert adjusted_rand_score(truth[members], sampled) == 1.0  # the four groups, found from 200 rows
    whole = _kmeans_labels(vectors, members, k=4, seed=1, fit_rows=1500)
    assert np.array_equal(whole, KMeans(n_clusters=4, n_init=1, random_state=1).fit_predict(unit_rows(vectors, members)))


def test_stratified_set_covers_more_intents_than_uniform(month):
    rows, vectors, sizes = month
    by_intent = with_strata(rows, [r["intent"] for r in rows])
    coverage, uniform_coverage = [], []
    for seed in SEEDS:
        result = draw_sample(by_intent, vectors, SamplingConfig(target_size=300, seed=seed))
        chosen = {by_intent[s.index]["intent"] for s in result.selected}
        assert len(result.selected) == 300
        # strata = intents: every intent with at least 5 records is in the set
        assert chosen == {i for i, n in sizes.items() if n >= 5}
        rng = np.random.default_rng(seed)
        uniform = {rows[i]["intent"] for i in rng.choice(len(rows), 300, replace=False)}
        coverage.append(len(chosen))
        uniform_coverage.append(len(uniform))
    # strata = real HDBSCAN clusters of the month, as the pipeline does it
    labels = cluster_embeddings(vectors, ClusterConfig(map_method="none")).labels
    clustered = with_strata(rows, ["unclustered" if label == -1 else f"k{label}" for label in labels])
    cluster_coverage = []
    for seed in SEEDS:
        result = draw_sample(clustered, vectors, SamplingConfig(target_size=300, seed=seed))
        cluster_coverage.append(len({clustered[s.index]["intent"] for s in result.selected}))
    print(f"\nintents covered by 300 examples of {len(rows)} records, {len(sizes)} intents, seeds {list(SEEDS)}: "
          f"stratified by intent {coverage}, by HDBSCAN cluster {cluster_coverage}, uniform {uniform_coverage}")
    assert min(coverage) > max(uniform_coverage)
    assert np.mean(cluster_coverage) >= np.mean(uniform_coverage) + 1


def test_failure_signals_are_over_represented_by_their_weight(month):
    rows, vectors, _ = month
    strata = with_strata(rows, [r["intent"] for r in rows])
    config = SamplingConfig(target_size=300, signal_weights={"thumbs_down": 3.0}, dedup_cosine=1.0)
    ratios = []
    for seed in SEEDS:
        result = draw_sample(strata, vectors, SamplingConfig(**{**config.__dict__, "seed": seed}))
        per_stratum = collections.defaultdict(dict)
        for s in result.selected:
            per_stratum[s.stratum][rows[s.index]["thumbs"] == "down"] = s.inclusion_probability
        ratios += [p[True] / p[False] for p in per_stratum.values() if len(p) == 2 and p[True] < 1]
        share = np.mean([rows[s.index]["thumbs"] == "down" for s in result.selected])
        assert share > 1.5 / 7  # one record in 7 has a thumbs-down in traffic
    assert ratios and np.allclose(ratios, 3.0)


def test_reweighting_recovers_traffic_share(month):
    rows, vectors, _ = month
    strata = with_strata(rows, [r["intent"] for r in rows])
    truth = np.mean([r["task_type"] == "card" for r in rows])
    estimates, naive = [], []
    for seed in range(20):
        result = draw_sample(strata, vectors, SamplingConfig(target_size=300, seed=seed))
        flags = [rows[s.index]["task_type"] == "card" for s in result.selected]
        estimates.append(horvitz_thompson_share(result.selected, flags))
        naive.append(np.mean(flags))
    error = abs(np.mean(estimates) - truth)
    print(f"\ncard slice: traffic share {truth:.3f}; re-weighted estimate {np.mean(estimates):.3f} "
          f"(max error {np.max(np.abs(np.array(estimates) - truth)):.3f} over 20 seeds); unweighted {np.mean(naive):.3f}")
    # stated tolerance: the mean over seeds within 0.01, every single estimate within 0.05
    assert error < 0.01 and np.max(np.abs(np.array(estimates) - truth)) < 0.05
    assert abs(np.mean(naive) - truth) > error  # the unweighted share is biased by the floor and the weights


def test_bad_input_gives_messages_not_crashes(month):
    rows, vectors, _ = month
    assert draw_sample([], np.zeros((0, 384)), SamplingConfig()).messages == ["no records to sample from"]
    few = with_strata(rows[:20], ["a"] * 19 + ["b"])
    result = draw_sample(few, vectors[:20], SamplingConfig(target_size=300))
    assert len(result.selected) <= 20 and any("only" in m for m in result.messages)
    assert any("single distinct record" in m for m in result.messages)
    with pytest.raises(ValueError, match="target_size"):
        SamplingConfig(target_size=0)
    with pytest.raises(ValueError, match="signal weights"):
        SamplingConfig(signal_weights={"thumbs_down": 0})


def test_refresh_prunes_gone_refills_to_target_and_gives_new_topics_their_floor(month):
    rows, vectors, _ = month
    strata = with_strata(rows, [r["intent"] for r in rows])
    intents = sorted({r["intent"] for r in rows})
    gone, new = intents[0], intents[1]
    config = SamplingConfig(target_size=200, refresh_size=25)
    # last month had no `new` topic; this month has no `gone` one
    before = [i for i, r in enumerate(strata) if r["intent"] != new]
    first = draw_sample([strata[i] for i in before], vectors[before], config)
    previous = [{"example_id": f"e{before[s.index]}", "cluster_id": s.stratum, "stratum": s.stratum,
                 "request_id": strata[before[s.index]]["request_id"], "failure_signals": []} for s in first.selected]
    assert len(previous) == 200
    drift = [{"cluster_id": i, "status": "continuing", "trend": "stable", "previous_share": 0.02, "current_share": 0.02,
              "note": ""} for i in intents if i not in (gone, new)]
    drift.append({"cluster_id": gone, "status": "gone", "trend": "gone", "previous_share": 0.02, "current_share": 0.0, "note": ""})
    drift.append({"cluster_id": new, "status": "new", "trend": "new", "previous_share": 0.0, "current_share": 0.02, "note": ""})
    now = [i for i, r in enumerate(strata) if r["intent"] != gone]
    month_rows, month_vectors = [strata[i] for i in now], vectors[now]
    plan = plan_refresh(previous, month_rows, month_vectors, drift, config,
                        taken_request_ids={p["request_id"] for p in previous})
    removed = dict(plan.remove)
    gone_examples = {p["example_id"] for p in previous if p["cluster_id"] == gone}
    assert gone_examples and gone_examples <= set(removed)
    assert all("gone" in removed[e] for e in gone_examples)
    assert set(plan.keep) | set(removed) == {p["example_id"] for p in previous} and not set(plan.keep) & set(removed)
    # topics still in traffic keep their examples (nothing here is over-represented 2x)
    assert set(removed) == gone_examples
    # the set is refilled to its target, the new topic gets its floor
    size = len(plan.keep) + len(plan.add)
    assert abs(size - 200) <= 20
    assert sum(1 for s in plan.add if s.stratum == new) >= config.floor
    for s in plan.add:
        assert month_rows[s.index]["request_id"] not in {p["request_id"] for p in previous}
        assert plan.reasons[s.index]
    assert any("new cluster" in plan.reasons[s.index] for s in plan.add)
    assert plan.allocation == "proportional" and sum(plan.desired.values()) == 200
    again = plan_refresh(previous, month_rows, month_vectors, drift, config, taken_request_ids={p["request_id"] for p in previous})
    assert again.remove == plan.remove and [s.index for s in again.add] == [s.index for s in plan.add]


def test_column_rows_are_to_dicts_as_mappings_with_shared_strings():
    """The eval set's per-record rows: mappings equal to polars' to_dicts, made on access from
    columns holding one string object per repeated value of a low-cardinality column."""
    import polars as pl

    from eval_pipeline.lib.storage.tables import ColumnRows

    df = pl.DataFrame({"task_type": ["rag_qa", "extraction"] * 500, "request_id": [f"r{i}" for i in range(1000)],
                       "turn_index": list(range(1000)), "thumbs": [None] * 1000},
                      schema={"task_type": pl.String, "request_id": pl.String, "turn_index": pl.Int32,
                              "thumbs": pl.String})
    rows = ColumnRows(df)
    assert len(rows) == 1000 and list(rows) == df.to_dicts() and rows[-1] == df.to_dicts()[-1]
    assert [dict(r) for r in rows[10:13]] == df.to_dicts()[10:13]
    assert rows[3].get("thumbs", "x") is None and rows[3].get("absent", "x") == "x" and {**rows[3], "a": 1}["a"] == 1
    assert len({id(r["task_type"]) for r in rows}) == 2 and len({id(r["request_id"]) for r in rows}) == 1000
    with pytest.raises(IndexError):
        rows[1000]
    assert list(ColumnRows(df.clear())) == [] and not ColumnRows(df.clear())


def test_neyman_allocation_by_hand():
    # weights N_h x S_h: 100 x 0.5, 100 x 0.1, 100 x 0.3 = 50, 10, 30 of 90
    caps = {"a": 100, "b": 100, "c": 100}
    weights = {"a": 50.0, "b": 10.0, "c": 30.0}
    assert neyman_allocate(caps, weights, 18) == {"a": 10, "b": 2, "c": 6}
    # a floor of 5 for b first, the other 13 by weight: 7.22, 1.44, 4.33 -> 7, 1, 4 and the one
    # left to the largest remainder (b's 0.44)
    assert neyman_allocate(caps, weights, 18, {"b": 5}) == {"a": 7, "b": 7, "c": 4}
    # a holds only 5: what it cannot take is shared by weight among the others (13 x 10/40,
    # 13 x 30/40 = 3.25, 9.75 -> 3, 10)
    assert neyman_allocate({"a": 5, "b": 100, "c": 100}, weights, 18) == {"a": 5, "b": 3, "c": 10}
    # more asked than there is: everything; nothing asked: the floors only
    assert neyman_allocate({"a": 5, "b": 3, "c": 2}, weights, 18) == {"a": 5, "b": 3, "c": 2}
    assert neyman_allocate(caps, weights, 0, {"a": 2}) == {"a": 2, "b": 0, "c": 0}
    # proportional is the same rule with weights N_h
    assert neyman_allocate(caps, {"a": 100, "b": 100, "c": 100}, 18) == {"a": 6, "b": 6, "c": 6}


def test_outcome_sd_and_expected_half_width_by_hand():
    # 8 of 10 passed, shrunk by 2 pseudo-examples at 0.5: p = 9/12 = 0.75, sd = sqrt(0.1875)
    assert outcome_sd(8, 10) == pytest.approx(math.sqrt(0.75 * 0.25))
    assert outcome_sd(10, 10) == pytest.approx(math.sqrt(11 / 12 * 1 / 12))  # 10 of 10 is not certainty
    assert outcome_sd(0, 0) == 0.5 and outcome_sd(1000, 1000) == 0.1  # the floor
    # Wilson at 50% on 100: z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/(4n^2)) = 0.0962
    z = 1.959963984540054
    assert half_width(0.5, 100) == pytest.approx(z / (1 + z * z / 100) * math.sqrt(0.0025 + z * z / 40000))
    assert half_width(0.5, 25) > half_width(0.5, 100) and half_width(0.5, 0) is None


def test_reweight_makes_a_stratum_weights_sum_to_its_traffic():
    rows = [{"cluster_id": "c1", "thumbs": "down" if i < 10 else None} for i in range(100)]
    rows += [{"cluster_id": "c2", "thumbs": None} for _ in range(50)]
    examples = [{"example_id": f"a{i}", "stratum": "c1", "failure_signals": ["thumbs_down"] if i < 4 else []}
                for i in range(20)]
    examples += [{"example_id": f"b{i}", "stratum": "c2", "failure_signals": []} for i in range(5)]
    examples += [{"example_id": "z", "stratum": "c9", "failure_signals": []}]
    probs = reweight(examples, rows, SamplingConfig())
    # c1: sum(w) = 10 x 3 + 90 = 120; n = 20: pi = 20 x 3 / 120 = 0.5 (thumbs-down), 20 / 120 = 1/6
    assert probs["a0"] == (pytest.approx(0.5), 1) and probs["a10"] == (pytest.approx(1 / 6), 1)
    assert probs["b0"] == (pytest.approx(0.1), 1)
    assert "z" not in probs  # no traffic this month: keeps what it had
    assert sum(1 / probs[f"b{i}"][0] for i in range(5)) == pytest.approx(50)


def test_refit_moves_examples_to_their_topics_new_cluster(month):
    """After a refit (clusters cut anew), a gone cluster's examples follow its nearest current
    cluster from cosine 0.8, and the changelog reason carries the old -> new id."""
    rows, vectors, _ = month
    strata = with_strata(rows, [r["intent"] for r in rows])
    intents = sorted({r["intent"] for r in rows})
    config = SamplingConfig(target_size=100)
    first = draw_sample(strata, vectors, config)
    previous = [{"example_id": f"e{s.index}", "cluster_id": s.stratum, "stratum": s.stratum,
                 "request_id": strata[s.index]["request_id"], "failure_signals": []} for s in first.selected]
    old, successor = intents[0], intents[1]
    drift = [{"cluster_id": i, "status": "continuing", "trend": "stable", "previous_share": 0.02, "current_share": 0.02,
              "note": "", "mode": "refit"} for i in intents if i != old]
    drift.append({"cluster_id": old, "status": "gone", "trend": "gone", "previous_share": 0.02, "current_share": 0.0,
                  "note": "", "nearest_id": successor, "nearest_similarity": 0.85, "mode": "refit"})
    now = [r for r in strata if r["intent"] != old]
    plan = plan_refresh(previous, now, vectors[[i for i, r in enumerate(strata) if r["intent"] != old]], drift, config,
                        taken_request_ids={p["request_id"] for p in previous})
    moved = {e for e, p in zip([p["example_id"] for p in previous], previous) if p["cluster_id"] == old}
    assert moved and set(plan.reassign) == moved
    assert all(plan.reassign[e][0] == successor and f"refit: cluster {old} -> {successor}" in plan.reassign[e][2]
               for e in moved)
    # without a refit the same cosine (below merge_cosine 0.9) does not move them: they are pruned
    for d in drift:
        d["mode"] = "assigned"
    again = plan_refresh(previous, now, vectors[[i for i, r in enumerate(strata) if r["intent"] != old]], drift, config,
                         taken_request_ids={p["request_id"] for p in previous})
    assert not again.reassign and moved <= {e for e, _ in again.remove}


def test_many_new_clusters_share_the_band_before_others_give_way(month):
    """A set already at the top of its band and six new clusters: each new cluster gets
    NEW_TOPIC_MINIMUM examples (not its floor of 5), and only that room is taken from the most
    over-represented strata; the set stays within the band."""
    rows, vectors, _ = month
    strata = with_strata(rows, [r["intent"] for r in rows])
    intents = sorted({r["intent"] for r in rows})
    new = intents[:6]
    config = SamplingConfig(target_size=100)
    before = [i for i, r in enumerate(strata) if r["intent"] not in new]
    first = draw_sample([strata[i] for i in before], vectors[before], config, target=110)
    previous = [{"example_id": f"e{before[s.index]}", "cluster_id": s.stratum, "stratum": s.stratum,
                 "request_id": strata[before[s.index]]["request_id"], "failure_signals": []} for s in first.selected]
    assert len(previous) == 110
    drift = [{"cluster_id": i, "status": "new" if i in new else "continuing", "trend": "new" if i in new else "stable",
              "previous_share": 0.02, "current_share": 0.02, "note": ""} for i in intents]
    plan = plan_refresh(previous, strata, vectors, drift, config, taken_request_ids={p["request_id"] for p in previous})
    added = collections.Counter(s.stratum for s in plan.add)
    assert all(added[i] == NEW_TOPIC_MINIMUM for i in new), added
    room = [r for _, r in plan.remove if r.startswith("room for new topics")]
    assert len(room) == len(plan.remove) == 6 * NEW_TOPIC_MINIMUM
    assert len(plan.keep) + len(plan.add) == 110
