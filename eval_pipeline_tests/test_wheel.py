"""The built wheel, installed alone into a fresh virtual environment, is a working install: its
declared dependencies carry every package the code imports, and the command line runs.

The wheel is built from a copy of the sources (the checkout stays clean) and installed with
requirements.lock as constraints, so pip takes the tested versions within the declared ranges.
torch goes first, on its own, as the README says (the CPU build)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "eval_pipeline_tests" / "fixtures" / "landing"
# every module but the Dask executor's, which needs the `dask` extra
IMPORT_ALL = """
import importlib, pkgutil, eval_pipeline
skip = {"eval_pipeline.defs.dask_executor"}
names = [m.name for m in pkgutil.walk_packages(eval_pipeline.__path__, "eval_pipeline.") if m.name not in skip]
for name in names:
    importlib.import_module(name)
print(len(names), "modules", eval_pipeline.__file__)
"""


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "eval_pipeline", source / "eval_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {key: value for key, value in os.environ.items()
           if key not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"} and not key.startswith("EVAL_PIPELINE_")}
    env.setdefault("PIP_CACHE_DIR", str(ROOT / ".cache" / "pip"))
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(source)],
                work, env)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (work / "dist").glob("eval_pipeline-*.whl")

    venv = work / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], work, env)
    assert made.returncode == 0, made.stderr
    # no byte-compiling of the 2.8 GB installed: the imports below compile what they load
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile"]
    # pip refuses extras in a constraints file: the lock's lines without them
    constraints = work / "constraints.txt"
    constraints.write_text("".join(line for line in (ROOT / "requirements.lock").read_text().splitlines(True)
                                   if "[" not in line))
    for step in (["torch==2.13.0"], ["-c", str(constraints), str(wheel)]):
        done = run(pip + step, work, env)
        assert done.returncode == 0, done.stdout + done.stderr
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv, env


def test_the_wheel_installs_its_dependencies_and_every_module_imports(installed, tmp_path):
    venv, env = installed
    check = run([str(venv / "bin" / "python"), "-m", "pip", "check"], tmp_path, env)
    assert check.returncode == 0, check.stdout + check.stderr
    imported = run([str(venv / "bin" / "python"), "-c", IMPORT_ALL], tmp_path, env, timeout=600)
    assert imported.returncode == 0, imported.stderr[-3000:]
    count, _, where = imported.stdout.split()
    assert where.startswith(str(venv)), f"imported from {where}, not from the installed wheel"
    assert int(count) > 40


def test_the_installed_command_runs(installed, tmp_path):
    venv, env = installed
    cli = str(venv / "bin" / "eval-pipeline")
    version = run([cli, "--version"], tmp_path, env)
    assert version.returncode == 0 and version.stdout.strip() == "eval-pipeline 0.1.0", version.stdout + version.stderr

    good = run([cli, "validate-logs", str(SAMPLES)], tmp_path, env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "3 files, 6 records: 6 valid, 0 invalid" in good.stdout and "Traceback" not in good.stderr

    bad = tmp_path / "bad.canonical.jsonl"
    bad.write_text('{"request_id": "x"\n')
    found = run([cli, "validate-logs", str(bad)], tmp_path, env)
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"{bad}:1: invalid_json" in found.stdout and "Traceback" not in found.stderr

    # the demo's data files (eval_pipeline/demo/data/: Banking77, MT-Bench, Arena-Hard) ship in the wheel
    landing = tmp_path / "landing" / "demo"
    made = run([cli, "generate-logs", "--out", str(landing), "--start", "2026-03-01", "--days", "1", "--per-day", "20"],
               tmp_path, env)
    assert made.returncode == 0, made.stdout + made.stderr
    generated = run([cli, "validate-logs", str(landing)], tmp_path, env)
    assert "20 valid" in generated.stdout, generated.stdout + generated.stderr
