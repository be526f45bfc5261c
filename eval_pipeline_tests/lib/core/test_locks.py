"""The file lock that queues processes for a DuckDB file: exclusive across processes, re-entrant in one thread."""

from __future__ import annotations

import multiprocessing
import time

import duckdb
import pytest

from eval_pipeline.lib.core.locks import LockHeld, file_lock


def _hold_and_write(lock: str, db: str, tag: str, rounds: int) -> None:
    for i in range(rounds):
        with file_lock(lock):
            # a read-write connection: a second process would fail at once without the lock
            with duckdb.connect(db) as con:
                con.execute("create table if not exists log (tag varchar, i integer, t double)")
                con.execute("insert into log values (?, ?, ?)", [tag, i, time.time()])
                time.sleep(0.02)


def test_processes_queue_for_a_duckdb_file_instead_of_failing(tmp_path):
    db, lock = str(tmp_path / "w.duckdb"), str(tmp_path / "w.duckdb.lock")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hold_and_write, args=(lock, db, tag, 15)) for tag in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("select tag, count(*) from log group by 1 order by 1").fetchall() == [("a", 15), ("b", 15), ("c", 15)]


def test_the_lock_is_reentrant_within_a_thread_and_released_after(tmp_path):
    lock = tmp_path / "x.lock"
    with file_lock(lock):
        with file_lock(lock):  # nested: would wait forever on a second flock descriptor
            pass
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_hold_and_write, args=(str(lock), str(tmp_path / "y.duckdb"), "z", 1))
    p.start()
    p.join(60)
    assert p.exitcode == 0  # released: another process got it


def _hold_until_killed(lock: str, ready) -> None:
    with file_lock(lock, blocking=False):
        ready.set()
        time.sleep(600)


def test_a_non_blocking_lock_names_its_holder_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    lock = str(tmp_path / "refresh.lock")
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_until_killed, args=(lock, ready))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(LockHeld) as held:
            with file_lock(lock, blocking=False):
                pass
        assert held.value.pid == holder.pid and str(holder.pid) in str(held.value)
    finally:
        holder.kill()  # SIGKILL: no finally block of the holder runs
        holder.join(30)
    with file_lock(lock, blocking=False):  # the kernel dropped the dead holder's lock
        pass
