"""The annotation round trip: Label Studio config and tasks out, exports and plain files back in."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from eval_pipeline.lib.labeling.annotation import (
    PLAIN_COLUMNS,
    QUARANTINE_REASONS,
    label_studio_config,
    label_studio_tasks,
    plain_tasks,
    read_annotation_file,
    read_annotation_folder,
    rubric_for,
    write_tasks,
)
from eval_pipeline.lib.labeling.rubrics import Rubric, load_rubrics, rubric_version

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "label_studio"
TWO = FIXTURES / "export_two_annotators.json"
THREE = FIXTURES / "export_three_annotators.json"


@pytest.fixture(scope="module")
def rubrics() -> dict[str, Rubric]:
    return load_rubrics()


def _example(eid: str, task_type: str, output: str, version: str = "v1", chunks=None) -> dict:
    return {
        "example_id": eid, "eval_set_version": version, "request_id": f"req-{eid}", "task_type": task_type,
        "messages": [{"role": "system", "content": "You are Kestrel's assistant.", "name": None},
                     {"role": "user", "content": f"question of {eid}", "name": None}],
        "context_chunks": chunks or [], "production_output": output, "failure_signals": [],
    }


def _fixture_examples(path: Path) -> dict[str, dict]:
    """The eval examples the fixture tasks were made from (rebuilt from the task data)."""
    out = {}
    for task in json.loads(path.read_text()):
        d = task["data"]
        out[d["example_id"]] = {
            "example_id": d["example_id"], "eval_set_version": d["eval_set_version"], "task_type": d["task_type"],
            "messages": [dict(m, name=None) for m in d["dialogue"]], "context_chunks": [],
            "production_output": d["output"],
        }
    return out


# ----------------------------------------------------------------------------------------------
# tasks out
# ----------------------------------------------------------------------------------------------


def test_config_is_well_formed_with_one_question_per_criterion(rubrics):
    assert {"intent_routing", "extraction", "rag_qa", "open_question", "multi_turn"} <= set(rubrics)
    for rubric in rubrics.values():
        root = ET.fromstring(label_studio_config(rubric))  # raises on malformed XML
        assert root.tag == "View"
        dialogue = root.find("Paragraphs")
        assert dialogue is not None and dialogue.attrib == {
            "name": "dialogue", "value": "$dialogue", "layout": "dialogue", "nameKey": "role", "textKey": "content"}
        assert {t.get("name"): t.get("value") for t in root.findall("Text")}.items() >= {
            ("context", "$context"), ("output", "$output")}
        questions = root.findall("Choices")
        assert [q.get("name") for q in questions] == [c.id for c in rubric.criteria]
        for question, criterion in zip(questions, rubric.criteria):
            assert question.get("toName") == "output"
            assert question.get("choice") == "single" and question.get("required") == "true"
            values = [c.get("value") for c in question.findall("Choice")]
            assert values == [str(level) for level in sorted(criterion.levels)]
            assert [c.get("hint") for c in question.findall("Choice")] == [
                criterion.levels[level] for level in sorted(criterion.levels)]
        text_areas = root.findall("TextArea")
        if rubric.has_reference:
            assert len(text_areas) == 1
            assert text_areas[0].attrib == {
                "name": "reference", "toName": "output", "editable": "true", "maxSubmissions": "1",
                "placeholder": "the correct answer (confirm or correct)"}
        else:
            assert text_areas == []


def test_config_escapes_markup_in_descriptions(rubrics):
    data = rubrics["rag_qa"].model_dump()
    data["criteria"][0]["levels"][0] = 'says "<b>fees & limits</b>" wrongly'
    rubric = Rubric.model_validate(data)
    root = ET.fromstring(label_studio_config(rubric))
    assert root.find("Choices/Choice").get("hint") == 'says "<b>fees & limits</b>" wrongly'


def test_label_studio_tasks_prefill_the_reference_only_when_the_rubric_has_one(rubrics):
    chunks = [{"doc_id": "kb-card-arrival-01", "text": "Cards arrive in 5-7 days.", "score": 0.8}]
    routing = label_studio_tasks([_example("ex_00000000000a", "intent_routing", "card_arrival")],
                                 rubrics["intent_routing"])
    rag = label_studio_tasks([_example("ex_00000000000b", "rag_qa", "Within a week.", "v2", chunks)],
                             rubrics["rag_qa"])
    assert routing[0]["data"] == {
        "example_id": "ex_00000000000a", "eval_set_version": "v1", "task_type": "intent_routing",
        "rubric_version": rubric_version(rubrics["intent_routing"]),
        "dialogue": [{"role": "system", "content": "You are Kestrel's assistant."},
                     {"role": "user", "content": "question of ex_00000000000a"}],
        "context": "", "output": "card_arrival"}
    assert routing[0]["predictions"] == [{"model_version": "production", "result": [
        {"from_name": "reference", "to_name": "output", "type": "textarea", "value": {"text": ["card_arrival"]}}]}]
    assert "predictions" not in rag[0]
    assert rag[0]["data"]["context"] == "[kb-card-arrival-01] Cards arrive in 5-7 days."
    json.dumps(routing + rag)  # importable as JSON


def test_plain_tasks_one_row_per_criterion_and_written_by_suffix(tmp_path, rubrics):
    rubric = rubrics["extraction"]
    rows = plain_tasks([_example("ex_00000000000c", "extraction", '{"amount": 5}')], rubric)
    assert [r["criterion"] for r in rows] == [c.id for c in rubric.criteria]
    assert rows[0]["levels"] == f"0={rubric.criteria[0].levels[0]}; 1={rubric.criteria[0].levels[1]}"
    assert rows[0]["conversation"] == "system: You are Kestrel's assistant.\n\nuser: question of ex_00000000000c"
    assert all(r["annotator"] == r["score"] == r["reference"] == "" for r in rows)
    csv_rows = list(csv.DictReader(write_tasks(rows, tmp_path / "t.csv").open(newline="")))
    assert list(csv_rows[0]) == list(PLAIN_COLUMNS) and len(csv_rows) == len(rows)
    jsonl = [json.loads(x) for x in write_tasks(rows, tmp_path / "t.jsonl").read_text().splitlines()]
    assert jsonl == rows
    with pytest.raises(ValueError, match="suffix"):
        write_tasks(rows, tmp_path / "t.xlsx")


# ----------------------------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------------------------


def test_label_studio_round_trip(tmp_path, rubrics):
    rubric = rubrics["intent_routing"]
    examples = [_example(f"ex_00000000010{i}", "intent_routing", "card_arrival") for i in range(3)]
    tasks = label_studio_tasks(examples, rubric)
    for n, task in enumerate(tasks):  # what Label Studio adds when an annotator submits
        task["id"] = n + 1
        task["annotations"] = [{
            "id": 10 + n, "completed_by": {"id": 4, "email": "ann@kestrel.example"}, "was_cancelled": False,
            "result": [{"from_name": c.id, "to_name": "output", "type": "choices",
                        "value": {"choices": [str((n + k) % 2)]}} for k, c in enumerate(rubric.criteria)]
            + task["predictions"][0]["result"],
        }]
    path = write_tasks(tasks, tmp_path / "export.json")
    batch = read_annotation_file(path, {e["example_id"]: e for e in examples}, rubrics)
    assert batch.quarantine == []
    got = {(lab["example_id"], lab["criterion"]): lab["score"] for lab in batch.labels}
    assert got == {(e["example_id"], c.id): (n + k) % 2
                   for n, e in enumerate(examples) for k, c in enumerate(rubric.criteria)}
    assert {lab["annotator"] for lab in batch.labels} == {"ann@kestrel.example"}
    assert [r["reference"] for r in batch.references] == ["card_arrival"] * 3
    assert batch.counts == {"read": 15, "accepted": 15, "quarantined": 0, "cancelled": 0, "skipped": 0}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_plain_round_trip(tmp_path, rubrics, suffix):
    rubric = rubrics["intent_routing"]
    examples = [_example("ex_000000000201", "intent_routing", "card_arrival"),
                _example("ex_000000000202", "intent_routing", "Intent: top_up_failed")]
    rows = plain_tasks(examples, rubric)
    for i, row in enumerate(rows):
        row.update(annotator="ann-b", score=i % 2, reference="top_up_failed" if row["example_id"].endswith("2") else "")
    path = write_tasks(rows, tmp_path / f"done{suffix}")
    batch = read_annotation_file(path, {e["example_id"]: e for e in examples}, {"intent_routing": rubric})
    assert batch.quarantine == []
    assert sorted((lab["example_id"], lab["criterion"], lab["score"]) for lab in batch.labels) == sorted(
        (r["example_id"], r["criterion"], i % 2) for i, r in enumerate(rows))
    # the reference is repeated on each of the example's rows but is one reference
    assert [(r["example_id"], r["reference"]) for r in batch.references] == [("ex_000000000202", "top_up_failed")]
    assert batch.counts["read"] == 9 and batch.reconciles


# ----------------------------------------------------------------------------------------------
# the fixture exports
# ----------------------------------------------------------------------------------------------


def test_two_annotator_export(rubrics):
    batch = read_annotation_file(TWO, _fixture_examples(TWO), rubrics)
    assert batch.quarantine == []
    assert batch.counts == {"read": 50, "accepted": 50, "quarantined": 0, "cancelled": 0, "skipped": 0}
    assert len(batch.labels) == 5 * 2 * 4 and len(batch.references) == 10
    assert {lab["annotator"] for lab in batch.labels} == {"maria.lopez@kestrel.example", "user-7"}
    assert {lab["eval_set_version"] for lab in batch.labels} == {"v1"}
    assert {lab["rubric"] for lab in batch.labels} == {"intent_routing"}
    by = {(lab["example_id"], lab["annotator"], lab["criterion"]): lab["score"] for lab in batch.labels}
    assert by[("ex_000000000002", "maria.lopez@kestrel.example", "correct_intent")] == 0
    assert by[("ex_000000000002", "user-7", "correct_intent")] == 1
    assert by[("ex_000000000004", "user-7", "topic_match")] == 0
    corrected = [r for r in batch.references if r["reference"] != _fixture_examples(TWO)[r["example_id"]]["production_output"]]
    assert [(r["example_id"], r["annotator"], r["reference"]) for r in corrected] == [
        ("ex_000000000002", "maria.lopez@kestrel.example", "card_delivery_estimate")]
    assert batch.labels[0]["source_file"] == str(TWO) and "task index 0" in batch.labels[0]["source_ref"]


def test_three_annotator_export(rubrics):
    batch = read_annotation_file(THREE, _fixture_examples(THREE), rubrics)
    # 12 annotations, 1 cancelled; 11 x 5 choices + 1 left-over "helpfulness" choice
    assert batch.counts == {"read": 56, "accepted": 54, "quarantined": 2, "cancelled": 1, "skipped": 0}
    assert batch.reconciles and len(batch.labels) == 54 and batch.references == []
    assert [(q["reason"], q["line_or_task"], q["example_id"], q["annotator"], q["field"]) for q in batch.quarantine] == [
        ("out_of_range", 2, "ex_000000000013", "b.osei@kestrel.example", "no_unsupported_claims"),
        ("unknown_criterion", 3, "ex_000000000014", "user-13", "helpfulness"),
    ]
    for q in batch.quarantine:
        assert q["source_file"] == str(THREE)
        assert str(THREE) in q["message"] and f"task index {q['line_or_task']}" in q["message"]
        assert repr(q["field"]) in q["message"]
    assert "score 2 is not a level" in batch.quarantine[0]["message"]
    annotators = {lab["annotator"] for lab in batch.labels}
    assert annotators == {"a.chen@kestrel.example", "b.osei@kestrel.example", "user-13"}
    # the cancelled annotation gave no labels
    assert not [lab for lab in batch.labels if lab["example_id"] == "ex_000000000013" and lab["annotator"] == "user-13"]
    assert all(lab["scale"] == rubrics["rag_qa"].criterion(lab["criterion"]).scale for lab in batch.labels)


def test_label_studio_problems_are_quarantined_never_dropped(tmp_path, rubrics):
    rubric = rubrics["rag_qa"]
    ex = _example("ex_000000000301", "rag_qa", "An answer.")
    full = [{"from_name": c.id, "to_name": "output", "type": "choices", "value": {"choices": ["1"]}}
            for c in rubric.criteria]
    tasks = [
        {"id": 1, "data": {"example_id": ex["example_id"]}, "annotations": [
            # grounded_in_context left out: the other four are kept
            {"id": 1, "completed_by": 5, "result": full[1:]},
            {"id": 2, "result": full},  # nobody completed it
            {"id": 3, "completed_by": 6, "result": full[:1] + [
                {"from_name": "answers_question", "to_name": "output", "type": "choices", "value": {"choices": ["yes"]}}]
                + full[3:]},
            # the same annotator twice: the later annotation wins, the earlier one is quarantined
            {"id": 4, "completed_by": 5, "result": full[:1]},
        ]},
        {"id": 2, "data": {"example_id": "ex_ffffffffffff"}, "annotations": [
            {"id": 5, "completed_by": 5, "result": full[:2]}]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    batch = read_annotation_file(path, {ex["example_id"]: ex}, rubrics)
    reasons = [(q["reason"], q["annotator"], q["field"]) for q in batch.quarantine]
    required = [c.id for c in rubric.criteria if c.required]
    assert ("missing_criterion", "user-5", "grounded_in_context") in reasons
    assert reasons.count(("missing_annotator", None, "grounded_in_context")) == 1
    assert sum(r[0] == "missing_annotator" for r in reasons) == len(full)
    assert ("not_a_number", "user-6", "answers_question") in reasons
    # annotation 3 answered every required criterion except through a bad value: not "missing"
    assert ("missing_criterion", "user-6", "answers_question") not in reasons
    # annotation 4 (user-5 again) repeats grounded... only; annotation 1's missing it stays quarantined;
    # and annotation 4 itself lacks the other required criteria
    assert {(r[0], r[2]) for r in reasons if r[1] == "user-5" and r[0] == "missing_criterion"} == {
        ("missing_criterion", cid) for cid in required}
    assert [(r[0], r[2]) for r in reasons if r[0] == "unknown_example"] == [
        ("unknown_example", "grounded_in_context"), ("unknown_example", "no_unsupported_claims")]
    kept_user5 = {lab["criterion"] for lab in batch.labels if lab["annotator"] == "user-5"}
    assert kept_user5 == {c.id for c in rubric.criteria}
    assert not [r for r in reasons if r[0] == "duplicate"]  # no criterion was given twice by user-5
    assert batch.reconciles
    assert set(batch.reasons()) <= set(QUARANTINE_REASONS)


def test_duplicates_keep_the_last(tmp_path, rubrics):
    rubric = rubrics["intent_routing"]
    ex = _example("ex_000000000401", "intent_routing", "card_arrival")
    rows = [{"example_id": ex["example_id"], "annotator": "ann-a", "criterion": "correct_intent", "score": s}
            for s in (0, 1)]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    batch = read_annotation_file(path, {ex["example_id"]: ex}, {"intent_routing": rubric})
    assert [lab["score"] for lab in batch.labels] == [1]
    assert [(q["reason"], q["line_or_task"]) for q in batch.quarantine] == [("duplicate", 1)]
    assert "superseded" in batch.quarantine[0]["message"] and "line 2" in batch.quarantine[0]["message"]
    assert batch.counts == {"read": 2, "accepted": 1, "quarantined": 1, "cancelled": 0, "skipped": 0}


def test_plain_csv_with_bad_rows(tmp_path, rubrics):
    ex = _example("ex_000000000501", "intent_routing", "card_arrival")
    lines = [
        "example_id,annotator,criterion,score,reference",
        "ex_000000000501,ann-a,correct_intent,1,card_arrival",  # line 2: good
        "ex_000000000501,ann-a,bare_label_format,1.0,",  # line 3: good (integral float)
        "ex_999999999999,ann-a,correct_intent,1,",  # line 4: unknown example
        "ex_000000000501,ann-a,politeness,1,",  # line 5: unknown criterion
        "ex_000000000501,ann-a,valid_label,2,",  # line 6: out of range on a binary scale
        "ex_000000000501,ann-a,topic_match,yes,",  # line 7: not a number
        "ex_000000000501,,topic_match,1,",  # line 8: missing annotator
        "ex_000000000501,,,,",  # line 9: an untouched task row
        "ex_000000000501,ann-b,topic_match,1.5,",  # line 10: not an integer
    ]
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    batch = read_annotation_file(path, {ex["example_id"]: ex}, rubrics)
    assert [(lab["criterion"], lab["score"]) for lab in batch.labels] == [("correct_intent", 1), ("bare_label_format", 1)]
    assert [(r["annotator"], r["reference"]) for r in batch.references] == [("ann-a", "card_arrival")]
    assert [(q["line_or_task"], q["reason"], q["field"]) for q in batch.quarantine] == [
        (4, "unknown_example", "correct_intent"),
        (5, "unknown_criterion", "politeness"),
        (6, "out_of_range", "valid_label"),
        (7, "not_a_number", "topic_match"),
        (8, "missing_annotator", "annotator"),
        (10, "not_a_number", "topic_match"),
    ]
    assert all(f"{path}: line {q['line_or_task']}:" in q["message"] for q in batch.quarantine)
    assert batch.counts == {"read": 9, "accepted": 3, "quarantined": 6, "cancelled": 0, "skipped": 1}
    assert batch.reconciles


def test_malformed_json_is_a_file_level_error_with_position(tmp_path, rubrics):
    path = tmp_path / "export.json"
    path.write_text('[\n  {"data": {"example_id": "ex_000000000001"},\n   "annotations": [ }\n]\n')
    batch = read_annotation_file(path, _fixture_examples(TWO), rubrics)
    assert batch.labels == [] and len(batch.quarantine) == 1
    q = batch.quarantine[0]
    assert (q["reason"], q["line_or_task"]) == ("malformed_file", 3)
    assert str(path) in q["message"] and "line 3 column 21" in q["message"]
    assert batch.counts["read"] == 1 and batch.reconciles

    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text('{"example_id": "ex_000000000001", "annotator": "a", "criterion": "correct_intent", "score": 1}\n'
                     '{"example_id": "ex_000000000001", "annotator": "a",\n')
    batch = read_annotation_file(jsonl, _fixture_examples(TWO), rubrics)
    assert len(batch.labels) == 1
    assert [(q["reason"], q["line_or_task"]) for q in batch.quarantine] == [("malformed_file", 2)]


def test_folder_reads_every_file_and_later_files_win(tmp_path, rubrics):
    examples = _fixture_examples(TWO) | _fixture_examples(THREE)
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "a_export.json").write_text(TWO.read_text())
    (folder / "b_export.json").write_text(THREE.read_text())
    (folder / "c_fix.jsonl").write_text(json.dumps({
        "example_id": "ex_000000000002", "annotator": "user-7", "criterion": "correct_intent", "score": 0}) + "\n")
    batch = read_annotation_folder(folder, examples, rubrics)
    assert len(batch.labels) == 40 + 54
    fixed = [lab for lab in batch.labels if (lab["example_id"], lab["annotator"], lab["criterion"])
             == ("ex_000000000002", "user-7", "correct_intent")]
    assert [lab["score"] for lab in fixed] == [0] and fixed[0]["source_file"].endswith("c_fix.jsonl")
    assert batch.reasons() == {"out_of_range": 1, "unknown_criterion": 1, "duplicate": 1}
    assert batch.reconciles


def test_rubric_for_accepts_names_or_task_types(rubrics):
    assert rubric_for(rubrics, "rag_qa").name == "rag_qa"
    assert rubric_for({"intent_routing": rubrics["intent_routing"]}, "intent_routing").name == "intent_routing"
    # a task type no rubric lists, and a missing one, go to the default (generic) rubric
    assert rubric_for(rubrics, "translation").name == rubric_for(rubrics, None).name == "generic"
    assert rubric_for({n: r for n, r in rubrics.items() if not r.default}, "translation") is None
