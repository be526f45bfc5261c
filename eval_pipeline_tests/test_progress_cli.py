"""The command line's progress, as a person or a log file sees it: ``refresh`` (days in worker processes) writing plain
lines to a pipe (each day and each monthly step in order, then the final line), then
``evaluate`` redrawing one status line on a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
from datetime import date
from pathlib import Path

from eval_pipeline.demo.logs import generate_logs
from eval_pipeline.lib.core.paths import DataHome
from eval_pipeline.runs import month_days, register_demo_models

ROOT = Path(__file__).resolve().parent.parent
STAMP = re.compile(r"^(\d\d:\d\d:\d\d) \+(\d+ s|\d+m \d\ds|\d+h \d\dm) ")
MONTHLY_STEPS = ["log_clusters", "eval_set", "annotation_tasks", "judge_labels", "judge_bias_probes"]


def command(home: DataHome, *args: str) -> list[str]:
    return [sys.executable, "-m", "eval_pipeline.cli", *args, "--home", str(home.root)]


def environment(home: DataHome, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "DAGSTER_HOME": str(home.dagster_home), **extra}
    env.pop("EVAL_PIPELINE_EXECUTOR", None)
    return env


def seconds(elapsed: str) -> int:
    if elapsed.endswith(" s"):
        return int(elapsed[:-2])
    big, small = elapsed.split()
    return int(big[:-1]) * (3600 if big.endswith("h") else 60) + int(small[:-1]) * (60 if big.endswith("h") else 1)


def on_a_terminal(cmd: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``cmd`` with stderr on a pseudo-terminal 200 columns wide (stdout a pipe):
    (exit code, stdout, what the terminal received)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    received = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the program closed its end
            break
        if not chunk:
            break
        received += chunk
    os.close(master)
    out = proc.stdout.read().decode()
    return proc.wait(timeout=300), out, received.decode()


def test_refresh_lines_name_each_day_and_step_in_order_then_evaluate_redraws_one_line(tmp_path):
    home = DataHome.resolve(tmp_path / "home").ensure()
    generate_logs(home.landing / "demo", date(2026, 2, 1), 28, 3, seed=4, truth_dir=home.demo_truth)
    # two worker processes run the days: their events reach the progress through the instance
    done = subprocess.run(command(home, "refresh", "--month", "2026-02", "--workers", "2"), env=environment(home),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    # stdout keeps the result alone; the progress is on stderr, with no control characters
    assert done.stdout.startswith("refresh 2026-02: 28 days, monthly jobs ['monthly_refresh_job']; ok")
    assert not STAMP.search(done.stdout) and not re.search(r"[\r\x1b]", done.stderr)
    lines = [line for line in done.stderr.splitlines() if STAMP.match(line)]
    said = [STAMP.sub("", line) for line in lines]
    assert said[0] == ("refresh 2026-02: landing_manifest; then 28 days (2026-02-01 to 2026-02-28); "
                       f"then {', '.join(MONTHLY_STEPS)}")
    assert re.fullmatch(r"refresh 2026-02: step landing_manifest done in \S+ s \(steps 1/1\)", said[1])
    days = [re.fullmatch(r"refresh 2026-02: day (\S+) done in \S+ s \(days (\d+)/28(, ~.+ left for the days)?\)", s)
            for s in said[2:30]]
    assert all(days), said[2:30]
    # every day once, in the order they ended, counted 1 to 28, with the estimate while days are left.
    # The last few may show none: an estimate under a second is not printed, and with two workers a
    # day takes about one, less the time the line waited for the next read of the event log.
    assert sorted(m[1] for m in days) == month_days("2026-02") and [int(m[2]) for m in days] == list(range(1, 29))
    assert all(m[3] for m in days[:20]) and not days[-1][3]
    steps = [re.fullmatch(r"refresh 2026-02: step (\w+) done in \S+ s \(steps (\d)/5\)", s) for s in said[30:35]]
    assert [m[1] for m in steps] == MONTHLY_STEPS and [int(m[2]) for m in steps] == [1, 2, 3, 4, 5]
    assert len(said) == 36 and re.fullmatch(r"refresh 2026-02: done in .+ \(28 days, 6 steps\)", said[-1])
    elapsed = [seconds(STAMP.match(line)[2]) for line in lines]
    assert elapsed == sorted(elapsed) and elapsed[-1] > 0

    # evaluate on a terminal: one status line redrawn with CR, the steps of the baseline's run and
    # then the candidate's, cleared at the end; the scorecard on stdout
    register_demo_models(home)
    code, out, received = on_a_terminal(command(home, "evaluate", "--model", "support-assistant:2026-09"),
                                        environment(home, TERM="xterm"))
    assert code in (0, 1, 2) and "verdict:" in out and "report:" in out, out + received
    assert not STAMP.search(received) and "Traceback" not in received
    draws = re.findall(r"\r([^\r\n\x1b]+)\x1b\[K", received)
    assert received.endswith("\r\x1b[K") and len(draws) >= 3, repr(received)
    assert draws[0] == "evaluate support-assistant:2026-09: baseline steps 0/3 done; then 5 steps | 0 s elapsed"
    assert all(d.startswith("evaluate support-assistant:2026-09: ") for d in draws)
    # the status moves forward only: (candidate's run?, steps done or on) never goes back
    where = []
    for d in draws:
        if d.startswith("evaluate support-assistant:2026-09: finishing | "):  # every step ended
            where.append((True, 5))
            continue
        found = re.search(r"(baseline|candidate) step(?:s (\d)/\d done| (\d)/\d \w+ \(\d+ s\))", d)
        assert found, d
        where.append((found[1] == "candidate", int(found[2] or int(found[3]) - 1)))
    assert where == sorted(where)
    assert {"model_registry", "candidate_outputs", "candidate_scores", "failure_review", "scorecard"} >= set(
        re.findall(r"step \d/\d (\w+)", received))
