"""A rubric change through the real Dagster runtime: labels keep the version they were made
under, ``annotation_tasks`` sends a seeded re-labelling batch under the new version, gold labels
leave the old version's labels out, and the re-labels come back as the new version's agreement.

The data home is the one of ``test_labeling_assets`` (an eval set of 5 intent-routing and 4
RAG examples written straight into the warehouse); the rubrics are a copy in ``tmp_path``.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import yaml
from test_labeling_assets import MONTH, assets, labeled_home, meta, table  # noqa: F401 - labeled_home is a fixture

from eval_pipeline.defs.resources import LabelingSettings, build_resources
from eval_pipeline.lib.labeling.rubrics import DEFAULT_RUBRICS_DIR, load_rubrics, rubric_version

LABELLING = ["human_labels", "human_references", "label_quarantine", "label_agreement", "gold_labels",
             "gold_references", "review_queue"]


def _annotate(tasks_file: Path, inbox_file: Path, scores: dict[str, int] | None = None) -> int:
    """Two annotators answer every task of a Label Studio tasks file (top level, or ``scores``)."""
    tasks = json.loads(tasks_file.read_text())
    config = ET.parse(tasks_file.with_name(tasks_file.name.replace(".tasks.json", ".config.xml")))
    criteria = [choices.get("name") for choices in config.iter("Choices")]
    for t_no, task in enumerate(tasks, start=1):
        task["id"] = t_no
        task["annotations"] = [
            {"id": 10 * t_no + n, "completed_by": {"id": n, "email": who}, "was_cancelled": False,
             "result": [{"from_name": c, "to_name": "output", "type": "choices",
                         "value": {"choices": [str((scores or {}).get(c, 1))]}} for c in criteria]}
            for n, who in enumerate(("ann@a", "ann@b"), start=1)]
    inbox_file.parent.mkdir(parents=True, exist_ok=True)
    inbox_file.write_text(json.dumps(tasks))
    return len(tasks)


def test_a_changed_rubric_sends_a_relabel_sample_and_gold_labels_leave_old_labels_out(labeled_home, tmp_path):
    home = labeled_home
    rubrics_dir = tmp_path / "rubrics"
    shutil.copytree(DEFAULT_RUBRICS_DIR, rubrics_dir)
    # a data home from before rubric versions: its human_labels table lacks the column, and gains it (last)
    with duckdb.connect(str(home.warehouse)) as con:
        con.execute("create schema labeling")
        con.execute("create table labeling.human_labels (example_id varchar, eval_set_version varchar, "
                    "task_type varchar, rubric varchar, scale varchar, criterion varchar, annotator varchar, "
                    "score bigint, source_file varchar, source_ref varchar)")

    def run(selection, partitioned=False, relabel_size=3):
        resources = {**build_resources(home),
                     "labeling": LabelingSettings(rubrics_dir=str(rubrics_dir), relabel_size=relabel_size)}
        return dg.materialize(assets(home), resources=resources, selection=selection,
                              partition_key=MONTH if partitioned else None)

    # 1. tasks out under the first version, labelled, read back
    first = run(["annotation_tasks"], partitioned=True)
    v1 = rubric_version(load_rubrics(rubrics_dir)["rag_qa"])
    assert meta(first, "annotation_tasks")["relabel"] == {}
    outbox = home.labels_outbox / "v1" / "label_studio"
    assert _annotate(outbox / "rag_qa.tasks.json", home.labels_inbox / "rag_v1.json") == 4
    _annotate(outbox / "intent_routing.tasks.json", home.labels_inbox / "routing_v1.json")
    run(LABELLING)
    labels = table(home, "select * from labeling.human_labels")
    assert labels.columns[-1] == "rubric_version"
    assert set(labels.filter(pl.col("rubric") == "rag_qa")["rubric_version"]) == {v1}
    assert table(home, "select count(*) n from labeling.gold_labels where \"group\" = 'rag_qa'")["n"][0] == 4 * 5

    # 2. a level of rag_qa is reworded: a new version
    data = yaml.safe_load((rubrics_dir / "rag_qa.yaml").read_text())
    data["criteria"][0]["levels"][1] = "The answer uses the relevant passage with at most one small slip."
    (rubrics_dir / "rag_qa.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    v2 = rubric_version(load_rubrics(rubrics_dir)["rag_qa"])
    assert v2 != v1

    second = run(["annotation_tasks"], partitioned=True)
    relabel = meta(second, "annotation_tasks")["relabel"]
    assert set(relabel) == {"rag_qa"}  # intent_routing did not change
    assert relabel["rag_qa"] | {"folder": None} == {
        "version": v2, "older_labels": 4 * 2 * 5, "older_versions": [v1], "labelled_examples": 4,
        "in_this_set": 4, "sampled": 3, "relabelled": 0, "folder": None}
    folder = home.labels_outbox / "v1" / "relabel" / f"rag_qa@{v2}"
    assert relabel["rag_qa"]["folder"] == str(folder)
    relabel_tasks = json.loads((folder / "rag_qa.tasks.json").read_text())
    assert len(relabel_tasks) == 3 and {t["data"]["rubric_version"] for t in relabel_tasks} == {v2}
    assert (folder / "rag_qa.config.xml").exists() and (folder / "rag_qa.tasks.csv").exists()
    stored = table(home, "select batch, rubric, rubric_version, count(*) n from labeling.annotation_tasks "
                         "group by all order by all")
    assert stored.filter(pl.col("batch") == "relabel").rows() == [("relabel", "rag_qa", v2, 3)]
    # the same sample when written again (seeded)
    third = run(["annotation_tasks"], partitioned=True)
    assert json.loads((folder / "rag_qa.tasks.json").read_text()) == relabel_tasks
    assert meta(third, "annotation_tasks")["relabel"]["rag_qa"]["sampled"] == 3

    # 3. before the re-labels come back: the old labels stay in the table, gold labels leave them out
    before = run(LABELLING)
    assert table(home, "select count(*) n from labeling.human_labels where rubric = 'rag_qa'")["n"][0] == 40
    gold = table(home, "select * from labeling.gold_labels")
    assert set(gold["group"]) == {"intent_routing"}
    gold_meta = meta(before, "gold_labels")
    assert gold_meta["older_version_labels"] == {"rag_qa": 40}
    assert gold_meta["older_versions_note"].startswith("40 labels of older rubric versions, not used")

    # 4. the re-labels come back (grounded_in_context now scored 1): gold and agreement of the new version
    _annotate(folder / "rag_qa.tasks.json", home.labels_inbox / "rag_relabel.json", {"grounded_in_context": 1})
    after = run(LABELLING)
    labels = table(home, "select * from labeling.human_labels where rubric = 'rag_qa'")
    assert dict(labels.group_by("rubric_version").len().iter_rows()) == {v1: 40, v2: 3 * 2 * 5}
    gold = table(home, "select * from labeling.gold_labels where \"group\" = 'rag_qa'")
    assert set(gold["rubric_version"]) == {v2} and gold["example_id"].n_unique() == 3
    assert set(gold.filter(pl.col("criterion") == "grounded_in_context")["score"]) == {1}
    assert meta(after, "gold_labels")["older_version_labels"] == {"rag_qa": 40}
    agreement = table(home, "select rubric_version, current_version, n_items from labeling.label_agreement "
                            "where \"group\" = 'rag_qa' and criterion = 'completeness'")
    assert sorted(agreement.rows()) == sorted([(v1, False, 4), (v2, True, 3)])  # never pooled
