"""What a long command shows while it runs: which days are done, running and left, the step a
run is on, the time so far and an estimate of the time left.

Plain Python: :class:`Tracker` holds the state (fed by ``eval_pipeline/progress.py``, which reads
it from Dagster's event log) and words it; :class:`Display` writes it to a stream, either as one
status line redrawn in place (a terminal) or as plain timestamped lines, one per finished day or
step (a pipe, a log file, CI), with no control characters.
"""

from __future__ import annotations

import io
import os
import re
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from eval_pipeline.lib.runs.day_plan import day_ranges

__all__ = ["MODES", "Display", "Stage", "Tracker", "format_duration", "open_display"]

MODES = ("auto", "plain", "none")
# running days named on the status line; more are counted ("+3")
_NAMED_RUNNING = 2
_FAILED = re.compile(r"(\d+ failed)")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def format_duration(seconds: float, precise: bool = False) -> str:
    """``4.2 s`` (with ``precise`` below a minute), ``42 s``, ``3m 05s``, ``1h 02m``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s" if precise and seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@dataclass
class _Item:
    """One day (its run) or one step: when it started and finished, whether it succeeded."""

    name: str
    started: float | None = None
    finished: float | None = None
    ok: bool | None = None
    step: str | None = None  # a day: the step its run is on
    note: str = ""  # e.g. the checks that failed
    skipped: bool = False  # a day that has no run (nothing to do): counted apart

    @property
    def running(self) -> bool:
        return self.started is not None and self.finished is None


@dataclass
class Stage:
    """A part of a command, done by the runs of one Dagster job.

    Attributes:
        job: the job whose runs do it.
        names: the days (partition keys; ``per_day``: one run each) or the step keys of one run, in order.
        per_day: one run per day rather than one run of several steps.
        label: said before its steps (e.g. ``baseline``).
        expected: seconds each step took the last time (a basis for the estimate before it runs).
    """

    job: str
    names: Sequence[str]
    per_day: bool = False
    label: str = ""
    expected: Mapping[str, float] = field(default_factory=dict)


class Tracker:
    """The progress of one command, from the starts and ends of its days and steps.

    Times are seconds since 1970 (event timestamps); every method that words something takes
    ``now`` so that the arithmetic can be checked without a clock.
    """

    def __init__(self, title: str, stages: Sequence[Stage], started: float) -> None:
        self.title = title
        self.stages = list(stages)
        self.started = started
        self.items: list[dict[str, _Item]] = [{n: _Item(n) for n in s.names} for s in self.stages]

    # --- events ---------------------------------------------------------------------------
    def _item(self, stage: int, name: str) -> _Item:
        items = self.items[stage]
        if name not in items:  # a step the plan did not list (e.g. a check of another release)
            items[name] = _Item(name)
        return items[name]

    def start(self, stage: int, name: str, at: float, step: str | None = None) -> None:
        """Day ``name`` (its run) or step ``name`` of ``stage`` started (``step``: a day's current step)."""
        item = self._item(stage, name)
        if item.started is None:
            item.started = at
        if step is not None:
            item.step = step

    def finish(self, stage: int, name: str, ok: bool, at: float, note: str = "") -> bool:
        """Day or step ``name`` ended; False when it had already ended (nothing to say again)."""
        item = self._item(stage, name)
        if item.finished is not None:
            return False
        item.started = at if item.started is None else item.started
        item.finished, item.ok, item.step = at, ok, None
        item.note = note or item.note
        return True

    def skip(self, stage: int, names: Sequence[str], at: float, note: str = "") -> list[str]:
        """Days ``names`` of ``stage`` will have no run (``note`` says why): they are counted apart,
        neither done nor left. Returns those skipped (a day already started is not)."""
        skipped = []
        for name in names:
            item = self._item(stage, name)
            if item.started is None and item.finished is None:
                item.started = item.finished = at
                item.skipped, item.note = True, note
                skipped.append(name)
        return skipped

    def skipped(self, stage: int) -> list[str]:
        """The days of ``stage`` skipped, in order."""
        return [item.name for item in self.items[stage].values() if item.skipped]

    def add_note(self, stage: int, name: str, note: str) -> None:
        item = self._item(stage, name)
        item.note = f"{item.note}, {note}" if item.note else note

    # --- counting -------------------------------------------------------------------------
    def _counts(self, stage: int) -> tuple[int, int, int, int]:
        """(finished, failed, running, total) of a stage, its skipped days left out."""
        items = [i for i in self.items[stage].values() if not i.skipped]
        return (sum(i.finished is not None for i in items), sum(i.ok is False for i in items),
                sum(i.running for i in items), len(items))

    def _active(self) -> int | None:
        """The first stage not finished (None: all are)."""
        for index in range(len(self.stages)):
            finished, _, _, total = self._counts(index)
            if finished < total:
                return index
        return None

    def failed(self) -> list[str]:
        return [item.name for items in self.items for item in items.values() if item.ok is False]

    def complete(self) -> bool:
        return self._active() is None

    # --- the estimate ---------------------------------------------------------------------
    def stage_remaining(self, stage: int, now: float) -> float | None:
        """Seconds a stage has left, or None while it has no basis.

        A per-day stage: its days so far took ``(last end - first start) / days done`` each (the
        days in parallel included), so the rest take that times the days left, less the time
        since the last one ended. A stage of steps: each step not done takes what it took last
        time (``Stage.expected``), less the time it has run.
        """
        items = [i for i in self.items[stage].values() if not i.skipped]
        if self.stages[stage].per_day:
            done = [i for i in items if i.finished is not None]
            if len(done) == len(items):
                return 0.0
            if not done:
                return None
            first = min(i.started for i in items if i.started is not None)
            last = max(i.finished for i in done)
            per_day = (last - first) / len(done)
            return max(0.0, per_day * (len(items) - len(done)) - (now - last))
        total = 0.0
        for item in items:
            if item.finished is not None:
                continue
            if item.name not in self.stages[stage].expected:
                return None
            ran = now - item.started if item.started is not None else 0.0
            total += max(0.0, self.stages[stage].expected[item.name] - ran)
        return total

    def remaining(self, now: float) -> float | None:
        """Seconds left in all, or None while some stage not finished has no basis yet."""
        parts = [self.stage_remaining(index, now) for index in range(len(self.stages))]
        return None if None in parts else sum(parts)

    # --- wording --------------------------------------------------------------------------
    def _left(self, now: float) -> str:
        """``, ~1m 30s left``; ``, ~40 s left for the days`` when only the days have a basis yet."""
        left = self.remaining(now)
        if left is not None:
            return f", ~{format_duration(left)} left" if left >= 1 else ""
        active = self._active()
        if active is not None and self.stages[active].per_day:
            days = self.stage_remaining(active, now)
            if days is not None and days >= 1:
                return f", ~{format_duration(days)} left for the days"
        return ""

    def _later(self, after: int) -> str:
        """What comes after stage ``after``: ``then 4 steps`` / ``then 28 days, 4 steps``."""
        days = sum(self._counts(i)[3] for i in range(after + 1, len(self.stages)) if self.stages[i].per_day)
        steps = sum(len(self.items[i]) for i in range(after + 1, len(self.stages)) if not self.stages[i].per_day)
        parts = ([_count(days, "day")] if days else []) + ([_count(steps, "step")] if steps else [])
        return f"; then {', '.join(parts)}" if parts else ""

    def _prefix(self, stage: int) -> str:
        return f"{self.stages[stage].label} " if self.stages[stage].label else ""

    def status(self, now: float) -> str:
        """The one-line status: the active stage, what comes after it, time so far and left."""
        active = self._active()
        elapsed = f"{format_duration(now - self.started)} elapsed{self._left(now)}"
        if active is None:
            return f"{self.title}: finishing | {elapsed}"
        finished, failed, running, total = self._counts(active)
        fails = f", {failed} failed" if failed else ""
        if self.stages[active].per_day:
            busy = [i for i in self.items[active].values() if i.running]
            named = ", ".join(f"{i.name}{' ' + i.step if i.step else ''}" for i in busy[:_NAMED_RUNNING])
            more = f" +{len(busy) - _NAMED_RUNNING}" if len(busy) > _NAMED_RUNNING else ""
            skips = f", {len(self.skipped(active))} skipped" if self.skipped(active) else ""
            now_part = (f"days {finished}/{total} done{fails}{skips}, {running} running{f' ({named}{more})' if busy else ''}, "
                        f"{total - finished - running} left")
        else:
            current = next((i for i in self.items[active].values() if i.running), None)
            if current is not None:
                position = list(self.items[active]).index(current.name) + 1
                now_part = (f"{self._prefix(active)}step {position}/{total} {current.name} "
                            f"({format_duration(now - current.started)}){fails}")
            else:
                now_part = f"{self._prefix(active)}steps {finished}/{total} done{fails}"
        return f"{self.title}: {now_part}{self._later(active)} | {elapsed}"

    def plan_line(self) -> str:
        """What will run, in order: ``landing_manifest; then 28 days (2026-02-01 to 2026-02-28); then
        log_clusters, eval_set, ...``."""
        parts = []
        for index, stage in enumerate(self.stages):
            names = list(self.items[index])
            if stage.per_day:
                parts.append(f"{len(names)} days ({names[0]} to {names[-1]})" if names else "no days")
            else:
                parts.append(f"{self._prefix(index)}{', '.join(names)}")
        return f"{self.title}: {'; then '.join(parts)}"

    def skipped_line(self, stage: int, names: Sequence[str], now: float) -> str:
        """Said when days are found to need no run: how many, which, why, and the days left to run."""
        note = self.items[stage][names[0]].note if names else ""
        _, _, _, total = self._counts(stage)
        return (f"{self.title}: {_count(len(names), 'day')} skipped{f' ({note})' if note else ''}: {day_ranges(names)} "
                f"({_count(total, 'day')} to run)")

    def finished_line(self, stage: int, name: str, now: float) -> str:
        """Said when a day or step ended: its time, the stage's count, the time left."""
        item = self.items[stage][name]
        finished, failed, _, total = self._counts(stage)
        took = format_duration((item.finished or now) - (item.started or now), precise=True)
        outcome = "done" if item.ok else "FAILED"
        note = f" ({item.note})" if item.note else ""
        fails = f", {failed} failed" if failed else ""
        what = "day" if self.stages[stage].per_day else f"{self._prefix(stage)}step"
        count = "days" if self.stages[stage].per_day else "steps"
        return (f"{self.title}: {what} {name} {outcome} in {took}{note} "
                f"({count} {finished}/{total}{fails}{self._left(now)})")

    def final_line(self, now: float) -> str:
        """The last line: done or failed, in how long, what ran."""
        took = format_duration(now - self.started)
        ended = [(stage.per_day, item.finished is not None) for stage, items in zip(self.stages, self.items)
                 for item in items.values() if not item.skipped]
        days = sum(done for per_day, done in ended if per_day)
        steps = sum(done for per_day, done in ended if not per_day)
        skipped = sum(len(self.skipped(i)) for i, stage in enumerate(self.stages) if stage.per_day)
        ran = ", ".join(([_count(days, "day")] if any(s.per_day for s in self.stages) else [])
                        + ([f"{skipped} skipped"] if skipped else []) + [_count(steps, "step")])
        if failed := self.failed():
            return f"{self.title}: FAILED after {took} ({ran}; failed: {', '.join(failed)})"
        if not self.complete():
            left = sum(self._counts(i)[3] - self._counts(i)[0] for i in range(len(self.items)))
            return f"{self.title}: stopped after {took} ({ran}; {left} not run)"
        return f"{self.title}: done in {took} ({ran})"


class Display:
    """Writes a :class:`Tracker` to a stream: ``live`` redraws one status line in place (carriage
    return, cleared at the end), otherwise one timestamped line per finished day or step.

    Args:
        stream: where it goes (stderr, so that stdout keeps a command's results).
        live: redraw a status line (a terminal) rather than write lines.
        color: the count of failed days or steps in red on the status line (not with ``NO_COLOR``).
        clock: seconds since 1970 (``time.time``; a test passes its own).
    """

    def __init__(self, stream: TextIO, live: bool, color: bool = False, clock=time.time) -> None:
        self.stream, self.live, self.color, self.clock = stream, live, color, clock
        self.tracker: Tracker | None = None
        self._lock = threading.RLock()
        self._drawn = 0  # characters of the status line on the screen

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        return max(20, columns - 1) if columns else 119  # a terminal that reports no size: 120 columns

    def _stamp(self, now: float) -> str:
        return f"{time.strftime('%H:%M:%S', time.localtime(now))} +{format_duration(now - self.tracker.started)}"

    def _line(self, text: str, now: float) -> None:
        self.stream.write(f"{self._stamp(now)} {text}\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")  # carriage return, erase to the end of the line
            self._drawn = 0

    # --- what a watcher calls ---------------------------------------------------------------
    def begin(self, tracker: Tracker) -> None:
        with self._lock:
            self.tracker = tracker
            if not self.live:
                self._line(tracker.plan_line(), tracker.started)
                return
            if sys.stderr is self.stream:  # what this process writes to stderr meanwhile (Dagster's warnings)
                sys.stderr = _Above(self)  # goes above the status line
            self.redraw()

    def finished(self, stage: int, name: str) -> None:
        """A day or step ended (already recorded in the tracker)."""
        with self._lock:
            if not self.live and self.tracker is not None:
                now = self.clock()
                self._line(self.tracker.finished_line(stage, name, now), now)

    def skipped(self, stage: int, names: Sequence[str]) -> None:
        """Days found to need no run (already recorded in the tracker): a line, or the status line again."""
        with self._lock:
            if self.tracker is None:
                return
            if not self.live:
                now = self.clock()
                self._line(self.tracker.skipped_line(stage, names, now), now)
            else:
                self.redraw()

    def redraw(self) -> None:
        """The status line again (elapsed time moves on): only when ``live``."""
        with self._lock:
            if not self.live or self.tracker is None:
                return
            text = _fit(self.tracker.status(self.clock()), self._width())
            shown = _FAILED.sub("\x1b[31m\\1\x1b[0m", text) if self.color else text  # red
            self.stream.write(f"\r{shown}\x1b[K")
            self._drawn = len(text)
            self.stream.flush()

    def above(self, text: str, stream: TextIO | None = None) -> None:
        """Write a line of the command's own (to ``stream``, default stdout) without the status
        line running into it: cleared first, redrawn after."""
        with self._lock:
            if self.live:
                self._clear()
                self.stream.flush()
            print(text, file=stream or sys.stdout, flush=True)
            if self.live and self.tracker is not None:
                self.redraw()

    def end(self) -> None:
        """The live line cleared; the plain lines end with the final line."""
        with self._lock:
            if self.tracker is None:
                return
            if self.live:
                self._clear()
                if isinstance(sys.stderr, _Above) and sys.stderr.display is self:
                    sys.stderr = self.stream
            else:
                now = self.clock()
                self._line(self.tracker.final_line(now), now)
            self.stream.flush()
            self.tracker = None


def _fit(status: str, width: int) -> str:
    """``status`` in ``width`` characters: the middle cut ("...") so that the time stays in view."""
    if len(status) <= width:
        return status
    head, _, tail = status.rpartition(" | ")
    room = width - len(tail) - len(" | ") - len("...")
    return f"{head[:room]}... | {tail}" if head and room >= 10 else status[:width]


class _Above(io.TextIOBase):
    """``sys.stderr`` while a live status line is shown: the status line is cleared before a
    write and drawn again after a whole line, so other output does not run into it."""

    def __init__(self, display: Display) -> None:
        super().__init__()
        self.display = display

    def write(self, text: str) -> int:
        with self.display._lock:
            self.display._clear()
            written = self.display.stream.write(text)
            if text.endswith("\n"):
                self.display.redraw()
            return written

    def flush(self) -> None:
        self.display.stream.flush()

    def isatty(self) -> bool:
        return self.display.stream.isatty()

    def fileno(self) -> int:
        return self.display.stream.fileno()

    @property
    def encoding(self) -> str:
        return self.display.stream.encoding

    @property
    def errors(self) -> str | None:
        return self.display.stream.errors

    def __getattr__(self, name: str):  # ``buffer`` and whatever else the stream has
        return getattr(self.display.stream, name)


def open_display(mode: str = "auto", stream: TextIO | None = None, env: Mapping[str, str] | None = None,
                 clock=time.time) -> Display | None:
    """The display for ``--progress MODE``: ``none`` -> None; ``plain`` -> lines; ``auto`` -> a
    live line on a terminal, plain lines elsewhere and on ``TERM=dumb`` (it takes no escape sequences).
    ``NO_COLOR`` (https://no-color.org) turns the colour off."""
    if mode not in MODES:
        raise ValueError(f"progress {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "none":
        return None
    stream = sys.stderr if stream is None else stream
    env = os.environ if env is None else env
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    dumb = env.get("TERM", "") == "dumb"
    live = mode == "auto" and tty and not dumb
    return Display(stream, live=live, color=live and not env.get("NO_COLOR"), clock=clock)
