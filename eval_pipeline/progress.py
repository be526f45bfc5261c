"""Progress of a command's Dagster runs, read from the instance's event log while they run.

:func:`watch_runs` tags the runs a command launches (``eval_pipeline/progress=<id>``) and a
thread polls the instance (twice a second on a terminal, once elsewhere) for the runs with that
tag and their step and run events (``STEP_START``, ``STEP_SUCCESS``, ``RUN_SUCCESS``, ...), wherever they execute:
in this process, in the day worker processes, in the multiprocess executor's step processes or
on a Dask cluster, since all of them write their events to the same instance. The state and its
wording are ``lib/runs/progress.py``'s.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import dagster as dg
from dagster import DagsterEventType

from eval_pipeline.lib.runs.progress import Display, Stage, Tracker

__all__ = ["PLAIN_POLL_SECONDS", "POLL_SECONDS", "PROGRESS_TAG", "expected_steps", "job_steps", "skip_days",
           "watch_runs"]

PROGRESS_TAG = "eval_pipeline/progress"
# Seconds between two reads of the instance: twice a second for a status line a person watches,
# once for plain lines. A read costs about 6-12 ms of CPU (SQLite storage, 30 runs).
POLL_SECONDS = 0.5
PLAIN_POLL_SECONDS = 1.0
_PARTITION_TAG = "dagster/partition"
_EVENTS = {DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE,
           DagsterEventType.RUN_CANCELED, DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS,
           DagsterEventType.STEP_FAILURE, DagsterEventType.STEP_SKIPPED, DagsterEventType.ASSET_CHECK_EVALUATION}
_RUN_END = {DagsterEventType.RUN_SUCCESS: True, DagsterEventType.RUN_FAILURE: False,
            DagsterEventType.RUN_CANCELED: False}
# the watchers of the commands in progress in this process, by their tag (for :func:`skip_days`)
_WATCHERS: dict[str, "_Watcher"] = {}


def job_steps(defs: dg.Definitions, job_name: str) -> list[str]:
    """The step keys of a job's run, in the order they run (an asset job's steps are its nodes)."""
    return [node.name for node in defs.resolve_job_def(job_name).graph.nodes_in_topological_order]


def expected_steps(instance: dg.DagsterInstance, job_name: str) -> dict[str, float]:
    """Seconds each step of ``job_name`` took in its latest successful run ({} when none)."""
    found = instance.get_run_records(dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.SUCCESS]),
                                     limit=1)
    if not found:
        return {}
    return {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(found[0].dagster_run.run_id)
            if s.start_time is not None and s.end_time is not None}


@dataclass
class _Watched:
    """A run of the command and where its events go: the stage, and the day for a per-day stage."""

    stage: int
    day: str | None
    cursor: str | None = None
    ended: bool = False
    failed: bool = False  # a day's run: a step or a check of it failed


class _Watcher:
    def __init__(self, instance: dg.DagsterInstance, display: Display, tracker: Tracker, tag: str) -> None:
        self.instance, self.display, self.tracker, self.tag = instance, display, tracker, tag
        self.runs: dict[str, _Watched] = {}
        self.newest: datetime | None = None  # the latest creation time seen: only runs from then on are asked for
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self.lock = threading.Lock()

    def _bind(self, run: dg.DagsterRun) -> _Watched:
        """Which stage a new run of the command fills: its day's, or the first stage of its job
        that no run has taken yet."""
        taken = {w.stage for w in self.runs.values() if w.day is None}
        day = run.tags.get(_PARTITION_TAG)
        for index, stage in enumerate(self.tracker.stages):
            if stage.job != run.job_name:
                continue
            if stage.per_day and day in stage.names:
                return _Watched(index, day)
            if not stage.per_day and index not in taken:
                return _Watched(index, None)
        return _Watched(-1, None)  # not part of the plan: its events are not shown

    def poll(self) -> None:
        with self.lock:
            since = None if self.newest is None else self.newest - timedelta(seconds=1)  # a margin for clocks' steps
            records = self.instance.get_run_records(dg.RunsFilter(tags={PROGRESS_TAG: self.tag}, created_after=since))
            for record in sorted(records, key=lambda r: r.create_timestamp.timestamp()):
                run = record.dagster_run
                if run.run_id not in self.runs:
                    self.runs[run.run_id] = self._bind(run)
                self.newest = max(self.newest or record.create_timestamp, record.create_timestamp)
            for run_id, watched in self.runs.items():
                if watched.ended or watched.stage < 0:
                    continue
                has_more = True
                while has_more:
                    found = self.instance.get_records_for_run(run_id, cursor=watched.cursor, of_type=_EVENTS)
                    watched.cursor, has_more = found.cursor, found.has_more
                    for event_record in found.records:
                        self._apply(watched, event_record.event_log_entry)

    def _apply(self, watched: _Watched, entry) -> None:
        event = entry.dagster_event
        if event is None:
            return
        kind, at, stage = event.event_type, entry.timestamp, watched.stage
        if watched.day is not None:  # a day's run: the day is its run
            if kind in (DagsterEventType.RUN_START, DagsterEventType.STEP_START):
                self.tracker.start(stage, watched.day, at, step=event.step_key)
            elif kind == DagsterEventType.ASSET_CHECK_EVALUATION and not event.event_specific_data.passed:
                watched.failed = True  # as the refresh counts it: a day whose check failed failed
                self.tracker.add_note(stage, watched.day, f"check {event.event_specific_data.check_name} failed")
            elif kind == DagsterEventType.STEP_FAILURE:
                watched.failed = True
                self.tracker.add_note(stage, watched.day, f"step {event.step_key} failed")
            elif kind in _RUN_END:
                watched.ended = True
                if self.tracker.finish(stage, watched.day, _RUN_END[kind] and not watched.failed, at):
                    self.display.finished(stage, watched.day)
            return
        if kind == DagsterEventType.STEP_START:
            self.tracker.start(stage, event.step_key, at)
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE, DagsterEventType.STEP_SKIPPED):
            if self.tracker.finish(stage, event.step_key, kind == DagsterEventType.STEP_SUCCESS, at,
                                   note="skipped" if kind == DagsterEventType.STEP_SKIPPED else ""):
                self.display.finished(stage, event.step_key)
        elif kind == DagsterEventType.ASSET_CHECK_EVALUATION and not event.event_specific_data.passed:
            self.tracker.add_note(stage, event.step_key, f"check {event.event_specific_data.check_name} failed")
        elif kind in _RUN_END:
            watched.ended = True

    def skip(self, days: Sequence[str], note: str) -> None:
        """``days`` of the per-day stage will have no run: shown as skipped, with ``note``."""
        with self.lock:
            for index, stage in enumerate(self.tracker.stages):
                if stage.per_day:
                    skipped = self.tracker.skip(index, [day for day in days if day in stage.names], time.time(), note)
                    if skipped:
                        self.display.skipped(index, skipped)
                    return

    def _loop(self) -> None:
        while not self.stop.wait(POLL_SECONDS if self.display.live else PLAIN_POLL_SECONDS):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - progress must never stop the command (a storage busy for a
                pass  # moment, a run being written): the next poll reads on from the same cursors
            self.display.redraw()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        try:
            self.poll()  # the events of the last moments
        except Exception:  # noqa: BLE001 - as in _loop
            pass
        self.display.end()


@contextmanager
def watch_runs(instance: dg.DagsterInstance, display: Display | None, title: str,
               stages: Sequence[Stage]) -> Iterator[dict[str, str]]:
    """Show the progress of the runs launched inside the block on ``display`` (nothing when None).

    Yields the tags to put on each of those runs. ``stages`` are the parts of the command in
    order; a stage of steps without ``expected`` times gets them from the job's latest
    successful run (the basis of the estimate before it runs).
    """
    if display is None:
        yield {}
        return
    filled = []
    for stage in stages:
        if not stage.per_day and not stage.expected:
            try:
                stage = replace(stage, expected=expected_steps(instance, stage.job))
            except Exception:  # noqa: BLE001 - no history to estimate from: the estimate waits
                pass
        filled.append(stage)
    tag = uuid.uuid4().hex
    watcher = _Watcher(instance, display, Tracker(title, filled, time.time()), tag)
    display.begin(watcher.tracker)
    watcher.thread.start()
    _WATCHERS[tag] = watcher
    try:
        yield {PROGRESS_TAG: tag}
    finally:
        _WATCHERS.pop(tag, None)
        watcher.close()


def skip_days(tags: dict[str, str], days: Sequence[str], note: str = "no records") -> None:
    """Days of the command watched with ``tags`` (what :func:`watch_runs` yielded) that will not
    run: the display shows them as skipped (``note`` says why) rather than left to do. Nothing
    happens when the command is not watched."""
    watcher = _WATCHERS.get(tags.get(PROGRESS_TAG, ""))
    if watcher is not None:
        watcher.skip(days, note)
