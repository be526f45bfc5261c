"""Shared fixtures: small landing folders written under tmp_path."""

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from eval_pipeline.lib.core.paths import DataHome
from month_template import refreshed_month, refreshed_month_template  # noqa: F401 - fixtures

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Property-based tests: "ci" (the default) draws the same bounded examples on every run, so a
# failure reproduces and the suite's time is fixed; HYPOTHESIS_PROFILE=dev searches wider.
settings.register_profile("ci", derandomize=True, database=None, max_examples=200, deadline=None,
                          print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def good_record(request_id: str, timestamp: str, **overrides) -> dict:
    record = {
        "request_id": request_id,
        "timestamp": timestamp,
        "messages": [{"role": "system", "content": "You route bank support queries."},
                     {"role": "user", "content": f"How do I top up my account? ({request_id})"}],
        "completion": "top_up_by_bank_transfer_charge",
        "model": "support-assistant",
        "model_version": "2026-06-01",
        "latency_ms": 210.5,
        "task_type": "intent_routing",
    }
    record.update(overrides)
    return record


# (line bytes, expected reason or None for a valid record). Day: 2026-03-02 unless said.
def mixed_lines() -> list[tuple[bytes, str | None]]:
    def js(obj) -> bytes:
        return json.dumps(obj).encode()

    missing = good_record("m-1", "2026-03-02T11:00:00Z")
    del missing["completion"]
    return [
        (js(good_record("ok-1", "2026-03-02T08:00:00Z")), None),
        (js(good_record("ok-2", "2026-03-02T09:30:00+00:00")), None),
        (b'{"request_id": "broken", "timestamp": "2026-03-02T10:00:00Z", "messages": [', "invalid_json"),
        (js(missing), "missing_field"),
        (js(good_record("t-1", "2026-03-02T12:00:00Z", turn_index="two")), "wrong_type"),
        (js(good_record("ts-1", "2026-13-45T99:00:00Z")), "invalid_timestamp"),
        (js(good_record("fut-1", "2099-01-01T00:00:00Z")), "future_timestamp"),
        (js(good_record("ok-1", "2026-03-02T13:00:00Z")), "duplicate_id"),
        (js(good_record("big-1", "2026-03-02T14:00:00Z", completion="x" * 10_000_000)), "line_too_long"),
        (b'{"request_id": "enc-1", "completion": "caf\xe9 \xff"}', "not_utf8"),
        (js(good_record("neg-1", "2026-03-02T15:00:00Z", latency_ms=-3)), "invalid_value"),
        (js(good_record("role-1", "2026-03-02T15:30:00Z", messages=[{"role": "robot", "content": "hi"}])), "invalid_value"),
        (js(good_record("typo-1", "2026-03-02T16:00:00Z", complection="typo")), "unknown_field"),
        (js([1, 2, 3]), "not_an_object"),
        (b"", None),  # blank line: not a record at all
        (js(good_record("ok-3", "2026-03-03T01:00:00Z")), None),  # the next day, same file
    ]


def write_mixed_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(line for line, _ in mixed_lines()) + b"\n")


@pytest.fixture
def home(tmp_path) -> DataHome:
    """A data home with the three adapter samples and one mixed good/bad file in its landing folder."""
    data_home = DataHome.resolve(tmp_path / "home").ensure()
    shutil.copytree(FIXTURES / "landing", data_home.landing / "samples")
    write_mixed_file(data_home.landing / "app" / "mixed.canonical.jsonl")
    return data_home
