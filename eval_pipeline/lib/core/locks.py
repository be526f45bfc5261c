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

__all__ = ["LockHeld", "file_lock"]

_guard = threading.Lock()
# Per path: a thread lock (other threads wait, the holder may re-enter) and the holder's depth of
# nested uses. flock is taken only at depth 0: flock on a second descriptor of the same file
# would wait for the first one forever.
_locks: dict[str, threading.RLock] = {}
_depth: dict[str, int] = {}


class LockHeld(RuntimeError):
    """Raised by ``file_lock(..., blocking=False)`` when another process holds the lock.

    Attributes:
        path: the lock file.
        pid: the holder's process id as it wrote it in the file (None when unknown).
    """

    def __init__(self, path: str, pid: int | None):
        self.path, self.pid = path, pid
        super().__init__(f"{path} is held by {'process ' + str(pid) if pid else 'another process'}")


def _holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


@contextmanager
def file_lock(path: str | os.PathLike[str], blocking: bool = True) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created when missing) for the ``with`` block.

    Waits while another process holds it; re-entrant within one thread; other threads of the
    process wait for the holder, as other processes do. With ``blocking=False`` it raises
    :class:`LockHeld` (with the holder's pid) instead of waiting for another process, and the
    holder writes its pid into the file. The kernel drops a ``flock`` when its process dies,
    however it dies, so a killed holder never leaves a stale lock.
    """
    key = str(Path(path).resolve())
    with _guard:
        rlock = _locks.setdefault(key, threading.RLock())
    with rlock:
        if _depth.get(key, 0):  # this thread holds it already
            _depth[key] += 1
            try:
                yield
            finally:
                _depth[key] -= 1
            return
        Path(key).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if blocking:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise LockHeld(key, _holder(fd)) from None
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _depth[key] = 1
            try:
                yield
            finally:
                _depth[key] = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
