"""Tests for eval_pipeline.lib.registry.versions: validation, the append-only file, its errors."""

from __future__ import annotations

import json
import multiprocessing
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from eval_pipeline.lib.registry.versions import ModelRegistry, ModelVersion, RegistryError, parse_model_ref

WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def live(name: str = "support-assistant", version: str = "2024-06", **overrides: Any) -> ModelVersion:
    fields: dict[str, Any] = {"name": name, "version": version, "provider": "openai-compatible",
                              "base_url": "http://127.0.0.1:8000/v1", "model": "qwen2.5-7b-instruct",
                              "registered_at": WHEN}
    fields.update(overrides)
    return ModelVersion(**fields)


def line(**overrides: Any) -> str:
    """A registry line as it would be written, with fields replaced (None removes one)."""
    payload = json.loads(live().to_json_line())
    for key, value in overrides.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return json.dumps(payload)


# --------------------------------------------------------------------------------------------
# ModelVersion and parse_model_ref
# --------------------------------------------------------------------------------------------


def test_json_line_round_trips_with_utc_time():
    mv = live(params={"temperature": 0.2, "max_tokens": 256}, api_key_env="VLLM_API_KEY",
              registered_at=datetime(2026, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))))
    assert mv.key == "support-assistant:2024-06"
    assert mv.registered_at == WHEN and mv.registered_at.tzinfo == timezone.utc
    text = mv.to_json_line()
    assert "\n" not in text and json.loads(text)["registered_at"] == "2026-03-01T12:00:00Z"
    assert ModelVersion.model_validate_json(text) == mv


@pytest.mark.parametrize("overrides, field, fragment", [
    ({"name": "support:assistant"}, "name", "not a valid name"),
    ({"name": "-lead"}, "name", "not a valid name"),
    ({"version": "2024:06"}, "version", "not a valid version"),
    ({"base_url": None}, "base_url", "required for provider 'openai-compatible'"),
    ({"base_url": "localhost:8000/v1"}, "base_url", "must start with http"),
    ({"model": None}, "model", "model (the endpoint's model id) is required"),
    ({"recorded_path": "outputs.jsonl"}, "recorded_path", "not allowed for provider 'openai-compatible'"),
    ({"provider": "recorded", "model": None}, "base_url", "not allowed for provider 'recorded'"),
    ({"provider": "recorded", "base_url": None}, "recorded_path", "required for provider 'recorded'"),
    ({"provider": "anthropic"}, "provider", "'openai-compatible' or 'recorded'"),
    ({"role": "champion"}, "role", "'baseline' or 'candidate'"),
    ({"api_key_env": "sk-proj-abc123"}, "api_key_env", "NAME of an environment variable"),
    ({"params": {"top_p": 0.9}}, "params", "unsupported parameter 'top_p'"),
    ({"params": {"max_tokens": 0}}, "params", "max_tokens must be a positive integer"),
    ({"params": {"temperature": "hot"}}, "params", "temperature must be a number"),
    ({"registered_at": datetime(2026, 3, 1, 12, 0)}, "registered_at", "must carry a timezone"),
    ({"api_key": "sk-123"}, "api_key", "Extra inputs are not permitted"),
])
def test_invalid_versions_name_the_field(overrides, field, fragment):
    with pytest.raises(ValidationError) as info:
        live(**overrides)
    errors = {error["loc"][0]: error["msg"] for error in info.value.errors()}
    assert field in errors and fragment in errors[field]


def test_a_pasted_key_is_not_echoed_back():
    with pytest.raises(ValidationError) as info:
        live(api_key_env="sk-proj-verysecretvalue")
    assert "verysecret" not in str(info.value)


@pytest.mark.parametrize("text, expected", [
    ("support-assistant:2024-06", ("support-assistant", "2024-06")),
    (" qwen2.5_7b:v1.2+rc1 ", ("qwen2.5_7b", "v1.2+rc1")),
])
def test_parse_model_ref(text, expected):
    assert parse_model_ref(text) == expected


@pytest.mark.parametrize("text", ["support-assistant", "support-assistant:", ":2024-06", "a:b:c",
                                  "support assistant:1", "", "name:ver/sion"])
def test_parse_model_ref_says_the_expected_form(text):
    with pytest.raises(ValueError, match="not of the form NAME:VERSION"):
        parse_model_ref(text)


# --------------------------------------------------------------------------------------------
# The registry file
# --------------------------------------------------------------------------------------------


def test_missing_file_is_empty_and_register_creates_it(tmp_path):
    registry = ModelRegistry(tmp_path / "registry" / "models.jsonl")
    assert registry.load() == [] and registry.keys() == []
    stored = registry.register(live())
    assert registry.path.read_text().count("\n") == 1
    assert registry.load() == [stored] and registry.get("support-assistant:2024-06") == stored


def test_duplicate_registration_says_where_and_what_to_do(tmp_path):
    registry = ModelRegistry(tmp_path / "models.jsonl")
    registry.register(live("other-model", "1"))
    registry.register(live(role="baseline"))
    before = registry.path.read_text()
    with pytest.raises(RegistryError) as info:
        registry.register(live(description="the same key again", role="candidate"))
    assert str(info.value) == (
        f"support-assistant:2024-06 is already registered (line 2 of {registry.path}, registered "
        "2026-03-01T12:00:00Z as baseline); register a new version instead")
    assert registry.path.read_text() == before  # nothing appended


@pytest.mark.parametrize("bad_line, fragment", [
    ('{"name": "support-assistant", "version": ', "line 2: not JSON"),
    ("[1, 2]", "line 2: expected a JSON object, got list"),
    (line(base_url=None, version="2"), "line 2, field 'base_url': base_url is required"),
    (line(version="2", provider="recorded", model=None, recorded_path="x.jsonl"),
     "line 2, field 'base_url': base_url is not allowed for provider 'recorded'"),
    (line(version="2", role="champion"), "line 2, field 'role': Input should be 'baseline' or 'candidate'"),
    (line(version="2", params={"max_tokens": -1}), "line 2, field 'params': max_tokens must be a positive"),
    (line(version="2", registered_at="yesterday"), "line 2, field 'registered_at'"),
    (line(version="2", typo="x"), "line 2, field 'typo': Extra inputs are not permitted"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, bad_line, fragment):
    path = tmp_path / "models.jsonl"
    path.write_text(line() + "\n" + bad_line + "\n" + line(version="3") + "\n")
    registry = ModelRegistry(path)
    with pytest.raises(RegistryError) as info:
        registry.load()
    assert str(info.value).startswith(f"{path} line 2")
    assert fragment in str(info.value)
    # a broken registry refuses new registrations too, rather than growing around the damage
    with pytest.raises(RegistryError, match=re.escape(fragment)):
        registry.register(live(version="4"))


def test_duplicate_keys_in_the_file_name_both_lines(tmp_path):
    path = tmp_path / "models.jsonl"
    path.write_text("\n".join([line(), line(version="2"), "", line(description="edited by hand")]) + "\n")
    with pytest.raises(RegistryError, match=r"lines 1 and 4 both register support-assistant:2024-06"):
        ModelRegistry(path).load()


def test_keys_get_and_baseline_for(tmp_path):
    registry = ModelRegistry(tmp_path / "models.jsonl")
    for mv in [live(version="2024-01", role="baseline"), live(version="2024-03"),
               live("router", "1", role="baseline"), live(version="2024-06", role="baseline"),
               live(version="2024-09")]:
        registry.register(mv)
    assert registry.keys() == ["support-assistant:2024-01", "support-assistant:2024-03", "router:1",
                               "support-assistant:2024-06", "support-assistant:2024-09"]
    assert registry.baseline_for("support-assistant").key == "support-assistant:2024-06"
    assert registry.baseline_for("router").key == "router:1"
    assert registry.baseline_for("unknown") is None
    registry.register(live("summariser", "1"))
    assert registry.baseline_for("summariser") is None  # a candidate is not a baseline

    with pytest.raises(KeyError) as info:
        registry.get("support-assistant:2025-01")
    assert "'support-assistant:2025-01' is not registered" in str(info.value)
    assert "router:1, support-assistant:2024-06" in str(info.value)


def test_recorded_path_must_exist_and_is_stored_absolute(tmp_path, monkeypatch):
    registry = ModelRegistry(tmp_path / "models.jsonl")
    with pytest.raises(RegistryError, match=r"recorded_path .*missing\.jsonl does not exist"):
        registry.register(ModelVersion(name="legacy", version="1", provider="recorded",
                                       recorded_path=str(tmp_path / "missing.jsonl")))
    assert not registry.path.exists()

    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "legacy.jsonl").write_text('{"example_id": "e1", "output": "hi"}\n')
    monkeypatch.chdir(tmp_path)
    stored = registry.register(ModelVersion(name="legacy", version="1", provider="recorded",
                                            recorded_path="recordings/legacy.jsonl"))
    assert stored.recorded_path == str(tmp_path / "recordings" / "legacy.jsonl")
    assert registry.get("legacy:1").recorded_path == stored.recorded_path


def test_register_after_a_hand_edit_without_final_newline(tmp_path):
    path = tmp_path / "models.jsonl"
    path.write_text(line())  # no trailing newline
    registry = ModelRegistry(path)
    registry.register(live(version="2"))
    assert registry.keys() == ["support-assistant:2024-06", "support-assistant:2"]


def _register_in_process(path: str, version: str, description: str) -> str:
    try:
        ModelRegistry(path).register(live(version=version, description=description))
    except RegistryError as exc:
        return f"refused: {exc}"
    return "ok"


def test_processes_racing_for_one_key_register_it_once(tmp_path):
    path = str(tmp_path / "models.jsonl")
    # spawn, not fork: the test process has threads (torch, DuckDB), and a child forked while one
    # of them held a lock can hang for ever (seen once in a full run; the pool then waits on it)
    context = multiprocessing.get_context("spawn")
    with context.Pool(8) as pool:
        same = pool.starmap(_register_in_process, [(path, "race", f"writer {i}") for i in range(16)])
        distinct = pool.starmap(_register_in_process, [(path, f"v{i}", "") for i in range(16)])
    assert same.count("ok") == 1
    assert all("is already registered" in outcome for outcome in same if outcome != "ok")
    assert distinct == ["ok"] * 16
    registry = ModelRegistry(path)
    assert len(registry.load()) == 17  # every line whole, no key twice
    assert sorted(registry.keys()) == sorted(["support-assistant:race"] + [f"support-assistant:v{i}" for i in range(16)])
