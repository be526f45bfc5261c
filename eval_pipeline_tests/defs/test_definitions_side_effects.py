"""Loading the code location has no side effects: importing ``eval_pipeline.definitions``, Dagster
validating it and building the definitions for a data home create no file and set no environment
variable; runs on a data home given explicitly (in this process and in the multiprocess
executor's step processes) write only there; the judge's settings are read when a run uses them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl

import eval_pipeline.definitions as definitions
from eval_pipeline.definitions import build_definitions
from eval_pipeline.defs.resources import JUDGE_ENV, JudgeSettings, build_resources
from eval_pipeline.lib.core.paths import HOME_ENV, DataHome
from eval_pipeline.lib.storage.lake import StorageLocations
from eval_pipeline.runs import _execute, instance_for

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
FIXTURE = ROOT / "eval_pipeline_tests" / "fixtures" / "landing" / "support.canonical.jsonl"
# every variable that points the project (or Dagster) somewhere
PLACES = (HOME_ENV, "DAGSTER_HOME", "EVAL_PIPELINE_STORAGE", "EVAL_PIPELINE_RAW_STORAGE", "EVAL_PIPELINE_EXECUTOR",
          *JUDGE_ENV)


def tree(folder: Path) -> list[str]:
    """Everything under ``folder``, recursively, as relative paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PLACES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def test_importing_and_validating_the_code_location_in_an_empty_folder_creates_nothing(tmp_path):
    cwd = tmp_path / "empty"
    cwd.mkdir()
    commands = [
        [sys.executable, "-c", "import eval_pipeline.definitions"],
        [str(VENV_BIN / "dagster"), "definitions", "validate", "-m", "eval_pipeline.definitions"],
        # commands that only read: no data home either
        [str(VENV_BIN / "eval-pipeline"), "--version"],
        [str(VENV_BIN / "eval-pipeline"), "validate-logs", str(FIXTURE)],
        [str(VENV_BIN / "eval-pipeline"), "export-eval-set", "--out", str(tmp_path / "set.jsonl")],
    ]
    outcomes = [subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=300)
                for cmd in commands]
    assert [o.returncode for o in outcomes] == [0, 0, 0, 0, 1], [o.stderr[-2000:] for o in outcomes]
    assert "All code locations passed validation" in outcomes[1].stderr + outcomes[1].stdout
    assert outcomes[4].stderr.startswith("error: no eval-set version in ") and "Traceback" not in outcomes[4].stderr
    assert tree(cwd) == []  # no ./data, no DuckDB file, no dagster home, no cache
    assert not (tmp_path / "set.jsonl").exists()


def test_building_the_definitions_creates_nothing_and_sets_no_variable(tmp_path, monkeypatch):
    cwd, decoy = tmp_path / "cwd", tmp_path / "decoy"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(HOME_ENV, str(decoy))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    before = dict(os.environ)
    home = DataHome.resolve(tmp_path / "home")
    defs = build_definitions(home)
    assert defs.resources["settings"].home == str(home.root)
    assert defs.resources["io_manager"].database == str(home.warehouse)
    # the code location Dagster loads: the data home EVAL_PIPELINE_HOME names, built on demand
    loaded = definitions.defs()
    assert loaded.resources["settings"].home == str(decoy.resolve())
    assert defs.resolve_job_def("ingest_job").name == "ingest_job"  # resolving jobs touches nothing either
    assert dict(os.environ) == before
    assert tree(tmp_path) == ["cwd"]


def test_the_io_managers_create_the_folders_of_their_files_when_a_run_first_writes(tmp_path):
    home = DataHome.resolve(tmp_path / "new" / "home")
    resources = build_resources(home, storage=StorageLocations())

    @dg.asset(io_manager_key="raw_io_manager", metadata={"schema": "ingest"})
    def raw_rows() -> pl.DataFrame:
        return pl.DataFrame({"x": [1, 2]})

    @dg.asset(metadata={"schema": "privacy"})
    def kept_rows(raw_rows: pl.DataFrame) -> pl.DataFrame:
        return raw_rows.filter(pl.col("x") > 1)

    assert not (tmp_path / "new").exists()  # nothing until a run writes
    assert dg.materialize([raw_rows, kept_rows], resources=resources).success
    assert stat.S_IMODE(home.restricted.stat().st_mode) == 0o700  # the raw zone, owner-only as ensure() makes it
    with duckdb.connect(str(home.raw_warehouse), read_only=True) as raw, \
            duckdb.connect(str(home.warehouse), read_only=True) as main:
        assert raw.execute("select count(*) from ingest.raw_rows").fetchone() == (2,)
        assert main.execute("select x from privacy.kept_rows").fetchall() == [(2,)]
    # only what was written: no landing, cache or dagster folder
    assert {p.split("/")[0] for p in tree(home.root)} == {"restricted", "warehouse.duckdb", "warehouse.duckdb.lock"}


def _manifest_rows(home: DataHome) -> int:
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        return con.execute("select count(*) from ingest.landing_manifest").fetchone()[0]


def test_runs_on_an_explicit_home_write_only_there_and_leave_the_environment_alone(home, tmp_path, monkeypatch):
    """In process and with the multiprocess executor, whose step processes rebuild the job
    (``job_for_home``) with this process's environment, which names another data home."""
    cwd, decoy = tmp_path / "cwd", tmp_path / "decoy"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(HOME_ENV, str(decoy))
    monkeypatch.setenv("DAGSTER_HOME", str(decoy / "dagster"))
    for name in ("EVAL_PIPELINE_STORAGE", "EVAL_PIPELINE_RAW_STORAGE", "EVAL_PIPELINE_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)

    instance = instance_for(home)
    assert Path(instance.root_directory) == home.dagster_home and instance.is_persistent
    in_process = _execute(build_definitions(home), "landing_manifest_job", instance)
    assert dict(os.environ) == before

    monkeypatch.setenv("EVAL_PIPELINE_EXECUTOR", "multiprocess")
    before = dict(os.environ)
    defs = build_definitions(home)
    assert defs.resolve_job_def("landing_manifest_job").executor_def is dg.multiprocess_executor
    out_of_process = _execute(defs, "landing_manifest_job", instance)
    assert dict(os.environ) == before

    assert in_process.success and out_of_process.success
    assert _manifest_rows(home) == 4  # the fixture's four landing files, written to this home's warehouse
    runs = instance.get_runs()
    assert {r.run_id for r in runs} == {in_process.run_id, out_of_process.run_id}
    assert all(r.is_success for r in runs)
    assert not decoy.exists() and tree(cwd) == []


def test_the_judge_is_read_when_a_run_uses_it_and_an_unset_variable_means_no_judge(tmp_path, monkeypatch):
    for name in JUDGE_ENV:
        monkeypatch.delenv(name, raising=False)
    seen = []

    @dg.asset
    def judged(judge: JudgeSettings) -> None:
        seen.append((judge.configured, judge.endpoint()))

    resources = build_definitions(DataHome.resolve(tmp_path / "home")).resources  # built with no judge set
    with dg.instance_for_test() as instance:
        assert dg.materialize([judged], resources={"judge": resources["judge"]}, instance=instance).success
        monkeypatch.setenv(JUDGE_ENV[0], "http://127.0.0.1:9/v1")
        monkeypatch.setenv(JUDGE_ENV[1], "judge-model")
        monkeypatch.setenv(JUDGE_ENV[2], "sk-not-in-any-config")
        run = dg.materialize([judged], resources={"judge": resources["judge"]}, instance=instance)
        assert run.success
        stored = str(instance.get_run_by_id(run.run_id).run_config)
    assert seen == [(False, ("", "", "")), (True, ("http://127.0.0.1:9/v1", "judge-model", "sk-not-in-any-config"))]
    assert "sk-not-in-any-config" not in stored
    # a value given explicitly wins over the environment; "" is no judge whatever it says
    assert JudgeSettings(model="other").endpoint()[1] == "other" and not JudgeSettings(base_url="").configured
