"""``eval-pipeline ui`` (dagster dev) as a subprocess on 127.0.0.1, for the tests that talk to the UI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT to dagster dev's process group (webserver, daemon, code server, runs); SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def dagster_dev(home: Path, log: Path) -> Iterator[str]:
    """Start ``eval-pipeline ui --home HOME`` on a free port, wait until it answers, yield its base
    URL, and stop it (and everything it started) afterwards. Its output goes to ``log``, whose end
    is shown when it exits or does not answer within ``START_TIMEOUT`` seconds."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cli = Path(sys.executable).parent / "eval-pipeline"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(cli), "ui", "--home", str(home), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=2):
                    break
            except OSError:
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                assert proc.poll() is None, f"dagster dev exited with {proc.returncode}:\n{tail}"
                assert time.monotonic() < deadline, f"dagster dev did not answer within {START_TIMEOUT} s:\n{tail}"
                time.sleep(0.5)
        yield base
    finally:
        _stop(proc)
