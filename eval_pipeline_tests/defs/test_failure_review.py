"""The human review of a deep evaluation's failures through the real Dagster runtime and the CLI:
failures exported as review tasks, reviewers' files dropped into the inbox, the scorecard re-issued
with their verdicts (recorded outputs; no model endpoint is called on the re-issue)."""

from __future__ import annotations

import csv
import json

import duckdb
import pytest
from evaluation_fixtures import isolated_evaluation_home, register

from eval_pipeline.cli import main
from eval_pipeline.demo.settings import THRESHOLDS as DEMO_THRESHOLDS
from eval_pipeline.lib.labeling.rubrics import load_rubrics

# the fixture's set has the demo's task types: its routing slice is gated (critical) by the demo's gates
DEMO_GATES = ["--thresholds", str(DEMO_THRESHOLDS)]


@pytest.fixture
def ev(tmp_path, monkeypatch):
    home, examples, refs = isolated_evaluation_home(tmp_path / "home", monkeypatch)
    register(home, "1", "baseline", provider="recorded", recorded_path=str(home.recordings / "baseline.jsonl"))
    register(home, "2", provider="recorded", recorded_path=str(home.recordings / "regressed.jsonl"))
    register(home, "3", provider="recorded", recorded_path=str(home.recordings / "same.jsonl"))
    return home, examples, refs


def query(home, sql, *params):
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def _annotation(email, scores):
    return {"completed_by": {"email": email}, "was_cancelled": False,
            "result": [{"from_name": c, "to_name": "output", "type": "choices", "value": {"choices": [str(s)]}}
                       for c, s in scores.items()]}


def test_failures_go_to_reviewers_and_the_scorecard_is_reissued(ev, capsys):
    home, _, refs = ev
    args = ["--home", str(home.root)]
    assert main(["evaluate", *args, *DEMO_GATES, "--model", "router:2"]) == 1
    first = capsys.readouterr().out
    card = json.loads((home.reports / "scorecards" / "router" / "2.deep.json").read_text())
    failed = {eid: out for eid, status, out in query(
        home, "select example_id, status, output from evaluation.candidate_scores where model_version = 'router:2'")
        if status in ("failed", "error")}
    assert len(failed) == card["counts"]["failed"] + card["counts"]["errors"] > 0
    review = card["human_review"]["counts"]
    assert review == {"failures": len(failed), "reviewed": 0, "confirmed": 0, "overturned": 0,
                      "awaiting_review": len(failed), "no_rubric": 0}
    assert f"0 reviewed (0 confirmed, 0 overturned), {len(failed)} awaiting review" in first
    assert f"{len(failed)} of {len(failed)} failures awaiting human review" in card["reasons"]

    # the tasks: the eval set's layout, the candidate's output, marked as a review of router:2
    folder = home.failure_review("router:2")
    assert (folder / "inbox").is_dir()
    ls_tasks = json.loads((folder / "tasks" / "label_studio" / "intent_routing.tasks.json").read_text())
    config = (folder / "tasks" / "label_studio" / "intent_routing.config.xml").read_text()
    assert '<Choices name="correct_intent"' in config and 'value="$review_of"' in config
    assert 'value="$automatic_verdict"' in config
    rare = next(t for t in ls_tasks if refs[t["data"]["example_id"]] == "card_swallowed")
    assert rare["data"]["review_of"] == "router:2"
    assert rare["data"]["output"] == failed[rare["data"]["example_id"]] == "card_arrival"  # not production's
    assert "automatic status: failed" in rare["data"]["automatic_verdict"]
    assert "reference answer: card_swallowed" in rare["data"]["automatic_verdict"]
    with open(folder / "tasks" / "plain" / "extraction.tasks.csv", newline="", encoding="utf-8") as fh:
        plain = list(csv.DictReader(fh))
    assert {r["review_of"] for r in plain} == {"router:2"}
    assert {r["example_id"] for r in plain} == {e for e in failed if e.startswith("ex_x")}
    assert all(r["output"] == failed[r["example_id"]] for r in plain)
    routing = {t["data"]["example_id"] for t in ls_tasks}
    assert routing | {r["example_id"] for r in plain} == set(failed)

    # the reviewers answer: a Label Studio export (3 reviewers) and a filled-in plain CSV (2 reviewers)
    overturn, confirm = rare["data"]["example_id"], sorted(routing - {rare["data"]["example_id"]})[0]
    passing, failing = {"correct_intent": 1, "bare_label_format": 1}, {"correct_intent": 0, "bare_label_format": 1}
    export = [{**rare, "id": 1, "annotations": [_annotation("ana@example.com", passing),
                                                _annotation("ben@example.com", passing),
                                                _annotation("eve@example.com", failing)]},
              {**next(t for t in ls_tasks if t["data"]["example_id"] == confirm), "id": 2,
               "annotations": [_annotation("ana@example.com", failing), _annotation("ben@example.com", passing),
                               _annotation("eve@example.com", failing)]},
              # a task made for another version's review: quarantined, even for one of these failures
              {"id": 3, "data": {**rare["data"], "review_of": "router:1"},
               "annotations": [_annotation("zoe@example.com", passing)]}]
    (folder / "inbox" / "routing.json").write_text(json.dumps(export), encoding="utf-8")
    extraction_failure = plain[0]["example_id"]
    rows = [{**r, "annotator": who, "score": "0" if r["criterion"] == "valid_json" else "1"}
            for who in ("ana", "ben") for r in plain if r["example_id"] == extraction_failure]
    rows.append({**plain[0], "example_id": "ex_r0000", "annotator": "ana", "score": "1"})  # passed: not a failure
    with open(folder / "inbox" / "extraction.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(plain[0]))
        writer.writeheader()
        writer.writerows(rows)

    assert main(["review-failures", *args, *DEMO_GATES, "--model", "router:2"]) == 1  # the rare intents still fail the gate
    out = capsys.readouterr().out
    assert (f"human review of failures: {len(failed)} failures, 3 reviewed (2 confirmed, 1 overturned), "
            f"{len(failed) - 3} awaiting review") in out
    reissued = json.loads((home.reports / "scorecards" / "router" / "2.deep.json").read_text())
    assert reissued["counts"]["passed"] == card["counts"]["passed"] + 1
    assert reissued["counts"]["failed"] == card["counts"]["failed"] - 1
    assert reissued["overall"]["rate"] == pytest.approx(reissued["counts"]["passed"] / reissued["counts"]["scored"])
    assert reissued["overall"]["rate"] > card["overall"]["rate"]
    # paired with the baseline on the corrected statuses: router:1 got the rare example right too
    assert reissued["overall"]["paired"]["difference"] > card["overall"]["paired"]["difference"]
    assert [o["example_id"] for o in reissued["human_review"]["overturned"]] == [overturn]
    html = open(out.split("report: ")[1].strip(), encoding="utf-8").read()
    assert "Human review of failures" in html and overturn in html
    assert "3 reviewed, 2 confirmed, 1 overturned" in html
    verdicts = dict(query(home, "select example_id, verdict from evaluation.failure_review "
                                "where model_version = 'router:2'"))
    assert (verdicts[overturn], verdicts[confirm], verdicts[extraction_failure]) == (
        "overturned", "confirmed", "confirmed")
    assert query(home, "select distinct failures_reviewed, failures_confirmed, failures_overturned, "
                       "failures_awaiting_review from evaluation.scorecard where model_version = 'router:2'") == [
        (3, 2, 1, len(failed) - 3)]
    # the automatic scores are kept as they were; only the card takes the human verdicts
    assert query(home, "select status from evaluation.candidate_scores where example_id = ? and "
                       "model_version = 'router:2'", overturn) == [("failed",)]


def test_quarantine_of_review_labels_reconciles(ev, capsys):
    home, _, _ = ev
    from dagster import DagsterInstance

    assert main(["evaluate", "--home", str(home.root), *DEMO_GATES, "--model", "router:2"]) == 1
    capsys.readouterr()
    folder = home.failure_review("router:2")
    tasks = json.loads((folder / "tasks" / "label_studio" / "intent_routing.tasks.json").read_text())
    good = {"correct_intent": 1, "bare_label_format": 1}
    export = [{**tasks[0], "annotations": [_annotation("ana@example.com", good)]},
              {"data": {**tasks[0]["data"], "review_of": "router:1"}, "annotations": [_annotation("ben@x.org", good)]},
              {"data": {**tasks[0]["data"], "example_id": "ex_r0000"}, "annotations": [_annotation("ben@x.org", good)]}]
    (folder / "inbox" / "export.json").write_text(json.dumps(export), encoding="utf-8")
    assert main(["review-failures", "--home", str(home.root), "--model", "router:2"]) in (0, 1, 2)
    # the command says what the inbox held, so a rejected label is never silent
    assert ("labels in the inbox: 6 read, 2 accepted, 4 quarantined (2 not_under_review, 2 other_review; "
            "file, place and reason in the failure_review asset's metadata)") in capsys.readouterr().out
    instance = DagsterInstance.from_config(str(home.dagster_home))
    from dagster import AssetKey
    event = instance.get_latest_materialization_event(AssetKey("failure_review"))
    meta = event.asset_materialization.metadata
    labels = meta["labels"].value
    assert labels["read"] == labels["accepted"] + labels["quarantined"] == 6
    assert meta["quarantined_because"].value == {"other_review": 2, "not_under_review": 2}
    quarantine = meta["quarantine"].value
    assert "export.json: task index 1" in quarantine and "'router:1'" in quarantine
    assert "ex_r0000" in quarantine and "not a failure of router:2" in quarantine


def test_continuous_tier_sends_nothing_and_bad_keys_are_one_line(ev, capsys):
    home, _, _ = ev
    args = ["--home", str(home.root)]
    # 52 routing examples cannot rule out the demo gates' 5-point drop on that critical slice
    assert main(["evaluate", *args, *DEMO_GATES, "--model", "router:3", "--tier", "continuous"]) == 2
    capsys.readouterr()
    assert not home.failure_review("router:3").exists()
    assert query(home, "select count(*) from evaluation.failure_review where model_version = 'router:3'") == [(0,)]
    card = json.loads((home.reports / "scorecards" / "router" / "3.continuous.json").read_text())
    assert card["human_review"] is None
    assert query(home, "select distinct failures_reviewed from evaluation.scorecard "
                       "where model_version = 'router:3'") == [(None,)]
    # the continuous scores cannot be reviewed; a malformed or unknown key is one error line
    for model, words in (("router:3", "continuous tier, which sends no failures"), ("router", "NAME:VERSION"),
                         ("router:9", "router:9")):
        assert main(["review-failures", *args, "--model", model]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], captured.err
    # a bad gates file is one error line naming the file, before anything runs
    bad = home.root / "gates.yaml"
    bad.write_text("overall: {max_drop: 3}\n", encoding="utf-8")
    assert main(["review-failures", *args, "--model", "router:2", "--thresholds", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "gates.yaml" in err[0] and "max_drop" in err[0]
