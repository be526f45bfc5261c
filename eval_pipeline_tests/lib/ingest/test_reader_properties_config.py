"""Property tests of the readers of the project's own files: the model registry, recorded
outputs, rubric YAML and thresholds YAML. On any bytes and on valid files with fields deleted or
retyped, each either reads the file or raises its documented error with a message that starts
with the file name; nothing else escapes."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from reader_mutations import damaged, dumps, encode, mutated

from eval_pipeline.lib.core.yamlfile import MAX_NODES
from eval_pipeline.lib.evaluation.gates import DEFAULT_THRESHOLDS, Thresholds, ThresholdsError, load_thresholds
from eval_pipeline.lib.labeling.rubrics import DEFAULT_RUBRICS_DIR, Rubric, RubricError, load_rubric, load_rubrics
from eval_pipeline.lib.registry.providers import RecordedProvider
from eval_pipeline.lib.registry.versions import ModelRegistry, ModelVersion, RegistryError

BOUNDED = settings(derandomize=True, max_examples=50, deadline=None)

REGISTRY_ROWS = [
    json.loads(ModelVersion(name="support", version=f"2026-0{i}", provider="openai-compatible",
                            base_url="http://127.0.0.1:8000/v1", model="m", params={"temperature": 0},
                            role="baseline" if i == 1 else "candidate",
                            registered_at=datetime(2026, 3, i, tzinfo=timezone.utc)).to_json_line())
    for i in (1, 2, 3)
]
RECORDED_ROWS = [{"example_id": "ex_1", "output": "hello"}, {"example_id": "ex_2", "error": "timeout"},
                 {"prompt_sha256": "a" * 64, "output": "by prompt"}]
RUBRIC = yaml.safe_load((DEFAULT_RUBRICS_DIR / "intent_routing.yaml").read_text(encoding="utf-8"))
THRESHOLDS = yaml.safe_load(DEFAULT_THRESHOLDS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("config")


def _jsonl(rows) -> bytes:
    return encode("\n".join(dumps(r) for r in rows) + "\n")


def _registry(path: Path) -> list[ModelVersion] | None:
    try:
        versions = ModelRegistry(path).load()
    except RegistryError as err:
        assert str(err).startswith(str(path)), str(err)[:300]
        return None
    for v in versions:
        v.to_json_line().encode("utf-8")  # what was read can be written back
    return versions


def _recorded(path: Path) -> RecordedProvider | None:
    try:
        return RecordedProvider(path)
    except ValueError as err:
        assert not isinstance(err, UnicodeError) and str(err).startswith(str(path)), str(err)[:300]
        return None


def _rubric(path: Path) -> Rubric | None:
    try:
        return load_rubric(path)
    except RubricError as err:
        assert err.problems and all(p.startswith(str(path)) for p in err.problems), str(err)[:300]
        return None


def _thresholds(path: Path) -> Thresholds | None:
    try:
        thresholds = load_thresholds(path)
    except ThresholdsError as err:
        assert str(err).startswith(str(path)), str(err)[:300]
        return None
    gates = [thresholds.overall, thresholds.default_slice, *thresholds.slices.values()]
    assert math.isfinite(thresholds.confidence) and 0 < thresholds.confidence < 1
    for gate in gates:
        for value in (gate.floor, gate.max_drop):
            assert value is None or (math.isfinite(value) and 0 <= value <= 1)
    return thresholds


def test_the_unmutated_files_read(folder):
    assert len(_registry(_write(folder / "models.jsonl", _jsonl(REGISTRY_ROWS)))) == 3
    assert _recorded(_write(folder / "recorded.jsonl", _jsonl(RECORDED_ROWS))) is not None
    assert _rubric(_write(folder / "rubric.yaml", encode(yaml.safe_dump(RUBRIC)))).name == RUBRIC["name"]
    assert _thresholds(_write(folder / "gates.yaml", encode(yaml.safe_dump(THRESHOLDS)))) is not None


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@BOUNDED
@given(data=st.binary(max_size=2000))
def test_any_bytes(folder, data):
    _registry(_write(folder / "models.jsonl", data))
    _recorded(_write(folder / "recorded.jsonl", data))
    _rubric(_write(folder / "rubric.yaml", data))
    _thresholds(_write(folder / "gates.yaml", data))


@BOUNDED
@given(rows=mutated(REGISTRY_ROWS, max_mutations=3), damage=st.data())
def test_a_mutated_registry(folder, rows, damage):
    data = damage.draw(damaged(_jsonl(rows if isinstance(rows, list) else [rows])))
    _registry(_write(folder / "models.jsonl", data))


@BOUNDED
@given(rows=mutated(RECORDED_ROWS, max_mutations=3), damage=st.data())
def test_a_mutated_recording(folder, rows, damage):
    data = damage.draw(damaged(_jsonl(rows if isinstance(rows, list) else [rows])))
    _recorded(_write(folder / "recorded.jsonl", data))


# JSON is YAML, so a mutated document is written as JSON text (with the deep and long-integer stand-ins)

@BOUNDED
@given(doc=mutated(RUBRIC, max_mutations=3), damage=st.data())
def test_a_mutated_rubric(folder, doc, damage):
    _rubric(_write(folder / "rubric.yaml", damage.draw(damaged(encode(dumps(doc))))))


@BOUNDED
@given(doc=mutated(THRESHOLDS, max_mutations=3), damage=st.data())
def test_mutated_thresholds(folder, doc, damage):
    _thresholds(_write(folder / "gates.yaml", damage.draw(damaged(encode(dumps(doc))))))


@settings(derandomize=True, max_examples=10, deadline=None)
@given(width=st.integers(2, 12), depth=st.integers(2, 9), where=st.sampled_from(["applies_to", "criteria", "name"]))
def test_alias_bombs_are_refused_quickly(folder, width, depth, where):
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
    text = "\n".join(lines) + f"\n{where}: *l{depth - 1}\n"
    expands = width ** depth > MAX_NODES
    rubric_path = _write(folder / "bomb.yaml", text.encode())
    assert _rubric(rubric_path) is None
    with pytest.raises(RubricError, match="anchors and aliases" if expands else "."):
        load_rubric(rubric_path)
    with pytest.raises(ThresholdsError, match="anchors and aliases" if expands else "Extra inputs"):
        load_thresholds(rubric_path)


@pytest.mark.parametrize(("data", "fragment"), [
    (b"\xef\xbb\xbfname: x\n", "description"),  # a BOM is not part of the first key
    (b"name: \xff\n", "line 1: not UTF-8 text (byte 0xff)"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b"name: " + b"9" * 5000 + b"\n", "cannot be converted"),
    (b"- a\n- b\n", "expected a mapping"),
])
def test_yaml_inputs_that_used_to_raise(folder, data, fragment):
    path = _write(folder / "r.yaml", data)
    with pytest.raises(RubricError, match=".") as err:
        load_rubric(path)
    assert str(err.value).startswith(f"{path}: ") and fragment in str(err.value)
    with pytest.raises(ThresholdsError) as err:
        load_thresholds(path)
    assert str(err.value).startswith(f"{path}: ")


def test_a_non_mapping_thresholds_file_is_an_error_not_the_defaults(folder):
    path = _write(folder / "gates.yaml", b"[]\n")
    with pytest.raises(ThresholdsError, match="expected a mapping of threshold fields at the top level, got list"):
        load_thresholds(path)


def test_a_rubric_folder_with_a_broken_file_names_it(tmp_path):
    for rubric in DEFAULT_RUBRICS_DIR.glob("*.yaml"):
        (tmp_path / rubric.name).write_bytes(rubric.read_bytes())
    (tmp_path / "zz.yaml").write_bytes(b"name: \xff\n")
    with pytest.raises(RubricError) as err:
        load_rubrics(tmp_path)
    assert err.value.problems == [f"{tmp_path / 'zz.yaml'}: line 1: not UTF-8 text (byte 0xff); save the file as UTF-8"]


@pytest.mark.parametrize(("data", "fragment"), [
    (b'{"example_id": "ex_1", "output": "\\ud800"}\n', "line 1, field 'output': contains a lone UTF-16 surrogate"),
    (b'\xef\xbb\xbf{"example_id": "ex_1", "output": "ok"}\n', None),
    (b'{"example_id": "ex_1", "output": "ok"}\n{"output": "\xff"}\n', "line 2: not UTF-8 text (byte 0xff)"),
    (b"[" * 100_000 + b"]" * 100_000, "line 1: not readable JSON (nested too deeply)"),
    (b'{"example_id": "ex_1", "output": ' + b"9" * 5000 + b"}", "line 1: not readable JSON (Exceeds"),
])
def test_json_lines_inputs_that_used_to_raise(folder, data, fragment):
    path = _write(folder / "lines.jsonl", data)
    if fragment is None:  # a byte-order mark is not part of the first line
        assert RecordedProvider(path).model_id == "recorded:lines.jsonl"
        with pytest.raises(RegistryError, match="line 1, field 'name'"):
            ModelRegistry(path).load()
        return
    with pytest.raises(ValueError) as err:
        RecordedProvider(path)
    assert str(err.value).startswith(f"{path} ") and fragment in str(err.value)
    with pytest.raises(RegistryError) as err:
        ModelRegistry(path).load()
    assert str(err.value).startswith(f"{path} ") and fragment in str(err.value)
