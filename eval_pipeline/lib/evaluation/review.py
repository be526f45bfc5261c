"""Human review of a deep evaluation's failures: the candidate's failed and errored examples out to
people as annotation tasks, their labels back in as a verdict per example.

Plain Python (no Dagster import). The tasks are the eval set's annotation tasks
(:mod:`eval_pipeline.lib.labeling.annotation`, one Label Studio config and one plain CSV per rubric) with
three differences: the output shown is the candidate's, not production's; every task carries
``review_of`` (``name:version``), so a label cannot be counted for another version; and the
automatic verdict (status and the scorer's reason or the judge's justifications) is shown.

Verdict of one example (:func:`human_verdicts`): each criterion's score is the majority of its
reviewers (:func:`eval_pipeline.lib.labeling.agreement.gold_labels`, a tie goes to the lower level); the
rubric's pass rule (:meth:`eval_pipeline.lib.labeling.rubrics.Rubric.passes`: every required criterion at
its ``pass_at`` level) then decides. A pass ``overturned`` the automatic failure, a fail
``confirmed`` it. An ``error`` example has no output to judge: it stays ``confirmed`` whatever
the labels say. A required criterion nobody labelled leaves the example ``incomplete``; an example
with no labels is ``awaiting_review``; one no rubric applies to is ``no_rubric`` (listed, never
sent). Only ``overturned`` changes the status the scorecard counts (``failed`` -> ``passed``).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from eval_pipeline.lib.labeling.agreement import current_version_labels, gold_labels
from eval_pipeline.lib.labeling.annotation import (AnnotationBatch, label_studio_config, label_studio_tasks, plain_tasks,
                                          read_annotation_folder, rubric_for, write_tasks)

__all__ = [
    "REVIEW_FIELD",
    "REVIEWED_STATUSES",
    "VERDICTS",
    "apply_verdicts",
    "failures",
    "human_verdicts",
    "read_review_labels",
    "review_config",
    "review_counts",
    "review_rows",
    "write_review_tasks",
]

#: The task field (Label Studio ``data`` key, plain column) naming the version under review.
REVIEW_FIELD = "review_of"
#: The automatic statuses sent to review.
REVIEWED_STATUSES = ("failed", "error")
#: Human verdicts of a failure.
VERDICTS = ("awaiting_review", "confirmed", "overturned", "incomplete", "no_rubric")


def failures(scores: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of a version's scores whose status is ``failed`` or ``error``, in example order."""
    return sorted((dict(r) for r in scores if r.get("status") in REVIEWED_STATUSES), key=lambda r: r["example_id"])


def _automatic_note(row: Mapping[str, Any]) -> str:
    """What the reviewer is told about the automatic verdict: status, reason, judge justifications."""
    parts = [f"automatic status: {row['status']}"]
    if row.get("status") == "error":
        parts.append("the model gave no output (provider error)")
    if row.get("reason"):
        parts.append(f"reason: {row['reason']}")
    justifications = row.get("justifications")
    if isinstance(justifications, str):
        try:
            justifications = json.loads(justifications)
        except ValueError:
            justifications = None
    if isinstance(justifications, Mapping):
        parts += [f"judge on {c}: {text}" for c, text in sorted(justifications.items()) if text]
    if row.get("reference"):
        parts.append(f"reference answer: {row['reference']}")
    return "\n".join(parts)


def review_config(rubric: Any) -> str:
    """The rubric's Label Studio config (:func:`~eval_pipeline.lib.labeling.annotation.label_studio_config`,
    the same questions) with the version under review and the automatic verdict shown above the
    questions."""
    view = ET.fromstring(label_studio_config(rubric))
    children = list(view)
    at = next(i for i, el in enumerate(children) if el.tag == "Text" and el.get("name") == "output") + 1
    added = [ET.Element("Header", value="Review of model version", size="5"),
             ET.Element("Text", name=REVIEW_FIELD, value=f"${REVIEW_FIELD}"),
             ET.Element("Header", value="Automatic verdict", size="5"),
             ET.Element("Text", name="automatic_verdict", value="$automatic_verdict")]
    for offset, el in enumerate(added):
        view.insert(at + offset, el)
    ET.indent(view, space="  ")
    return ET.tostring(view, encoding="unicode") + "\n"


def write_review_tasks(failed: Sequence[Mapping[str, Any]], examples_by_id: Mapping[str, Mapping[str, Any]],
                       rubrics: Mapping[str, Any], review_of: str, folder: str | Path) -> list[dict[str, Any]]:
    """Write the review tasks of ``failed`` (rows of :func:`failures`) under ``folder``:
    ``label_studio/<rubric>.tasks.json`` and ``<rubric>.config.xml``, ``plain/<rubric>.tasks.csv``.

    ``examples_by_id`` gives each example's conversation and context (eval-set rows). Returns one
    row per failure: ``example_id``, ``rubric`` (None when none applies: nothing written for it),
    ``label_studio_tasks`` and ``plain_tasks`` (the files it is in)."""
    folder = Path(folder)
    by_rubric: dict[str, list[dict[str, Any]]] = {}
    out = []
    for row in failed:
        rubric = rubric_for(rubrics, row.get("task_type"))
        if rubric is None:
            out.append({"example_id": row["example_id"], "rubric": None, "label_studio_tasks": None,
                        "plain_tasks": None})
            continue
        example = dict(examples_by_id.get(row["example_id"]) or {"example_id": row["example_id"]})
        example.update({"example_id": row["example_id"], "eval_set_version": row.get("eval_set_version"),
                        "task_type": row.get("task_type"),
                        # the candidate's output is what is judged (the task builders show production_output)
                        "production_output": row.get("output") or "",
                        "_automatic": _automatic_note(row), "_reference": row.get("reference")})
        by_rubric.setdefault(rubric.name, []).append(example)
    for name, group in sorted(by_rubric.items()):
        rubric = rubric_for(rubrics, group[0]["task_type"])
        tasks = label_studio_tasks(group, rubric)
        for task, example in zip(tasks, group):
            task["data"][REVIEW_FIELD] = review_of
            task["data"]["automatic_verdict"] = example["_automatic"]
            task.pop("predictions", None)
            if rubric.has_reference and example["_reference"]:
                # the reference box starts from the reference the output was scored against
                task["predictions"] = [{"model_version": "reference", "result": [
                    {"from_name": "reference", "to_name": "output", "type": "textarea",
                     "value": {"text": [str(example["_reference"])]}}]}]
        ls_path = folder / "label_studio" / f"{name}.tasks.json"
        write_tasks(tasks, ls_path)
        (folder / "label_studio" / f"{name}.config.xml").write_text(review_config(rubric), encoding="utf-8")
        rows = plain_tasks(group, rubric)
        notes = {ex["example_id"]: ex["_automatic"] for ex in group}
        for r in rows:
            r[REVIEW_FIELD] = review_of
            r["automatic_verdict"] = notes[r["example_id"]]
        plain_path = write_tasks(rows, folder / "plain" / f"{name}.tasks.csv")
        out += [{"example_id": ex["example_id"], "rubric": name, "label_studio_tasks": str(ls_path),
                 "plain_tasks": str(plain_path)} for ex in group]
    return sorted(out, key=lambda r: r["example_id"])


def read_review_labels(inbox: str | Path, failed: Sequence[Mapping[str, Any]], rubrics: Mapping[str, Any],
                       review_of: str) -> AnnotationBatch:
    """The reviewers' labels dropped into ``inbox`` (Label Studio JSON exports, filled CSV/JSONL),
    read by :func:`~eval_pipeline.lib.labeling.annotation.read_annotation_folder`: a label for an example
    that is not one of ``failed``, carrying another version's ``review_of``, or showing another
    output than the failure's (the version was evaluated again since), is quarantined."""
    examples = {r["example_id"]: {"example_id": r["example_id"], "task_type": r.get("task_type"),
                                  "eval_set_version": r.get("eval_set_version"), "output": r.get("output") or ""}
                for r in failed}
    return read_annotation_folder(inbox, examples, rubrics, review_of=review_of)


def human_verdicts(failed: Sequence[Mapping[str, Any]], labels: Iterable[Mapping[str, Any]],
                   rubrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per failure: ``example_id``, ``status`` (automatic), ``verdict`` (see
    :data:`VERDICTS` and the module doc), ``reviewers`` (how many labelled it), ``majority``
    ({criterion: majority score}) and ``note`` (why, in words). Only labels made under the
    rubric's current version count (a label of an older version judged against other levels)."""
    majorities: dict[str, dict[str, int]] = {}
    reviewers: dict[str, set[str]] = {}
    labels = list(labels)
    older = {lab["example_id"] for lab in labels}
    labels, _ = current_version_labels(labels, rubrics)
    older -= {lab["example_id"] for lab in labels}
    for lab in labels:
        reviewers.setdefault(lab["example_id"], set()).add(lab["annotator"])
    for g in gold_labels(labels):
        majorities.setdefault(g["example_id"], {})[g["criterion"]] = g["score"]
    out = []
    for row in failed:
        eid = row["example_id"]
        rubric = rubric_for(rubrics, row.get("task_type"))
        majority = majorities.get(eid, {})
        who = len(reviewers.get(eid, ()))
        if rubric is None:
            verdict, note = "no_rubric", f"no rubric applies to task type {row.get('task_type')!r}: not sent for review"
        elif not majority:
            verdict, note = "awaiting_review", ("only labels of an older rubric version: review it again" if eid in older
                                                else "no reviewer label yet")
        else:
            passed = rubric.passes(majority)
            if passed is None:
                missing = [c.id for c in rubric.required_criteria if c.id not in majority]
                verdict, note = "incomplete", f"required criteria not labelled: {', '.join(missing)}"
            elif row["status"] == "error":
                verdict = "confirmed"
                note = ("the model gave no output (provider error): an error cannot be overturned"
                        + (", although the reviewers passed it" if passed else ""))
            elif passed:
                verdict, note = "overturned", f"the majority of {who} reviewers passes every required criterion"
            else:
                failing = [c.id for c in rubric.required_criteria if not c.passed(majority[c.id])]
                verdict, note = "confirmed", f"the majority of {who} reviewers fails {', '.join(failing)}"
        out.append({"example_id": eid, "status": row["status"], "verdict": verdict, "reviewers": who,
                    "majority": dict(sorted(majority.items())), "note": note})
    return out


def apply_verdicts(scores: Iterable[Mapping[str, Any]], verdicts: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``scores`` rows with the human verdicts taking precedence: an ``overturned`` example's status
    becomes ``passed``; every other row keeps its automatic status."""
    overturned = {v["example_id"] for v in verdicts if v["verdict"] == "overturned"}
    return [{**r, "status": "passed"} if r["example_id"] in overturned else dict(r) for r in scores]


def review_counts(verdicts: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``failures`` (sent or listed), ``reviewed`` (a human verdict), ``confirmed``, ``overturned``,
    ``awaiting_review`` (no labels yet, or a required criterion still unlabelled) and ``no_rubric``."""
    verdicts = list(verdicts)
    n = {v: sum(r["verdict"] == v for r in verdicts) for v in VERDICTS}
    return {"failures": len(verdicts), "reviewed": n["confirmed"] + n["overturned"], "confirmed": n["confirmed"],
            "overturned": n["overturned"], "awaiting_review": n["awaiting_review"] + n["incomplete"],
            "no_rubric": n["no_rubric"]}


def review_rows(failed: Sequence[Mapping[str, Any]], written: Mapping[str, Mapping[str, Any]],
                verdicts: Mapping[str, Mapping[str, Any]], *, model_version: str, tier: str,
                at: Any) -> list[dict[str, Any]]:
    """One row per failure for the ``failure_review`` table: the failure (:func:`failures`),
    where its task was written (:func:`write_review_tasks`, by example id) and its verdict
    (:func:`human_verdicts`, by example id; the majority as JSON), stamped ``at``."""
    rows = []
    for f in failed:
        eid, verdict = f["example_id"], verdicts[f["example_id"]]
        rows.append({"model_version": model_version, "eval_set_version": f["eval_set_version"], "tier": tier,
                     "example_id": eid, "task_type": f["task_type"], "rubric": written[eid]["rubric"],
                     "status": f["status"], "reason": f["reason"], "output": f["output"],
                     "label_studio_tasks": written[eid]["label_studio_tasks"], "plain_tasks": written[eid]["plain_tasks"],
                     "verdict": verdict["verdict"], "reviewers": verdict["reviewers"],
                     "majority": json.dumps(verdict["majority"], sort_keys=True), "note": verdict["note"],
                     "reviewed_at": at})
    return rows
