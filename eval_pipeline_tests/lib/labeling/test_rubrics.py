"""Tests for eval_pipeline.lib.labeling.rubrics: the packaged rubrics, the pass rule and error messages."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import eval_pipeline
from eval_pipeline.lib.labeling.rubrics import (
    DEFAULT_RUBRICS_DIR,
    Rubric,
    RubricError,
    load_rubric,
    load_rubrics,
    default_rubric,
    rubric_for_task,
    rubric_text,
)

REPO = Path(__file__).resolve().parents[3]
DEMO_TASK_TYPES = ("intent_routing", "extraction", "rag_qa", "open_question", "multi_turn")


def valid_rubric() -> dict[str, Any]:
    """A small valid rubric: two required criteria (one 3-point passing at 1) and two optional."""
    return {
        "name": "support_answer",
        "description": "Answer a support question.",
        "applies_to": ["support_answer"],
        "criteria": [
            {"id": "correct", "description": "The answer is right.", "scale": "binary",
             "levels": {0: "Wrong.", 1: "Right."}, "required": True},
            {"id": "grounded", "description": "Based on the context.", "scale": "three_point",
             "levels": {0: "Contradicts it.", 1: "Mostly based on it.", 2: "Fully based on it."},
             "required": True, "pass_at": 1},
            {"id": "complete", "description": "Covers every part.", "scale": "three_point",
             "levels": {0: "Misses the point.", 1: "Misses a part.", 2: "Covers all."}, "required": False},
            {"id": "concise", "description": "Short.", "scale": "binary",
             "levels": {0: "Padded.", 1: "Short."}, "required": False},
        ],
    }


def write(folder: Path, name: str, data: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_error(tmp_path: Path, data: Any) -> tuple[Path, str]:
    path = write(tmp_path, "rubric.yaml", data)
    with pytest.raises(RubricError) as info:
        load_rubric(path)
    return path, str(info.value)


# ---- packaged rubrics ------------------------------------------------------------------------


def test_every_packaged_rubric_loads_with_4_to_6_criteria():
    files = sorted(DEFAULT_RUBRICS_DIR.glob("*.yaml"))
    rubrics = load_rubrics()
    assert len(files) == len(rubrics) == 6
    for path in files:
        rubric = load_rubric(path)
        assert rubrics[rubric.name] == rubric
        assert 4 <= len(rubric.criteria) <= 6, path
        assert rubric.required_criteria, path
        for c in rubric.criteria:
            assert sorted(c.levels) == list(c.allowed_levels) and all(c.levels.values()), (path, c.id)


def test_each_demo_task_type_has_exactly_one_rubric():
    rubrics = load_rubrics()
    for task in DEMO_TASK_TYPES:
        claiming = [r.name for r in rubrics.values() if task in r.applies_to]
        assert claiming == [task]
        assert rubric_for_task(rubrics, task).name == task
    # any other task type, and none at all, gets the generic rubric
    for task in ("poetry", None, ""):
        assert rubric_for_task(rubrics, task).name == "generic"


def test_packaged_rubrics_reference_and_grounding():
    rubrics = load_rubrics()
    assert {n for n, r in rubrics.items() if r.has_reference} == {"intent_routing", "extraction"}
    assert "intent label" in rubrics["intent_routing"].reference_field
    assert {"correct_intent", "bare_label_format"} <= {c.id for c in rubrics["intent_routing"].required_criteria}
    assert {"valid_json", "correct_amount", "correct_currency", "correct_date"} <= {
        c.id for c in rubrics["extraction"].required_criteria}
    grounded = rubrics["rag_qa"].criterion("grounded_in_context")
    assert grounded.scale == "three_point" and grounded.required and grounded.pass_at == 2


def test_packaged_rubrics_are_package_data():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["eval_pipeline"]
    assert "rubrics/*.yaml" in patterns
    package_dir = Path(eval_pipeline.__file__).resolve().parent
    shipped = sorted(p.name for p in package_dir.glob("rubrics/*.yaml"))
    assert shipped == sorted(p.name for p in DEFAULT_RUBRICS_DIR.iterdir() if p.suffix == ".yaml")
    assert shipped == sorted([f"{task}.yaml" for task in DEMO_TASK_TYPES] + ["generic.yaml"])


# ---- pass rule -------------------------------------------------------------------------------


@pytest.fixture
def rubric(tmp_path: Path) -> Rubric:
    return load_rubric(write(tmp_path, "support_answer.yaml", valid_rubric()))


def test_pass_at_defaults_to_top_level(rubric: Rubric):
    assert rubric.criterion("correct").pass_at == 1
    assert rubric.criterion("grounded").pass_at == 1  # given explicitly
    assert rubric.criterion("complete").pass_at == 2


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ({"correct": 1, "grounded": 2, "complete": 2, "concise": 1}, True),
        ({"correct": 1, "grounded": 1}, True),  # pass_at 1 on a 3-point scale; optional ones unscored
        ({"correct": 1, "grounded": 2, "complete": 0, "concise": 0}, True),  # optional failures don't count
        ({"correct": 0, "grounded": 2, "complete": 2, "concise": 1}, False),
        ({"correct": 1, "grounded": 0, "complete": 2, "concise": 1}, False),
        ({"grounded": 2, "complete": 2, "concise": 1}, None),  # a required criterion is unscored
        ({"correct": 0}, None),
    ],
)
def test_pass_rule(rubric: Rubric, scores: dict[str, int], expected: bool | None):
    assert rubric.passes(scores) is expected


def test_validate_scores_names_criterion_and_levels(rubric: Rubric):
    rubric.validate_scores({"correct": 1, "grounded": 2})  # valid: returns quietly
    with pytest.raises(ValueError, match=r"unknown criterion 'corect' \(criteria: correct, grounded, complete, concise\)"):
        rubric.validate_scores({"corect": 1})
    with pytest.raises(ValueError, match=r"criterion 'grounded' scored 3; allowed levels are 0, 1, 2 \(three_point scale\)"):
        rubric.passes({"correct": 1, "grounded": 3})
    with pytest.raises(ValueError, match=r"criterion 'correct' scored 2; allowed levels are 0, 1 \(binary scale\)"):
        rubric.validate_scores({"correct": 2})
    with pytest.raises(ValueError, match=r"criterion 'correct' scored '1'"):
        rubric.validate_scores({"correct": "1"})
    with pytest.raises(ValueError) as info:
        rubric.validate_scores({"correct": -1, "concise": True})
    assert "'correct' scored -1" in str(info.value) and "'concise' scored True" in str(info.value)


# ---- errors name the file and the field path -----------------------------------------------------


def test_missing_field(tmp_path: Path):
    data = valid_rubric()
    del data["criteria"][1]["description"]
    del data["applies_to"]
    path, message = load_error(tmp_path, data)
    assert f"{path}: applies_to: missing required field" in message
    assert f"{path}: criteria[1].description: missing required field" in message


def test_levels_must_match_scale(tmp_path: Path):
    data = valid_rubric()
    data["criteria"][2]["levels"] = {0: "Misses the point.", 1: "Covers all."}
    path, message = load_error(tmp_path, data)
    assert message == f"{path}: criteria[2].levels: expected levels 0, 1, 2 for a three_point scale, got 0, 1"


def test_binary_scale_rejects_a_level_2(tmp_path: Path):
    data = valid_rubric()
    data["criteria"][0]["levels"][2] = "Perfect."
    path, message = load_error(tmp_path, data)
    assert message == f"{path}: criteria[0].levels: expected levels 0, 1 for a binary scale, got 0, 1, 2"


@pytest.mark.parametrize("pass_at", [0, 3])
def test_pass_at_must_be_a_level_above_0(tmp_path: Path, pass_at: int):
    data = valid_rubric()
    data["criteria"][1]["pass_at"] = pass_at
    path, message = load_error(tmp_path, data)
    assert message == f"{path}: criteria[1].pass_at: must be one of 1, 2 for a three_point scale, got {pass_at}"


def test_too_few_criteria(tmp_path: Path):
    data = valid_rubric()
    data["criteria"] = data["criteria"][:3]
    path, message = load_error(tmp_path, data)
    assert message == f"{path}: criteria: expected 4 to 6 criteria, got 3"


def test_too_many_criteria(tmp_path: Path):
    data = valid_rubric()
    for i in range(3):
        extra = copy.deepcopy(data["criteria"][3])
        extra["id"] = f"extra_{i}"
        data["criteria"].append(extra)
    path, message = load_error(tmp_path, data)
    assert message == f"{path}: criteria: expected 4 to 6 criteria, got 7"


def test_duplicate_criterion_ids(tmp_path: Path):
    data = valid_rubric()
    data["criteria"][3]["id"] = "correct"
    path, message = load_error(tmp_path, data)
    assert message == f"{path}: criteria[3].id: duplicate criterion id 'correct' (also criteria[0])"


def test_unknown_key_suggests_the_right_one(tmp_path: Path):
    data = valid_rubric()
    data["criteria"][1]["requird"] = True
    data["has_refrence"] = True
    path, message = load_error(tmp_path, data)
    assert f"{path}: criteria[1].requird: unknown field; did you mean 'required'?" in message
    assert f"{path}: has_refrence: unknown field; did you mean 'has_reference'?" in message


def test_criterion_id_must_be_snake_case(tmp_path: Path):
    data = valid_rubric()
    data["criteria"][0]["id"] = "Correct Answer"
    path, message = load_error(tmp_path, data)
    assert message.startswith(f"{path}: criteria[0].id: must be snake_case")
    assert "'Correct Answer'" in message


def test_needs_a_required_criterion(tmp_path: Path):
    data = valid_rubric()
    for c in data["criteria"]:
        c["required"] = False
    path, message = load_error(tmp_path, data)
    assert message == f"{path}: criteria: at least one criterion must have required: true"


def test_wrong_scale_name(tmp_path: Path):
    data = valid_rubric()
    data["criteria"][0]["scale"] = "five_point"
    path, message = load_error(tmp_path, data)
    assert message.startswith(f"{path}: criteria[0].scale: ")
    assert "'binary' or 'three_point'" in message


def test_bad_yaml_syntax_names_the_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text(
        "name: broken\n"
        "description: A rubric\n"
        "applies_to: [broken]\n"
        "reference_field: Intent: a label\n"  # an unquoted ": " inside a value
        "criteria: []\n",
        encoding="utf-8",
    )
    with pytest.raises(RubricError) as info:
        load_rubric(path)
    message = str(info.value)
    assert message == f"{path}: line 4, column 24: invalid YAML: mapping values are not allowed here"


def test_duplicate_yaml_key_is_an_error(tmp_path: Path):
    path = tmp_path / "twice.yaml"
    path.write_text("name: a\ndescription: x\nname: b\n", encoding="utf-8")
    with pytest.raises(RubricError, match=r"line 3, column 1: invalid YAML: duplicate key 'name' \(first on line 1\)"):
        load_rubric(path)


def test_top_level_must_be_a_mapping(tmp_path: Path):
    path, message = load_error(tmp_path, ["name", "description"])
    assert message == f"{path}: expected a mapping of rubric fields at the top level, got list"


def test_two_rubrics_claiming_one_task_type(tmp_path: Path):
    first = valid_rubric()
    second = valid_rubric()
    second["name"] = "other"
    second["applies_to"] = ["chat", "support_answer"]
    a = write(tmp_path, "a.yaml", first)
    b = write(tmp_path, "b.yaml", second)
    with pytest.raises(RubricError) as info:
        load_rubrics(tmp_path)
    assert str(info.value) == (
        f"{b}: applies_to[1]: task type 'support_answer' is already claimed by rubric 'support_answer' ({a}); "
        "a task type must have exactly one rubric"
    )


def test_duplicate_rubric_names_and_all_problems_reported(tmp_path: Path):
    good = valid_rubric()
    renamed_task = valid_rubric()
    renamed_task["applies_to"] = ["other_task"]
    broken = valid_rubric()
    broken["criteria"] = broken["criteria"][:2]
    a = write(tmp_path, "a.yaml", good)
    b = write(tmp_path, "b.yml", renamed_task)
    c = write(tmp_path, "c.yaml", broken)
    with pytest.raises(RubricError) as info:
        load_rubrics(tmp_path)
    assert info.value.problems == [
        f"{b}: name: rubric name 'support_answer' is already used by {a}",
        f"{c}: criteria: expected 4 to 6 criteria, got 2",
    ]


def test_load_rubrics_from_a_folder(tmp_path: Path):
    second = valid_rubric()
    second["name"] = "chat"
    second["applies_to"] = ["chat", "small_talk"]
    second["has_reference"] = True
    second["reference_field"] = "canned reply"
    write(tmp_path, "one.yaml", valid_rubric())
    write(tmp_path, "two.yaml", second)
    (tmp_path / "notes.txt").write_text("not a rubric", encoding="utf-8")
    rubrics = load_rubrics(tmp_path)
    assert sorted(rubrics) == ["chat", "support_answer"]
    assert rubric_for_task(rubrics, "small_talk").reference_field == "canned reply"
    with pytest.raises(FileNotFoundError):
        load_rubrics(tmp_path / "missing")


def test_reference_field_needs_has_reference(tmp_path: Path):
    data = valid_rubric()
    data["reference_field"] = "intent label"
    path, message = load_error(tmp_path, data)
    assert message == f"{path}: reference_field: is set but has_reference is false"


def test_rubric_for_task_rejects_a_task_claimed_twice(rubric: Rubric):
    twin = rubric.model_copy(update={"name": "twin"})
    with pytest.raises(RubricError, match="claimed by several rubrics: 'support_answer', 'twin'"):
        rubric_for_task({"support_answer": rubric, "twin": twin}, "support_answer")


# ---- rendering -------------------------------------------------------------------------------


def test_rubric_text_lists_criteria_levels_and_pass_rule(rubric: Rubric):
    text = rubric_text(rubric)
    assert text.startswith("Rubric: support_answer\nAnswer a support question.\n")
    assert "2. grounded (three_point: 0, 1, 2; required, passes at 1 or higher)" in text
    assert "3. complete (three_point: 0, 1, 2; optional, does not decide pass/fail)" in text
    for c in rubric.criteria:
        assert c.description in text
        for level, description in c.levels.items():
            assert f"   {level} = {description}" in text
    assert "Pass rule: the response passes only if every required criterion reaches its pass level " \
           "(correct >= 1, grounded >= 1). Optional criteria (complete, concise)" in text
    assert "Reference: none" in text


def test_rubric_text_of_packaged_reference_rubric():
    text = rubric_text(load_rubrics()["extraction"])
    assert "Reference: each example has one correct answer (JSON object with amount" in text
    assert "valid_json (binary: 0, 1; required, passes at 1 or higher)" in text


def test_rubric_satisfies_the_judge_protocol(rubric: Rubric):
    from eval_pipeline.lib.labeling.judge import RubricLike

    assert isinstance(rubric, RubricLike)
    assert rubric.criteria_levels() == {"correct": [0, 1], "grounded": [0, 1, 2], "complete": [0, 1, 2], "concise": [0, 1]}
    assert rubric.text() == rubric_text(rubric)


# ---- the default rubric ----------------------------------------------------------------------


def test_packaged_generic_rubric_is_the_one_default():
    rubrics = load_rubrics()
    generic = rubrics["generic"]
    assert default_rubric(rubrics) is generic and [r.name for r in rubrics.values() if r.default] == ["generic"]
    assert generic.applies_to == [] and not generic.has_reference  # judged, never reference-scored
    ids = {c.id for c in generic.criteria}
    assert {"helpfulness", "accuracy", "format", "safety"} <= ids and 4 <= len(ids) <= 6
    assert generic.criterion("accuracy").factual and generic.criterion("format").form
    assert {c.id for c in generic.required_criteria} == {"helpfulness", "accuracy", "safety"}
    text = generic.text()
    assert "Task types: any task type no other rubric covers" in text
    assert "Reference: none; judge the response against the request" in text


def default_of(name: str, **extra: Any) -> dict[str, Any]:
    data = valid_rubric()
    data.update({"name": name, "applies_to": [], "default": True, **extra})
    return data


def test_a_folder_declares_its_own_default(tmp_path: Path):
    write(tmp_path, "support.yaml", valid_rubric())
    write(tmp_path, "fallback.yaml", default_of("house_style", applies_to=["chit_chat"]))
    rubrics = load_rubrics(tmp_path)
    assert sorted(rubrics) == ["house_style", "support_answer"]
    assert rubric_for_task(rubrics, "support_answer").name == "support_answer"
    # a default may also claim task types of its own; everything else falls to it
    assert {rubric_for_task(rubrics, t).name for t in ("chit_chat", "poetry", None, "")} == {"house_style"}
    assert "Task types: chit_chat, and any task type no other rubric covers" in rubrics["house_style"].text()


def test_without_a_default_an_uncovered_task_type_has_no_rubric(tmp_path: Path):
    write(tmp_path, "support.yaml", valid_rubric())
    rubrics = load_rubrics(tmp_path)
    assert default_rubric(rubrics) is None
    with pytest.raises(KeyError, match="no rubric applies to task type 'poetry' and none is the default "
                                       r"\(covered: support_answer\)"):
        rubric_for_task(rubrics, "poetry")
    with pytest.raises(KeyError, match="task type None"):
        rubric_for_task(rubrics, None)


def test_two_defaults_in_one_folder_are_an_error_naming_both_files(tmp_path: Path):
    a = write(tmp_path, "a.yaml", default_of("first"))
    b = write(tmp_path, "b.yaml", default_of("second"))
    with pytest.raises(RubricError) as info:
        load_rubrics(tmp_path)
    assert info.value.problems == [
        f"{b}: default: rubric 'first' ({a}) is already the default; at most one rubric may set default: true"]


def test_only_a_default_may_leave_applies_to_empty_and_it_has_no_reference(tmp_path: Path):
    data = valid_rubric()
    data["applies_to"] = []
    path, message = load_error(tmp_path, data)
    assert message == (f"{path}: applies_to: must list at least one task type (or set default: true to make this "
                       "the rubric of every task type no other rubric applies to)")
    path, message = load_error(tmp_path, default_of("fallback", applies_to=None))
    assert message.startswith(f"{path}: applies_to: ")  # a default still states its (empty) list
    path, message = load_error(tmp_path, default_of("fallback", has_reference=True))
    assert message.startswith(f"{path}: has_reference: a default rubric cannot have a reference")
    path, message = load_error(tmp_path, default_of("fallback", default="yes please"))
    assert message.startswith(f"{path}: default: ")


def test_rubric_for_task_rejects_two_defaults_built_by_hand(rubric: Rubric):
    one = rubric.model_copy(update={"name": "one", "default": True})
    two = rubric.model_copy(update={"name": "two", "default": True})
    with pytest.raises(RubricError, match="several rubrics are marked default: 'one', 'two'"):
        rubric_for_task({"one": one, "two": two}, "poetry")


def test_annotation_lookup_falls_back_to_the_default_too():
    from eval_pipeline.lib.labeling.annotation import rubric_for

    rubrics = load_rubrics()
    assert rubric_for(rubrics, "rag_qa").name == "rag_qa"
    assert {rubric_for(rubrics, t).name for t in (None, "", "poetry")} == {"generic"}
    # a mapping keyed by task type, as some callers pass, still finds its own rubric first
    assert rubric_for({"rag_qa": rubrics["rag_qa"], "generic": rubrics["generic"]}, "rag_qa").name == "rag_qa"
    assert rubric_for({"rag_qa": rubrics["rag_qa"]}, "poetry") is None
