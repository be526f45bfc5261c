"""Rubric versions: what changes a version and what does not, labels carrying it through the
annotation round trip, agreement per version, the re-labelling sample and the judge cache key."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from openai_server import Reply, ScriptedServer

from eval_pipeline.lib.labeling.agreement import criterion_agreement, current_version_labels, gold_labels, judge_calibration
from eval_pipeline.lib.labeling.annotation import (label_studio_tasks, plain_tasks, read_annotation_file, relabel_sample,
                                          write_tasks)
from eval_pipeline.lib.labeling.judge import Judge, JudgeCache, OpenAICompatibleProvider
from eval_pipeline.lib.labeling.rubrics import (DEFAULT_RUBRICS_DIR, UNKNOWN_RUBRIC_VERSION, RubricError, load_rubric,
                                       load_rubrics, rubric_fingerprint, rubric_version, rubric_version_label)

RAG = DEFAULT_RUBRICS_DIR / "rag_qa.yaml"


def _data() -> dict:
    return yaml.safe_load(RAG.read_text())


def _write(tmp_path: Path, data: dict, name: str = "rag_qa.yaml", header: str = "") -> Path:
    path = tmp_path / name
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, width=60), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------
# the version
# ----------------------------------------------------------------------------------------------


def test_cosmetic_edits_keep_the_version(tmp_path):
    original = load_rubric(RAG)
    data = _data()
    # other key order everywhere, criteria in another order, text reflowed, comments added
    data = dict(reversed(list(data.items())))
    data["criteria"] = [dict(reversed(list(c.items()))) for c in reversed(data["criteria"])]
    for c in data["criteria"]:
        c["description"] = "  " + c["description"].replace(" ", "\n   ", 3) + "\n"
    path = _write(tmp_path, data, header="# edited by hand\n# comments are not the rubric\n")
    assert path.read_text() != RAG.read_text()
    edited = load_rubric(path)
    assert rubric_version(edited) == rubric_version(original)
    assert rubric_version_label(original) == f"rag_qa@{rubric_fingerprint(original)}"
    assert len(rubric_fingerprint(original)) == 8


def _level_reworded(d):
    d["criteria"][0]["levels"][1] = "The answer uses the relevant passage with at most one small slip."


def _required_flipped(d):
    d["criteria"][3]["required"] = True


def _factual_flag(d):
    d["criteria"][2]["factual"] = True


def _form_flag(d):
    d["criteria"][3]["form"] = True


def _pass_rule(d):
    d["criteria"][0]["pass_at"] = 1


def _criterion_wording(d):
    d["criteria"][1]["description"] = "The answer gives no fee, amount or time frame that is not in the passages."


def _criterion_removed(d):
    del d["criteria"][4]


def _criterion_added(d):
    d["criteria"].append({"id": "polite", "description": "The answer is polite.", "scale": "binary",
                          "levels": {0: "Rude.", 1: "Polite."}, "required": False})


def _scale_changed(d):
    d["criteria"][1].update(scale="three_point", levels={0: "Several invented details.", 1: "One invented detail.",
                                                         2: "No invented detail."})


@pytest.mark.parametrize("edit", [_level_reworded, _required_flipped, _factual_flag, _form_flag, _pass_rule,
                                  _criterion_wording, _criterion_removed, _criterion_added, _scale_changed])
def test_semantic_edits_change_the_version(tmp_path, edit):
    data = _data()
    edit(data)
    assert rubric_version(load_rubric(_write(tmp_path, data))) != rubric_version(load_rubric(RAG))


def test_an_explicit_version_is_shown_with_the_fingerprint(tmp_path):
    data = {**_data(), "version": "v2"}
    rubric = load_rubric(_write(tmp_path, data))
    plain = load_rubric(RAG)
    assert rubric_version(rubric) == f"v2+{rubric_fingerprint(plain)}"
    assert rubric_version_label(rubric) == f"rag_qa@v2+{rubric_fingerprint(plain)}"
    # the explicit name alone does not hide an edit: the fingerprint still moves
    _level_reworded(data)
    assert rubric_version(load_rubric(_write(tmp_path, data))).startswith("v2+")
    assert rubric_version(load_rubric(_write(tmp_path, data))) != rubric_version(rubric)


def test_a_numeric_version_reads_as_text(tmp_path):
    rubric = load_rubric(_write(tmp_path, {**_data(), "version": 3}))
    assert rubric.version == "3" and rubric_version(rubric).startswith("3+")


def test_a_version_that_cannot_be_a_folder_name_is_refused_with_file_and_field(tmp_path):
    path = _write(tmp_path, {**_data(), "version": "v2/../x"})
    with pytest.raises(RubricError) as err:
        load_rubric(path)
    assert str(path) in str(err.value) and "version:" in str(err.value)


# ----------------------------------------------------------------------------------------------
# labels carry it: export -> annotated file -> read back
# ----------------------------------------------------------------------------------------------


def _example(eid: str, task_type: str = "rag_qa") -> dict:
    return {"example_id": eid, "eval_set_version": "v1", "task_type": task_type,
            "messages": [{"role": "user", "content": f"question {eid}"}], "context_chunks": [],
            "production_output": f"answer {eid}"}


def _annotate(tasks: list[dict], rubric, annotators=("a@x", "b@x"), score=None) -> list[dict]:
    for t_no, task in enumerate(tasks, start=1):
        task["id"] = t_no
        task["annotations"] = [
            {"id": 10 * t_no + n, "completed_by": {"id": n, "email": who}, "was_cancelled": False,
             "result": [{"from_name": c.id, "to_name": "output", "type": "choices",
                         "value": {"choices": [str(c.allowed_levels[-1] if score is None else score)]}}
                        for c in rubric.criteria]}
            for n, who in enumerate(annotators, start=1)]
    return tasks


def test_label_studio_round_trip_keeps_the_version(tmp_path):
    rubrics = load_rubrics()
    rubric = rubrics["rag_qa"]
    examples = {e: _example(e) for e in ("ex_1", "ex_2")}
    tasks = label_studio_tasks(examples.values(), rubric)
    assert {t["data"]["rubric_version"] for t in tasks} == {rubric_version(rubric)}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(_annotate(tasks, rubric)))
    batch = read_annotation_file(path, examples, rubrics)
    assert batch.reconciles and len(batch.labels) == 2 * 2 * len(rubric.criteria)
    assert {lab["rubric_version"] for lab in batch.labels} == {rubric_version(rubric)}
    assert batch.rubric_versions() == {f"rag_qa@{rubric_version(rubric)}": len(batch.labels)}


def test_plain_csv_round_trip_keeps_the_version(tmp_path):
    rubrics = load_rubrics()
    rubric = rubrics["rag_qa"]
    examples = {"ex_1": _example("ex_1")}
    path = write_tasks(plain_tasks(examples.values(), rubric), tmp_path / "tasks.csv")
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert {r["rubric_version"] for r in rows} == {rubric_version(rubric)}
    for r in rows:
        r.update(annotator="a@x", score="1")
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    batch = read_annotation_file(path, examples, rubrics)
    assert len(batch.labels) == len(rubric.criteria)
    assert {lab["rubric_version"] for lab in batch.labels} == {rubric_version(rubric)}


def test_a_task_without_a_version_takes_the_exports_record_else_unknown(tmp_path):
    rubrics = load_rubrics()
    rubric = rubrics["rag_qa"]
    examples = {e: _example(e) for e in ("ex_1", "ex_2")}
    tasks = _annotate(label_studio_tasks(examples.values(), rubric), rubric)
    for task in tasks:  # a file exported before versions existed
        del task["data"]["rubric_version"]
    path = tmp_path / "old_export.json"
    path.write_text(json.dumps(tasks))
    batch = read_annotation_file(path, examples, rubrics, export_versions={("ex_1", "rag_qa"): "0ldc0de5"})
    versions = {lab["example_id"]: lab["rubric_version"] for lab in batch.labels}
    assert versions == {"ex_1": "0ldc0de5", "ex_2": UNKNOWN_RUBRIC_VERSION}
    assert batch.rubric_versions()[f"rag_qa@{UNKNOWN_RUBRIC_VERSION}"] == 2 * len(rubric.criteria)


def test_a_relabel_by_the_same_annotator_is_a_second_label_not_a_duplicate(tmp_path):
    rubrics = load_rubrics()
    rubric = rubrics["rag_qa"]
    examples = {"ex_1": _example("ex_1")}
    old = _annotate(label_studio_tasks(examples.values(), rubric), rubric, score=0)
    old[0]["data"]["rubric_version"] = "0ldc0de5"
    new = _annotate(label_studio_tasks(examples.values(), rubric), rubric)
    (tmp_path / "a_old.json").write_text(json.dumps(old))
    (tmp_path / "b_new.json").write_text(json.dumps(new))
    from eval_pipeline.lib.labeling.annotation import read_annotation_folder
    batch = read_annotation_folder(tmp_path, examples, rubrics)
    assert batch.reconciles and not batch.quarantine
    assert sorted(batch.rubric_versions().values()) == [2 * len(rubric.criteria)] * 2


# ----------------------------------------------------------------------------------------------
# agreement per version; gold labels of the current version only
# ----------------------------------------------------------------------------------------------


def _labels(version: str, scores: dict[str, list[int]], criterion="completeness") -> list[dict]:
    """{annotator: [score per example]} -> label rows of rag_qa under ``version``."""
    return [{"example_id": f"ex_{i}", "rubric": "rag_qa", "task_type": "rag_qa", "scale": "three_point",
             "criterion": criterion, "annotator": who, "score": s, "rubric_version": version}
            for who, row in scores.items() for i, s in enumerate(row)]


def test_agreement_is_computed_per_version_never_pooled():
    # under the old wording the two annotators disagree; under the new one they agree perfectly
    old = _labels("0ldc0de5", {"a": [0, 1, 2, 0, 1, 2], "b": [2, 0, 1, 2, 0, 1]})
    new = _labels("n3wc0de5", {"a": [0, 1, 2, 2, 1, 0], "b": [0, 1, 2, 2, 1, 0]})
    rows = {r["rubric_version"]: r for r in criterion_agreement(old + new)}
    assert set(rows) == {"0ldc0de5", "n3wc0de5"}
    assert rows["n3wc0de5"]["value"] == pytest.approx(1.0) and rows["n3wc0de5"]["n_items"] == 6
    assert rows["0ldc0de5"]["value"] < 0 and rows["0ldc0de5"]["n_items"] == 6
    # pooled, the same examples would have 4 annotators' worth of labels per item; per version, 2
    assert rows["n3wc0de5"]["n_annotators"] == 2


def test_gold_labels_and_calibration_use_the_current_version_only():
    rubrics = load_rubrics()
    current = rubric_version(rubrics["rag_qa"])
    old = _labels("0ldc0de5", {"a": [0] * 6, "b": [0] * 6, "c": [0] * 6})
    unknown = _labels(UNKNOWN_RUBRIC_VERSION, {"d": [1] * 6})
    new = _labels(current, {"a": [2, 2, 1, 2, 0, 2], "b": [2, 2, 1, 2, 0, 2]})
    kept, older = current_version_labels(old + unknown + new, rubrics)
    assert older == {"rag_qa": len(old) + len(unknown)}
    assert {lab["rubric_version"] for lab in kept} == {current}
    gold = gold_labels(kept)
    assert [g["score"] for g in gold] == [2, 2, 1, 2, 0, 2] and {g["rubric_version"] for g in gold} == {current}
    assert all(g["n_annotators"] == 2 for g in gold)
    calibration = judge_calibration(gold, {(g["example_id"], "completeness"): g["score"] for g in gold})
    assert [(c["rubric_version"], c["kappa"]) for c in calibration] == [(current, pytest.approx(1.0))]


# ----------------------------------------------------------------------------------------------
# the re-labelling sample
# ----------------------------------------------------------------------------------------------


def test_relabel_sample_is_seeded_sized_and_all_when_fewer():
    rubric = load_rubrics()["rag_qa"]
    current = rubric_version(rubric)
    stored = ([{"example_id": f"ex_{i:03d}", "rubric": "rag_qa", "rubric_version": "0ldc0de5"} for i in range(50)]
              + [{"example_id": "ex_900", "rubric": "rag_qa", "rubric_version": None}]
              + [{"example_id": "ex_901", "rubric": "rag_qa", "rubric_version": current}]
              + [{"example_id": "ex_902", "rubric": "intent_routing", "rubric_version": "0ldc0de5"}])
    in_set = {f"ex_{i:03d}": {} for i in range(0, 50, 2)} | {"ex_900": {}, "ex_901": {}, "ex_902": {}}
    picked, info = relabel_sample(stored, rubric, in_set, 10)
    assert len(picked) == 10 and set(picked) <= set(in_set) - {"ex_901", "ex_902"}
    assert picked == relabel_sample(stored, rubric, in_set, 10)[0]  # same seed, same sample
    assert picked != relabel_sample(stored, rubric, in_set, 10, seed=1)[0]
    assert info == {"older_labels": 51, "older_versions": ["0ldc0de5", UNKNOWN_RUBRIC_VERSION],
                    "labelled_examples": 51, "in_this_set": 26, "sampled": 10, "relabelled": 0}
    everything, info = relabel_sample(stored, rubric, in_set, 30)
    assert len(everything) == 26 and info["sampled"] == 26
    nothing, info = relabel_sample([s for s in stored if s["rubric_version"] == current], rubric, in_set, 30)
    assert nothing == [] and info["older_labels"] == 0


# ----------------------------------------------------------------------------------------------
# the judge: a changed rubric is a new cache key (a new judgement), not a cached old one
# ----------------------------------------------------------------------------------------------


def test_a_changed_rubric_misses_the_judge_cache(tmp_path):
    original = load_rubric(RAG)
    data = _data()
    _level_reworded(data)
    reworded = load_rubric(_write(tmp_path, data))

    def reply(body: dict) -> Reply:
        schema = body["response_format"]["json_schema"]["schema"]
        return Reply(content=json.dumps({c: {"score": spec["properties"]["score"]["enum"][-1], "justification": "ok"}
                                         for c, spec in schema["properties"].items()}))

    with ScriptedServer() as server:
        server.responder = reply
        provider = OpenAICompatibleProvider(server.base_url, "judge-model", max_retries=1, timeout=10)
        judge = Judge(provider, JudgeCache(tmp_path / "cache"))
        conversation = [{"role": "user", "content": "When does my card arrive?"}]
        first = judge.judge(original, conversation, [], "In 5 days.")
        again = judge.judge(original, conversation, [], "In 5 days.")
        changed = judge.judge(reworded, conversation, [], "In 5 days.")
    assert first.status == again.status == changed.status == "ok"
    assert again.cached and again.prompt_hash == first.prompt_hash
    assert not changed.cached and changed.prompt_hash != first.prompt_hash
    assert len(server.requests) == 2
