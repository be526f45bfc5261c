"""Embeddings, clustering and the eval set through the real Dagster runtime, on real Banking77 queries.

``privacy.redacted_logs`` is written straight into the warehouse (as the IO manager would leave
it), so these tests run the embedding and clustering assets without the redaction model.
"""

from __future__ import annotations

import collections
import csv
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from eval_pipeline.defs.clustering import assets as clustering_assets
from eval_pipeline.defs.embeddings import assets as embedding_assets
from eval_pipeline.defs.ingest import assets as ingest_assets
from eval_pipeline.defs.privacy import assets as privacy_assets
from eval_pipeline.defs.resources import EvaluationSettings, SamplingSettings, build_resources
from eval_pipeline.defs.sampling import assets as sampling_assets
from eval_pipeline.defs.sampling import schedules as sampling_schedules
from eval_pipeline.demo.settings import THRESHOLDS as DEMO_THRESHOLDS
from eval_pipeline.lib.core.paths import DataHome
from eval_pipeline.lib.storage.tables import REDACTED_LOGS_SCHEMA, frame

BANKING77 = Path(__file__).resolve().parents[2] / "eval_pipeline" / "demo" / "data" / "banking77" / "train.csv"
ASSETS = [ingest_assets.landing_manifest, ingest_assets.ingested_logs, privacy_assets.redacted_logs,
          embedding_assets.log_embeddings, clustering_assets.log_clusters, sampling_assets.eval_set]
MONTHLY = dg.AssetSelection.assets("log_clusters", "cluster_table", "cluster_drift")
# eval_set is one step with four outputs (the month's set and the append-only tables): run together
EVAL_SET = list(sampling_assets.EVAL_SET_OUTPUTS)

# January: 12 intents; February: 11 of them (one removed) and 3 new ones.
OLD = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked", "cash_withdrawal_charge",
       "country_support", "terminate_account", "age_limit", "change_pin", "transfer_timing", "receiving_money"]
NEW = ["apple_pay_or_google_pay", "get_disposable_virtual_card", "atm_support"]
REMOVED = "age_limit"
PER_INTENT = 30


def banking77() -> dict[str, list[str]]:
    by_intent: dict[str, list[str]] = collections.defaultdict(list)
    with open(BANKING77, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            by_intent[row["category"]].append(row["text"])
    return by_intent


def record(request_id: str, when: datetime, text: str, intent: str, thumbs: str | None = None) -> dict:
    return {"request_id": request_id, "conversation_id": request_id, "turn_index": 0, "timestamp": when,
            "messages": [{"role": "system", "content": "You route bank support queries.", "name": None},
                         {"role": "user", "content": text, "name": None}],
            "user_input": text, "completion": intent, "model": "router", "model_version": "1", "params": "{}",
            "latency_ms": 100.0, "task_type": "intent_routing", "retrieved_chunks": [], "post_processing": [],
            "thumbs": thumbs, "abandoned": False, "clarification_requested": False, "parse_error": False,
            "regenerated": False, "escalated": False, "feedback_comment": None, "user_segment": "retail",
            "metadata": "{}", "source_file": "test", "source_line": 1, "source_index": 0,
            "source_format": "canonical", "pii_counts": "{}", "withheld": []}


def write_redacted(home: DataHome, rows: list[dict]) -> None:
    df = frame(rows, REDACTED_LOGS_SCHEMA)  # noqa: F841 - read by name in the SQL
    with duckdb.connect(str(home.warehouse)) as con:
        con.execute("create schema if not exists privacy")
        con.execute("create table if not exists privacy.redacted_logs as select * from df where false")
        con.execute("insert into privacy.redacted_logs select * from df")


def months_of_banking(home: DataHome) -> dict[str, str]:
    """Two months over two days each; returns request_id -> true intent. Both months draw
    different queries of an intent; one January text is repeated on the second January day."""
    data = banking77()
    truth: dict[str, str] = {}
    rows = []
    for month, intents, offset in (("2026-01", OLD, 0), ("2026-02", [i for i in OLD if i != REMOVED] + NEW, PER_INTENT)):
        days = [datetime.fromisoformat(f"{month}-10T09:00:00"), datetime.fromisoformat(f"{month}-20T09:00:00")]
        for intent in intents:
            texts = data[intent][offset:offset + PER_INTENT] if intent not in NEW else data[intent][:PER_INTENT]
            for i, text in enumerate(texts):
                rid = f"{month}-{intent}-{i}"
                truth[rid] = intent
                rows.append(record(rid, days[i % 2] + timedelta(minutes=i), text, intent, "down" if i % 10 == 0 else None))
    first = rows[0]
    rows.append(record("2026-01-repeat", datetime(2026, 1, 20, 18), first["user_input"], first["completion"]))
    truth["2026-01-repeat"] = first["completion"]
    write_redacted(home, rows)
    return truth


def metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == key]
    return {k: v.value for k, v in mat.materialization.metadata.items()}


def table(home: DataHome, sql: str) -> pl.DataFrame:
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        return con.execute(sql).pl()


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """Both months embedded and clustered once for the tests of this module."""
    home = DataHome.resolve(tmp_path_factory.mktemp("clusters") / "home").ensure()
    truth = months_of_banking(home)
    resources = build_resources(home)
    instance = dg.DagsterInstance.local_temp(str(tmp_path_factory.mktemp("dagster_home")))
    runs = {}
    for day in ("2026-01-10", "2026-01-20", "2026-02-10", "2026-02-20"):
        runs[day] = dg.materialize(ASSETS, resources=resources, partition_key=day, selection=["log_embeddings"], instance=instance)
    for month in ("2026-01-01", "2026-02-01"):
        runs[month] = dg.materialize(ASSETS, resources=resources, partition_key=month, selection=MONTHLY, instance=instance)
    return home, truth, resources, instance, runs


def test_embeddings_are_cached_by_content(clustered):
    home, truth, resources, instance, runs = clustered
    first = metadata(runs["2026-01-10"], "log_embeddings")
    assert first["texts_embedded"] == first["distinct_texts"] == first["dagster/row_count"] == len(OLD) * PER_INTENT // 2
    # the repeated text on the second day is a cache hit
    second = metadata(runs["2026-01-20"], "log_embeddings")
    assert second["cache_hits"] == 1 and second["texts_embedded"] == second["distinct_texts"] - 1
    # re-running a day embeds nothing and leaves no duplicate rows
    again = dg.materialize(ASSETS, resources=resources, partition_key="2026-01-10", selection=["log_embeddings"], instance=instance)
    meta = metadata(again, "log_embeddings")
    assert meta["texts_embedded"] == 0 and meta["cache_hits"] == meta["distinct_texts"]
    counts = table(home, "select count(*) n, count(distinct request_id) d, count(distinct embed_text) t, "
                         "count(distinct content_hash) h from embeddings.log_embeddings")
    assert counts["n"][0] == counts["d"][0] == len(truth)
    # one cache row per distinct text, ever (Banking77 itself repeats a few queries)
    assert counts["h"][0] == counts["t"][0] <= len(truth) - 1
    embedded = sum(metadata(runs[d], "log_embeddings")["texts_embedded"] for d in ("2026-01-10", "2026-01-20", "2026-02-10", "2026-02-20"))
    cache = table(home, "select count(*) n, min(octet_length(vector)) b from embeddings.embedding_cache")
    assert cache["n"][0] == counts["h"][0] == embedded and cache["b"][0] == 768
    assert meta["model"]["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_clusters_recover_intents_and_drift_marks_new_ones(clustered):
    home, truth, _, _, runs = clustered
    assigned = table(home, "select request_id, cluster_id, month from clustering.log_clusters order by request_id")
    assert assigned.height == len(truth) and assigned["request_id"].n_unique() == len(truth)
    for month in ("2026-01", "2026-02"):
        part = assigned.filter(pl.col("request_id").str.starts_with(month))
        labels = [truth[r] for r in part["request_id"]]
        nmi = normalized_mutual_info_score(labels, part["cluster_id"].to_list())
        ari = adjusted_rand_score(labels, part["cluster_id"].to_list())
        print(f"\n{month}: {part['cluster_id'].n_unique()} clusters; NMI {nmi:.3f} ARI {ari:.3f}")
        assert nmi >= 0.6

    clusters = table(home, "select * from clustering.cluster_table")
    for month in (datetime(2026, 1, 1).date(), datetime(2026, 2, 1).date()):
        sizes = clusters.filter(pl.col("month") == month)["size"].sum()
        assert sizes == assigned.filter(pl.col("month") == month).height  # the unclustered stratum included
    card = clusters.filter(pl.col("keywords").list.contains("card")).height
    assert card >= 1 and clusters["examples"].list.len().min() >= 1

    drift = table(home, "select * from clustering.cluster_drift where month = '2026-02-01'")
    feb = assigned.filter(pl.col("month") == datetime(2026, 2, 1).date())
    dominant = {}
    for cid, group in feb.filter(pl.col("cluster_id") != "unclustered").group_by("cluster_id"):
        intents = collections.Counter(truth[r] for r in group["request_id"])
        intent, count = intents.most_common(1)[0]
        dominant[cid[0]] = (intent, count / group.height)
    status = dict(zip(drift["cluster_id"], drift["status"]))
    new_clusters = [cid for cid, (intent, share) in dominant.items() if intent in NEW and share > 0.5]
    assert new_clusters and all(status[cid] == "new" for cid in new_clusters)
    # continuing clusters kept their January id and their intent
    jan = assigned.filter(pl.col("month") == datetime(2026, 1, 1).date())
    jan_intent = {cid[0]: collections.Counter(truth[r] for r in g["request_id"]).most_common(1)[0][0]
                  for cid, g in jan.filter(pl.col("cluster_id") != "unclustered").group_by("cluster_id")}
    continuing = drift.filter(pl.col("status") == "continuing")["cluster_id"].to_list()
    assert len(continuing) >= 8
    assert sum(jan_intent[c] == dominant[c][0] for c in continuing) >= 0.9 * len(continuing)
    # the removed intent's January clusters are gone
    gone = set(drift.filter(pl.col("status") == "gone")["cluster_id"])
    assert {c for c, intent in jan_intent.items() if intent == REMOVED} <= gone
    print(f"February drift: {drift.group_by('status').len().sort('status').to_dicts()}; new intents' clusters {new_clusters}")
    meta = metadata(runs["2026-02-01"], "cluster_drift")
    assert meta["previous_month"] == "2026-01-01" and meta["by_status"]["new"] >= 3
    table_meta = metadata(runs["2026-02-01"], "cluster_table")
    assert table_meta["map"].startswith("![cluster map 2026-02](data:image/png;base64,")
    assert (home.reports / "clusters" / "2026-02.png").read_bytes()[:4] == b"\x89PNG"
    assert "| cluster | size | share | keywords" in table_meta["clusters"]


def test_reclustering_a_month_is_deterministic(clustered):
    home, _, resources, instance, _ = clustered
    query = "select request_id, cluster_id, map_x, map_y from clustering.log_clusters where month = '2026-02-01' order by request_id"
    before = table(home, query)
    drift_before = table(home, "select * from clustering.cluster_drift where month = '2026-02-01' order by cluster_id")
    assert dg.materialize(ASSETS, resources=resources, partition_key="2026-02-01", selection=MONTHLY, instance=instance).success
    assert table(home, query).equals(before)
    assert table(home, "select * from clustering.cluster_drift where month = '2026-02-01' order by cluster_id").equals(drift_before)


def write_scores(home: DataHome, model: str, version: str, statuses: list[tuple[str, str]]) -> None:
    """``evaluation.candidate_scores`` and ``evaluation.scorecard`` rows of a model scored on an
    eval-set version, in the evaluation assets' own table layouts."""
    from datetime import timezone

    from eval_pipeline.defs.evaluation.assets import CANDIDATE_SCORES, SCORECARD

    scores = pl.DataFrame([{"model_version": model, "eval_set_version": version, "tier": "deep", "example_id": e,
                            "slice": '{"category": "intent_routing"}', "status": st, "passed": st == "passed"}
                           for e, st in statuses]).with_columns(
        [pl.lit(None).cast(t).alias(c) for c, t in CANDIDATE_SCORES.items()
         if c not in ("model_version", "eval_set_version", "tier", "example_id", "slice", "status", "passed")]
    ).select(list(CANDIDATE_SCORES)).cast(CANDIDATE_SCORES)  # noqa: F841 - read by name in the SQL
    card = pl.DataFrame([{"model_version": model, "eval_set_version": version, "slice": "overall",
                          "created_at": datetime.now(timezone.utc)}], schema_overrides={"created_at": pl.Datetime("us", "UTC")}
                        ).with_columns([pl.lit(None).cast(t).alias(c) for c, t in SCORECARD.items()
                                        if c not in ("model_version", "eval_set_version", "slice", "created_at")]
                                       ).select(list(SCORECARD)).cast(SCORECARD)  # noqa: F841
    with duckdb.connect(str(home.warehouse)) as con:
        con.execute("create schema if not exists evaluation")
        con.execute("create table evaluation.candidate_scores as select * from scores")
        con.execute("create table evaluation.scorecard as select * from card")


def eval_set_rows(home: DataHome, version: str) -> pl.DataFrame:
    return table(home, f"select * from sampling.eval_set_versions where eval_set_version = '{version}' order by example_id")


def test_eval_set_versions_refresh_and_changelog(clustered, tmp_path):
    home, truth, resources, instance, _ = clustered
    # the demo's gates name its critical categories, whose precision the refresh reports
    resources = {**resources, "sampling": SamplingSettings(target_size=120, refresh_size=25),
                 "evaluation": EvaluationSettings(thresholds=str(DEMO_THRESHOLDS))}
    first = dg.materialize(ASSETS, resources=resources, partition_key="2026-01-01", selection=EVAL_SET, instance=instance)
    meta = metadata(first, "eval_set")
    assert meta["eval_set_version"] == "v1" and meta["added"] == 120 and meta["removed"] == 0
    v1 = eval_set_rows(home, "v1")
    assert v1.height == 120 and v1["example_id"].n_unique() == 120
    # the append-only tables are assets of the same step: each materialization says what it appended
    appended = {key: metadata(first, key) for key in ("eval_set_versions", "eval_set_changelog", "eval_set_summary")}
    assert {k: m["dagster/row_count"] for k, m in appended.items()} == {
        "eval_set_versions": 120, "eval_set_changelog": 120, "eval_set_summary": 1}
    assert all(m["eval_set_version"] == "v1" and m["appended"] == "v1 appended" for m in appended.values())
    assert appended["eval_set_versions"]["examples_per_version"] == {"v1": 120}
    assert "## v1 (2026-01)" in appended["eval_set_changelog"]["changelog"]
    assert appended["eval_set_summary"]["summary"].startswith("120 examples (target 120)")
    assert set(v1["added_in"]) == {"v1"} and v1["removed_in"].is_null().all()
    assert v1["inclusion_probability"].is_between(0, 1, closed="right").all()
    assert (v1["weight"] >= 1).all() and v1["stratum"].is_not_null().all()
    assert all(m[-1]["role"] == "user" and m[0]["role"] == "system" for m in v1["messages"].to_list())
    # the texts are read only for the drawn records (the draw itself loads no texts): they are the records' own
    redacted = table(home, "select request_id, completion, messages from privacy.redacted_logs")
    by_id = {r["request_id"]: r for r in redacted.to_dicts()}
    assert all(e["production_output"] == by_id[e["request_id"]]["completion"] is not None
               and e["messages"][-1]["content"] == by_id[e["request_id"]]["messages"][-1]["content"]
               for e in v1.to_dicts())
    # every January intent is in the first version (strata = clusters, with a floor)
    assert {truth[r] for r in v1["request_id"]} == set(OLD)
    v1_before = v1.clone()

    # a scorecard on v1, as the evaluation assets store it: every example passed but those of one
    # cluster, where half failed; February's additions then follow Neyman's allocation
    uncertain = v1["cluster_id"].value_counts().sort(["count", "cluster_id"], descending=[True, False])["cluster_id"][0]
    write_scores(home, "router:1", "v1", [(e, "failed" if c == uncertain and i % 2 else "passed")
                                          for i, (e, c) in enumerate(zip(v1["example_id"], v1["cluster_id"]))])
    second = dg.materialize(ASSETS, resources=resources, partition_key="2026-02-01", selection=EVAL_SET, instance=instance)
    meta = metadata(second, "eval_set")
    assert meta["allocation"] == "neyman"
    assert "category=intent_routing" in meta["critical_slice_precision"]
    assert meta["eval_set_version"] == "v2" and meta["based_on"] == "v1"
    v2 = eval_set_rows(home, "v2")
    changes = table(home, "select * from sampling.eval_set_changelog where eval_set_version = 'v2'")
    assert metadata(second, "eval_set_versions")["dagster/row_count"] == v2.height
    assert metadata(second, "eval_set_versions")["examples_per_version"] == {"v1": 120, "v2": v2.height}
    assert metadata(second, "eval_set_changelog")["dagster/row_count"] == changes.height
    assert metadata(second, "eval_set_changelog")["table_rows"] == 120 + changes.height
    added = set(changes.filter(pl.col("action") == "added")["example_id"])
    removed = set(changes.filter(pl.col("action") == "removed")["example_id"])
    # the changelog reconciles with the diff between the versions
    assert set(v2["example_id"]) == (set(v1["example_id"]) - removed) | added
    assert not added & set(v1["example_id"])
    assert added and meta["added"] == len(added) and meta["removed"] == len(removed)
    # a steady set: February's version holds the target within 10%, with its churn and the
    # share of traffic in continuing clusters in the metadata and the summary table
    assert abs(v2.height - 120) <= 12 and meta["size"] == v2.height and meta["target_size"] == 120
    assert meta["churn"]["added"] == len(added) and meta["churn"]["previous_size"] == 120
    assert meta["cluster_mode"] == "assigned" and 0.7 <= meta["continuing_share"] <= 1
    summary = table(home, "select * from sampling.eval_set_summary order by eval_set_version")
    assert summary["eval_set_version"].to_list() == ["v1", "v2"] and summary["size"].to_list() == [120, v2.height]
    assert "continuing clusters" in meta["changelog"] and "churn" in meta["changelog"]
    # examples of gone clusters are pruned, unless the cluster was only re-cut (its centroid within
    # the match threshold of a February cluster): those move to that cluster
    gone = table(home, "select cluster_id, nearest_id, nearest_similarity from clustering.cluster_drift "
                       "where month = '2026-02-01' and status = 'gone'")
    recut = {c: n for c, n, sim in gone.iter_rows() if sim is not None and sim >= 0.9}
    truly_gone = set(gone["cluster_id"]) - set(recut)
    assert truly_gone
    assert {e for e, c in zip(v1["example_id"], v1["cluster_id"]) if c in truly_gone} <= removed
    assert all("gone" in r or "over-represented" in r or "left the traffic" in r or "room for new topics" in r
               for r in changes.filter(pl.col("action") == "removed")["reason"])
    # the removed intent's examples go; of the intents still in traffic, at most 10% of the set
    present = [e for e in removed if truth[v1.filter(pl.col("example_id") == e)["request_id"][0]] != REMOVED]
    reasons = collections.Counter(changes.filter(pl.col("example_id").is_in(present))["reason"])
    print(f"removed of intents still in traffic: {len(present)}: {reasons}")
    assert len(present) <= 12
    assert not {truth[r] for r in v2["request_id"]} & {REMOVED}
    moved = set(changes.filter(pl.col("action") == "reassigned")["example_id"])
    assert moved == {e for e, c in zip(v1["example_id"], v1["cluster_id"]) if c in recut} - removed
    old_cluster = dict(zip(v1["example_id"], v1["cluster_id"]))
    for eid, cid in v2.filter(pl.col("example_id").is_in(list(moved))).select("example_id", "cluster_id").iter_rows():
        assert cid == recut[old_cluster[eid]]
    print(f"February refresh: {len(added)} added, {len(removed)} removed, {len(moved)} moved to a re-cut cluster")
    # additions give new clusters their floor and refill the set where it is below what the
    # traffic warrants; every new intent is in
    for row in v2.filter(pl.col("example_id").is_in(list(added))).iter_rows(named=True):
        assert "new cluster" in row["reason"] or "under-covered" in row["reason"] or "refill" in row["reason"], row["reason"]
    assert set(NEW) <= {truth[r] for r in v2["request_id"]}
    # kept examples are untouched, and the past version is never edited
    kept = v2.filter(~pl.col("example_id").is_in(list(added)))
    assert set(kept["added_in"]) == {"v1"}
    assert eval_set_rows(home, "v1").equals(v1_before)
    assert "## v2 (2026-02)" in meta["changelog"] and "## v1 (2026-01)" in meta["changelog"]
    assert (home.reports / "eval_set" / "CHANGELOG.md").read_text().count("## v") == 2
    assert meta["coverage"]["strata_covered"] >= 0.8 * meta["coverage"]["strata"]

    # the same month again gives the same examples: no new version
    again = dg.materialize(ASSETS, resources=resources, partition_key="2026-02-01", selection=EVAL_SET, instance=instance)
    assert metadata(again, "eval_set")["eval_set_version"] == "v2"
    for key in ("eval_set_versions", "eval_set_changelog", "eval_set_summary"):
        kept = metadata(again, key)
        assert kept["dagster/row_count"] == 0 and kept["appended"] == "no new version: v2 kept (same examples)", key
    assert metadata(again, "eval_set_versions")["table_rows"] == 120 + v2.height
    assert table(home, "select count(distinct eval_set_version) n from sampling.eval_set_versions")["n"][0] == 2

    # export: an old version says what became of its examples
    from eval_pipeline.lib.sampling.eval_set import export_rows
    from eval_pipeline.runs import load_eval_set

    name, rows = load_eval_set(home, "v1")
    assert name == "v1" and {r["example_id"] for r in rows if r["removed_in"] == "v2"} == removed
    for fmt in ("jsonl", "csv", "parquet"):
        path = export_rows(rows, fmt, tmp_path / f"v1.{fmt}")
        back = (pl.read_ndjson(path) if fmt == "jsonl" else pl.read_csv(path) if fmt == "csv" else pl.read_parquet(path))
        assert back.height == 120 and {"example_id", "messages", "inclusion_probability", "weight", "slice"} <= set(back.columns)
    with pytest.raises(ValueError, match="versions: v1, v2"):
        load_eval_set(home, "v9")


def test_refresh_schedules_wait_for_the_days_then_run_once(clustered):
    home, _, _, instance, _ = clustered
    january = sampling_schedules.days_of(datetime(2026, 1, 1).date())
    missing = sampling_schedules.missing_days(instance, datetime(2026, 1, 1).date())
    assert len(january) == 31 and set(missing) == set(january) - {"2026-01-10", "2026-01-20"}
    ingest = sampling_schedules.month_end_ingest_schedule(dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 2, 1, 3)))
    assert sorted(r.partition_key for r in ingest) == missing
    assert len({r.run_key for r in ingest}) == len(missing)
    waiting = sampling_schedules.monthly_refresh_schedule(dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 2, 1, 5)))
    assert isinstance(waiting, dg.SkipReason) and "waiting for 29 days" in waiting.skip_message
    last = sampling_schedules.monthly_refresh_schedule(dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 2, 3, 23)))
    assert last.partition_key == "2026-01-01" and last.run_key == "monthly-refresh-2026-01"
    assert last.tags["missing_days"].count(",") == 28
    for day in missing:  # once every day is in, the first tick runs it
        instance.report_runless_asset_event(dg.AssetMaterialization("log_embeddings", partition=day))
    ready = sampling_schedules.monthly_refresh_schedule(dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 2, 1, 6)))
    assert ready.run_key == "monthly-refresh-2026-01" and "missing_days" not in ready.tags
    done = sampling_schedules.month_end_ingest_schedule(dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 2, 1, 3)))
    assert isinstance(done, dg.SkipReason)


def test_odd_months_give_one_stratum_and_a_message(clustered):
    home, _, resources, instance, _ = clustered
    march = [record(f"same-{i}", datetime(2026, 3, 3, 9, i), "where is my card?", "card_arrival") for i in range(40)]
    april = [record(f"few-{i}", datetime(2026, 4, 3, 9, i), text, "x") for i, text in
             enumerate(["hello", "is my card lost?", "what fees apply?", "", "change my pin"])]
    write_redacted(home, march + april)
    for day in ("2026-03-03", "2026-04-03"):
        assert dg.materialize(ASSETS, resources=resources, partition_key=day, selection=["log_embeddings"], instance=instance).success
    # March (40 copies of one text, after February) is assigned first: the copies are novel and
    # form one new cluster; April (5 records) is too small to refit or to call March's topic gone
    cases = {"2026-03-01": ("identical", 1), "2026-04-01": ("assigned", None), "2026-05-01": ("no records", 0)}
    results = {}
    for month, (phrase, strata) in cases.items():
        result = results[month] = dg.materialize(ASSETS, resources=resources, partition_key=month,
                                                 selection=MONTHLY | dg.AssetSelection.assets(*EVAL_SET), instance=instance)
        assert result.success  # downstream (the eval set) still runs
        assert phrase in metadata(result, "log_clusters")["messages"]
        rows = table(home, f"select cluster_id, status, size from clustering.cluster_table where month = '{month}'")
        assert strata is None or rows.height == strata
    march_rows = table(home, "select cluster_id, status from clustering.cluster_table where month = '2026-03-01'")
    assert march_rows["status"][0] == "new"
    april_rows = table(home, "select cluster_id, size from clustering.cluster_table where month = '2026-04-01'")
    assert set(april_rows["cluster_id"]) <= {march_rows["cluster_id"][0], "unclustered"} and april_rows["size"].sum() == 5
    april_drift = table(home, "select status from clustering.cluster_drift where month = '2026-04-01'")
    assert set(april_drift["status"]) == {"continuing"}
    # the empty month: no clusters; those of the latest month that had any (March) are gone
    may_drift = table(home, "select status from clustering.cluster_drift where month = '2026-05-01'")
    assert set(may_drift["status"]) == {"gone"}
    # the eval set: a month with no data keeps the current version as it is
    april, may = metadata(results["2026-04-01"], "eval_set"), metadata(results["2026-05-01"], "eval_set")
    assert may["eval_set_version"] == april["eval_set_version"] and may["added"] == may["removed"] == 0
    assert "nothing to refresh from" in may["messages"]
    current = table(home, "select count(*) n from sampling.eval_set where month = '2026-05-01'")["n"][0]
    assert current == april["dagster/row_count"] > 0
