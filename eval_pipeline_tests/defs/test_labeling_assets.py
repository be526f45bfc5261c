"""Labeling through the real Dagster runtime: tasks out, Label Studio exports in, the judge over
real HTTP (a local OpenAI-compatible server, the real ``openai`` client), agreement and gold labels.

``sampling.eval_set`` is written straight into the warehouse (as the IO manager would leave it)
with the example ids the Label Studio export fixtures use.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from openai_server import Reply, ScriptedServer

from eval_pipeline.definitions import build_definitions
from eval_pipeline.defs.clustering import assets as clustering_assets
from eval_pipeline.defs.embeddings import assets as embedding_assets
from eval_pipeline.defs.ingest import assets as ingest_assets
from eval_pipeline.defs.labeling import assets as labeling_assets
from eval_pipeline.defs.labeling.sensors import labels_sensor
from eval_pipeline.defs.privacy import assets as privacy_assets
from eval_pipeline.defs.resources import JudgeSettings, PipelineSettings, build_resources
from eval_pipeline.defs.sampling import assets as sampling_assets
from eval_pipeline.lib.core.paths import DataHome
from eval_pipeline.lib.evaluation import scorers
from eval_pipeline.lib.labeling.rubrics import load_rubrics, rubric_version
from eval_pipeline.lib.storage.tables import EVAL_SET_SCHEMA, frame

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "label_studio"
MONTH = "2026-01-01"
EXAMPLES = {f"ex_{i:012d}": "intent_routing" for i in range(1, 6)} | {f"ex_{i:012d}": "rag_qa" for i in range(11, 15)}


def example(eid: str, task_type: str) -> dict:
    rag = task_type == "rag_qa"
    return {"eval_set_version": "v1", "month": date(2026, 1, 1), "month_start": datetime(2026, 1, 1), "example_id": eid,
            "request_id": f"req-{eid}", "conversation_id": f"conv-{eid}", "turn_index": 0, "timestamp": datetime(2026, 1, 5, 9),
            "messages": [{"role": "system", "content": "You are the assistant of a digital bank.", "name": None},
                         {"role": "user", "content": f"My card still has not arrived ({eid[-2:]} days now), what should I do?",
                          "name": None}],
            "context_chunks": [{"doc_id": "kb-card-arrival-01", "text": "Cards arrive within 5 working days.", "score": 0.8}] if rag else [],
            "production_output": "Cards arrive within 5 working days." if rag else "card_arrival",
            "reference": None, "task_type": task_type, "category": task_type, "slice": json.dumps({"category": task_type}),
            "cluster_id": "c0001", "stratum": "c0001", "inclusion_probability": 0.5, "represents": 1, "weight": 2.0,
            "failure_signals": [], "added_in": "v1", "removed_in": None, "reason": "initial draw"}


@pytest.fixture
def labeled_home(tmp_path):
    home = DataHome.resolve(tmp_path / "home").ensure()
    df = frame([example(e, t) for e, t in EXAMPLES.items()], EVAL_SET_SCHEMA)  # noqa: F841 - read in SQL
    with duckdb.connect(str(home.warehouse)) as con:
        con.execute("create schema sampling")
        con.execute("create table sampling.eval_set as select * from df")
    return home


def assets(home):
    """Every asset up to labeling (only the selected ones run; the others are where inputs come from)."""
    return [ingest_assets.landing_manifest, ingest_assets.ingested_logs, privacy_assets.redacted_logs,
            embedding_assets.log_embeddings, clustering_assets.log_clusters, sampling_assets.eval_set,
            labeling_assets.annotation_tasks, labeling_assets.judge_labels, labeling_assets.human_labels,
            labeling_assets.label_agreement, labeling_assets.judge_bias_probes, labeling_assets.gold_labels]


def table(home, sql):
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        return con.execute(sql).pl()


def meta(result, key):
    [event] = [m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_annotation_tasks_are_label_studio_and_plain_files(labeled_home):
    home = labeled_home
    result = dg.materialize(assets(home), resources=build_resources(home), partition_key=MONTH,
                            selection=["annotation_tasks"])
    assert meta(result, "annotation_tasks")["tasks_per_rubric"] == {"intent_routing": 5, "rag_qa": 4}
    rubrics = load_rubrics()
    folder = home.labels_outbox / "v1"
    for name, n in (("intent_routing", 5), ("rag_qa", 4)):
        config = ET.fromstring((folder / "label_studio" / f"{name}.config.xml").read_text())
        choices = {c.get("name") for c in config.iter("Choices")}
        assert choices == {c.id for c in rubrics[name].criteria}
        # a reference to confirm only where the task type has one correct answer
        assert bool(list(config.iter("TextArea"))) == rubrics[name].has_reference
        tasks = json.loads((folder / "label_studio" / f"{name}.tasks.json").read_text())
        assert len(tasks) == n and {t["data"]["example_id"] for t in tasks} <= set(EXAMPLES)
        plain = pl.read_csv(folder / "plain" / f"{name}.tasks.csv")
        assert plain.height == n * len(rubrics[name].criteria)
    assert table(home, "select count(*) n from labeling.annotation_tasks")["n"][0] == 9


def judge_reply(body: dict) -> Reply:
    """A judge that passes everything except the format of intent routing, from the schema it was sent."""
    schema = body["response_format"]["json_schema"]["schema"]
    answer = {}
    for criterion, spec in schema["properties"].items():
        levels = spec["properties"]["score"]["enum"]
        score = levels[0] if criterion == "bare_label_format" else levels[-1]
        answer[criterion] = {"score": score, "justification": f"{criterion}: checked against the rubric"}
    return Reply(content=json.dumps(answer))


def test_judge_skips_without_endpoint_and_scores_and_caches_with_one(labeled_home):
    home = labeled_home
    skipped = dg.materialize(assets(home), resources=build_resources(home), partition_key=MONTH, selection=["judge_labels"])
    assert "no judge endpoint configured" in meta(skipped, "judge_labels")["skipped"]
    assert table(home, "select count(*) n from labeling.judge_labels")["n"][0] == 0

    with ScriptedServer() as server:
        server.responder = judge_reply
        resources = {**build_resources(home), "judge": JudgeSettings(base_url=server.base_url, model="judge-model",
                                                                     max_retries=1, timeout=10)}
        first = dg.materialize(assets(home), resources=resources, partition_key=MONTH, selection=["judge_labels"])
        m = meta(first, "judge_labels")
        assert m["by_status"] == {"ok": 9} and m["requests"] == 9 and m["cache_hits"] == 0
        rows = table(home, "select * from labeling.judge_labels")
        assert rows["justification"].str.contains("checked against the rubric").all()
        assert rows.filter(pl.col("criterion") == "bare_label_format")["score"].to_list() == [0] * 5
        # each judge label names the rubric version it was judged under
        assert dict(rows.group_by("rubric").agg(pl.col("rubric_version").unique()).iter_rows()) == {
            name: [rubric_version(load_rubrics()[name])] for name in ("intent_routing", "rag_qa")}
        # the rubric went to the judge in the system prompt
        assert "grounded_in_context" in json.dumps(server.requests)
        again = dg.materialize(assets(home), resources=resources, partition_key=MONTH, selection=["judge_labels"])
        assert meta(again, "judge_labels")["requests"] == 0 and meta(again, "judge_labels")["cache_hits"] == 9
        assert len(server.requests) == 9


def test_label_studio_exports_round_trip_into_gold_labels(labeled_home):
    home = labeled_home
    settings = PipelineSettings(home=str(home.root))
    context = dg.build_sensor_context(resources={"settings": settings})
    assert isinstance(labels_sensor(context), dg.SkipReason)
    home.labels_inbox.mkdir(parents=True, exist_ok=True)
    for name in ("export_two_annotators.json", "export_three_annotators.json"):
        shutil.copy(FIXTURES / name, home.labels_inbox / name)
    context = dg.build_sensor_context(resources={"settings": settings}, cursor=context.cursor)
    request = labels_sensor(context)
    assert isinstance(request, dg.RunRequest) and request.run_key.startswith("labels-")
    assert isinstance(labels_sensor(dg.build_sensor_context(resources={"settings": settings}, cursor=context.cursor)),
                      dg.SkipReason)

    # a data home from before BERTScore: its gold_references lacks the column, and gains it (last)
    with duckdb.connect(str(home.warehouse)) as con:
        con.execute("create schema labeling")
        con.execute("create table labeling.gold_references (example_id varchar, eval_set_version varchar, "
                    "task_type varchar, rubric varchar, reference varchar, n_annotators bigint, agreement_share double, "
                    "tie boolean, production_output varchar, exact_match double, token_f1 double, rouge_l double)")
        con.execute("insert into labeling.gold_references values ('ex_stale', 'v0', 'intent_routing', 'intent_routing', "
                    "'card_arrival', 2, 1.0, false, 'card_arrival', 1.0, 1.0, 1.0)")
    # the fixture exports name no rubric version (made before versions existed): their labels take
    # the version annotation_tasks recorded when the tasks went out
    dg.materialize(assets(home), resources=build_resources(home), partition_key=MONTH, selection=["annotation_tasks"])
    defs = build_definitions(home)
    run = defs.resolve_job_def("labeling_job").execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert run.success
    labels = table(home, "select * from labeling.human_labels")
    quarantine = table(home, "select * from labeling.label_quarantine")
    two = labels.filter(pl.col("task_type") == "intent_routing")
    three = labels.filter(pl.col("task_type") == "rag_qa")
    assert two["annotator"].n_unique() == 2 and three["annotator"].n_unique() == 3
    # every intent-routing task: 2 annotators x every criterion
    criteria = {r.name: len(r.criteria) for r in load_rubrics().values()}
    assert two.height == 5 * 2 * criteria["intent_routing"]
    assert dict(labels.group_by("rubric").agg(pl.col("rubric_version").unique().sort()).iter_rows()) == {
        name: [rubric_version(r)] for name, r in load_rubrics().items() if name in ("intent_routing", "rag_qa")}
    assert {"out_of_range", "unknown_criterion"} <= set(quarantine["reason"])
    assert quarantine["message"].str.contains("export_three_annotators.json").all()
    human_meta = {k: v.value for k, v in next(
        m for m in run.get_asset_materialization_events() if m.asset_key.to_user_string() == "human_labels"
    ).materialization.metadata.items()}
    counts = human_meta["counts"]
    assert counts["read"] == counts["accepted"] + counts["quarantined"] and counts["cancelled"] == 1
    assert counts["quarantined"] == quarantine.height

    agreement = table(home, "select * from labeling.label_agreement")
    methods = dict(zip(agreement["group"], agreement["method"]))
    assert methods["intent_routing"] == "cohens_kappa" and methods["rag_qa"] == "krippendorff_alpha"
    gold = table(home, "select * from labeling.gold_labels")
    assert gold.select("example_id", "criterion").n_unique() == gold.height
    assert set(gold["example_id"]) == set(EXAMPLES)
    # one annotator corrected a reference: the adjudicated reference and its metrics
    refs = table(home, "select * from labeling.gold_references")
    assert set(refs["example_id"]) <= {e for e, t in EXAMPLES.items() if t == "intent_routing"}
    assert refs["exact_match"].is_not_null().all() and refs["rouge_l"].is_not_null().all()
    assert refs.columns[-1] == "bertscore_f1" and refs.height and refs["bertscore_f1"].is_not_null().all()
    scorer = scorers._bert_scorer()  # what bert-score gives each pair alone
    for row in refs.iter_rows(named=True):
        expected = float(scorer.score([row["production_output"]], [row["reference"]])[2][0])
        assert row["bertscore_f1"] == pytest.approx(expected, abs=1e-5)
    means = meta(run, "gold_references")["production_output_vs_reference"]
    assert set(means) == {"exact_match", "token_f1", "rouge_l", "bertscore_f1"}
    assert means["bertscore_f1"] == round(float(refs["bertscore_f1"].mean()), 3)
    assert (home.reports / "labels" / "review_queue.csv").exists()
    # no judge bias probe has run (no table yet): gold labels say so beside the calibration
    gold_meta = {k: v.value for k, v in next(
        m for m in run.get_asset_materialization_events() if m.asset_key.to_user_string() == "gold_labels"
    ).materialization.metadata.items()}
    assert gold_meta["judge_bias_flags"] == [] and "eval-pipeline probe-judge" in gold_meta["judge_observed_bias"]


def test_labels_before_any_eval_set_are_quarantined_not_lost(tmp_path):
    home = DataHome.resolve(tmp_path / "home").ensure()
    home.labels_inbox.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "export_two_annotators.json", home.labels_inbox / "early.json")
    run = build_definitions(home).resolve_job_def("labeling_job").execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert run.success
    assert table(home, "select count(*) n from labeling.human_labels")["n"][0] == 0
    quarantine = table(home, "select reason, count(*) n from labeling.label_quarantine group by 1")
    assert set(dict(quarantine.iter_rows())) == {"unknown_example"}
    assert table(home, "select count(*) n from labeling.gold_labels")["n"][0] == 0
