"""Advisory file locks between processes (plain Python, no Dagster).

A DuckDB file takes one writer process at a time; a second process that opens it fails at once
("Could not set lock on file"). When the days of a month run in parallel processes, every
connection to a DuckDB file is taken under :func:`file_lock` on ``<file>.lock``, so processes
queue for the file (each holds it only to read its inputs or write its output) instead of
failing or sleeping through a retry backoff.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["file_lock"]

_guard = threading.Lock()
# path -> (open file descriptor, depth, owning thread): the lock is re-entrant within a thread,
# since flock on a second descriptor of the same file would wait for the first one forever.
_held: dict[str, tuple[int, int, int]] = {}
_thread_locks: dict[str, threading.RLock] = {}


@contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created when missing) for the ``with`` block.

    Waits while another process holds it; re-entrant within one thread; other threads of the
    process wait for the holder, as other processes do.
    """
    key = str(Path(path).resolve())
    with _guard:
        rlock = _thread_locks.setdefault(key, threading.RLock())
    with rlock:
        me = threading.get_ident()
        held = _held.get(key)
        if held and held[2] == me:
            _held[key] = (held[0], held[1] + 1, me)
            try:
                yield
            finally:
                fd, depth, _ = _held[key]
                _held[key] = (fd, depth - 1, me)
            return
        Path(key).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _held[key] = (fd, 1, me)
            try:
                yield
            finally:
                _held.pop(key, None)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
