"""The progress of a command: the estimate's arithmetic, the status wording, and what reaches a
terminal (a real pseudo-terminal) against a pipe or a file."""

from __future__ import annotations

import fcntl
import io
import os
import re
import select
import struct
import sys
import termios

import pytest

from eval_pipeline.lib.runs.progress import Display, Stage, Tracker, format_duration, open_display

DAYS = ["2026-02-01", "2026-02-02", "2026-02-03", "2026-02-04"]
T0 = 1_780_000_000.0  # any moment: the arithmetic is relative to it


def month(expected: dict[str, float] | None = None) -> Tracker:
    """A refresh's shape: one manifest step, four days, two monthly steps."""
    steps = expected if expected is not None else {"log_clusters": 20, "eval_set": 4}
    manifest = Stage("landing_manifest_job", ["landing_manifest"], expected={"landing_manifest": 1})
    return Tracker("refresh 2026-02", [manifest, Stage("ingest_job", DAYS, per_day=True),
                                       Stage("monthly_refresh_job", ["log_clusters", "eval_set"], expected=steps)],
                   started=T0)


def two_days_done(tracker: Tracker) -> None:
    """The manifest took 2 s; days 1 and 2 ran side by side from +2 s and ended at +10 s and +12 s."""
    tracker.start(0, "landing_manifest", T0)
    tracker.finish(0, "landing_manifest", True, T0 + 2)
    for day, end in ((DAYS[0], 10), (DAYS[1], 12)):
        tracker.start(1, day, T0 + 2, step="ingested_logs")
        tracker.finish(1, day, True, T0 + end)
    tracker.start(1, DAYS[2], T0 + 10, step="redacted_logs")


@pytest.mark.parametrize("seconds, precise, text", [
    (0, False, "0 s"), (4.24, True, "4.2 s"), (4.24, False, "4 s"), (42.4, True, "42 s"), (59.6, False, "60 s"),
    (65, False, "1m 05s"), (3599, False, "59m 59s"), (3720, False, "1h 02m"), (-3, False, "0 s"),
])
def test_durations_read_as_a_person_would_say_them(seconds, precise, text):
    assert format_duration(seconds, precise) == text


def test_the_estimate_is_the_days_so_far_per_day_times_the_days_left_plus_the_steps_last_times():
    tracker = month()
    assert tracker.remaining(T0 + 1) is None  # no day has finished: no basis for the days yet
    two_days_done(tracker)
    # 2 days in 10 s (from the first start at +2 s to the last end at +12 s): 5 s a day, 2 days left
    assert tracker.stage_remaining(1, T0 + 12) == 10
    assert tracker.remaining(T0 + 12) == 10 + 20 + 4
    assert tracker.remaining(T0 + 15) == 7 + 20 + 4  # counts down between two ends
    assert tracker.stage_remaining(1, T0 + 40) == 0  # late: never below nothing
    for day, end in ((DAYS[2], 16), (DAYS[3], 18)):
        tracker.finish(1, day, True, T0 + end)
    tracker.start(2, "log_clusters", T0 + 18)
    assert tracker.remaining(T0 + 26) == 12 + 4  # log_clusters has run 8 of its 20 s
    assert tracker.remaining(T0 + 60) == 4  # overdue: nothing more is expected of it
    tracker.finish(2, "log_clusters", True, T0 + 60)
    tracker.start(2, "eval_set", T0 + 60)
    tracker.finish(2, "eval_set", True, T0 + 63)
    assert tracker.remaining(T0 + 63) == 0 and tracker.complete()


def test_without_the_steps_last_times_only_the_days_are_estimated():
    tracker = month(expected={"log_clusters": 20})  # eval_set never ran before
    two_days_done(tracker)
    assert tracker.remaining(T0 + 12) is None
    assert tracker.status(T0 + 12).endswith("| 12 s elapsed, ~10 s left for the days")
    tracker.finish(1, DAYS[2], True, T0 + 16)
    tracker.start(1, DAYS[3], T0 + 16)
    tracker.finish(1, DAYS[3], True, T0 + 18)
    assert tracker.status(T0 + 18).endswith("| 18 s elapsed")  # the steps have no basis: no estimate


def test_the_status_names_the_running_days_and_steps_and_what_is_left():
    tracker = month()
    two_days_done(tracker)
    tracker.start(1, DAYS[3], T0 + 12, step="raw_logs_records_reconcile")
    assert tracker.status(T0 + 13) == (
        "refresh 2026-02: days 2/4 done, 2 running (2026-02-03 redacted_logs, 2026-02-04 raw_logs_records_reconcile), "
        "0 left; then 2 steps | 13 s elapsed, ~33 s left")
    tracker.finish(1, DAYS[2], False, T0 + 14, note="check redacted_logs_no_pii_leak failed")
    # 3 days in 12 s: 4 s for the last one, then the steps' 24 s
    assert tracker.finished_line(1, DAYS[2], T0 + 14) == (
        "refresh 2026-02: day 2026-02-03 FAILED in 4.0 s (check redacted_logs_no_pii_leak failed) "
        "(days 3/4, 1 failed, ~28 s left)")
    tracker.finish(1, DAYS[3], True, T0 + 15)
    tracker.start(2, "log_clusters", T0 + 15)
    assert tracker.status(T0 + 17) == "refresh 2026-02: step 1/2 log_clusters (2 s) | 17 s elapsed, ~22 s left"
    tracker.finish(2, "log_clusters", True, T0 + 35)
    assert tracker.status(T0 + 36) == "refresh 2026-02: steps 1/2 done | 36 s elapsed, ~4 s left"


def test_the_final_line_says_done_failed_or_stopped():
    tracker = month()
    two_days_done(tracker)
    assert tracker.final_line(T0 + 13) == "refresh 2026-02: stopped after 13 s (2 days, 1 step; 4 not run)"
    tracker.finish(1, DAYS[2], False, T0 + 14)
    assert tracker.final_line(T0 + 14) == "refresh 2026-02: FAILED after 14 s (3 days, 1 step; failed: 2026-02-03)"
    done = Tracker("evaluate m:2", [Stage("evaluation_job", ["model_registry", "scorecard"])], started=T0)
    for step, at in (("model_registry", 1), ("scorecard", 3)):
        done.start(0, step, T0 + at - 1)
        done.finish(0, step, True, T0 + at)
    assert done.final_line(T0 + 65) == "evaluate m:2: done in 1m 05s (2 steps)"
    assert not done.finish(0, "scorecard", True, T0 + 70)  # an end seen twice is said once


def test_skipped_days_are_counted_apart_neither_done_nor_left():
    tracker = month()
    tracker.start(0, "landing_manifest", T0)
    tracker.finish(0, "landing_manifest", True, T0 + 2)
    assert tracker.skip(1, [DAYS[0], DAYS[3]], T0 + 2, "no records") == [DAYS[0], DAYS[3]]
    assert tracker.skip(1, [DAYS[0]], T0 + 3) == []  # said once
    assert tracker.skipped(1) == [DAYS[0], DAYS[3]]
    assert tracker.skipped_line(1, [DAYS[0], DAYS[3]], T0 + 2) == (
        "refresh 2026-02: 2 days skipped (no records): 2026-02-01, 2026-02-04 (2 days to run)")
    tracker.start(1, DAYS[1], T0 + 2, step="ingested_logs")
    assert tracker.status(T0 + 3).startswith(
        "refresh 2026-02: days 0/2 done, 2 skipped, 1 running (2026-02-02 ingested_logs), 1 left; then 2 steps")
    tracker.finish(1, DAYS[1], True, T0 + 6)
    # the estimate is of the days that run: 4 s for one, one left (the skipped ones took no time)
    assert tracker.stage_remaining(1, T0 + 6) == 4
    tracker.start(1, DAYS[2], T0 + 6)
    tracker.finish(1, DAYS[2], True, T0 + 10)
    assert tracker.stage_remaining(1, T0 + 10) == 0
    for step, at in (("log_clusters", 30), ("eval_set", 34)):
        tracker.start(2, step, T0 + at - 4)
        tracker.finish(2, step, True, T0 + at)
    assert tracker.complete() and not tracker.failed()
    assert tracker.final_line(T0 + 34) == "refresh 2026-02: done in 34 s (2 days, 2 skipped, 3 steps)"


def test_a_month_of_skipped_days_goes_straight_to_the_monthly_steps():
    tracker = month()
    tracker.start(0, "landing_manifest", T0)
    tracker.finish(0, "landing_manifest", True, T0 + 2)
    tracker.skip(1, DAYS, T0 + 2, "no records")
    assert tracker.stage_remaining(1, T0 + 2) == 0
    assert tracker.status(T0 + 2).startswith("refresh 2026-02: steps 0/2 done | ")
    assert tracker.final_line(T0 + 3) == "refresh 2026-02: stopped after 3 s (0 days, 4 skipped, 1 step; 2 not run)"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


STAMP = r"\d\d:\d\d:\d\d \+\S+( \S+)? "


def test_plain_lines_one_per_finished_day_and_step_with_no_control_characters():
    out, clock = io.StringIO(), Clock()
    display = open_display("auto", stream=out, env={"TERM": "xterm"}, clock=clock)  # not a terminal: lines
    assert display is not None and not display.live
    tracker = month()
    display.begin(tracker)
    two_days_done(tracker)
    clock.now = T0 + 12
    display.finished(0, "landing_manifest")
    display.finished(1, DAYS[0])
    tracker.skip(1, [DAYS[3]], T0 + 12, "no records")
    display.skipped(1, [DAYS[3]])
    display.redraw()  # nothing: a redraw is for a terminal
    display.end()
    lines = out.getvalue().splitlines()
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", out.getvalue())
    assert all(re.match(STAMP, line) for line in lines), lines
    assert [re.sub(STAMP, "", line, count=1) for line in lines] == [
        "refresh 2026-02: landing_manifest; then 4 days (2026-02-01 to 2026-02-04); then log_clusters, eval_set",
        "refresh 2026-02: step landing_manifest done in 2.0 s (steps 1/1, ~34 s left)",
        "refresh 2026-02: day 2026-02-01 done in 8.0 s (days 2/4, ~34 s left)",
        "refresh 2026-02: 1 day skipped (no records): 2026-02-04 (3 days to run)",
        "refresh 2026-02: stopped after 12 s (2 days, 1 skipped, 1 step; 3 not run)",
    ]
    assert lines[-1].split(" ", 2)[1] == "+12"  # elapsed since the start


def test_none_is_nothing_and_an_unknown_mode_is_an_error():
    assert open_display("none", stream=io.StringIO()) is None
    with pytest.raises(ValueError, match="expected one of auto, plain, none"):
        open_display("fancy", stream=io.StringIO())


@pytest.fixture
def terminal():
    """A real pseudo-terminal, 100 columns wide: (what the program writes to, what the terminal got)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    stream = open(slave, "w", encoding="utf-8", closefd=True)

    def received() -> str:
        stream.flush()
        got = b""
        while select.select([master], [], [], 0.2)[0]:
            got += os.read(master, 65536)
        return got.decode()

    yield stream, received
    stream.close()
    os.close(master)


def draws(got: str) -> list[str]:
    """The status lines drawn (each ``CR text ESC[K``), colour codes taken out."""
    return [re.sub(r"\x1b\[[0-9;]*m", "", d) for d in re.findall(r"\r((?:[^\r\n\x1b]|\x1b\[[0-9;]*m)+)\x1b\[K", got)]


def test_on_a_terminal_one_line_is_redrawn_in_place_and_cleared_at_the_end(terminal, monkeypatch):
    stream, received = terminal
    clock = Clock()
    display = open_display("auto", stream=stream, env={"TERM": "xterm-256color"}, clock=clock)
    assert display.live and display.color
    monkeypatch.setattr(sys, "stderr", stream)
    tracker = month()
    display.begin(tracker)
    assert isinstance(sys.stderr, io.TextIOBase) and sys.stderr is not stream  # other stderr output goes above
    assert sys.stderr.encoding == "utf-8" and sys.stderr.isatty() and sys.stderr.fileno() == stream.fileno()
    two_days_done(tracker)
    clock.now = T0 + 12
    display.finished(1, DAYS[0])  # no line of its own: the status line says it
    display.redraw()
    tracker.finish(1, DAYS[2], False, T0 + 13)
    clock.now = T0 + 13
    display.redraw()
    print("a warning from a run", file=sys.stderr)
    display.above("refresh's own line", stream)  # the command's stdout, on the same terminal
    display.end()
    assert sys.stderr is stream
    got = received()
    # every drawing starts at the line's beginning and erases what a longer one left; the end clears it
    drawn = draws(got)
    assert len(drawn) == 5 and got.endswith("\r\x1b[K") and "\n" not in got.replace("\r\n", "")
    # cut to the terminal's 100 columns in the middle: the time stays in view
    assert all(len(line) <= 99 and re.search(r"\| \d+ s elapsed(, ~\d+ s left)?$", line) for line in drawn), drawn
    assert drawn[0] == "refresh 2026-02: steps 0/1 done; then 4 days, 2 steps | 0 s elapsed"
    assert drawn[1] == ("refresh 2026-02: days 2/4 done, 1 running (2026-02-03 redacted_logs),... "
                        "| 12 s elapsed, ~34 s left")
    assert "days 3/4 done, \x1b[31m1 failed\x1b[0m, 0 running, 1 left" in got  # the failed count in red
    # the warning and the command's line are on lines of their own, the status line cleared before each
    assert "\r\x1b[Ka warning from a run\r\n\r" in got and "\r\x1b[Krefresh's own line\r\n\r" in got


def test_no_color_and_a_dumb_terminal(terminal):
    stream, received = terminal
    plain = open_display("auto", stream=stream, env={"TERM": "dumb"})
    assert plain is not None and not plain.live  # it takes no escape sequences: lines
    assert not open_display("plain", stream=stream, env={"TERM": "xterm"}).live
    uncoloured = open_display("auto", stream=stream, env={"TERM": "xterm", "NO_COLOR": "1"}, clock=lambda: T0 + 5)
    assert uncoloured.live and not uncoloured.color
    tracker = Tracker("evaluate m:2", [Stage("evaluation_job", ["model_registry", "scorecard"])], started=T0)
    tracker.start(0, "model_registry", T0)
    tracker.finish(0, "model_registry", False, T0 + 1)
    uncoloured.begin(tracker)
    uncoloured.end()
    got = received()
    assert draws(got) == ["evaluate m:2: steps 1/2 done, 1 failed | 5 s elapsed"] and "\x1b[31m" not in got
