"""Which days of a refresh run: from the landing manifest's day index and the days with anything stored."""

from __future__ import annotations

import json

import pytest

from eval_pipeline.lib.runs.day_plan import DayPlan, day_ranges, days_in_manifest, plan_days

FEB = [f"2026-02-{d:02d}" for d in range(1, 29)]


def index(**days: int) -> str:
    """A manifest row's ``days`` column: ``{"2026-02-03": 4}`` from ``d03=4``."""
    return json.dumps({f"2026-02-{k[1:]}": n for k, n in days.items()}, sort_keys=True)


def test_every_day_a_file_holds_a_line_of_counts_whatever_the_lines_are():
    # one file of records over two days, one of only unreadable lines anchored to a third day
    assert days_in_manifest([index(d03=4, d04=1), index(d10=2)]) == {"2026-02-03", "2026-02-04", "2026-02-10"}
    assert days_in_manifest([index(d05=0)]) == {"2026-02-05"}  # listed with no count: still a day of the file
    assert days_in_manifest([json.dumps({}), None]) == set()  # an empty file, a row with no index
    assert days_in_manifest([]) == set()


@pytest.mark.parametrize("bad", ["{not json", json.dumps(["2026-02-03"]), json.dumps(3)])
def test_an_index_that_cannot_be_read_means_the_days_are_unknown(bad):
    assert days_in_manifest([index(d03=1), bad]) is None


def test_a_day_is_skipped_only_with_no_record_and_nothing_stored():
    plan = plan_days(FEB, {"2026-02-03", "2026-02-10"}, {"2026-02-10", "2026-02-20"})
    # 20: its files were removed but it holds rows from before, so it runs to empty its partitions
    assert plan.run == ["2026-02-03", "2026-02-10", "2026-02-20"]
    assert plan.skipped == [d for d in FEB if d not in plan.run]
    assert len(plan.run) + len(plan.skipped) == 28


@pytest.mark.parametrize("with_records, stored", [(None, set()), (set(), None), (None, None)])
def test_when_either_side_is_unknown_every_day_runs(with_records, stored):
    assert plan_days(FEB, with_records, stored) == DayPlan(run=FEB, skipped=[])


def test_days_outside_the_month_do_not_enter_the_plan():
    plan = plan_days(FEB[:3], {"2026-01-31", "2026-03-01"}, {"2026-03-02"})
    assert plan == DayPlan(run=[], skipped=FEB[:3])


def test_day_ranges_join_consecutive_days():
    assert day_ranges(["2026-02-03", "2026-02-01", "2026-02-02", "2026-02-05", "2026-02-28", "2026-03-01"]) == \
        "2026-02-01 to 2026-02-03, 2026-02-05, 2026-02-28 to 2026-03-01"
    assert day_ranges([]) == ""
