"""The command line on a data home it cannot use: one line naming the path, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from eval_pipeline.lib.core.paths import DataHome

ROOT = Path(__file__).resolve().parent.parent


def refresh(home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "DAGSTER_HOME": str(home / "dagster")}
    return subprocess.run([sys.executable, "-m", "eval_pipeline.cli", "refresh", "--month", "2026-02", "--home",
                           str(home), "--workers", "1"], env=env, capture_output=True, text=True, timeout=300)


def assert_refused(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: "), done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


def test_a_duckdb_file_held_by_another_process_is_named(tmp_path):
    home = DataHome.resolve(tmp_path / "home").ensure()
    with duckdb.connect(str(home.warehouse)) as con:  # this test's process holds it, outside the file lock
        con.execute("create table t (x integer)")
        done = refresh(home.root)
    assert_refused(done, f"{home.warehouse} is open in another process", f"PID {os.getpid()}")


@pytest.fixture
def tmpfs(tmp_path):
    """A tiny tmpfs of its own (1 MiB), or a skip where this process may not mount one (not root)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_read_only_data_home_is_named(tmpfs):
    home = DataHome.resolve(tmpfs / "home").ensure()
    assert subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True).returncode == 0
    assert_refused(refresh(home.root), "cannot write to the data home", str(home.root), "Read-only file system")


def test_a_full_data_home_is_named(tmpfs):
    home = tmpfs / "home"
    assert_refused(refresh(home), f"the data home {home} has only", "MiB free")


def test_a_landing_folder_linked_to_a_missing_place_is_named(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "landing").symlink_to(tmp_path / "share" / "logs")  # a share that is not mounted
    assert_refused(refresh(home), f"the landing folder {home / 'landing'} links to {tmp_path / 'share' / 'logs'}",
                   "does not exist")


def test_a_missing_landing_folder_is_named(tmp_path, capsys):
    from eval_pipeline.cli import main

    home = tmp_path / "moved-home"
    assert main(["refresh", "--home", str(home), "--month", "2026-02"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the landing folder {home / 'landing'} does not exist") and "Traceback" not in err
    assert not (home / "warehouse.duckdb").exists()  # nothing ran
