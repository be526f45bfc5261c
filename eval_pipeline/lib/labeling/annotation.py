"""The human annotation round trip: tasks out to annotators, completed labels back in.

Plain Python (no Dagster import). Two ways to annotate an eval set:

* **Label Studio**: :func:`label_studio_config` turns a rubric into a labeling config (one
  single-choice question per criterion, plus a reference text box when the rubric has one
  correct answer) and :func:`label_studio_tasks` writes the tasks in Label Studio's import format.
  The JSON export of the project is read back by :func:`read_annotation_file`.
* **Plain files** for teams without Label Studio: :func:`plain_tasks` gives one row per
  (example, criterion) with empty ``annotator`` / ``score`` / ``reference`` columns, written as
  JSONL or CSV by :func:`write_tasks`; the filled-in file is read back the same way.

Reading never drops anything silently. Every label-like item (a Label Studio ``choices`` or
``textarea`` result, a plain row) ends up either accepted (in ``labels`` or ``references``) or in
``quarantine`` with a reason code from :data:`QUARANTINE_REASONS` and a message naming the file,
the task index or line and the field. Problems that stand for items the reader could not see (a
required criterion missing from an annotation, an unreadable file) are quarantined too and count
as read, so ``read == accepted + quarantined`` always holds (:attr:`AnnotationBatch.reconciles`).
Cancelled Label Studio annotations and untouched plain rows are not labels: they are counted
(``cancelled``, ``skipped``) but neither accepted nor quarantined.

Every task names the version of the rubric it was written under (``rubric_version``, see
:func:`eval_pipeline.lib.labeling.rubrics.rubric_version`) and every label read back keeps it; a task from
before versions existed gets the version recorded for its export, else ``unknown``. Labels of two
versions are two labels, never duplicates of each other. :func:`relabel_sample` picks the
examples to label again after a rubric changed.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval_pipeline.lib.labeling.rubrics import UNKNOWN_RUBRIC_VERSION, rubric_version

if TYPE_CHECKING:  # the rubric model lives in eval_pipeline.lib.labeling.rubrics; only its attributes are used here
    from eval_pipeline.lib.labeling.rubrics import Criterion, Rubric

__all__ = [
    "PLAIN_COLUMNS",
    "QUARANTINE_REASONS",
    "REFERENCE_FIELD",
    "AnnotationBatch",
    "annotator_of",
    "criterion_levels",
    "label_studio_config",
    "label_studio_tasks",
    "write_rubric_tasks",
    "plain_tasks",
    "read_annotation_file",
    "read_annotation_folder",
    "relabel_sample",
    "rubric_for",
    "write_tasks",
]

#: Reason codes of quarantined annotation items.
QUARANTINE_REASONS = (
    "unknown_example",
    "unknown_criterion",
    "out_of_range",
    "not_a_number",
    "missing_annotator",
    "missing_criterion",
    "malformed_file",
    "duplicate",
    "wrong_type",  # a plain row's annotator, criterion or reference that is not text
    "bad_text",  # a lone UTF-16 surrogate, or an eval_set_version that is not a string
    "not_under_review",  # reading a failure review: the example is not one of the version's failures
    "other_review",  # reading a failure review: the item's ``review_of`` names another version (or none)
)

#: Columns of a plain task file, in order.
PLAIN_COLUMNS = (
    "example_id",
    "eval_set_version",
    "task_type",
    "criterion",
    "levels",
    "conversation",
    "context",
    "output",
    "annotator",
    "score",
    "reference",
    # added after the first layout: the rubric version the task was written under (see lib/labeling/rubrics.py)
    "rubric_version",
)

#: Name of the reference text box in the Label Studio config (and its ``from_name`` in exports).
REFERENCE_FIELD = "reference"

_SCALE_LEVELS = {"binary": (0, 1), "three_point": (0, 1, 2)}
# "1 - correct" (a label with its description) but not "1.5 - partly"
_LEADING_INT = re.compile(r"^\s*([+-]?\d+)\s*(?:$|[-:=)]|\.(?!\d))")


# ----------------------------------------------------------------------------------------------
# rubric helpers
# ----------------------------------------------------------------------------------------------


def criterion_levels(criterion: Criterion) -> list[int]:
    """The allowed scores of a criterion: its ``levels`` keys, else those of its scale."""
    levels = getattr(criterion, "levels", None)
    if levels:
        return sorted(int(k) for k in levels)
    return list(_SCALE_LEVELS[criterion.scale])


def _level_text(criterion: Criterion, level: int) -> str:
    levels = getattr(criterion, "levels", None) or {}
    return str(levels.get(level, levels.get(str(level), "")))  # YAML may have left string keys


def rubric_for(rubrics: Mapping[str, Rubric], task_type: str | None) -> Rubric | None:
    """The rubric of a task type from a mapping keyed by task type *or* by rubric name.

    ``load_rubrics()`` is keyed by rubric name; callers may also pass ``{task_type: rubric}``.
    A task type no rubric applies to, and a missing or empty one, gets the rubric marked
    ``default: true`` (the packaged ``generic`` one). Returns None when there is none either (the
    caller quarantines).
    """
    if task_type:
        if task_type in rubrics and task_type in (getattr(rubrics[task_type], "applies_to", None) or [task_type]):
            return rubrics[task_type]
        for rubric in rubrics.values():
            if task_type in (getattr(rubric, "applies_to", None) or ()):
                return rubric
        if task_type in rubrics and not getattr(rubrics[task_type], "default", False):
            return rubrics[task_type]
    return next((r for r in rubrics.values() if getattr(r, "default", False)), None)


def _criteria(rubric: Rubric) -> dict[str, Criterion]:
    return {c.id: c for c in rubric.criteria}


# ----------------------------------------------------------------------------------------------
# tasks out
# ----------------------------------------------------------------------------------------------


def label_studio_config(rubric: Rubric) -> str:
    """A Label Studio labeling config (XML) generated from ``rubric``.

    The conversation, the retrieved context and the production output are shown; then one
    required single-choice question per criterion whose choice values are the level numbers (so the
    export can be read back without a lookup) with the level description as hint and in a header
    above the question; then, for rubrics with a reference, a text box prefilled by
    :func:`label_studio_tasks` with the production output for the annotator to confirm or correct.
    Built with ElementTree, so descriptions with ``<``, ``&`` or quotes stay well-formed.
    """
    view = ET.Element("View")
    ET.SubElement(view, "Header", value=f"{rubric.name}: {' '.join(str(rubric.description).split())}")
    ET.SubElement(view, "Header", value="Conversation", size="5")
    ET.SubElement(view, "Paragraphs", name="dialogue", value="$dialogue", layout="dialogue",
                  nameKey="role", textKey="content")
    ET.SubElement(view, "Header", value="Retrieved context", size="5")
    ET.SubElement(view, "Text", name="context", value="$context")
    ET.SubElement(view, "Header", value="Model output", size="5")
    ET.SubElement(view, "Text", name="output", value="$output")
    for criterion in rubric.criteria:
        levels = criterion_levels(criterion)
        legend = "; ".join(f"{lv} - {_level_text(criterion, lv)}" for lv in levels)
        ET.SubElement(view, "Header", value=f"{criterion.id}: {' '.join(str(criterion.description).split())}",
                      size="5")
        ET.SubElement(view, "Text", name=f"{criterion.id}_levels", value=legend)
        choices = ET.SubElement(view, "Choices", name=criterion.id, toName="output", choice="single",
                                required="true", showInline="true")
        for lv in levels:
            ET.SubElement(choices, "Choice", value=str(lv), hint=_level_text(criterion, lv))
    if rubric.has_reference:
        ET.SubElement(view, "Header", value="Reference answer", size="5")
        ET.SubElement(view, "TextArea", name=REFERENCE_FIELD, toName="output", editable="true",
                      maxSubmissions="1", placeholder="the correct answer (confirm or correct)")
    ET.indent(view, space="  ")
    return ET.tostring(view, encoding="unicode") + "\n"


def _dialogue(example: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"role": str(m.get("role") or ""), "content": str(m.get("content") or "")}
            for m in (example.get("messages") or [])]


def _context_text(example: Mapping[str, Any]) -> str:
    return "\n\n".join(f"[{c.get('doc_id') or '?'}] {c.get('text') or ''}"
                       for c in (example.get("context_chunks") or []))


def _conversation_text(example: Mapping[str, Any]) -> str:
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in _dialogue(example))


def label_studio_tasks(examples: Iterable[Mapping[str, Any]], rubric: Rubric) -> list[dict[str, Any]]:
    """Examples as Label Studio import tasks (``[{"data": {...}, "predictions": [...]}, ...]``).

    For rubrics with a reference the text box is prefilled with the production output as a
    prediction of ``model_version="production"``, so the annotator confirms or corrects it.
    """
    tasks: list[dict[str, Any]] = []
    version = rubric_version(rubric)
    for ex in examples:
        output = str(ex.get("production_output") or "")
        task: dict[str, Any] = {
            "data": {
                "example_id": ex["example_id"],
                "eval_set_version": ex.get("eval_set_version"),
                "task_type": ex.get("task_type"),
                "rubric_version": version,
                "dialogue": _dialogue(ex),
                "context": _context_text(ex),
                "output": output,
            }
        }
        if rubric.has_reference:
            task["predictions"] = [{
                "model_version": "production",
                "result": [{"from_name": REFERENCE_FIELD, "to_name": "output", "type": "textarea",
                            "value": {"text": [output]}}],
            }]
        tasks.append(task)
    return tasks


def plain_tasks(examples: Iterable[Mapping[str, Any]], rubric: Rubric) -> list[dict[str, Any]]:
    """One row per (example, criterion) with empty ``annotator``, ``score`` and ``reference``.

    ``reference`` only means something for rubrics with a reference; it is read once per
    (example, annotator), from any of that example's rows.
    """
    rows: list[dict[str, Any]] = []
    version = rubric_version(rubric)
    for ex in examples:
        conversation, context = _conversation_text(ex), _context_text(ex)
        for criterion in rubric.criteria:
            rows.append({
                "example_id": ex["example_id"],
                "eval_set_version": ex.get("eval_set_version"),
                "task_type": ex.get("task_type"),
                "criterion": criterion.id,
                "levels": "; ".join(f"{lv}={_level_text(criterion, lv)}" for lv in criterion_levels(criterion)),
                "conversation": conversation,
                "context": context,
                "output": str(ex.get("production_output") or ""),
                "annotator": "",
                "score": "",
                "reference": "",
                "rubric_version": version,
            })
    return rows


def relabel_sample(labels: Iterable[Mapping[str, Any]], rubric: Rubric, examples_by_id: Mapping[str, Any],
                   size: int, seed: int = 0) -> tuple[list[str], dict[str, Any]]:
    """Which examples to label again after ``rubric`` changed: a seeded sample of at most ``size``
    of the examples in ``examples_by_id`` that have labels (``example_id``, ``rubric``,
    ``rubric_version``) of this rubric under another version than its current one, or under none
    (``unknown``). The sample depends only on the seed, the rubric's name and current version and
    the candidates, so writing the batch again gives the same examples.

    Returns:
        (example ids, sorted; counts): ``older_labels`` (labels of other versions),
        ``older_versions``, ``labelled_examples`` (examples with such labels), ``in_this_set`` (of
        those, in ``examples_by_id``), ``sampled`` and ``relabelled`` (sampled examples that already
        have a label of the current version).
    """
    current = rubric_version(rubric)
    older_ids: set[str] = set()
    current_ids: set[str] = set()
    versions: set[str] = set()
    older = 0
    for lab in labels:
        if lab.get("rubric") != rubric.name:
            continue
        version = lab.get("rubric_version") or UNKNOWN_RUBRIC_VERSION
        if version == current:
            current_ids.add(str(lab["example_id"]))
        else:
            older += 1
            versions.add(str(version))
            older_ids.add(str(lab["example_id"]))
    candidates = sorted(eid for eid in older_ids if eid in examples_by_id)
    rng = random.Random(f"{seed}:relabel:{rubric.name}:{current}")
    picked = sorted(rng.sample(candidates, min(max(size, 0), len(candidates))))
    return picked, {"older_labels": older, "older_versions": sorted(versions), "labelled_examples": len(older_ids),
                    "in_this_set": len(candidates), "sampled": len(picked),
                    "relabelled": len(set(picked) & current_ids)}


def write_tasks(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write task rows as JSONL (``.jsonl``), CSV (``.csv``) or a JSON list (``.json``, for
    Label Studio tasks). The format is chosen by the file suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps([dict(r) for r in rows], ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    elif suffix == ".csv":
        columns = list(PLAIN_COLUMNS) + sorted({k for r in rows for k in r} - set(PLAIN_COLUMNS))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in columns})
        path.write_text(buf.getvalue(), encoding="utf-8")
    else:
        raise ValueError(f"unknown task file suffix {path.suffix!r} for {path}: use .jsonl, .csv or .json")
    return path


def write_rubric_tasks(examples: Sequence[Mapping[str, Any]], rubric: Rubric, label_studio_dir: str | Path,
                       plain_dir: str | Path) -> tuple[Path, Path]:
    """The task files of one rubric's examples: ``<rubric>.tasks.json`` (Label Studio tasks) and
    ``<rubric>.config.xml`` (its labeling config) in ``label_studio_dir``, ``<rubric>.tasks.csv``
    (the plain file) in ``plain_dir``. Returns the paths of the Label Studio tasks and the CSV."""
    ls_path = Path(label_studio_dir) / f"{rubric.name}.tasks.json"
    ls_path.parent.mkdir(parents=True, exist_ok=True)
    ls_path.write_text(json.dumps(label_studio_tasks(examples, rubric), indent=1, default=str), encoding="utf-8")
    (ls_path.parent / f"{rubric.name}.config.xml").write_text(label_studio_config(rubric), encoding="utf-8")
    return ls_path, write_tasks(plain_tasks(examples, rubric), Path(plain_dir) / f"{rubric.name}.tasks.csv")


# ----------------------------------------------------------------------------------------------
# annotations in
# ----------------------------------------------------------------------------------------------


@dataclass
class AnnotationBatch:
    """What one or more annotation files gave.

    ``labels``: accepted scores, one dict per (example, annotator, criterion) with ``example_id``,
    ``eval_set_version``, ``task_type``, ``rubric``, ``scale``, ``annotator``, ``criterion``,
    ``score`` (int), ``source_file``, ``source_ref``.
    ``references``: accepted reference answers (``example_id``, ``eval_set_version``,
    ``annotator``, ``reference``, ``source_file``, ``source_ref``).
    ``quarantine``: rejected items (``source_file``, ``line_or_task``, ``example_id``,
    ``annotator``, ``field``, ``reason``, ``message``).
    ``counts``: ``read`` (items seen, see the module doc), ``accepted``, ``quarantined``,
    ``cancelled`` (Label Studio annotations skipped), ``skipped`` (untouched plain rows).
    """

    labels: list[dict[str, Any]] = field(default_factory=list)
    references: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {
        "read": 0, "accepted": 0, "quarantined": 0, "cancelled": 0, "skipped": 0})

    @property
    def reconciles(self) -> bool:
        c = self.counts
        return (c["read"] == c["accepted"] + c["quarantined"]
                and c["accepted"] == len(self.labels) + len(self.references)
                and c["quarantined"] == len(self.quarantine))

    def reasons(self) -> dict[str, int]:
        """Quarantined items per reason code."""
        out: dict[str, int] = {}
        for q in self.quarantine:
            out[q["reason"]] = out.get(q["reason"], 0) + 1
        return out

    def rubric_versions(self) -> dict[str, int]:
        """Accepted labels per ``<rubric>@<rubric_version>`` (``unknown`` counted as such)."""
        out: dict[str, int] = {}
        for lab in self.labels:
            key = f"{lab['rubric']}@{lab.get('rubric_version') or UNKNOWN_RUBRIC_VERSION}"
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))


class _Collector:
    """Accumulates one batch; keeps the last of duplicate items and quarantines the earlier ones."""

    def __init__(self, examples_by_id: Mapping[str, Mapping[str, Any]], rubrics: Mapping[str, Rubric],
                 review_of: str | None = None, export_versions: Mapping[tuple[str, str], str] | None = None):
        self.examples = examples_by_id
        self.rubrics = rubrics
        self.review_of = review_of
        self.export_versions = export_versions or {}
        self.labels: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.references: dict[tuple[str, str], dict[str, Any]] = {}
        self.quarantine: list[dict[str, Any]] = []
        self.counts = {"read": 0, "accepted": 0, "quarantined": 0, "cancelled": 0, "skipped": 0}

    # -- outcomes ------------------------------------------------------------------------------

    def reject(self, source_file: str, where: int | str, example_id: str | None, annotator: str | None,
               field_name: str | None, reason: str, detail: str, where_text: str) -> None:
        self.counts["read"] += 1
        if field_name is not None and not isinstance(field_name, str):
            field_name = f"<{type(field_name).__name__}>"  # a retyped from_name still shows up
        self.quarantine.append({
            "source_file": source_file, "line_or_task": where, "example_id": example_id,
            "annotator": annotator, "field": field_name, "reason": reason,
            "message": f"{source_file}: {where_text}: field {field_name!r}: {detail}",
        })

    def _supersede(self, earlier: dict[str, Any], field_name: str, later_ref: str) -> None:
        # the earlier item was counted as read and accepted; it now moves to quarantine
        self.counts["accepted"] -= 1
        self.quarantine.append({
            "source_file": earlier["source_file"], "line_or_task": earlier["_where"],
            "example_id": earlier["example_id"], "annotator": earlier["annotator"], "field": field_name,
            "reason": "duplicate",
            "message": (f"{earlier['source_file']}: {earlier['source_ref']}: field {field_name!r}: "
                        f"superseded by a later item for the same example, annotator and field "
                        f"({later_ref}); the last one is kept"),
        })

    def accept_label(self, label: dict[str, Any], where: int | str) -> None:
        self.counts["read"] += 1
        self.counts["accepted"] += 1
        # labels of two rubric versions are two labels: a re-label never supersedes the old one
        key = (label["example_id"], label["annotator"], label["criterion"], label["rubric_version"])
        if key in self.labels:
            self._supersede(self.labels[key], label["criterion"], f"{label['source_file']}: {label['source_ref']}")
        self.labels[key] = {**label, "_where": where}

    def accept_reference(self, ref: dict[str, Any], where: int | str) -> None:
        key = (ref["example_id"], ref["annotator"])
        earlier = self.references.get(key)
        if earlier is not None and earlier["source_file"] == ref["source_file"] and earlier.get("_plain") \
                and earlier["reference"] == ref["reference"]:
            return  # a plain file repeats the reference on each criterion row: one reference, read once
        self.counts["read"] += 1
        self.counts["accepted"] += 1
        if earlier is not None:
            self._supersede(earlier, REFERENCE_FIELD, f"{ref['source_file']}: {ref['source_ref']}")
        self.references[key] = {**ref, "_where": where}

    def batch(self) -> AnnotationBatch:
        def clean(d: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in d.items() if not k.startswith("_")}

        self.counts["quarantined"] = len(self.quarantine)
        return AnnotationBatch(labels=[clean(v) for v in self.labels.values()],
                               references=[clean(v) for v in self.references.values()],
                               quarantine=list(self.quarantine), counts=dict(self.counts))

    # -- checks shared by both formats ---------------------------------------------------------

    def rubric_version(self, claimed: Any, example_id: str, rubric: Rubric) -> str:
        """The version a label was made under: its task's ``rubric_version``, else the one recorded
        when its batch was exported (``export_versions``), else ``unknown``; never the current one
        by assumption (a task file written before versions existed names none)."""
        if isinstance(claimed, str) and claimed.strip():
            return claimed.strip()
        return self.export_versions.get((example_id, rubric.name)) or UNKNOWN_RUBRIC_VERSION

    def example_rubric(self, example_id: Any) -> tuple[Mapping[str, Any] | None, Rubric | None]:
        example = self.examples.get(example_id) if isinstance(example_id, str) else None
        if example is None:
            return None, None
        return example, rubric_for(self.rubrics, example.get("task_type"))

    def unknown(self, example_id: Any, example: Mapping[str, Any] | None, rubric: Rubric | None,
                claimed_review: Any = None, shown_output: Any = None) -> tuple[str, str] | None:
        """(reason code, why) when an item cannot be taken for this batch's examples, else None.

        Reading a failure review (``review_of`` set), the examples are that version's failures and
        every item must carry the same ``review_of``: a label made for another version's review
        would judge an output this version did not give. Where the item shows the output it judged
        (``output``), it must be the failure's (whitespace aside): a version evaluated again since
        the tasks were written may have answered otherwise."""
        if self.review_of is not None:
            if example is None:
                return "not_under_review", f"example id {example_id!r} is not a failure of {self.review_of} under review"
            if claimed_review != self.review_of:
                return "other_review", (f"review_of is {claimed_review!r}, not {self.review_of!r}: the label was made "
                                        "for another version's output")
            if shown_output is not None and " ".join(str(shown_output).split()) != " ".join(
                    str(example.get("output") or "").split()):
                return "other_review", (f"the output labelled is not the one {self.review_of} gave in its latest run "
                                        "(evaluated again since the task was written)")
        if example is None:
            return "unknown_example", f"example id {example_id!r} is not in the eval set"
        if rubric is None:
            return "unknown_example", f"no rubric applies to task type {example.get('task_type')!r}"
        return None


def _parse_score(raw: Any) -> int | None:
    """An integer score from an int, an integral float or a string such as ``"1"`` or
    ``"1 - correct"`` (a Label Studio alias); None when it is not one."""
    if isinstance(raw, bool):
        return None  # True/False are not level numbers
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None
    if isinstance(raw, str):
        text = raw.strip()
        try:
            value = float(text)
        except ValueError:
            m = _LEADING_INT.match(text)
            if not m or len(m.group(1)) > 30:  # no level has 30 digits; int() refuses thousands
                return None
            return int(m.group(1))
        return int(value) if value.is_integer() else None
    return None


def annotator_of(annotation: Mapping[str, Any]) -> str | None:
    """Email when the export has it, else ``user-<id>``; None when nobody is named."""
    who = annotation.get("completed_by")
    if isinstance(who, Mapping):
        email = who.get("email")
        if isinstance(email, str) and email.strip():
            return email.strip()
        who = who.get("id")
    if isinstance(who, bool) or who is None or (isinstance(who, str) and not who.strip()):
        return None
    if isinstance(who, (int, str)):
        return f"user-{who}"
    return None


def _bad_text(**values: Any) -> tuple[str, str] | None:
    """(field, problem) for the first value that cannot be stored as text, else None: a version
    that is not a string, or a string holding a lone UTF-16 surrogate (an escaped ``\\ud800``
    that ``json`` accepts but UTF-8 cannot encode)."""
    for name, value in values.items():
        if name in ("eval_set_version", "rubric_version") and value is not None and not isinstance(value, str):
            return name, f"expected a string, got {type(value).__name__}"
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as err:
                return name, f"contains a lone UTF-16 surrogate at character {err.start}, which is not text"
    return None


def _score_item(col: _Collector, *, source_file: str, where: int | str, where_text: str,
                example: Mapping[str, Any], rubric: Rubric, annotator: str, criterion_id: str,
                raw_score: Any, version: Any, claimed_rubric_version: Any = None) -> None:
    """Check one (criterion, score) item and accept or quarantine it."""
    eid = example["example_id"]
    criteria = _criteria(rubric)
    if criterion_id not in criteria:
        col.reject(source_file, where, eid, annotator, criterion_id, "unknown_criterion",
                   f"{criterion_id!r} is not a criterion of rubric {rubric.name!r} "
                   f"(criteria: {', '.join(criteria)})", where_text)
        return
    criterion = criteria[criterion_id]
    bad = _bad_text(annotator=annotator, eval_set_version=version, rubric_version=claimed_rubric_version)
    if bad:
        col.reject(source_file, where, eid, None, bad[0], "bad_text", bad[1], where_text)
        return
    score = _parse_score(raw_score)
    if score is None:
        col.reject(source_file, where, eid, annotator, criterion_id, "not_a_number",
                   f"score {raw_score!r} is not an integer level", where_text)
        return
    levels = criterion_levels(criterion)
    if score not in levels:
        col.reject(source_file, where, eid, annotator, criterion_id, "out_of_range",
                   f"score {score} is not a level of {criterion_id!r} (levels {levels})", where_text)
        return
    col.accept_label({
        "example_id": eid, "eval_set_version": version or example.get("eval_set_version"),
        "task_type": example.get("task_type"), "rubric": rubric.name, "scale": criterion.scale,
        "annotator": annotator, "criterion": criterion_id, "score": score,
        "source_file": source_file, "source_ref": where_text,
        "rubric_version": col.rubric_version(claimed_rubric_version, eid, rubric),
    }, where)


def _reference_item(col: _Collector, *, source_file: str, where: int | str, where_text: str,
                    example: Mapping[str, Any], rubric: Rubric, annotator: str, text: str,
                    version: Any, plain: bool) -> None:
    eid = example["example_id"]
    bad = _bad_text(annotator=annotator, eval_set_version=version, reference=text)
    if bad:
        col.reject(source_file, where, eid, None, bad[0] if bad[0] != "reference" else REFERENCE_FIELD,
                   "bad_text", bad[1], where_text)
        return
    if not rubric.has_reference:
        col.reject(source_file, where, eid, annotator, REFERENCE_FIELD, "unknown_criterion",
                   f"rubric {rubric.name!r} has no reference answer", where_text)
        return
    col.accept_reference({
        "example_id": eid, "eval_set_version": version or example.get("eval_set_version"),
        "task_type": example.get("task_type"), "annotator": annotator, "reference": text,
        "source_file": source_file, "source_ref": where_text, "_plain": plain,
    }, where)


# -- Label Studio export -----------------------------------------------------------------------


def _result_items(annotation: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    result = annotation.get("result")
    return [r for r in result if isinstance(r, Mapping)] if isinstance(result, list) else []


def _read_label_studio(col: _Collector, tasks: list[Any], source_file: str) -> None:
    for t_index, task in enumerate(tasks):
        if not isinstance(task, Mapping):
            _malformed(col, source_file, t_index, f"expected a task object, got {type(task).__name__}",
                       f"task index {t_index}")
            continue
        data = task.get("data") if isinstance(task.get("data"), Mapping) else {}
        eid = data.get("example_id")
        task_id = task.get("id")
        named = isinstance(task_id, (str, int)) and not isinstance(task_id, bool)
        task_text = f"task index {t_index}" + (f" (Label Studio id {task_id})" if named else "")
        example, rubric = col.example_rubric(eid)
        annotations = task.get("annotations") if isinstance(task.get("annotations"), list) else []
        for a_index, annotation in enumerate(annotations):
            if not isinstance(annotation, Mapping):
                _malformed(col, source_file, t_index, f"annotation {a_index} is not an object",
                           f"task index {t_index}")
                continue
            if annotation.get("was_cancelled"):
                col.counts["cancelled"] += 1
                continue
            ann_id = annotation.get("id", a_index)
            ann_text = f"{task_text}, annotation {ann_id if isinstance(ann_id, (str, int)) else a_index}"
            annotator = annotator_of(annotation)
            items = _result_items(annotation)
            problem = col.unknown(eid, example, rubric, data.get("review_of"), data.get("output"))
            if problem:
                for item in items or [{}]:  # an empty annotation of an unknown task still shows up
                    col.reject(source_file, t_index, eid if isinstance(eid, str) else None, annotator,
                               item.get("from_name") or "example_id", problem[0], problem[1], ann_text)
                continue
            if annotator is None:
                for item in items or [{}]:
                    col.reject(source_file, t_index, eid, None, item.get("from_name") or "completed_by",
                               "missing_annotator", "the annotation has no completed_by", ann_text)
                continue
            seen: set[str] = set()
            for item in items:
                name = item.get("from_name")
                name = name if isinstance(name, str) else "" if name is None else f"<{type(name).__name__}>"
                value = item.get("value") if isinstance(item.get("value"), Mapping) else {}
                seen.add(name)
                if name == REFERENCE_FIELD or item.get("type") == "textarea":
                    text_value = value.get("text")
                    if isinstance(text_value, str):
                        text_value = [text_value]
                    texts = ([str(x) for x in text_value if isinstance(x, (str, int, float)) and str(x).strip()]
                             if isinstance(text_value, list) else [])
                    if name != REFERENCE_FIELD:
                        col.reject(source_file, t_index, eid, annotator, name, "unknown_criterion",
                                   f"text field {name!r} is not part of rubric {rubric.name!r}", ann_text)
                    elif texts:  # an emptied box is no reference, not an error
                        _reference_item(col, source_file=source_file, where=t_index, where_text=ann_text,
                                        example=example, rubric=rubric, annotator=annotator,
                                        text="\n".join(texts), version=data.get("eval_set_version"), plain=False)
                    continue
                choices = value.get("choices")
                raw = choices[0] if isinstance(choices, list) and len(choices) == 1 else choices
                _score_item(col, source_file=source_file, where=t_index, where_text=ann_text, example=example,
                            rubric=rubric, annotator=annotator, criterion_id=name, raw_score=raw,
                            version=data.get("eval_set_version"), claimed_rubric_version=data.get("rubric_version"))
            for criterion in rubric.criteria:
                if getattr(criterion, "required", True) and criterion.id not in seen:
                    col.reject(source_file, t_index, eid, annotator, criterion.id, "missing_criterion",
                               f"required criterion {criterion.id!r} was not answered", ann_text)


# -- plain rows --------------------------------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _read_plain_row(col: _Collector, row: Mapping[str, Any], source_file: str, line: int) -> None:
    where_text = f"line {line}"
    eid, criterion_id = row.get("example_id"), row.get("criterion")
    annotator, score, reference = row.get("annotator"), row.get("score"), row.get("reference")
    if _blank(annotator) and _blank(score) and _blank(reference):
        col.counts["skipped"] += 1  # a task row nobody filled in
        return
    example, rubric = col.example_rubric(eid.strip() if isinstance(eid, str) else eid)
    field_name = str(criterion_id) if not _blank(criterion_id) else "criterion"
    claimed = row.get("review_of")
    problem = col.unknown(eid, example, rubric, None if _blank(claimed) else str(claimed).strip(), row.get("output"))
    if problem:
        col.reject(source_file, line, eid if isinstance(eid, str) else None,
                   None if _blank(annotator) else str(annotator).strip(), field_name, problem[0], problem[1],
                   where_text)
        return
    if _blank(annotator):
        col.reject(source_file, line, example["example_id"], None, "annotator", "missing_annotator",
                   "annotator is empty", where_text)
        return
    for name, value in (("annotator", annotator), ("criterion", criterion_id), ("reference", reference)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
            col.reject(source_file, line, example["example_id"], None, name, "wrong_type",
                       f"expected text, got {type(value).__name__}", where_text)
            return
    annotator = str(annotator).strip()
    version = None if _blank(row.get("eval_set_version")) else row.get("eval_set_version")
    if not _blank(reference):
        _reference_item(col, source_file=source_file, where=line, where_text=where_text, example=example,
                        rubric=rubric, annotator=annotator, text=str(reference).strip(), version=version, plain=True)
    if _blank(criterion_id) and _blank(score):
        return  # a row that only carries a reference
    _score_item(col, source_file=source_file, where=line, where_text=where_text, example=example, rubric=rubric,
                annotator=annotator, criterion_id=str(criterion_id or "").strip(),
                raw_score="" if score is None else score, version=version,
                claimed_rubric_version=row.get("rubric_version"))


def _malformed(col: _Collector, source_file: str, where: int | str, detail: str, where_text: str) -> None:
    col.reject(source_file, where, None, None, None, "malformed_file", detail, where_text)


def _json_limit(err: BaseException) -> str:
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err)  # e.g. an integer of more than 4300 digits


def _read_csv(col: _Collector, text: str, source_file: str) -> None:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames or []
    except csv.Error as err:
        _malformed(col, source_file, 1, f"CSV header cannot be read: {err}", "line 1")
        return
    missing = {"example_id", "annotator", "criterion", "score"} - set(header)
    if missing:
        _malformed(col, source_file, 1, f"CSV header lacks columns {sorted(missing)}", "line 1")
        return
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:  # e.g. a field over the csv module's size limit: that row only
            _malformed(col, source_file, start, f"CSV row cannot be read: {err}", f"line {start}")
            continue
        # line_num is the physical line the row ended on (quoted newlines span lines)
        _read_plain_row(col, row, source_file, reader.line_num)


def _read_into(col: _Collector, path: Path) -> None:
    source_file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        _malformed(col, source_file, 0, f"cannot be read: {err}", "whole file")
        return
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark from a spreadsheet export is not data
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        _malformed(col, source_file, line, f"not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}); "
                   "save the file as UTF-8", f"line {line}")
        return
    suffix = path.suffix.lower()
    if suffix == ".csv":
        _read_csv(col, text, source_file)
        return
    if suffix == ".jsonl":
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                _malformed(col, source_file, line_no, f"not valid JSON at column {err.colno}: {err.msg}",
                           f"line {line_no}")
                continue
            except (RecursionError, ValueError) as err:
                _malformed(col, source_file, line_no, f"not readable JSON: {_json_limit(err)}", f"line {line_no}")
                continue
            if not isinstance(row, Mapping):
                _malformed(col, source_file, line_no, f"expected a JSON object, got {type(row).__name__}",
                           f"line {line_no}")
                continue
            _read_plain_row(col, row, source_file, line_no)
        return
    if suffix != ".json":
        _malformed(col, source_file, 0, f"unknown suffix {path.suffix!r} (expected .json, .jsonl or .csv)",
                   "whole file")
        return
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        _malformed(col, source_file, err.lineno,
                   f"not valid JSON at line {err.lineno} column {err.colno} (char {err.pos}): {err.msg}",
                   f"line {err.lineno}")
        return
    except (RecursionError, ValueError) as err:
        _malformed(col, source_file, 0, f"not readable JSON: {_json_limit(err)}", "whole file")
        return
    if isinstance(doc, Mapping) and "annotations" in doc:
        doc = [doc]  # a single exported task
    if not isinstance(doc, list):
        _malformed(col, source_file, 0, "expected a JSON list of Label Studio tasks", "whole file")
        return
    if doc and all(isinstance(t, Mapping) and "criterion" in t and "data" not in t for t in doc):
        for i, row in enumerate(doc):  # plain rows saved as one JSON list
            _read_plain_row(col, row, source_file, i)
        return
    _read_label_studio(col, doc, source_file)


def read_annotation_file(path: str | Path, examples_by_id: Mapping[str, Mapping[str, Any]],
                         rubrics_by_task: Mapping[str, Rubric], review_of: str | None = None,
                         export_versions: Mapping[tuple[str, str], str] | None = None) -> AnnotationBatch:
    """Read one completed annotation file: a Label Studio JSON export (``.json``) or a filled-in
    plain task file (``.jsonl`` / ``.csv``).

    ``examples_by_id`` maps example ids to eval examples (``task_type`` and ``eval_set_version``
    are used); ``rubrics_by_task`` maps task types (or rubric names, as ``load_rubrics()`` does) to
    rubrics. See the module doc for what is accepted, quarantined and counted. ``review_of``
    (``name:version``) reads the labels of a failure review: ``examples_by_id`` are then that
    version's failures, and an item for another example (``not_under_review``) or whose task
    carries another or no ``review_of`` (``other_review``) is quarantined.

    Each label gets the ``rubric_version`` its task or row names; a task written before versions
    existed names none, and then takes ``export_versions[(example_id, rubric name)]`` (the version
    recorded when the batch was exported) or else ``unknown``.
    """
    col = _Collector(examples_by_id, rubrics_by_task, review_of, export_versions)
    _read_into(col, Path(path))
    return col.batch()


def read_annotation_folder(folder: str | Path, examples_by_id: Mapping[str, Mapping[str, Any]],
                           rubrics_by_task: Mapping[str, Rubric], review_of: str | None = None,
                           export_versions: Mapping[tuple[str, str], str] | None = None) -> AnnotationBatch:
    """Read every ``.json``, ``.jsonl`` and ``.csv`` file of ``folder`` (recursively, in path
    order) into one batch. A duplicate across files keeps the item of the later file.
    ``review_of`` and ``export_versions``: as for :func:`read_annotation_file`."""
    col = _Collector(examples_by_id, rubrics_by_task, review_of, export_versions)
    folder = Path(folder)
    if folder.is_dir():
        for path in sorted(p for p in folder.rglob("*")
                           if p.is_file() and p.suffix.lower() in (".json", ".jsonl", ".csv")):
            _read_into(col, path)
    return col.batch()
