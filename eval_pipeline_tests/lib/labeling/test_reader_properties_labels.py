"""Property tests of the annotation readers (Label Studio export, plain JSONL/CSV labels): on any
bytes and on valid files with fields deleted or retyped, they never raise, every item is
accounted for (read == accepted + quarantined) and every quarantine message names the file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reader_mutations import damaged, dumps, encode, hostile_values, mutated, nasty_text

from eval_pipeline.lib.labeling.annotation import (
    PLAIN_COLUMNS,
    QUARANTINE_REASONS,
    AnnotationBatch,
    criterion_levels,
    read_annotation_file,
    read_annotation_folder,
)
from eval_pipeline.lib.labeling.rubrics import load_rubrics

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "label_studio" / "export_two_annotators.json"
EXPORT = json.loads(FIXTURE.read_text(encoding="utf-8"))
RUBRICS = load_rubrics()
EXAMPLES = {t["data"]["example_id"]: {"example_id": t["data"]["example_id"], "task_type": t["data"]["task_type"],
                                      "eval_set_version": t["data"]["eval_set_version"]} for t in EXPORT}
# plain rows: every (example, criterion) of the fixture's examples, filled in
PLAIN_ROWS = [
    {"example_id": eid, "eval_set_version": ex["eval_set_version"], "task_type": ex["task_type"],
     "criterion": c.id, "annotator": "ann-a", "score": criterion_levels(c)[-1], "reference": ""}
    for eid, ex in EXAMPLES.items()
    for rubric in RUBRICS.values() if ex["task_type"] in rubric.applies_to
    for c in rubric.criteria
]

BOUNDED = settings(derandomize=True, max_examples=60, deadline=None)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("labels")


def _check(batch: AnnotationBatch, path: Path) -> None:
    assert batch.reconciles, batch.counts
    assert batch.counts["read"] == len(batch.labels) + len(batch.references) + len(batch.quarantine)
    for q in batch.quarantine:
        assert q["reason"] in QUARANTINE_REASONS
        assert q["message"].startswith(f"{path}: ")
        assert q["field"] is None or isinstance(q["field"], str)
        q["message"].encode("utf-8")  # printable and storable
    for label in batch.labels:
        rubric = RUBRICS[label["rubric"]]
        criterion = next(c for c in rubric.criteria if c.id == label["criterion"])
        assert type(label["score"]) is int and label["score"] in criterion_levels(criterion)
        for key in ("annotator", "eval_set_version", "example_id"):
            assert isinstance(label[key], str) and label[key].encode("utf-8")
    for ref in batch.references:
        assert isinstance(ref["reference"], str) and ref["reference"].encode("utf-8")


def _read(folder: Path, name: str, data: bytes) -> AnnotationBatch:
    path = folder / name
    path.write_bytes(data)
    batch = read_annotation_file(path, EXAMPLES, RUBRICS)
    _check(batch, path)
    return batch


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(PLAIN_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def test_the_unmutated_inputs_are_all_accepted(folder):
    assert _read(folder, "export.json", FIXTURE.read_bytes()).quarantine == []
    rows = "\n".join(json.dumps(r) for r in PLAIN_ROWS).encode()
    assert _read(folder, "plain.jsonl", rows).counts["accepted"] == len(PLAIN_ROWS)
    assert _read(folder, "plain.csv", _csv(PLAIN_ROWS).encode()).counts["accepted"] == len(PLAIN_ROWS)


@BOUNDED
@given(data=st.binary(max_size=3000), suffix=st.sampled_from([".json", ".jsonl", ".csv"]))
def test_any_bytes_never_raise(folder, data, suffix):
    _read(folder, f"bytes{suffix}", data)


@BOUNDED
@given(doc=mutated(EXPORT, max_mutations=4), st_damage=st.data())
def test_a_mutated_label_studio_export_is_accounted_for(folder, doc, st_damage):
    data = st_damage.draw(damaged(encode(dumps(doc))))
    _read(folder, "export.json", data)


@BOUNDED
@given(line=st.integers(0, len(PLAIN_ROWS) - 1), row=st.data())
def test_one_bad_jsonl_row_costs_that_row_only(folder, line, row):
    bad = row.draw(mutated(PLAIN_ROWS[line], max_mutations=3))
    lines = [json.dumps(r) for r in PLAIN_ROWS]
    lines[line] = dumps(bad)
    batch = _read(folder, "plain.jsonl", encode("\n".join(lines)))
    others = [lab for lab in batch.labels if lab["source_ref"] != f"line {line + 1}"]
    # a retyped row may duplicate (and so supersede) one other row; nothing else is lost
    assert len(others) >= len(PLAIN_ROWS) - 2


@BOUNDED
@given(line=st.integers(0, len(PLAIN_ROWS) - 1), column=st.sampled_from(PLAIN_COLUMNS),
       value=st.one_of(nasty_text, hostile_values.map(str)), ragged=st.sampled_from(["", ",extra", ",a,b,c"]),
       cut=st.booleans(), damage=st.data())
def test_one_bad_csv_row_costs_that_row_only(folder, line, column, value, ragged, cut, damage):
    rows = [dict(r) for r in PLAIN_ROWS]
    rows[line][column] = value
    text_lines = _csv(rows).splitlines(keepends=True)
    target = 1 + line  # the header is line 0; only the mutated row can hold a quoted newline
    if not any(ch in value for ch in "\r\n\"") and target < len(text_lines):
        row_text = text_lines[target].rstrip("\r\n")
        if cut:
            row_text = row_text.rsplit(",", 2)[0]
        text_lines[target] = row_text + ragged + "\r\n"
    data = damage.draw(damaged(encode("".join(text_lines))))
    batch = _read(folder, "plain.csv", data)
    if data.startswith(b"\xef\xbb\xbf") and not any(ch in value for ch in "\r\n\"\x00\udc00\ud800\xff"):
        # a byte-order mark is not data: every other row still comes through
        assert batch.counts["accepted"] >= len(PLAIN_ROWS) - 2


@settings(derandomize=True, max_examples=15, deadline=None)
@given(files=st.lists(st.tuples(st.sampled_from([".json", ".jsonl", ".csv", ".txt"]), st.binary(max_size=500)),
                      max_size=4))
def test_a_folder_of_anything_reconciles(tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("folder")
    for i, (suffix, data) in enumerate(files):
        (folder / f"f{i}{suffix}").write_bytes(data)
    batch = read_annotation_folder(folder, EXAMPLES, RUBRICS)
    assert batch.reconciles


# the specific inputs that once raised, each a clear quarantine now

_DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(("name", "data", "where"), [
    ("deep.json", _DEEP, "whole file: field None: not readable JSON: nested too deeply"),
    ("deep.jsonl", _DEEP, "line 1: field None: not readable JSON: nested too deeply"),
    ("bigint.jsonl", b'{"score": ' + b"9" * 5000 + b"}", "line 1: field None: not readable JSON: Exceeds"),
    ("latin1.jsonl", b'{"a": 1}\n{"a": "\xff"}', "line 2: field None: not UTF-8 text (byte 0xff"),
    ("huge.csv", b"example_id,annotator,criterion,score\ne1,a,c," + b"1" * 200_000 + b"\n",
     "line 2: field None: CSV row cannot be read: field larger than field limit"),
])
def test_inputs_that_used_to_raise(folder, name, data, where):
    batch = _read(folder, name, data)
    assert [q["reason"] for q in batch.quarantine] == ["malformed_file"]
    assert batch.quarantine[0]["message"].startswith(f"{folder / name}: {where}")


def test_a_bom_is_not_part_of_the_first_column(folder):
    batch = _read(folder, "bom.csv", b"\xef\xbb\xbf" + _csv(PLAIN_ROWS).encode())
    assert batch.counts["accepted"] == len(PLAIN_ROWS) and batch.quarantine == []
    batch = _read(folder, "bom.json", b"\xef\xbb\xbf" + FIXTURE.read_bytes())
    assert batch.quarantine == [] and batch.counts["accepted"] > 0


def test_lone_surrogates_and_retyped_fields_are_quarantined_by_field(folder):
    eid, row = PLAIN_ROWS[0]["example_id"], PLAIN_ROWS[0]
    lines = [
        json.dumps({**row, "annotator": "ann-\ud800"}),
        json.dumps({**row, "annotator": ["ann-a"]}),
        json.dumps({**row, "eval_set_version": {"v": 1}}),
        json.dumps({**row, "score": "9" * 5000 + " - great"}),
    ]
    batch = _read(folder, "bad.jsonl", "\n".join(lines).encode())
    assert [(q["line_or_task"], q["field"], q["reason"]) for q in batch.quarantine] == [
        (1, "annotator", "bad_text"), (2, "annotator", "wrong_type"), (3, "eval_set_version", "bad_text"),
        (4, row["criterion"], "not_a_number")]
    assert all(q["example_id"] == eid for q in batch.quarantine)
    assert "lone UTF-16 surrogate" in batch.quarantine[0]["message"]


def test_a_textarea_of_the_wrong_type_is_no_reference(folder):
    task = json.loads(json.dumps(EXPORT[0]))
    annotation = task["annotations"][0]
    annotation["result"] = [r for r in annotation["result"] if r.get("type") != "textarea"] + [
        {"from_name": "reference", "type": "textarea", "value": {"text": 5}},
        {"from_name": ["a"], "type": "choices", "value": {"choices": ["1"]}}]
    batch = _read(folder, "textarea.json", json.dumps([task]).encode())
    assert [q["field"] for q in batch.quarantine if q["reason"] == "unknown_criterion"] == ["<list>"]


# a failure review: the same export, every task marked as the review of one version and showing
# the output it judged; the mutations retype or drop review_of and output too
REVIEW_OF = "router:2"
REVIEW_EXPORT = [{**t, "data": {**t["data"], "review_of": REVIEW_OF, "output": f"output of {t['data']['example_id']}"}}
                 for t in EXPORT]
FAILURES = {eid: {**ex, "output": f"output of {eid}"} for eid, ex in EXAMPLES.items()}


@BOUNDED
@given(doc=mutated(REVIEW_EXPORT, max_mutations=4), st_damage=st.data())
def test_a_mutated_review_export_is_accounted_for(folder, doc, st_damage):
    path = folder / "review.json"
    path.write_bytes(st_damage.draw(damaged(encode(dumps(doc)))))
    batch = read_annotation_file(path, FAILURES, RUBRICS, review_of=REVIEW_OF)
    _check(batch, path)
    for label in batch.labels:  # whatever was accepted was marked as this version's review, on its output
        assert any(t["data"].get("review_of") == REVIEW_OF for t in doc
                   if isinstance(t, dict) and isinstance(t.get("data"), dict)
                   and t["data"].get("example_id") == label["example_id"])


def test_the_unmutated_review_export_is_all_accepted_and_another_version_is_not(folder):
    path = folder / "review.json"
    path.write_text(json.dumps(REVIEW_EXPORT), encoding="utf-8")
    assert read_annotation_file(path, FAILURES, RUBRICS, review_of=REVIEW_OF).quarantine == []
    other = read_annotation_file(path, FAILURES, RUBRICS, review_of="router:3")
    assert other.labels == [] and {q["reason"] for q in other.quarantine} == {"other_review"}
