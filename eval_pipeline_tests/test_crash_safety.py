"""A refresh killed with SIGKILL part way, then run again, leaves the same tables as one that was
never interrupted: no record lost or doubled, no eval-set version half written or made twice. A second
refresh of the same home while one runs stops at once and leaves the first to finish."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import duckdb
import pytest

from eval_pipeline.demo.logs import generate_logs
from eval_pipeline.lib.core.paths import DataHome

MONTH = "2026-02"
ROOT = Path(__file__).resolve().parent.parent
# table -> the columns that identify a row (compared as multisets: a duplicate shows up)
KEYS = {
    ("restricted", "ingest.raw_logs"): "request_id",
    ("restricted", "ingest.quarantined_logs"): "source_file, source_line",
    ("warehouse", "privacy.redacted_logs"): "request_id",
    ("warehouse", "embeddings.log_embeddings"): "request_id",
    ("warehouse", "sampling.eval_set_versions"): "eval_set_version, example_id",
    ("warehouse", "sampling.eval_set_changelog"): "eval_set_version, example_id, action",
    ("warehouse", "sampling.eval_set_summary"): "eval_set_version",
    ("warehouse", "sampling.eval_set"): "eval_set_version, example_id",
}


def refresh_command(home: Path) -> list[str]:
    return [sys.executable, "-m", "eval_pipeline.cli", "refresh", "--month", MONTH, "--home", str(home),
            "--workers", "1"]


def subprocess_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "DAGSTER_HOME": str(home / "dagster")}
    env.pop("EVAL_PIPELINE_EXECUTOR", None)
    return env


def small_month(root: Path) -> DataHome:
    home = DataHome.resolve(root).ensure()
    generate_logs(home.landing / "demo", date(2026, 2, 1), 28, 3, seed=4, truth_dir=home.demo_truth)
    return home


def started_steps(home: Path) -> Counter:
    """step key -> how many times it started, over every run in the instance's event logs."""
    found: Counter = Counter()
    for db in (home / "dagster" / "history" / "runs").glob("*.db"):
        if db.name == "index.db":
            continue
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                found.update(key for (key,) in con.execute(
                    "select step_key from event_logs where dagster_event_type = 'STEP_START'"))
        except sqlite3.Error:  # being created or written: read it on the next poll
            continue
    return found


def rows(home: DataHome) -> dict[str, list[tuple]]:
    out = {}
    for (zone, table), key in KEYS.items():
        path = home.raw_warehouse if zone == "restricted" else home.warehouse
        with duckdb.connect(str(path), read_only=True) as con:
            out[table] = con.execute(f"select {key} from {table} order by {key}").fetchall()
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, list[tuple]]:
    home = small_month(tmp_path_factory.mktemp("uninterrupted"))
    done = subprocess.run(refresh_command(home.root), env=subprocess_env(home.root), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return rows(home)


# Where each run of the chain is killed: (step, which start of it in this run to wait for, seconds to let it run).
# One home is killed at each point in turn and run again, so every kill finds what the one before left.
KILL_CHAIN = (
    ("ingested_logs", 3, 0.3),
    ("redacted_logs", 5, 0.5),
    ("log_embeddings", 8, 0.5),
    ("eval_set", 1, 1.5),
)


def start_refresh(home: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(refresh_command(home), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def wait_for_start(home: Path, proc: subprocess.Popen, step: str, nth: int, before: Counter) -> None:
    deadline = time.monotonic() + 400
    while started_steps(home)[step] - before[step] < nth:
        assert proc.poll() is None, f"refresh ended before {step} started {nth} times: {proc.stdout.read()!r}"
        assert time.monotonic() < deadline, f"{step} did not start {nth} times"
        time.sleep(0.1)


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: nothing of the killed refresh survives
    proc.wait()


def test_a_refresh_killed_at_each_step_and_run_again_gives_the_uninterrupted_tables(tmp_path, uninterrupted):
    home = small_month(tmp_path / "home")
    env = subprocess_env(home.root)
    killed_at = []
    for step, nth, delay in KILL_CHAIN:
        before = started_steps(home.root)
        proc = start_refresh(home.root, env)
        try:
            wait_for_start(home.root, proc, step, nth, before)
            time.sleep(delay)
        finally:
            kill(proc)
        assert proc.returncode == -signal.SIGKILL, f"the refresh ended by itself before the kill in {step}"
        killed_at.append(step)
    assert killed_at == [step for step, _, _ in KILL_CHAIN]

    # the run that completes is also the one a second refresh of the home must not disturb
    final = start_refresh(home.root, env)
    try:
        wait_for_start(home.root, final, "ingested_logs", 1, started_steps(home.root))
        began = time.monotonic()
        second = subprocess.run(refresh_command(home.root), env=env, capture_output=True, text=True, timeout=120)
        assert final.poll() is None, "the refresh ended before the second one was refused"
        assert second.returncode == 3, second.stdout + second.stderr
        assert f"another refresh of {home.root} is running (pid {final.pid})" in second.stderr
        assert "Traceback" not in second.stderr and time.monotonic() - began < 60
        output, _ = final.communicate(timeout=600)
    finally:
        if final.poll() is None:
            kill(final)
    assert final.returncode == 0, output

    after = rows(home)
    for table, expected in uninterrupted.items():
        assert Counter(after[table]) == Counter(expected), table
    versions = [v for v, _ in after["sampling.eval_set_versions"]]
    assert set(versions) == {"v1"} and len(after["sampling.eval_set_summary"]) == 1
