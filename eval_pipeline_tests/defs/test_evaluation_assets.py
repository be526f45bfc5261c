"""Evaluation through the real Dagster runtime: the registry sensor, the evaluation job on
recorded outputs and on a local OpenAI-compatible server (the real ``openai`` client), and the
``evaluate`` command's exit codes."""

from __future__ import annotations

import json
import re

import dagster as dg
import duckdb
import polars as pl
import pytest
from evaluation_fixtures import isolated_evaluation_home, next_version, outputs, record, register
from openai_server import Reply, ScriptedServer

from eval_pipeline.cli import main
from eval_pipeline.definitions import build_definitions
from eval_pipeline.defs.evaluation.assets import SCORECARD
from eval_pipeline.defs.registry.sensors import model_registry_sensor
from eval_pipeline.defs.resources import EvaluationSettings, PipelineSettings
from eval_pipeline.demo.settings import THRESHOLDS as DEMO_THRESHOLDS
from eval_pipeline.lib.evaluation import scorers
from eval_pipeline.runs import stored_scorecard

# The fixture's set has the demo's task types; the packaged gates name no category, so the tests
# that look for the routing slice's critical gate use the demo's gates.
DEMO_GATES = str(DEMO_THRESHOLDS)


@pytest.fixture
def ev(tmp_path, monkeypatch):
    home, examples, refs = isolated_evaluation_home(tmp_path / "home", monkeypatch)
    return home, examples, refs


def recorded(home, name):
    return {"provider": "recorded", "recorded_path": str(home.recordings / f"{name}.jsonl")}


def query(home, sql, *params):
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def tick(instance, home, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={
        "settings": PipelineSettings(home=str(home.root)), "evaluation": EvaluationSettings(sensor_tier="deep")})
    return model_registry_sensor(context), context


def test_registering_a_version_triggers_exactly_one_run(ev):
    home, _, _ = ev
    defs = build_definitions(home, {"evaluation": EvaluationSettings(thresholds=DEMO_GATES)})
    with dg.instance_for_test() as instance:
        first, _ = tick(instance, home)
        assert isinstance(first, dg.SkipReason) and "no new model version" in first.skip_message

        register(home, "1", "baseline", **recorded(home, "baseline"))
        result, _ = tick(instance, home)
        assert [(r.run_key, r.partition_key) for r in result.run_requests] == [("evaluate:router:1", "router:1")]
        [added] = result.dynamic_partitions_requests
        assert added.partitions_def_name == "model_versions" and list(added.partition_keys) == ["router:1"]
        cursor = result.cursor
        # the next ticks, with the cursor the sensor left, request nothing more
        again, _ = tick(instance, home, cursor)
        assert isinstance(again, dg.SkipReason)

        register(home, "2", **recorded(home, "regressed"))
        later, _ = tick(instance, home, cursor)
        assert [(r.run_key, r.partition_key) for r in later.run_requests] == [("evaluate:router:2", "router:2")]

        # run what was requested, in order: the baseline, then the candidate
        job = defs.resolve_job_def("evaluation_job")
        for request in [*result.run_requests, *later.run_requests]:
            instance.add_dynamic_partitions("model_versions", [request.partition_key])
            run = job.execute_in_process(partition_key=request.partition_key, run_config=request.run_config,
                                         instance=instance, tags=request.tags)
            assert run.success
        assert set(instance.get_dynamic_partitions("model_versions")) == {"router:1", "router:2"}
        [(verdict, baseline)] = query(home, "select distinct verdict, baseline from evaluation.scorecard "
                                            "where model_version = 'router:2'")
        assert (verdict, baseline) == ("fail", "router:1")
        scorecard = [m for m in run.get_asset_materialization_events() if m.asset_key.to_user_string() == "scorecard"]
        meta = scorecard[0].materialization.metadata
        assert meta["verdict"].value == "fail" and meta["worst_slice"].value == "category=intent_routing"

        # a version evaluated from the command line before the sensor saw it is not run again
        register(home, "3", **recorded(home, "same"))
        instance.add_dynamic_partitions("model_versions", ["router:3"])
        assert job.execute_in_process(partition_key="router:3", instance=instance).success
        skipped, context = tick(instance, home, later.cursor)
        assert isinstance(skipped, dg.SkipReason) and "already have a scorecard" in skipped.skip_message
        assert "router:3" in json.loads(context.cursor)


def test_evaluate_exit_codes_and_scorecard_tables(ev, capsys):
    home, examples, _ = ev
    register(home, "1", "baseline", **recorded(home, "baseline"))
    register(home, "2", **recorded(home, "regressed"))
    register(home, "3", **recorded(home, "same"))
    args = ["evaluate", "--home", str(home.root), "--thresholds", DEMO_GATES]

    assert main([*args, "--model", "router:2"]) == 1
    out = capsys.readouterr().out
    assert "verdict: FAIL  router:2 vs router:1" in out and "category=intent_routing" in out
    html = next(line.split("report: ")[1] for line in out.splitlines() if line.startswith("report: "))
    assert "Scorecard: router:2" in open(html, encoding="utf-8").read()
    # what the command printed and gated on is the card stored in the pipeline's state (the overall
    # row of evaluation.scorecard), the same card as the JSON report written beside the HTML for people
    card, report = stored_scorecard(home, "router:2", "deep")
    assert card["verdict"] == "fail" and str(report) == html
    assert card == json.loads((home.reports / "scorecards" / "router" / "2.deep.json").read_text())
    assert query(home, "select slice from evaluation.scorecard where model_version = 'router:2' "
                       "and card is not null") == [("overall",)]
    assert stored_scorecard(home, "router:2", "continuous") is None and stored_scorecard(home, "router:9", "deep") is None
    # every example of the set was run and scored; the open questions are not scored, never passed
    by_status = dict(query(home, "select status, count(*) from evaluation.candidate_scores "
                                 "where model_version = 'router:2' group by 1"))
    assert sum(by_status.values()) == len(examples) and by_status["not_scored"] == 20
    assert query(home, "select count(*) from evaluation.candidate_scores where status = 'not_scored' and passed is not null") == [(0,)]
    # reference task types carry every reference metric (BERTScore reported beside exact match, the pass
    # rule); open-ended ones none
    rows = query(home, "select task_type, status, scores, output, reference from evaluation.candidate_scores "
                       "where model_version = 'router:2' and status <> 'error'")
    with_reference = [(t, st, json.loads(sc), o, r) for t, st, sc, o, r in rows if t in ("intent_routing", "extraction")]
    assert with_reference and all(set(sc) == {"exact_match", "token_f1", "rouge_l", "bertscore_f1"}
                                  for _, _, sc, _, _ in with_reference)
    assert all(json.loads(sc) == {} for t, _, sc, _, _ in rows if t == "open_question")
    assert all(0.0 <= sc["bertscore_f1"] <= 1.0 for _, _, sc, _, _ in with_reference)
    assert all((st == "passed") == (sc["exact_match"] == 1.0) for _, st, sc, _, _ in with_reference)
    failed = [sc["bertscore_f1"] for _, st, sc, _, _ in with_reference if st == "failed"]
    assert failed and max(failed) < 1.0 - 1e-3
    # the run's one batched call gives what bert-score gives each pair alone
    scorer = scorers._bert_scorer()
    for _, _, sc, output, reference in [r for r in with_reference if r[1] == "failed"][:5]:
        assert sc["bertscore_f1"] == pytest.approx(float(scorer.score([output], [reference])[2][0]), abs=1e-5)

    assert main([*args, "--model", "router:3"]) == 0  # identical to the baseline: not called worse
    assert "verdict: PASS" in capsys.readouterr().out

    # the continuous tier: a fixed stratified subset, the tier recorded in the run's rows. Its 52
    # routing examples cannot rule out a 5-point drop (Newcombe interval +-5.8 points with no
    # example flipped), so the identical candidate is inconclusive there, never worse.
    assert main([*args, "--model", "router:3", "--tier", "continuous"]) == 2
    assert "category=intent_routing inconclusive" in capsys.readouterr().out
    assert query(home, "select tier, count(*) from evaluation.candidate_outputs where model_version = 'router:3' "
                       "group by 1") == [("continuous", 150)]

    assert main([*args, "--model", "router:9"]) == 2
    assert "router:9" in capsys.readouterr().err

    # registering the same version twice is an error that says so
    assert main(["register-model", "--home", str(home.root), "--name", "router", "--version", "2",
                 "--provider", "recorded", "--recorded", str(home.recordings / "same.jsonl")]) == 2
    assert "router:2 is already registered" in capsys.readouterr().err


def test_tiny_set_is_inconclusive_with_exit_code_2(ev, tmp_path, capsys):
    home, _, _ = ev
    gates = tmp_path / "gates.yaml"
    gates.write_text("slices:\n  category=open_question: {critical: true, max_drop: 0.05}\n")
    register(home, "1", "baseline", **recorded(home, "baseline"))
    register(home, "2", **recorded(home, "same"))
    # the open questions are not scored offline, so a critical gate on them cannot be told
    assert main(["evaluate", "--home", str(home.root), "--model", "router:2", "--thresholds", str(gates)]) == 2
    out = capsys.readouterr().out
    assert "verdict: INCONCLUSIVE" in out and "critical slice category=open_question" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("overall: {max_drop: 3}\n")
    assert main(["evaluate", "--home", str(home.root), "--model", "router:2", "--thresholds", str(bad)]) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_provider_failures_are_errors_in_the_scorecard(ev, capsys):
    home, examples, refs = ev
    answers = outputs(examples, refs, "same")
    by_text = {ex["messages"][-1]["content"]: answers[ex["example_id"]] for ex in examples}
    failing = {ex["messages"][-1]["content"] for ex in examples[:3]}

    def respond(body: dict) -> Reply:
        text = body["messages"][-1]["content"]
        if text in failing:
            return Reply(status=400, body={"error": {"message": "context length exceeded", "type": "invalid_request_error"}})
        return Reply(content=by_text[text])

    register(home, "1", "baseline", **recorded(home, "baseline"))
    with ScriptedServer() as server:
        server.responder = respond
        register(home, "4", provider="openai-compatible", base_url=server.base_url, model="router-4",
                 params={"temperature": 0, "max_tokens": 64})
        code = main(["evaluate", "--home", str(home.root), "--model", "router:4"])
        assert len(server.requests) == len(examples)  # a 400 is not retried: the request itself is wrong
        assert server.requests[0]["max_tokens"] == 64 and server.max_in_flight <= EvaluationSettings().max_workers
    out = capsys.readouterr().out
    assert code == 2 and "verdict: INCONCLUSIVE" in out and "3 errors" in out
    rows = query(home, "select status, passed, reason from evaluation.candidate_scores "
                       "where model_version = 'router:4' and status = 'error'")
    assert len(rows) == 3 and all(passed is None and "context length exceeded" in reason for _, passed, reason in rows)
    card = json.loads((home.reports / "scorecards" / "router" / "4.deep.json").read_text())
    assert card["counts"]["errors"] == 3 and card["counts"]["passed"] + card["counts"]["failed"] == len(examples) - 23
    assert any("3 of 420 examples errored" in r for r in card["reasons"])


def test_the_judge_scores_open_ended_examples_when_configured(ev, monkeypatch, capsys):
    home, examples, _ = ev
    def judge(body: dict) -> Reply:
        """Fails every criterion of the odd-numbered open questions (half of them), passes the rest."""
        schema = body["response_format"]["json_schema"]["schema"]
        take = re.search(r"take (\d+)\n</turn>", body["messages"][-1]["content"])
        bad = take is not None and int(take.group(1)) % 2 == 1
        answer = {c: {"score": spec["properties"]["score"]["enum"][0 if bad else -1], "justification": f"{c}: checked"}
                  for c, spec in schema["properties"].items()}
        return Reply(content=json.dumps(answer))

    register(home, "1", "baseline", **recorded(home, "baseline"))
    with ScriptedServer() as server:
        server.responder = judge
        monkeypatch.setenv("EVAL_PIPELINE_JUDGE_BASE_URL", server.base_url)
        monkeypatch.setenv("EVAL_PIPELINE_JUDGE_MODEL", "judge-model")
        assert main(["evaluate", "--home", str(home.root), "--model", "router:1"]) == 0
        # the judge saw the candidate's output, with the conversation it answered
        assert any("Compound interest is interest on interest." in json.dumps(r["messages"]) for r in server.requests)
    rows = query(home, "select status, count(*), bool_and(list_contains(scorers, 'judge:' || ?)) "
                       "from evaluation.candidate_scores where task_type = 'open_question' group by 1 order by 1",
                 f"{server.base_url}|judge-model")
    assert rows == [("failed", 10, True), ("passed", 10, True)]
    # tasks with one correct answer get both: the reference decides together with the judge
    both = query(home, "select count(*) from evaluation.candidate_scores where task_type = 'intent_routing' "
                       "and list_contains(scorers, 'reference') and len(scorers) = 2")
    assert both == [(150,)]
    assert "0 not scored" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# a baseline scored on the eval set's previous version
# --------------------------------------------------------------------------------------------

V1_V2 = "baseline scored on v1, candidate on v2: paired on 390 shared examples (40 only in v2, 30 only in v1)"


def test_scorecard_pairs_a_baseline_on_the_previous_version_on_the_shared_examples(ev):
    """The registry sensor's path: the baseline was scored on v1, the candidate runs on v2 (30 of
    v1's extraction examples dropped, 40 added), and the scorecard asset pairs the 390 examples
    both hold, states both versions in its table, metadata, card and report. Rows of an older
    scoring of the baseline cannot mix in, and a scorecard table of the earlier layout gets the
    new columns."""
    home, examples, refs = ev
    earlier = pl.DataFrame(schema=pl.Schema(list(SCORECARD.items())[:-3]))  # noqa: F841 - read in SQL
    with duckdb.connect(str(home.warehouse)) as con:  # a table written before the comparison's columns
        con.execute("create schema evaluation")
        con.execute("create table evaluation.scorecard as select * from earlier")
        con.execute("insert into evaluation.scorecard (model_version, slice, verdict) "
                    "values ('router:0', 'overall', 'pass')")
    assert stored_scorecard(home, "router:0", "deep") is None  # a table without the card column: no stored card
    register(home, "1", "baseline", **recorded(home, "baseline"))
    defs = build_definitions(home)
    job = defs.resolve_job_def("evaluation_job")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("model_versions", ["router:1", "router:2"])
        assert job.execute_in_process(partition_key="router:1", instance=instance).success
        _, every, all_refs = next_version(home, examples, refs)
        record(home, every, outputs(every, all_refs, "same"), "same_v2")
        register(home, "2", **recorded(home, "same_v2"))
        # a stray row of an older scoring of the baseline: never paired with v2
        with duckdb.connect(str(home.warehouse)) as con:
            con.execute("insert into evaluation.candidate_scores (model_version, eval_set_version, tier, example_id, "
                        "status) values ('router:1', 'v0', 'deep', 'ex_gone', 'passed')")
        run = job.execute_in_process(partition_key="router:2", instance=instance)  # the registry's baseline
        assert run.success
    [event] = [m for m in run.get_asset_materialization_events() if m.asset_key.to_user_string() == "scorecard"]
    meta = event.materialization.metadata
    assert meta["eval_set_version"].value == "v2" and meta["baseline_eval_set_version"].value == "v1"
    assert meta["comparison"].value == V1_V2 and meta["shared_examples"].value == 390
    assert V1_V2 in meta["reasons"].value and meta["verdict"].value == "pass"
    # the table: both versions, shared and paired per slice (the 20 open questions are shared but not scored)
    rows = query(home, "select slice, eval_set_version, baseline_eval_set_version, examples, shared_examples, paired "
                       "from evaluation.scorecard where model_version = 'router:2' and examples > 0 order by slice")
    assert rows == [("category=extraction", "v2", "v1", 260, 220, 220),
                    ("category=intent_routing", "v2", "v1", 150, 150, 150),
                    ("category=open_question", "v2", "v1", 20, 20, None),
                    ("overall", "v2", "v1", 430, 390, 370)]
    assert query(home, "select verdict, baseline_eval_set_version from evaluation.scorecard "
                       "where model_version = 'router:0'") == [("pass", None)]  # the older row kept, column added
    card = json.loads((home.reports / "scorecards" / "router" / "2.deep.json").read_text())
    assert stored_scorecard(home, "router:2", "deep")[0] == card  # the added card column holds it
    assert card["comparison"] == {"candidate_version": "v2", "baseline_version": "v1", "same_version": False,
                                  "shared_examples": 390, "candidate_only_examples": 40, "baseline_only_examples": 30,
                                  "summary": V1_V2}
    page = (home.reports / "scorecards" / "router" / "2.deep.html").read_text(encoding="utf-8")
    assert f"<strong>Compared:</strong> {V1_V2}" in page and "Baseline&#x27;s eval set: v1" in page


def test_evaluate_rescores_the_baseline_unless_told_to_use_its_stored_scores(ev, capsys):
    """``evaluate`` against a baseline served by a local OpenAI-compatible endpoint and scored on
    v1: with ``--no-rescore-baseline`` the endpoint is not called again and the candidate on v2 is
    paired on the shared examples; by default the baseline is run again on v2, pairing them all."""
    home, examples, refs = ev
    by_text: dict[str, str] = {}

    def learn(known, known_refs):
        answers = outputs(known, known_refs, "baseline")
        by_text.update({ex["messages"][-1]["content"]: answers[ex["example_id"]] for ex in known})

    learn(examples, refs)
    args = ["evaluate", "--home", str(home.root)]
    with ScriptedServer() as server:
        server.responder = lambda body: Reply(content=by_text[body["messages"][-1]["content"]])
        register(home, "1", "baseline", provider="openai-compatible", base_url=server.base_url, model="router-1")
        assert main([*args, "--model", "router:1"]) == 0 and len(server.requests) == len(examples) == 420
        capsys.readouterr()

        _, every, all_refs = next_version(home, examples, refs)
        learn(every, all_refs)
        record(home, every, outputs(every, all_refs, "same"), "same_v2")
        register(home, "2", **recorded(home, "same_v2"))
        assert main([*args, "--model", "router:2", "--no-rescore-baseline"]) == 0
        out = capsys.readouterr().out
        assert len(server.requests) == 420  # the baseline was not run again
        assert ("comparing with the baseline router:1's stored scores (deep tier of eval set v1); the candidate runs "
                "on v2, so only the examples both hold are paired") in out
        assert "verdict: PASS  router:2 vs router:1" in out
        assert f"  comparison: {V1_V2}" in out and f"  - {V1_V2}" in out
        overall = next(line for line in out.splitlines() if line.startswith("  overall "))
        assert overall.split()[2:4] == ["410", "370"]  # scored on v2, paired with v1
        html = next(line.split("report: ")[1] for line in out.splitlines() if line.startswith("report: "))
        assert V1_V2 in open(html, encoding="utf-8").read()

        # the default: the baseline's scores are on v1, so it is scored again on v2 first
        assert main([*args, "--model", "router:2"]) == 0
        out = capsys.readouterr().out
        assert len(server.requests) == 420 + 430
        assert "evaluating the baseline router:1 first (deep tier of eval set v2)" in out
        assert ("  comparison: baseline and candidate scored on the same eval-set version v2: all 430 examples "
                "shared") in out
    card = json.loads((home.reports / "scorecards" / "router" / "2.deep.json").read_text())
    assert card["baseline_eval_set_version"] == "v2" and card["overall"]["paired"]["n"] == 410
    assert not any("eval-set version" in r for r in card["reasons"])


def test_scorings_under_two_versions_of_a_rubric_are_never_paired(ev, tmp_path):
    """The baseline was scored before the routing rubric changed: its routing examples are left out
    of the paired comparison (said in the reasons and metadata); the other slices still pair."""
    import shutil

    import yaml

    from eval_pipeline.defs.resources import LabelingSettings
    from eval_pipeline.lib.labeling.rubrics import DEFAULT_RUBRICS_DIR, load_rubrics, rubric_version

    home, examples, _ = ev
    register(home, "1", "baseline", **recorded(home, "baseline"))
    register(home, "3", **recorded(home, "same"))
    changed = tmp_path / "rubrics"
    shutil.copytree(DEFAULT_RUBRICS_DIR, changed)
    routing = changed / "intent_routing.yaml"
    spec = yaml.safe_load(routing.read_text())
    spec["criteria"][0]["description"] += " Judge the label alone."
    routing.write_text(yaml.safe_dump(spec, sort_keys=False))
    old, new = load_rubrics(None), load_rubrics(changed)
    assert rubric_version(old["intent_routing"]) != rubric_version(new["intent_routing"])

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("model_versions", ["router:1", "router:3"])
        before = build_definitions(home).resolve_job_def("evaluation_job")
        assert before.execute_in_process(partition_key="router:1", instance=instance).success
        after = build_definitions(home, {"labeling": LabelingSettings(rubrics_dir=str(changed))})
        run = after.resolve_job_def("evaluation_job").execute_in_process(partition_key="router:3", instance=instance)
        assert run.success
    [event] = [m for m in run.get_asset_materialization_events() if m.asset_key.to_user_string() == "scorecard"]
    meta = event.materialization.metadata
    routed = query(home, "select count(*) from evaluation.candidate_scores where model_version = 'router:3' "
                         "and task_type = 'intent_routing'")[0][0]
    assert routed > 0 and meta["unpaired_other_rubric_version"].value == routed
    assert meta["shared_examples"].value == len(examples) - routed
    versions = dict(query(home, "select model_version, rubric_version from evaluation.candidate_scores "
                                "where task_type = 'intent_routing' group by all"))
    assert versions == {"router:1": rubric_version(old["intent_routing"]),
                        "router:3": rubric_version(new["intent_routing"])}
    card, _ = stored_scorecard(home, "router:3", "deep")
    assert any("another version of their rubric" in r for r in card["reasons"])
    assert len(card["rubric_version_unpaired"]) == routed
