"""Which days of a month's refresh need a run.

A day's ingest run reads the landing files the manifest lists for that day and replaces the
day's partitions with what it found. A day that no landing line is anchored to and that has
nothing stored (no rows, no materialization) would replace nothing with nothing: such a day is
not run. Every other day is, including a day whose files were removed (its partitions must be
emptied) and a day whose only lines are unreadable (they must be quarantined).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

__all__ = ["DayPlan", "day_ranges", "days_in_manifest", "plan_days"]


@dataclass(frozen=True)
class DayPlan:
    """The days of a refresh that run, and those skipped because they have no records and nothing stored."""

    run: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def days_in_manifest(day_indexes: Iterable[str | None]) -> set[str] | None:
    """The days the landing manifest's ``days`` column (one JSON object ``{day: lines}`` per file)
    anchors any line to, whatever the count (quarantined and unreadable lines included).

    None when an index cannot be read as such an object: the caller cannot tell which days are
    empty, so every day runs."""
    found: set[str] = set()
    for index in day_indexes:
        if index is None:
            continue
        try:
            held = json.loads(index)
        except (TypeError, ValueError):
            return None
        if not isinstance(held, dict):
            return None
        found.update(str(day) for day in held)
    return found


def plan_days(days: Iterable[str], with_records: set[str] | None, stored: set[str] | None) -> DayPlan:
    """Split ``days`` (in order) into those that run and those skipped.

    Args:
        days: the month's day partition keys (``YYYY-MM-DD``).
        with_records: the days the landing manifest holds lines for (:func:`days_in_manifest`);
            None when unknown.
        stored: the days with anything stored: rows in a day table, or a materialization of a
            day partition; None when unknown.

    A day is skipped only when both are known and it is in neither; when in doubt it runs.
    """
    days = list(days)
    if with_records is None or stored is None:
        return DayPlan(run=days)
    keep = with_records | stored
    return DayPlan(run=[d for d in days if d in keep], skipped=[d for d in days if d not in keep])


def day_ranges(days: Iterable[str]) -> str:
    """``2026-02-01 to 2026-02-09, 2026-02-12``: days (``YYYY-MM-DD``), consecutive ones as ranges."""
    spans: list[list[date]] = []
    for day in sorted({date.fromisoformat(d) for d in days}):
        if spans and day - spans[-1][1] == timedelta(days=1):
            spans[-1][1] = day
        else:
            spans.append([day, day])
    return ", ".join(f"{a}" if a == b else f"{a} to {b}" for a, b in spans)
