"""The verdict on a candidate's failures from its reviewers' labels, the review tasks, and the
reading of review labels (quarantine, reconciliation) - plain ``lib/`` code on the packaged rubrics."""

from __future__ import annotations

import csv
import json

import pytest

from eval_pipeline.lib.evaluation.review import (apply_verdicts, failures, human_verdicts, read_review_labels, review_config,
                                      review_counts, write_review_tasks)
from eval_pipeline.lib.labeling.annotation import label_studio_config
from eval_pipeline.lib.labeling.rubrics import load_rubrics, rubric_version

RUBRICS = load_rubrics()
# a rubric folder with no default rubric: a task type none lists has no rubric
SPECIFIC = {name: rubric for name, rubric in RUBRICS.items() if not rubric.default}


def _failure(eid, task_type="intent_routing", status="failed", output="card_arrival"):
    return {"example_id": eid, "task_type": task_type, "status": status, "eval_set_version": "v1",
            "output": None if status == "error" else output, "reason": "provider timed out" if status == "error" else None,
            "reference": "card_swallowed" if task_type == "intent_routing" else None,
            "justifications": json.dumps({"accuracy": "states a wrong rate"}) if task_type == "open_question" else "{}"}


def _labels(eid, by_annotator, task_type="intent_routing", version=None):
    rubric = RUBRICS[task_type]
    return [{"example_id": eid, "annotator": who, "criterion": c, "score": s, "rubric": rubric.name,
             "task_type": task_type, "scale": rubric.criterion(c).scale,
             "rubric_version": version or rubric_version(rubric)}
            for who, scores in by_annotator.items() for c, s in scores.items()]


PASS = {"correct_intent": 1, "bare_label_format": 1}
FAIL = {"correct_intent": 0, "bare_label_format": 1}


@pytest.mark.parametrize("votes, verdict", [
    ({"a": PASS, "b": PASS, "c": FAIL}, "overturned"),  # the majority passes every required criterion
    ({"a": FAIL, "b": FAIL, "c": PASS}, "confirmed"),
    ({"a": PASS, "b": FAIL}, "confirmed"),  # a tie goes to the lower level: the failure stands
    ({"a": {"correct_intent": 1}, "b": {"correct_intent": 1}}, "incomplete"),  # bare_label_format unlabelled
    # an optional criterion failing does not stop the pass
    ({"a": {**PASS, "topic_match": 0}, "b": {**PASS, "topic_match": 0}}, "overturned"),
])
def test_majority_and_pass_rule_decide(votes, verdict):
    [row] = human_verdicts([_failure("e1")], _labels("e1", votes), RUBRICS)
    assert row["verdict"] == verdict and row["reviewers"] == len(votes)
    if verdict == "confirmed":
        assert "correct_intent" in row["note"]


def test_labels_of_an_older_rubric_version_do_not_decide_the_verdict():
    old = _labels("e1", {"a": PASS, "b": PASS}, version="0ldc0de5")
    [row] = human_verdicts([_failure("e1")], old, RUBRICS)
    assert row["verdict"] == "awaiting_review" and "older rubric version" in row["note"]
    [row] = human_verdicts([_failure("e1")], old + _labels("e1", {"a": FAIL, "b": FAIL}), RUBRICS)
    assert row["verdict"] == "confirmed"  # the current version's labels alone decide


def test_open_ended_three_point_majority():
    votes = {"a": {"accuracy": 2, "completeness": 2}, "b": {"accuracy": 2, "completeness": 1},
             "c": {"accuracy": 1, "completeness": 2}}
    [row] = human_verdicts([_failure("q1", "open_question")], _labels("q1", votes, "open_question"), RUBRICS)
    assert row["majority"] == {"accuracy": 2, "completeness": 2} and row["verdict"] == "overturned"


def test_an_error_cannot_be_overturned_and_unlabelled_or_unrubricked_failures_are_listed():
    rows = [_failure("err", status="error"), _failure("wait"), _failure("odd", task_type="poetry", status="error")]
    verdicts = {v["example_id"]: v for v in human_verdicts(rows, _labels("err", {"a": PASS, "b": PASS}), SPECIFIC)}
    assert verdicts["err"]["verdict"] == "confirmed" and "cannot be overturned" in verdicts["err"]["note"]
    assert verdicts["wait"]["verdict"] == "awaiting_review"
    assert verdicts["odd"]["verdict"] == "no_rubric" and "'poetry'" in verdicts["odd"]["note"]
    assert review_counts(verdicts.values()) == {"failures": 3, "reviewed": 1, "confirmed": 1, "overturned": 0,
                                                "awaiting_review": 1, "no_rubric": 1}
    # with the packaged rubrics the generic one takes it: sent for review like any other failure
    packaged = {v["example_id"]: v for v in human_verdicts(rows, [], RUBRICS)}
    assert packaged["odd"]["verdict"] == "awaiting_review"


def test_only_overturned_changes_the_status():
    scores = [{"example_id": e, "status": s} for e, s in (("a", "failed"), ("b", "failed"), ("c", "passed"),
                                                          ("d", "error"))]
    verdicts = [{"example_id": "a", "verdict": "overturned"}, {"example_id": "b", "verdict": "confirmed"},
                {"example_id": "d", "verdict": "confirmed"}]
    assert [r["status"] for r in apply_verdicts(scores, verdicts)] == ["passed", "failed", "passed", "error"]
    assert [r["example_id"] for r in failures(scores)] == ["a", "b", "d"]


def test_review_tasks_show_the_candidate_and_read_back_with_quarantine(tmp_path):
    failed = [_failure("e1"), _failure("e2", "extraction", output='{"amount": 5}'), _failure("e3", status="error"),
              _failure("e4", task_type="poetry")]
    examples = {"e1": {"example_id": "e1", "messages": [{"role": "user", "content": "my card was eaten"}],
                       "context_chunks": [], "production_output": "PRODUCTION ANSWER"}}
    written = write_review_tasks(failed, examples, SPECIFIC, "m:2", tmp_path / "tasks")
    assert [(w["example_id"], w["rubric"]) for w in written] == [
        ("e1", "intent_routing"), ("e2", "extraction"), ("e3", "intent_routing"), ("e4", None)]
    # with the packaged default the unknown task type is reviewed with the generic rubric
    again = write_review_tasks(failed, examples, RUBRICS, "m:2", tmp_path / "with_default")
    assert [w["rubric"] for w in again] == ["intent_routing", "extraction", "intent_routing", "generic"]
    assert (tmp_path / "with_default" / "plain" / "generic.tasks.csv").is_file()
    tasks = json.loads((tmp_path / "tasks" / "label_studio" / "intent_routing.tasks.json").read_text())
    e1 = tasks[0]
    assert e1["data"]["output"] == "card_arrival" and e1["data"]["review_of"] == "m:2"
    assert e1["data"]["dialogue"] == [{"role": "user", "content": "my card was eaten"}]
    assert e1["predictions"][0]["result"][0]["value"]["text"] == ["card_swallowed"]  # the reference, not an output
    assert "the model gave no output" in tasks[1]["data"]["automatic_verdict"] and tasks[1]["data"]["output"] == ""
    with open(tmp_path / "tasks" / "plain" / "extraction.tasks.csv", newline="", encoding="utf-8") as fh:
        plain = list(csv.DictReader(fh))
    assert {(r["review_of"], r["output"]) for r in plain} == {("m:2", '{"amount": 5}')}
    # the same questions as the eval set's config; the review adds what is reviewed and the automatic verdict
    config, base = review_config(RUBRICS["intent_routing"]), label_studio_config(RUBRICS["intent_routing"])
    assert all(line in config for line in base.splitlines() if "<Choice" in line)
    assert (tmp_path / "tasks" / "label_studio" / "intent_routing.config.xml").read_text() == config

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = [{"from_name": c, "to_name": "output", "type": "choices", "value": {"choices": [str(s)]}}
            for c, s in PASS.items()]
    export = [{"data": e1["data"], "annotations": [{"completed_by": {"email": "a@x"}, "result": good}]},
              {"data": {**e1["data"], "review_of": "m:1"}, "annotations": [{"completed_by": {"email": "b@x"},
                                                                           "result": good}]},
              {"data": {**e1["data"], "example_id": "passed_one"},
               "annotations": [{"completed_by": 7, "result": good[:1]}]}]
    (inbox / "ls.json").write_text(json.dumps(export), encoding="utf-8")
    rows = [{**plain[0], "annotator": "c", "score": "1"}, {**plain[1], "annotator": "c", "score": "1",
                                                           "review_of": ""}]
    with open(inbox / "plain.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(plain[0]))
        writer.writeheader()
        writer.writerows(rows)
    batch = read_review_labels(inbox, failed, RUBRICS, "m:2")
    assert batch.reconciles and batch.counts["read"] == 7 and batch.counts["accepted"] == 3
    assert {(lab["example_id"], lab["criterion"]) for lab in batch.labels} == {
        ("e1", "correct_intent"), ("e1", "bare_label_format"), ("e2", plain[0]["criterion"])}
    assert batch.reasons() == {"other_review": 3, "not_under_review": 1}
    messages = sorted(q["message"] for q in batch.quarantine)
    assert any("ls.json: task index 1" in m and "review_of is 'm:1', not 'm:2'" in m for m in messages)
    assert any("ls.json: task index 2" in m and "'passed_one' is not a failure of m:2" in m for m in messages)
    assert any("plain.csv: line 3" in m and "review_of is None" in m for m in messages)


def test_a_label_of_another_output_is_quarantined(tmp_path):
    """The version was evaluated again after the tasks went out and now answers otherwise: a label
    of the old output does not judge the new one. Whitespace a spreadsheet changes does not count."""
    failed = [_failure("e1", output="card_arrival")]
    write_review_tasks(failed, {}, RUBRICS, "m:2", tmp_path / "tasks")
    [task] = json.loads((tmp_path / "tasks" / "label_studio" / "intent_routing.tasks.json").read_text())
    result = [{"from_name": c, "to_name": "output", "type": "choices", "value": {"choices": [str(s)]}}
              for c, s in PASS.items()]
    export = [{"data": {**task["data"], "output": " card_arrival\r\n"},
               "annotations": [{"completed_by": {"email": "a@x"}, "result": result}]},
              {"data": {**task["data"], "output": "lost_or_stolen_card"},
               "annotations": [{"completed_by": {"email": "b@x"}, "result": result}]}]
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "ls.json").write_text(json.dumps(export), encoding="utf-8")
    batch = read_review_labels(tmp_path / "inbox", failed, RUBRICS, "m:2")
    assert batch.reconciles and {lab["annotator"] for lab in batch.labels} == {"a@x"}
    assert batch.reasons() == {"other_review": 2}
    assert all("not the one m:2 gave in its latest run" in q["message"] for q in batch.quarantine)


def test_the_card_text_and_page_carry_the_counts():
    from eval_pipeline.lib.evaluation.gates import build_scorecard, load_thresholds, scorecard_text, with_human_review
    from eval_pipeline.lib.evaluation.report import render_scorecard_html

    rows = [{"example_id": f"e{i}", "slice": "{}", "weight": 1.0, "status": "passed" if i % 4 else "failed"}
            for i in range(40)]
    verdicts = [{"example_id": "e0", "status": "failed", "verdict": "overturned", "note": "the majority of 3 passes"},
                {"example_id": "e4", "status": "failed", "verdict": "confirmed", "note": "x"},
                {"example_id": "e8", "status": "error", "verdict": "no_rubric", "note": "y"}]
    rows = apply_verdicts(rows, verdicts)
    card = build_scorecard(rows, None, load_thresholds(), model="m:2", baseline_model=None, eval_set_version="v1",
                           tier="deep", created_at="2026-01-01T00:00:00Z")
    with_human_review(card, review_counts(verdicts), [{"example_id": "e0", "note": "the majority of 3 passes"}])
    assert card["counts"]["passed"] == 31
    assert ("human review of failures: 3 failures, 2 reviewed (1 confirmed, 1 overturned), 0 awaiting review, "
            "1 with no rubric (not sent)") in scorecard_text(card)
    page = render_scorecard_html(card)
    assert '<section id="human-review">' in page and "<code>e0</code>: the majority of 3 passes" in page
    assert "2 reviewed, 1 confirmed, 1 overturned, 0 awaiting review, 1 with no rubric" in page
    # without a review (a continuous run) neither has a word of it
    with_human_review(card, None)
    assert "human review" not in scorecard_text(card) and "human-review" not in render_scorecard_html(card)
