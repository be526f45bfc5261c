"""The demo's simulated annotators: deterministic, readable as a Label Studio export, and their
deliberately ambiguous criterion is the one the pipeline's agreement flags."""

from __future__ import annotations

import json

import pytest

from eval_pipeline.demo.annotators import simulate_annotators, true_scores
from eval_pipeline.lib.labeling.agreement import criterion_agreement
from eval_pipeline.lib.labeling.annotation import read_annotation_file
from eval_pipeline.lib.labeling.rubrics import load_rubrics


@pytest.fixture(scope="module")
def rubrics():
    return load_rubrics()


def _rag_examples(n: int = 60) -> tuple[list[dict], dict[str, dict]]:
    """RAG examples with a known truth: half retrieval hits, the rest misses answered from the
    wrong passage (some declined); every third answer cites a document id."""
    examples, truth = [], {}
    for i in range(n):
        rid = f"req-{i}"
        hit = i % 2 == 0
        declined = not hit and i % 10 == 1
        if declined:
            output = "I'm sorry, I couldn't find information about that in our help centre."
        elif hit:
            output = "Cards usually arrive within 5-7 working days."
        else:
            output = "Express delivery costs 5 EUR."
        if i % 3 == 0 and not declined:
            output += " [kb-card-arrival-01]"
        examples.append({"example_id": f"ex_{i:012x}", "eval_set_version": "v1", "request_id": rid,
                         "task_type": "rag_qa", "messages": [{"role": "user", "content": f"q{i}", "name": None}],
                         "context_chunks": [], "production_output": output, "failure_signals": []})
        truth[rid] = {"request_id": rid, "intent": "card_arrival", "retrieval_hit": hit,
                      "error": None if hit else "retrieval_miss", "extraction": None}
    return examples, truth


def test_true_scores_follow_the_demo_truth(rubrics):
    routing = rubrics["intent_routing"]
    ex = {"example_id": "ex_1", "task_type": "intent_routing", "production_output": "Intent: card_arrival"}
    assert true_scores(ex, routing, {"intent": "card_arrival"}) == {
        "correct_intent": 1, "bare_label_format": 0, "valid_label": 1, "topic_match": 1}
    ex["production_output"] = "card_delivery_estimate"  # the confusable partner
    assert true_scores(ex, routing, {"intent": "card_arrival"}) == {
        "correct_intent": 0, "bare_label_format": 1, "valid_label": 1, "topic_match": 1}
    extraction = rubrics["extraction"]
    truth = {"extraction": {"amount": 1250.5, "currency": "EUR", "date": "2026-03-05", "amount_format": "x"}}
    ex = {"example_id": "ex_2", "task_type": "extraction",
          "production_output": 'Sure! {"amount": 1250.5, "currency": "USD", "date": "2026-03-05"}'}
    assert true_scores(ex, extraction, truth) == {
        "valid_json": 0, "correct_amount": 1, "correct_currency": 0, "correct_date": 1, "complete_schema": 1}


def test_simulate_annotators_is_deterministic_and_readable(tmp_path, rubrics):
    examples, truth = _rag_examples(12)
    routing = {"example_id": "ex_00000000abcd", "eval_set_version": "v1", "request_id": "req-r",
               "task_type": "intent_routing", "messages": [], "context_chunks": [],
               "production_output": "card_arrival", "failure_signals": []}
    truth["req-r"] = {"request_id": "req-r", "intent": "card_arrival"}
    first = simulate_annotators(examples + [routing], rubrics, truth, seed=3)
    assert first == simulate_annotators(examples + [routing], rubrics, truth, seed=3)
    assert first[0] != simulate_annotators(examples + [routing], rubrics, truth, seed=4)[0]
    export, truth_rows = first
    assert len(export) == 13 and all(len(t["annotations"]) == 3 for t in export)
    assert len(truth_rows) == 12 * 5 + 4
    path = tmp_path / "simulated.json"
    path.write_text(json.dumps(export))
    batch = read_annotation_file(path, {e["example_id"]: e for e in examples + [routing]}, rubrics)
    assert batch.quarantine == [] and len(batch.labels) == 3 * (12 * 5 + 4)
    assert {lab["annotator"] for lab in batch.labels} == {"ann-a", "ann-b", "ann-c"}
    assert [r["reference"] for r in batch.references] == ["card_arrival"] * 3


@pytest.mark.parametrize("seed", range(5))
def test_simulated_ambiguous_criterion_has_low_agreement(rubrics, seed):
    examples, truth = _rag_examples(60)
    export, _truth_rows = simulate_annotators(examples, rubrics, truth, seed=seed,
                                              ambiguous=("rag_qa", "completeness"))
    labels = []
    for task in export:
        for ann in task["annotations"]:
            for r in ann["result"]:
                labels.append({"example_id": task["data"]["example_id"], "annotator": ann["completed_by"]["email"],
                               "criterion": r["from_name"], "score": int(r["value"]["choices"][0]), "rubric": "rag_qa",
                               "scale": rubrics["rag_qa"].criterion(r["from_name"]).scale})
    rows = {r["criterion"]: r for r in criterion_agreement(labels)}
    assert set(rows) == {c.id for c in rubrics["rag_qa"].criteria}
    assert all(r["method"] == "krippendorff_alpha" and r["n_items"] == 60 for r in rows.values())
    assert rows["completeness"]["value"] < 0.6 and rows["completeness"]["unclear_rubric"]
    for cid, row in rows.items():
        if cid != "completeness":
            assert row["value"] >= 0.6, (cid, row["value"])
            assert not row["flags"]
