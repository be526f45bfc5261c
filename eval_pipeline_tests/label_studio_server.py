"""A real Label Studio server on 127.0.0.1 for tests, from the ``label-studio`` package in its own
virtual environment (it brings Django and its own pins, which stay out of the project's venv).

The environment is built on first use under ``<repo>/.cache/label-studio-venv`` (pip's cache in
``<repo>/.cache/pip``) and reused while its marker file names the pinned version; so is an empty
database with the migrations applied (``.cache/label-studio-<version>-migrated.sqlite3``). The server runs
headless on a free port with its data in a temporary folder and two users, each with a known legacy
API token: one made by ``label-studio init --username --password --user-token``, the other by
``label-studio start`` from ``LABEL_STUDIO_USERNAME``, ``LABEL_STUDIO_PASSWORD`` and
``LABEL_STUDIO_USER_TOKEN`` (``Authorization: Token ...``; new organizations of Label Studio
1.23 accept those tokens only when ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN`` is set).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION = "1.23.2"
VENV = ROOT / ".cache" / "label-studio-venv"
PIP_CACHE = ROOT / ".cache" / "pip"
MARKER = VENV / f".installed-label-studio-{VERSION}"
# an empty database with every migration applied: applying them is most of a start (about 40 s here)
DB_TEMPLATE = ROOT / ".cache" / f"label-studio-{VERSION}-migrated.sqlite3"
DB_NAME = "label_studio.sqlite3"  # Label Studio's default database file in its data folder
REQUIRE_ENV = "EVAL_PIPELINE_REQUIRE_LABEL_STUDIO"  # set in CI: a venv that cannot be built fails, never skips


class Unavailable(Exception):
    """The server's environment could not be built (e.g. no package registry)."""


def ensure_venv(log=print) -> tuple[Path, float]:
    """The ``label-studio`` executable, and the seconds spent building its venv (0 when reused)."""
    exe = VENV / "bin" / "label-studio"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "label-studio-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes build it once
        if MARKER.exists() and exe.exists():
            return exe, 0.0
        started = time.monotonic()
        shutil.rmtree(VENV, ignore_errors=True)  # a half-built or other-version venv
        env = {**os.environ, "PIP_CACHE_DIR": str(PIP_CACHE), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        env.pop("PYTHONPATH", None)
        steps = ([sys.executable, "-m", "venv", str(VENV)],
                 [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", f"label-studio=={VERSION}"])
        for cmd in steps:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
            if done.returncode != 0:
                shutil.rmtree(VENV, ignore_errors=True)
                tail = "\n".join(line for line in (done.stderr or done.stdout).splitlines()
                                 if not line.startswith("WARNING: Location"))[-2000:]
                raise Unavailable(f"{' '.join(cmd[:4])} failed ({done.returncode}): {tail}")
        MARKER.write_text(f"label-studio=={VERSION}\n")
        seconds = time.monotonic() - started
        log(f"label-studio venv built in {seconds:.1f} s")
        return exe, seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class User:
    email: str
    password: str
    token: str


@dataclass
class LabelStudioServer:
    url: str
    owner: User
    second: User
    process: subprocess.Popen
    log_path: Path
    timings: dict[str, float]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _server_env(data_dir: Path) -> dict[str, str]:
    # a small, explicit environment: Label Studio also reads bare USERNAME, PASSWORD, HOST, PORT...
    # Its HOME is its data folder: whatever it keeps there stays out of the user's home (a test
    # checks that a refresh running meanwhile writes nothing to the user's home).
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "TZ") if k in os.environ}
    return {**keep, "HOME": str(data_dir),
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "PYTHONUNBUFFERED": "1"}


def _run_init(exe: Path, env: dict[str, str], data_dir: Path, args: list[str], timeout: float) -> None:
    done = subprocess.run([str(exe), "init", "--quiet", *args], env=env, cwd=data_dir, capture_output=True,
                          text=True, timeout=timeout)
    with open(data_dir / "init.log", "a") as log:
        log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"label-studio init failed ({done.returncode}); see {data_dir / 'init.log'}")


def start_server(data_dir: Path, exe: Path, timeout: float = 240) -> LabelStudioServer:
    """Initialize the database with the second user, then start the server with the owner."""
    data_dir.mkdir(parents=True, exist_ok=True)
    owner = User("owner@example.org", secrets.token_urlsafe(12), secrets.token_hex(20))
    second = User("second@example.org", secrets.token_urlsafe(12), secrets.token_hex(20))
    env = _server_env(data_dir)
    log_path = data_dir / "server.log"
    timings = {}
    started = time.monotonic()
    if DB_TEMPLATE.exists():
        shutil.copyfile(DB_TEMPLATE, data_dir / DB_NAME)
    else:  # `init` without a user applies the migrations and nothing else: kept for the next start
        _run_init(exe, env, data_dir, [], timeout)
        tmp = DB_TEMPLATE.with_name(f".{DB_TEMPLATE.name}.{os.getpid()}.part")
        shutil.copyfile(data_dir / DB_NAME, tmp)
        os.replace(tmp, DB_TEMPLATE)
    timings["migrations"] = time.monotonic() - started
    started = time.monotonic()
    # `init` with a user: the organization and its first member (the second annotator)
    # "--option=value": a random password may start with "-", which argparse would take for an option
    _run_init(exe, env, data_dir, [f"--username={second.email}", f"--password={second.password}",
                                   f"--user-token={second.token}"], timeout)
    timings["init"] = time.monotonic() - started
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**env, "LABEL_STUDIO_USERNAME": owner.email, "LABEL_STUDIO_PASSWORD": owner.password,
           "LABEL_STUDIO_USER_TOKEN": owner.token}
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1",
                                    "--port", str(port)], env=env, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = LabelStudioServer(url, owner, second, process, log_path, timings)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"label-studio start exited with {process.returncode}: {log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"label-studio did not answer on {url}/health in {timeout:.0f} s")
        time.sleep(0.25)
    timings["start"] = time.monotonic() - started
    return server
