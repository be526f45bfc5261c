"""One refreshed month for the tests that compare another way of running it with the plain one.

Refreshing a month costs about 2 s per day run, so the reference month (February 2026 of demo
logs, seed 4, 28 days of 12 records, an eval set of 40, the days one after the other in this
process, every table in DuckDB) is refreshed once per test session (:func:`refreshed_month_template`)
and each test takes a copy of its data home (:func:`refreshed_month`). A data home is a folder
and nothing outside it: the DuckDB files (closed when the refresh returns, so their WAL is
checkpointed), the Dagster instance in ``dagster/`` (SQLite files under DAGSTER_HOME, whose
settings name no absolute path), the caches, and lock files that are only ever ``flock``ed (the
kernel holds a lock, not the file). A copy is the same home at another path: stored paths are
relative to the landing folder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from eval_pipeline.lib.core.paths import DataHome

__all__ = ["MONTH", "PER_DAY", "SEED", "RefreshedMonth", "refreshed_month", "refreshed_month_template",
           "template_resources", "write_month_logs"]

MONTH = "2026-02"
DAYS = 28
PER_DAY = 12
SEED = 4


def template_resources() -> dict[str, object]:
    """The monthly jobs' settings of the reference month: an eval set of 40."""
    from eval_pipeline.defs.resources import SamplingSettings

    return {"sampling": SamplingSettings(target_size=40)}


def write_month_logs(home: DataHome) -> None:
    """The reference month's demo logs into ``home``'s landing folder."""
    from eval_pipeline.demo.logs import generate_logs

    generate_logs(home.landing / "demo", date(2026, 2, 1), DAYS, PER_DAY, seed=SEED, truth_dir=home.demo_truth)


@dataclass(frozen=True)
class RefreshedMonth:
    """A data home holding the refreshed reference month, what ``refresh_month`` returned for it,
    the lines it logged, and what changed outside the data home while it ran: files in its
    (empty) working folder and in the user's tool folders (``scale_out.home_listing``)."""

    home: DataHome
    result: object  # eval_pipeline.runs.MonthRefresh
    said: tuple[str, ...]
    outside: frozenset[tuple[str, int, int]] = frozenset()


@pytest.fixture(scope="session")
def refreshed_month_template(tmp_path_factory) -> RefreshedMonth:
    """The reference month, refreshed once in this process: read-only (take :func:`refreshed_month`).

    Built in an empty working folder, with the embedded default storage and executor. Only a
    failed refresh fails here (and every test that takes the month); what it wrote outside the
    data home is recorded for the tests that check it."""
    from eval_pipeline.defs.executors import DASK_ADDRESS_ENV, EXECUTOR_ENV
    from eval_pipeline.lib.core.paths import HOME_ENV
    from eval_pipeline.runs import refresh_month
    from scale_out import home_listing, listing

    root = tmp_path_factory.mktemp("refreshed-month")
    home = DataHome.resolve(root / "home").ensure()
    cwd = root / "cwd"
    cwd.mkdir()
    write_month_logs(home)
    said: list[str] = []
    with pytest.MonkeyPatch.context() as env:
        env.chdir(cwd)
        env.setenv(EXECUTOR_ENV, "in_process")
        env.delenv(DASK_ADDRESS_ENV, raising=False)
        env.delenv("EVAL_PIPELINE_STORAGE", raising=False)
        env.setenv(HOME_ENV, str(home.root))
        env.setenv("DAGSTER_HOME", str(home.dagster_home))  # refresh_month sets it; restored after
        user_home_before = home_listing()
        result = refresh_month(home, MONTH, log=said.append, workers=1, resources=template_resources())
        assert result.success, (result.failed, said)
        outside = {(f"cwd/{path}", size, mtime) for path, size, mtime in listing(cwd)}
        outside |= home_listing() ^ user_home_before
    return RefreshedMonth(home=home, result=result, said=tuple(said), outside=frozenset(outside))


@pytest.fixture
def refreshed_month(refreshed_month_template, tmp_path) -> RefreshedMonth:
    """A copy of the reference month's data home of this test's own, under ``tmp_path/refreshed-home``."""
    target = Path(shutil.copytree(refreshed_month_template.home.root, tmp_path / "refreshed-home", symlinks=True))
    return RefreshedMonth(home=DataHome.resolve(target), result=refreshed_month_template.result,
                          said=refreshed_month_template.said, outside=refreshed_month_template.outside)
