"""Rubrics: what a good response looks like for one task type, kept as hand-edited YAML files.

A rubric lists 4-6 criteria. Each criterion is scored on a small ordinal scale (``binary``: 0/1,
``three_point``: 0/1/2) with a written description of every level, so an LLM judge and human
annotators score the same thing the same way. An example passes when every *required* criterion
reaches its ``pass_at`` level; optional criteria are scored for diagnosis and never decide
pass or fail.

The defaults for the demo task types ship in ``eval_pipeline/rubrics/``, with ``generic.yaml``: the
*default* rubric (``default: true``), used for every task type no rubric lists in ``applies_to``,
including a record with no task type at all. Pass another folder to :func:`load_rubrics` to use
your own; it may declare its own default (at most one), and without one a task type it does not
cover has no rubric. Every problem is reported with the file and the field path
(``rubrics/rag.yaml: criteria[2].levels: ...``), because people edit these files by hand.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from eval_pipeline.lib.core.yamlfile import BoundedLoader, YAMLFileError, read_yaml_file

__all__ = [
    "DEFAULT_RUBRICS_DIR",
    "SCALE_LEVELS",
    "MIN_CRITERIA",
    "MAX_CRITERIA",
    "RubricError",
    "Criterion",
    "Rubric",
    "load_rubric",
    "load_rubrics",
    "rubric_for_task",
    "default_rubric",
    "rubric_text",
    "UNKNOWN_RUBRIC_VERSION",
    "rubric_fingerprint",
    "rubric_version",
    "rubric_version_label",
]

DEFAULT_RUBRICS_DIR = Path(__file__).resolve().parents[2] / "rubrics"

Scale = Literal["binary", "three_point"]
SCALE_LEVELS: dict[str, tuple[int, ...]] = {"binary": (0, 1), "three_point": (0, 1, 2)}
# Fewer criteria miss failure modes; more make judges and annotators skim.
MIN_CRITERIA, MAX_CRITERIA = 4, 6

_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$")
_VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
_SNAKE_CASE_HINT = "must be snake_case (lowercase letters, digits and underscores, starting with a letter)"


class RubricError(ValueError):
    """One or more problems in rubric files; each line names the file and the field path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _At(ValueError):
    """A problem located below the field pydantic reports, e.g. the ``id`` of one criterion."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _join(levels: tuple[int, ...] | list[int]) -> str:
    return ", ".join(str(level) for level in levels)


class _Strict(BaseModel):
    # Unknown keys are an error (a misspelt "requird" must not silently become "not required");
    # strings are stripped because YAML block scalars end with a newline.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Criterion(_Strict):
    """One thing the judge scores, on a scale whose every level is described in words."""

    id: str
    description: str = Field(min_length=1)
    scale: Scale
    levels: dict[int, str]
    required: bool
    pass_at: int | None = Field(default=None, description="Lowest passing level; default: the top level.")
    factual: bool = Field(default=False, description="The criterion is about factual correctness (the judge "
                                                     "bias probes plant factual errors against it).")
    form: bool = Field(default=False, description="The criterion judges the output's length, format or wording "
                                                  "(conciseness, format): padding, hedging or confident framing is "
                                                  "expected to move it, so those probes report its shift but never "
                                                  "flag it.")

    @field_validator("id")
    @classmethod
    def _id_is_snake_case(cls, value: str) -> str:
        if not _SNAKE_CASE.match(value):
            raise ValueError(f"{_SNAKE_CASE_HINT}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _levels_fit_scale(self) -> Criterion:
        expected = SCALE_LEVELS[self.scale]
        got = tuple(sorted(self.levels))
        if got != expected:
            raise _At(("levels",), f"expected levels {_join(expected)} for a {self.scale} scale, got {_join(got) or 'none'}")
        for level, text in self.levels.items():
            if not text:
                raise _At(("levels", level), "level description is empty")
        if self.pass_at is None:
            self.pass_at = expected[-1]
        elif self.pass_at not in expected[1:]:
            # Level 0 is excluded: a criterion that passes at 0 can never fail.
            raise _At(("pass_at",), f"must be one of {_join(expected[1:])} for a {self.scale} scale, got {self.pass_at}")
        return self

    @property
    def allowed_levels(self) -> tuple[int, ...]:
        return SCALE_LEVELS[self.scale]

    def passed(self, score: int) -> bool:
        """Whether ``score`` reaches this criterion's pass level."""
        assert self.pass_at is not None  # set by the validator
        return score >= self.pass_at


class Rubric(_Strict):
    """How responses of some task types are judged, and when an example passes."""

    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    applies_to: list[str]
    default: bool = Field(default=False, description="The rubric of every task type no rubric applies to (and of "
                                                     "a record with no task type); at most one per folder.")
    has_reference: bool = Field(default=False, description="The task has one correct answer; reference metrics apply.")
    reference_field: str | None = Field(default=None, description="What the reference is, e.g. 'intent label'.")
    criteria: list[Criterion]
    version: str | None = Field(default=None, description="An explicit version name (e.g. 'v2'); the rubric "
                                                         "version is it plus a fingerprint of the criteria.")

    @field_validator("applies_to")
    @classmethod
    def _task_types(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for i, task in enumerate(value):
            if not _SNAKE_CASE.match(task):
                raise _At((i,), f"task type {_SNAKE_CASE_HINT}, got {task!r}")
            if task in seen:
                raise _At((i,), f"task type {task!r} is listed twice")
            seen.add(task)
        return value

    @field_validator("criteria")
    @classmethod
    def _criteria_set(cls, value: list[Criterion]) -> list[Criterion]:
        if not MIN_CRITERIA <= len(value) <= MAX_CRITERIA:
            raise ValueError(f"expected {MIN_CRITERIA} to {MAX_CRITERIA} criteria, got {len(value)}")
        first_index: dict[str, int] = {}
        for i, criterion in enumerate(value):
            if criterion.id in first_index:
                raise _At((i, "id"), f"duplicate criterion id {criterion.id!r} (also criteria[{first_index[criterion.id]}])")
            first_index[criterion.id] = i
        if not any(c.required for c in value):
            # Without a required criterion every example would pass.
            raise ValueError("at least one criterion must have required: true")
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version_number(cls, value: Any) -> Any:
        # "version: 2" in YAML is an int; it names the same version as "2"
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("version")
    @classmethod
    def _version_name(cls, value: str | None) -> str | None:
        # it becomes part of folder names (relabel/<rubric>@<version>/) and of "<version>+<hash>"
        if value is not None and not _VERSION_NAME.match(value):
            raise ValueError(f"must be letters, digits, '.', '_' or '-' (e.g. v2), got {value!r}")
        return value

    @model_validator(mode="after")
    def _reference_consistent(self) -> Rubric:
        if self.reference_field is not None and not self.has_reference:
            raise _At(("reference_field",), "is set but has_reference is false")
        if not self.applies_to and not self.default:
            raise _At(("applies_to",), "must list at least one task type (or set default: true to make this the "
                                       "rubric of every task type no other rubric applies to)")
        if self.default and self.has_reference:
            # a reference answer only exists for a known task; the fallback covers unknown ones
            raise _At(("has_reference",), "a default rubric cannot have a reference: it applies to task types "
                                          "nothing is known about, so it is judged, not reference-scored")
        return self

    @property
    def required_criteria(self) -> list[Criterion]:
        return [c for c in self.criteria if c.required]

    def criterion(self, criterion_id: str) -> Criterion:
        """The criterion with this id (KeyError naming the known ids otherwise)."""
        for c in self.criteria:
            if c.id == criterion_id:
                return c
        raise KeyError(f"rubric {self.name!r} has no criterion {criterion_id!r} (criteria: {self._ids()})")

    def criteria_levels(self) -> dict[str, list[int]]:
        """Criterion id -> its allowed levels, in rubric order (what the LLM judge must answer)."""
        return {c.id: list(c.allowed_levels) for c in self.criteria}

    def text(self) -> str:
        """The rubric as plain text; same as :func:`rubric_text`."""
        return rubric_text(self)

    def _ids(self) -> str:
        return ", ".join(c.id for c in self.criteria)

    def validate_scores(self, scores: Mapping[str, int]) -> None:
        """Raise ValueError listing every unknown criterion and every score outside its levels.

        Missing criteria are not an error here (see :meth:`passes`).
        """
        by_id = {c.id: c for c in self.criteria}
        problems = []
        for cid, value in scores.items():
            criterion = by_id.get(cid)
            if criterion is None:
                problems.append(f"unknown criterion {cid!r} (criteria: {self._ids()})")
            elif isinstance(value, bool) or not isinstance(value, int) or value not in criterion.allowed_levels:
                problems.append(
                    f"criterion {cid!r} scored {value!r}; allowed levels are "
                    f"{_join(criterion.allowed_levels)} ({criterion.scale} scale)"
                )
        if problems:
            raise ValueError(f"rubric {self.name!r}: " + "; ".join(problems))

    def passes(self, scores: Mapping[str, int]) -> bool | None:
        """Whether an example with these criterion scores passes.

        Returns:
            True when every required criterion reaches its ``pass_at`` level, False when one does
            not, None when a required criterion has no score, even if another one fails:
            incomplete scoring is flagged for a rescore rather than counted.

        Raises:
            ValueError: a score names an unknown criterion or is not one of its levels.
        """
        self.validate_scores(scores)
        required = self.required_criteria
        if any(c.id not in scores for c in required):
            return None
        return all(c.passed(scores[c.id]) for c in required)


# ---- loading -------------------------------------------------------------------------------


class _UniqueKeyLoader(BoundedLoader):
    """A SafeLoader that rejects a key repeated in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *anchor" may legitimately override keys; SafeLoader merges it
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader reports unhashable keys itself
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first_line[key] + 1})", key_node.start_mark
                )
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _field_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unknown_field(loc: tuple[str | int, ...]) -> str:
    model: type[BaseModel] = Criterion if "criteria" in loc[:-1] else Rubric
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown field{hint} (allowed: {', '.join(allowed)})"


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, _At):
            loc += cause.path
            message = cause.message
        elif err["type"] == "missing":
            message = "missing required field"
        elif err["type"] == "extra_forbidden":
            message = _unknown_field(loc)
        else:
            message = err["msg"].removeprefix("Value error, ")
        out.append(f"{_field_path(loc)}: {message}" if loc else message)
    return out


def load_rubric(path: str | os.PathLike[str]) -> Rubric:
    """Read and validate one rubric file.

    Raises:
        RubricError: invalid YAML (with line and column) or invalid fields (with the field path);
            every message starts with the file name.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    try:
        data = read_yaml_file(path, _UniqueKeyLoader)
    except YAMLFileError as exc:
        raise RubricError([str(exc)]) from None
    except IsADirectoryError:
        raise RubricError([f"{path}: is a folder, not a rubric file"]) from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise RubricError([f"{path}: expected a mapping of rubric fields at the top level, got {got}"])
    try:
        return Rubric.model_validate(data)
    except ValidationError as exc:
        raise RubricError([f"{path}: {problem}" for problem in _problems(exc)]) from None


def load_rubrics(folder: str | os.PathLike[str] | None = None) -> dict[str, Rubric]:
    """Load every ``*.yaml``/``*.yml`` rubric of a folder (default: the packaged rubrics).

    Returns:
        Rubrics by name.

    Raises:
        RubricError: every problem of every file at once, including a name used twice and a task
            type claimed by two rubrics (each task type must map to exactly one rubric) and
            more than one rubric marked ``default: true``.
        FileNotFoundError: the folder does not exist.
    """
    folder = DEFAULT_RUBRICS_DIR if folder is None else Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"rubric folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
    if not files:
        raise RubricError([f"{folder}: no rubric files (*.yaml, *.yml)"])
    rubrics: dict[str, Rubric] = {}
    origin: dict[str, Path] = {}
    owner: dict[str, str] = {}  # task type -> rubric name
    default: str | None = None
    problems: list[str] = []
    for file in files:
        try:
            rubric = load_rubric(file)
        except RubricError as exc:
            problems.extend(exc.problems)
            continue
        clashes = []
        if rubric.name in rubrics:
            clashes.append(f"{file}: name: rubric name {rubric.name!r} is already used by {origin[rubric.name]}")
        for i, task in enumerate(rubric.applies_to):
            if task in owner:
                clashes.append(
                    f"{file}: applies_to[{i}]: task type {task!r} is already claimed by rubric "
                    f"{owner[task]!r} ({origin[owner[task]]}); a task type must have exactly one rubric"
                )
        if rubric.default and default is not None:
            clashes.append(f"{file}: default: rubric {default!r} ({origin[default]}) is already the default; "
                           "at most one rubric may set default: true")
        if clashes:
            problems.extend(clashes)
            continue
        rubrics[rubric.name] = rubric
        origin[rubric.name] = file
        owner.update({task: rubric.name for task in rubric.applies_to})
        if rubric.default:
            default = rubric.name
    if problems:
        raise RubricError(problems)
    return rubrics


def default_rubric(rubrics: Mapping[str, Rubric]) -> Rubric | None:
    """The rubric marked ``default: true`` (None when there is none).

    Raises:
        RubricError: several are (only possible for rubrics not built by :func:`load_rubrics`).
    """
    defaults = [r for r in rubrics.values() if getattr(r, "default", False)]
    if len(defaults) > 1:
        raise RubricError([f"several rubrics are marked default: {', '.join(repr(r.name) for r in defaults)}"])
    return defaults[0] if defaults else None


def rubric_for_task(rubrics: Mapping[str, Rubric], task_type: str | None) -> Rubric:
    """The one rubric whose ``applies_to`` lists ``task_type``, else the default rubric (also for
    a missing or empty task type).

    Raises:
        KeyError: no rubric applies to it and there is no default rubric.
        RubricError: several rubrics claim it, or several are the default (only possible for
            rubrics not built by :func:`load_rubrics`).
    """
    matches = [r for r in rubrics.values() if task_type and task_type in r.applies_to]
    if not matches:
        fallback = default_rubric(rubrics)
        if fallback is not None:
            return fallback
        covered = ", ".join(sorted({t for r in rubrics.values() for t in r.applies_to}))
        raise KeyError(f"no rubric applies to task type {task_type!r} and none is the default "
                       f"(covered: {covered or 'none'})")
    if len(matches) > 1:
        names = ", ".join(repr(r.name) for r in matches)
        raise RubricError([f"task type {task_type!r} is claimed by several rubrics: {names}"])
    return matches[0]


# ---- versions ------------------------------------------------------------------------------

#: The rubric version of a label whose task named none and whose export recorded none.
UNKNOWN_RUBRIC_VERSION = "unknown"


def _words(text: str) -> str:
    # a folded YAML block and the same sentence on one line are one wording
    return " ".join(str(text).split())


def rubric_fingerprint(rubric: Rubric) -> str:
    """Eight hex digits of sha256 over what decides a score: per criterion (by id) its
    description, scale, levels and their descriptions, ``required``, ``pass_at``, ``factual`` and
    ``form``, and whether the rubric has a reference. Whitespace inside a text, the order of
    keys, comments and the order of the criteria do not count; the rubric's name, description,
    task types and explicit ``version`` do not either (the name and version are shown beside it).
    """
    criteria = [{"id": c.id, "description": _words(c.description), "scale": c.scale,
                 "levels": {str(level): _words(text) for level, text in sorted(c.levels.items())},
                 "required": c.required, "pass_at": c.pass_at, "factual": c.factual, "form": c.form}
                for c in sorted(rubric.criteria, key=lambda c: c.id)]
    canonical = json.dumps({"criteria": criteria, "has_reference": rubric.has_reference}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:8]


def rubric_version(rubric: Rubric) -> str:
    """The rubric's version as labels record it: ``<version>+<fingerprint>`` when the YAML names a
    ``version`` (``v2+1a2b3c4d``), else the fingerprint alone (``1a2b3c4d``). Editing a level's
    wording without bumping ``version`` still gives a new version: the fingerprint changes."""
    fingerprint = rubric_fingerprint(rubric)
    return f"{rubric.version}+{fingerprint}" if rubric.version else fingerprint


def rubric_version_label(rubric: Rubric) -> str:
    """``<name>@<version>``, e.g. ``rag_qa@v2+1a2b3c4d``: how reports and folder names show it."""
    return f"{rubric.name}@{rubric_version(rubric)}"


# ---- rendering -----------------------------------------------------------------------------


def rubric_text(rubric: Rubric) -> str:
    """Plain-text rubric for an LLM judge's system prompt and for annotators' instructions."""
    if rubric.default:
        listed = f"{', '.join(rubric.applies_to)}, and " if rubric.applies_to else ""
        covers = f"{listed}any task type no other rubric covers"
    else:
        covers = ", ".join(rubric.applies_to)
    lines = [f"Rubric: {rubric.name}", rubric.description, f"Task types: {covers}"]
    if rubric.has_reference:
        what = rubric.reference_field or "the single correct answer"
        lines.append(f"Reference: each example has one correct answer ({what}); compare the response with it.")
    else:
        lines.append("Reference: none; judge the response against the request and any context it was given.")
    lines += ["", "Criteria: give every criterion exactly one of its levels."]
    for n, c in enumerate(rubric.criteria, start=1):
        status = f"required, passes at {c.pass_at} or higher" if c.required else "optional, does not decide pass/fail"
        lines += ["", f"{n}. {c.id} ({c.scale}: {_join(c.allowed_levels)}; {status})", f"   {c.description}"]
        lines += [f"   {level} = {c.levels[level]}" for level in c.allowed_levels]
    required = ", ".join(f"{c.id} >= {c.pass_at}" for c in rubric.required_criteria)
    optional = [c.id for c in rubric.criteria if not c.required]
    rule = f"Pass rule: the response passes only if every required criterion reaches its pass level ({required})."
    if optional:
        rule += f" Optional criteria ({', '.join(optional)}) are scored for diagnosis only."
    lines += ["", rule]
    return "\n".join(lines) + "\n"
