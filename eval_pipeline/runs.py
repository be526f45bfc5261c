"""Running the pipeline from the command line: a month's refresh and the demo, on a real Dagster
instance under the data home (so the runs show up in ``dagster dev`` afterwards)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import threading
from calendar import monthrange
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb

from eval_pipeline import workers as workers_module
from eval_pipeline.definitions import build_definitions
from eval_pipeline.defs.executors import EXECUTOR_ENV, executor_name
from eval_pipeline.defs.partitions import daily_partitions, monthly_partitions
from eval_pipeline.defs.resources import build_resources
from eval_pipeline.lib.clustering.clusters import warm_up as warm_up_clustering
from eval_pipeline.lib.core.locks import LockHeld, file_lock
from eval_pipeline.lib.core.paths import DataHome, make_folder
from eval_pipeline.lib.runs.day_plan import DayPlan, day_ranges, days_in_manifest, plan_days
from eval_pipeline.lib.runs.progress import Display, Stage
from eval_pipeline.lib.storage.lake import PARTITION_COLUMN, Lake, StorageLocations, attach
from eval_pipeline.progress import job_steps, skip_days, watch_runs

__all__ = ["MonthRefresh", "RefreshRunning", "Evaluation", "day_pool", "default_workers", "ingest_day_run", "instance_for", "month_days",
           "plan_month", "refresh_month", "table_counts", "evaluate_model", "stored_scorecard",
           "register_demo_models"]

_INSTANCE_YAML = Path(__file__).resolve().parent.parent / "dagster.yaml"
_FALLBACK_YAML = "telemetry:\n  enabled: false\nrun_queue:\n  max_concurrent_runs: 2\n"
# Runs started from the command line log warnings and errors only (the UI keeps the full event log).
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# Monthly jobs run after the month's daily partitions, in this order (later domains add theirs).
MONTHLY_JOBS: tuple[str, ...] = ("monthly_refresh_job",)


@dataclass
class MonthRefresh:
    """What a refresh did: runs per job, the days skipped (no records, nothing stored) and the
    days that failed."""

    month: str
    days: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    monthly_jobs: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failed


def instance_for(home: DataHome) -> dg.DagsterInstance:
    """The persistent Dagster instance of a data home, opened from ``<home>/dagster`` (its
    ``dagster.yaml`` written there first when missing). Nothing process-wide is set: no
    ``DAGSTER_HOME``; the processes a run starts get the instance from the run (Dagster passes
    its reference to the multiprocess and Dask executors' step processes)."""
    folder = make_folder(home.dagster_home)
    target = folder / "dagster.yaml"
    if not target.exists():
        if _INSTANCE_YAML.exists():
            shutil.copyfile(_INSTANCE_YAML, target)
        else:
            target.write_text(_FALLBACK_YAML)
    return dg.DagsterInstance.from_config(str(folder))


def month_days(month: str) -> list[str]:
    """``YYYY-MM`` -> every day of that month as ``YYYY-MM-DD``."""
    try:
        year, mon = (int(part) for part in month.split("-"))
        first = date(year, mon, 1)
    except ValueError as err:
        raise ValueError(f"month {month!r}: expected YYYY-MM") from err
    return [(first + timedelta(days=i)).isoformat() for i in range(monthrange(year, mon)[1])]


def default_workers() -> int:
    """Day runs in parallel by default: one per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# A day worker that has run about this many records is replaced by a fresh one (models loaded
# again, about 10 CPU-s). Native memory a worker keeps after each day (PyTorch's and oneDNN's
# allocations for new input shapes, the allocator's fragments) grows with the records it ran,
# not with a day: four cold 36k-record days in one process (a 1M-record month's days) left it at
# 1,235, 1,298, 1,348 and 1,384 MB, and its peaks within a day rose from 1,361 to 1,701 MB
# (``malloc_trim`` gave nothing back). 60,000 replaces a worker after every such day, and never
# in a 100k-record month (50,000 records a worker).
RECYCLE_RECORDS = 60_000


def recycle_after(day_records: list[int], workers: int, budget: int | None = None) -> int | None:
    """How many days a worker runs before it is replaced (``max_tasks_per_child``), so that no
    worker runs much more than ``budget`` records (default :data:`RECYCLE_RECORDS`); None when
    no worker would reach it."""
    budget = RECYCLE_RECORDS if budget is None else budget
    biggest = max(day_records, default=0)
    per_worker = -(-len(day_records) // max(1, workers))  # days a worker runs, rounded up
    if not biggest or biggest * per_worker <= budget:
        return None
    return max(1, budget // biggest)


def _day_records(home: DataHome, days: list[str]) -> list[int]:
    """Records per day of ``days`` as the landing manifest counts them (parse errors included)."""
    with file_lock(f"{home.warehouse}.lock"):
        found = _query(home.warehouse, "select days from ingest.landing_manifest")
    counts = dict.fromkeys(days, 0)
    for (held,) in (found[0] if found else []):
        for day, n in json.loads(held).items():
            if day in counts:
                counts[day] += int(n)
    return list(counts.values())


# The tables a day's ingest run replaces a partition of (``ingest_job``), by the DuckDB file
# that holds them (or catalogs their lake objects): raw zone, then the warehouse.
DAY_TABLES: tuple[tuple[str, str], ...] = (("raw", "ingest.raw_logs"), ("raw", "ingest.quarantined_logs"),
                                           ("main", "privacy.redacted_logs"), ("main", "embeddings.log_embeddings"))


def _stored_days(home: DataHome, instance: dg.DagsterInstance, days: list[str]) -> set[str]:
    """The days of ``days`` with anything stored: a materialization of one of their partitions
    on the instance, or a row dated that day in one of :data:`DAY_TABLES` (read through the
    lake when the tables live there)."""
    wanted = set(days)
    stored = set()
    for _, table in DAY_TABLES:
        stored |= wanted & instance.get_materialized_partitions(dg.AssetKey(table.split(".")[1]))
    first, last = min(days), max(days)
    for zone, table in DAY_TABLES:
        path = home.raw_warehouse if zone == "raw" else home.warehouse
        column = PARTITION_COLUMN[table]
        with file_lock(f"{path}.lock"):
            found = _query(path, f'select distinct strftime(cast("{column}" as date), \'%Y-%m-%d\') from {table} '
                                 f"where \"{column}\" >= date '{first}' and \"{column}\" < date '{last}' + interval 1 day")
        stored |= wanted & {day for (day,) in (found[0] if found else [])}
    return stored


def plan_month(home: DataHome, instance: dg.DagsterInstance, days: list[str], log=print) -> DayPlan:
    """Which of ``days`` a refresh runs, after the landing manifest was built: a day with no
    line in the manifest and nothing stored (:func:`_stored_days`) has nothing to ingest and
    nothing to clear, and is skipped (``lib/runs/day_plan.py``). When the manifest or the stored state
    cannot be read, every day runs."""
    if not days:
        return DayPlan()
    try:
        with file_lock(f"{home.warehouse}.lock"):
            found = _query(home.warehouse, "select days from ingest.landing_manifest")
        with_records = days_in_manifest(day for (day,) in found[0]) if found else None
        stored = _stored_days(home, instance, days)
    except Exception as err:  # noqa: BLE001 - a table or lake that cannot be read: every day runs
        log(f"  could not tell which days have records or stored rows ({type(err).__name__}: {err}); "
            "every day runs")
        return DayPlan(run=list(days))
    return plan_days(days, with_records, stored)


@contextmanager
def day_pool(workers: int | None = None, home: DataHome | None = None,
             resources: dict[str, object] | None = None) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes for the days of a month (None when one worker is asked for, or when
    ``EVAL_PIPELINE_EXECUTOR`` runs the steps elsewhere), to pass to :func:`refresh_month` for
    several months in a row (models load once per worker).

    Each worker builds the definitions once and runs one day at a time as its own Dagster run
    on the data home's instance. The CPU is shared out: each worker's torch and BLAS use
    ``cores // workers`` threads, so two workers on two cores do not fight over them. Given
    ``home``, the workers load the models as they start: the default ones, or the redaction model
    of the ``redaction`` settings in ``resources`` (pass the same ``resources`` to
    :func:`refresh_month`).
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1 or executor_name() != "in_process":  # another executor runs the steps elsewhere
        yield None
        return
    threads = max(1, default_workers() // workers)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=workers_module.init_worker,
                               initargs=(threads, str(home.root) if home else None,
                                         _worker_overrides(resources, home) if home else None))
    for _ in range(workers):  # start every worker now (the pool starts them on demand), models loading
        pool.submit(workers_module.ready)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _days_on_recycled_workers(home: DataHome, days: list[str], workers: int, recycle: int,
                              tags: dict[str, str] | None = None,
                              overrides: dict[str, dict] | None = None) -> Iterator[tuple[str, str, bool, list[str]]]:
    """:func:`ingest_day_run` outcomes of ``days`` (in the order they finish) on ``workers`` worker
    processes, each replaced by a fresh one after ``recycle`` days. Each worker is a one-process
    pool of its own (``max_tasks_per_child`` of a shared pool hangs on Python 3.11 once a
    worker is replaced); a worker that dies raises ``BrokenProcessPool``, as the shared pool does."""
    threads = max(1, default_workers() // workers)
    spawn = multiprocessing.get_context("spawn")

    def fresh() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=spawn, initializer=workers_module.init_worker,
                                   initargs=(threads, str(home.root), overrides))

    queue = list(days)
    slots = [[fresh(), 0] for _ in range(min(workers, len(queue)))]  # [executor, days it ran]
    running: dict[Future, list] = {}
    try:
        for slot in slots:
            running[slot[0].submit(workers_module.ingest_day, str(home.root), queue.pop(0), tags, overrides)] = slot
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                slot = running.pop(future)
                yield future.result()
                slot[1] += 1
                if queue:
                    if slot[1] >= recycle:  # its native memory goes with the process
                        slot[0].shutdown(wait=True)
                        slot[0], slot[1] = fresh(), 0
                    running[slot[0].submit(workers_module.ingest_day, str(home.root), queue.pop(0), tags, overrides)] = slot
    finally:
        for executor, _ in slots:
            executor.shutdown(wait=True, cancel_futures=True)


def _in_process(defs: dg.Definitions, job_name: str) -> bool:
    return defs.resolve_job_def(job_name).executor_def.name == "in_process"


def _execute(defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance, partition_key: str | None = None,
             run_config: dict | None = None, resources: dict[str, object] | None = None,
             tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult | dg.JobExecutionResult:
    """One run of ``job_name`` (of ``partition_key``, with ``tags``) on ``instance``; a failure is in the result.

    With the in-process executor (the default) the run executes here. With another one
    (``EVAL_PIPELINE_EXECUTOR``, ``defs/executors.py``) it is launched with ``dg.execute_job``:
    the processes that run its steps rebuild the job with ``definitions.job_for_home`` for the
    data home ``defs`` is bound to, and ``resources``, the overrides ``defs`` was built with,
    reach them as run config.
    """
    run_config = _QUIET if run_config is None else run_config
    job = defs.resolve_job_def(job_name)
    if job.executor_def.name == "in_process":
        return job.execute_in_process(partition_key=partition_key, instance=instance, raise_on_error=False,
                                      run_config=run_config, tags=tags)
    root = str(DataHome.resolve(defs.resources["settings"].home).root)
    if resources:
        run_config = {**run_config, "resources": _resource_config(resources, DataHome.resolve(root))}
    tags = {**(job.get_tags_for_partition_key(partition_key, None) if partition_key else {}), **(tags or {})} or None
    # the step processes (the multiprocess executor's children, Dask workers) rebuild the job for
    # this data home from the reconstructable's own arguments, and open the instance from the
    # run's instance reference: neither EVAL_PIPELINE_HOME nor DAGSTER_HOME is needed there
    recon = dg.build_reconstructable_job("eval_pipeline.definitions", "job_for_home", (job_name, root))
    return dg.execute_job(recon, instance=instance, run_config=run_config, tags=tags, raise_on_error=False)


def _settings_overrides(resources: dict[str, object], home: DataHome, where: str, instead: str) -> dict[str, dict]:
    """Resource overrides as plain data (``{key: {"config": fields set}}``), for processes that
    rebuild the definitions themselves (``where``). Each must be a ``ConfigurableResource`` of the
    default's type, else a ValueError says what to do ``instead``."""
    defaults = build_resources(home)
    for key, resource in resources.items():
        if not isinstance(resource, dg.ConfigurableResource) or type(resource) is not type(defaults.get(key)):
            raise ValueError(f"resource {key!r}: a {type(resource).__name__} cannot reach {where}; only settings of "
                             f"the default's type ({type(defaults.get(key)).__name__}) can (or {instead})")
    return {key: {"config": resource.model_dump(exclude_unset=True)} for key, resource in resources.items()}


def _resource_config(resources: dict[str, object], home: DataHome) -> dict[str, dict]:
    """Resource overrides as run config, for a run whose steps rebuild the job elsewhere."""
    return _settings_overrides(resources, home, f"the steps of a run on the {executor_name()} executor",
                               f"run with {EXECUTOR_ENV}=in_process")


def _worker_overrides(resources: dict[str, object] | None, home: DataHome) -> dict[str, dict] | None:
    """``resources`` as plain data for the day workers (``workers.ingest_day`` rebuilds them), so a
    day ingested in a worker process uses the same settings (e.g. the redaction's allow-list) as
    one ingested here."""
    return _settings_overrides(resources, home, "the day worker processes", "refresh with workers=1") if resources else None


def ingest_day_run(defs: dg.Definitions, instance: dg.DagsterInstance, day: str,
                   resources: dict[str, object] | None = None,
                   tags: dict[str, str] | None = None) -> tuple[str, str, bool, list[str]]:
    """One day's ingest run: (day, run id, run succeeded, names of the checks that failed);
    ``resources`` and ``tags`` as for :func:`_execute`."""
    run = _execute(defs, "ingest_job", instance, partition_key=day, resources=resources, tags=tags)
    failed_checks = [e.check_name for e in run.get_asset_check_evaluations() if not e.passed]
    return day, run.run_id, run.success, failed_checks


class RefreshRunning(RuntimeError):
    """Another process is refreshing the same data home (it holds ``<home>/refresh.lock``)."""


def refresh_month(home: DataHome, month: str, log=print, workers: int | None = None,
                  pool: ProcessPoolExecutor | None = None, resources: dict[str, object] | None = None,
                  progress: Display | None = None, skip_empty_days: bool = True) -> MonthRefresh:
    """Materialize the landing manifest, every daily partition of the month (up to today) that
    has something to do, then the monthly assets.

    A day with no line in the landing manifest and nothing stored (no row in a day table, no
    materialization of its partitions) is not run (:func:`plan_month`): its run would replace
    nothing with nothing. Such days are in ``MonthRefresh.skipped``; ``skip_empty_days=False``
    runs every day regardless.

    The days run as separate Dagster runs, ``workers`` at a time in worker processes (default:
    one per CPU core; 1 runs them here, one after the other), or on ``pool`` from
    :func:`day_pool`. Their DuckDB reads and writes queue on a file lock (``lib/core/locks.py``).
    With another executor than in_process (``EVAL_PIPELINE_EXECUTOR``, e.g. a Dask cluster)
    every run is launched from here, one after the other, and its steps run where the executor
    puts them; ``workers`` and ``pool`` are not used.
    ``resources`` replace the monthly jobs' resources (e.g. ``ClusteringSettings(refit=True)``).
    ``progress`` shows the days and steps as their runs' events arrive (``progress.py``).

    One refresh of a data home at a time: it holds ``<home>/refresh.lock`` throughout, and a second
    one raises :class:`RefreshRunning` at once (naming the holder's pid) rather than interleave
    its runs with the first one's. A killed refresh leaves no stale lock (the kernel drops it).
    """
    lock = home.root / "refresh.lock"
    try:
        with file_lock(lock, blocking=False):
            return _refresh_month(home, month, log, workers, pool, resources, progress, skip_empty_days)
    except LockHeld as held:
        raise RefreshRunning(f"another refresh of {home.root} is running"
                             f"{f' (pid {held.pid})' if held.pid else ''}; wait for it to finish, or stop it, "
                             f"then run this one again (the lock is {lock})") from None


def _refresh_month(home: DataHome, month: str, log, workers: int | None, pool: ProcessPoolExecutor | None,
                   resources: dict[str, object] | None, progress: Display | None,
                   skip_empty_days: bool = True) -> MonthRefresh:
    days = [day for day in month_days(month) if daily_partitions.has_partition_key(day)]
    if not days:
        raise ValueError(f"month {month}: no daily partition exists for it (partitions start on "
                         f"{daily_partitions.start:%Y-%m-%d} and end today; see defs/partitions.py)")
    defs = build_definitions(home, resources)
    instance = instance_for(home)
    monthly = monthly_partitions.has_partition_key(f"{days[0][:7]}-01")
    stages = [Stage("landing_manifest_job", job_steps(defs, "landing_manifest_job")),
              Stage("ingest_job", days, per_day=True)]
    stages += [Stage(job_name, job_steps(defs, job_name)) for job_name in MONTHLY_JOBS if monthly]
    with watch_runs(instance, progress, f"refresh {month}", stages) as tags:
        return _run_month(home, defs, instance, days, month, log, workers, pool, resources, tags, skip_empty_days)


def _run_month(home: DataHome, defs: dg.Definitions, instance: dg.DagsterInstance, days: list[str], month: str, log,
               workers: int | None, pool: ProcessPoolExecutor | None, resources: dict[str, object] | None,
               tags: dict[str, str], skip_empty_days: bool = True) -> MonthRefresh:
    result = MonthRefresh(month=month)
    month_key = f"{days[0][:7]}-01"
    monthly = monthly_partitions.has_partition_key(month_key)
    warm, recycle = None, None
    with ExitStack() as stack:
        owned = None
        if not _in_process(defs, "ingest_job"):
            pool = None  # the days' steps run where the executor puts them, one day after the other from here
        elif pool is None and len(days) > 1:
            owned = pool = stack.enter_context(day_pool(workers, home))  # the workers start while the manifest runs
        manifest = _execute(defs, "landing_manifest_job", instance, resources=resources, tags=tags)
        result.run_ids.append(manifest.run_id)
        if not manifest.success:
            result.failed.append("landing_manifest")
            return result
        plan = plan_month(home, instance, days, log) if skip_empty_days else DayPlan(run=days)
        if plan.skipped:
            result.skipped = plan.skipped
            skip_days(tags, plan.skipped)
            log(f"  {len(plan.skipped)} of {len(days)} days skipped: no records in the landing manifest and "
                f"nothing stored ({day_ranges(plan.skipped)})")
        days = plan.run
        if owned is not None and days:
            # days so large that a worker would run far more than RECYCLE_RECORDS: workers that are replaced
            sizes = _day_records(home, days)
            recycle = recycle_after(sizes, default_workers() if workers is None else workers)
            if recycle is not None:
                owned.shutdown(wait=True, cancel_futures=True)
                log(f"  days of up to {max(sizes):,} records: each day worker is replaced after {recycle} days")
        if pool is not None and monthly:
            # UMAP compiles for 25-45 s in a new process: do it here while the workers run the days
            warm = threading.Thread(target=warm_up_clustering, name="umap-warm-up", daemon=True)
            warm.start()
        if recycle is not None:
            outcomes = _days_on_recycled_workers(home, days, default_workers() if workers is None else workers, recycle,
                                                 tags, _worker_overrides(resources, home))
        elif pool is None:
            outcomes = (ingest_day_run(defs, instance, day, resources, tags) for day in days)
        else:
            overrides = _worker_overrides(resources, home)
            outcomes = pool.map(workers_module.ingest_day, [str(home.root)] * len(days), days, [tags] * len(days),
                                [overrides] * len(days))
        try:
            for day, run_id, success, failed_checks in outcomes:
                result.days.append(day)
                result.run_ids.append(run_id)
                if not success or failed_checks:
                    result.failed.append(day if success else f"{day} (run failed)")
                    log(f"  {day}: {'checks failed: ' + ', '.join(failed_checks) if failed_checks else 'run failed'}")
        except BrokenProcessPool as err:  # a worker died (killed, out of memory): the days it had are not done
            missing = [day for day in days if day not in result.days]
            result.failed += [f"{day} (worker process died)" for day in missing]
            log(f"  a worker process died ({err}); days not ingested: {', '.join(missing)}")
            return result
    if not monthly:
        log(f"  {month}: the month has not ended, so it has no monthly partition yet; monthly jobs not run")
        return result
    if warm is not None:
        warm.join()
    for job_name in MONTHLY_JOBS:  # a skipped day's partitions read as no rows (nothing was ever stored there)
        run = _execute(defs, job_name, instance, partition_key=month_key, resources=resources, tags=tags)
        result.monthly_jobs.append(job_name)
        result.run_ids.append(run.run_id)
        if not run.success:
            result.failed.append(job_name)
    return result


def table_counts(home: DataHome) -> dict[str, int]:
    """Rows per table of both DuckDB files (the warehouse and the restricted raw zone), ``schema.table`` -> count."""
    counts: dict[str, int] = {}
    for path in (home.raw_warehouse, home.warehouse):
        if not path.exists():
            continue
        with _read_only(path) as con:
            tables = con.execute("select table_schema, table_name from information_schema.tables "
                                 "where table_name not like 'lake\\_\\_%' escape '\\' order by 1, 2").fetchall()
            counts.update({f"{s}.{t}": con.execute(f'select count(*) from "{s}"."{t}"').fetchone()[0] for s, t in tables})
    return dict(sorted(counts.items()))


@contextmanager
def _read_only(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB file opened read-only; with a lake (``EVAL_PIPELINE_STORAGE``), its zone's lake
    tables attached (the raw zone's for the restricted folder's file), so SQL reads them too."""
    storage = StorageLocations.resolve()
    with duckdb.connect(str(path), read_only=True) as con:
        if storage.lake:
            restricted = path.parent.name == "restricted"
            attach(con, Lake(storage.raw if restricted else storage.main, restricted=restricted),
                   "raw" if restricted else "main")
        yield con


def _query(path: Path, *sql: str) -> list[list[tuple]] | None:
    """The rows of each statement on a DuckDB file opened read-only; None when the file or a table
    does not exist yet (nothing has been materialized there)."""
    if not path.exists():
        return None
    with _read_only(path) as con:
        try:
            return [con.execute(statement).fetchall() for statement in sql]
        except duckdb.CatalogException:
            return None


def quarantine_reasons(home: DataHome) -> dict[str, int]:
    """Quarantined records per reason over all days (from the restricted zone; reasons hold no raw text)."""
    result = _query(home.raw_warehouse, "select reason, count(*) from ingest.quarantined_logs group by 1 order by 2 desc")
    return dict(result[0]) if result else {}


def pii_placeholders(home: DataHome) -> dict[str, int]:
    """Placeholders put in by redaction over all days, per entity type."""
    result = _query(home.warehouse, "select pii_counts from privacy.redacted_logs where pii_counts <> '{}'")
    totals: dict[str, int] = {}
    for (counts,) in (result[0] if result else []):
        for kind, n in json.loads(counts).items():
            totals[kind] = totals.get(kind, 0) + n
    return dict(sorted(totals.items()))


def cluster_summary(home: DataHome) -> list[dict[str, object]]:
    """Per clustered month: clusters, records in the unclustered stratum, drift statuses, how the
    month was clustered (initial / assigned / refit) and its share of traffic in continuing clusters."""
    result = _query(home.warehouse, """
        select month, count(*) filter (where cluster_id <> 'unclustered'),
               coalesce(sum(size) filter (where cluster_id = 'unclustered'), 0), sum(size)
        from clustering.cluster_table group by 1 order by 1""",
                    "select month, status, count(*) from clustering.cluster_drift group by 1, 2",
                    "select month, any_value(mode), sum(current_share) filter (where status = 'continuing') "
                    "from clustering.cluster_drift group by 1")
    if not result:
        return []
    months, drift, modes = result
    statuses: dict[object, dict[str, int]] = {}
    for month, status, count in drift:
        statuses.setdefault(month, {})[status] = count
    how = {month: (mode, share) for month, mode, share in modes}
    return [{"month": f"{month:%Y-%m}", "clusters": clusters, "unclustered": noise, "records": records,
             "drift": dict(sorted(statuses.get(month, {}).items())), "mode": how.get(month, (None, None))[0],
             "continuing_share": how.get(month, (None, None))[1]}
            for month, clusters, noise, records in months]


def version_summaries(home: DataHome) -> dict[str, dict[str, object]]:
    """version -> its row of ``sampling.eval_set_summary`` (size against target, churn, share of
    the month's traffic in continuing clusters, clustering mode, allocation); empty before any."""
    if not home.warehouse.exists():
        return {}
    with _read_only(home.warehouse) as con:
        try:
            rows = con.execute("select * from sampling.eval_set_summary order by month").pl().to_dicts()
        except duckdb.CatalogException:
            return {}
    return {r["eval_set_version"]: r for r in rows}


def month_summary_lines(home: DataHome, month: str) -> list[str]:
    """"eval set vN: <size, churn, continuing traffic>" for the version(s) made for ``month``
    (YYYY-MM): what ``refresh`` and the demo print after a month."""
    from eval_pipeline.lib.sampling.eval_set import summary_line

    return [f"eval set {version}: {summary_line(summary)}" for version, summary in version_summaries(home).items()
            if f"{summary['month']:%Y-%m}" == month]


def eval_set_versions(home: DataHome) -> list[dict[str, object]]:
    """Every eval-set version: name, month, examples, added and removed in it."""
    result = _query(home.warehouse, """
        with index as (select distinct eval_set_version, month from sampling.eval_set_changelog
                       union select distinct eval_set_version, month from sampling.eval_set_versions)
        select i.eval_set_version, i.month,
               (select count(*) from sampling.eval_set_versions v where v.eval_set_version = i.eval_set_version),
               (select count(*) from sampling.eval_set_changelog c
                where c.eval_set_version = i.eval_set_version and c.action = 'added'),
               (select count(*) from sampling.eval_set_changelog c
                where c.eval_set_version = i.eval_set_version and c.action = 'removed')
        from index i order by cast(substr(i.eval_set_version, 2) as integer)""")
    return [{"version": v, "month": f"{m:%Y-%m}", "examples": n, "added": a, "removed": r}
            for v, m, n, a, r in (result[0] if result else [])]


def load_eval_set(home: DataHome, version: str = "latest") -> tuple[str, list[dict[str, object]]]:
    """The rows of one eval-set version (``latest``: the highest number), with ``removed_in``
    filled from later versions' changelogs. Raises ValueError naming the versions that exist."""
    from eval_pipeline.lib.sampling.eval_set import with_removed_in

    known = [v["version"] for v in eval_set_versions(home)]
    if not known:
        raise ValueError(f"no eval-set version in {home.warehouse}: run `eval-pipeline refresh` for a month first")
    name = known[-1] if version == "latest" else version
    if name not in known:
        raise ValueError(f"no eval-set version {version!r}; versions: {', '.join(known)}")
    with _read_only(home.warehouse) as con:
        rows = con.execute("select * from sampling.eval_set_versions where eval_set_version = ? order by example_id",
                           [name]).pl().to_dicts()
        changelog = con.execute("select * from sampling.eval_set_changelog").pl().to_dicts()
    return name, with_removed_in(rows, changelog)


def changelog_summary(home: DataHome) -> str:
    """The CHANGELOG-style summary of every version."""
    from eval_pipeline.lib.sampling.eval_set import changelog_markdown

    if not home.warehouse.exists():
        return "(no eval set yet)"
    with _read_only(home.warehouse) as con:
        try:
            changelog = con.execute("select * from sampling.eval_set_changelog").pl().to_dicts()
        except duckdb.CatalogException:
            return "(no eval set yet)"
    sizes = {v["version"]: v["examples"] for v in eval_set_versions(home)}
    return changelog_markdown(changelog, sizes, max_lines=6, summaries=version_summaries(home))


def simulate_demo_annotations(home: DataHome, version: str = "latest", seed: int = 0) -> Path:
    """The demo's human annotation: three simulated annotators label every example of an eval-set
    version (from the generator's truth, with noise, one criterion deliberately ambiguous) and
    their Label Studio export lands in the labels inbox, as a real export would."""
    from eval_pipeline.demo.annotators import load_demo_truth, simulate_annotators
    from eval_pipeline.lib.labeling.rubrics import load_rubrics

    name, rows = load_eval_set(home, version)
    tasks, _ = simulate_annotators(rows, load_rubrics(), load_demo_truth(home.demo_truth), seed=seed)
    path = home.labels_inbox / f"demo_label_studio_export_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tasks, indent=1, default=str), encoding="utf-8")
    return path


def run_labeling(home: DataHome) -> bool:
    """Materialize ``labeling_job`` (human labels, agreement, gold labels) on the data home's instance."""
    defs = build_definitions(home)
    run = defs.resolve_job_def("labeling_job").execute_in_process(instance=instance_for(home), raise_on_error=False,
                                                                 run_config=_QUIET)
    return run.success


def agreement_summary(home: DataHome) -> list[dict[str, object]]:
    """Rows of ``labeling.label_agreement`` for each rubric's current version (agreement of an older
    version's labels is kept in the table, not shown): criterion, method, value, flags and the note
    (why a value is undefined)."""
    result = _query(home.warehouse, 'select "group", criterion, method, value, n_items, n_annotators, flags, note '
                                    "from labeling.label_agreement where coalesce(current_version, true) order by 1, 2")
    return [{"criterion": f"{g}.{c}", "method": m, "value": v, "items": n, "annotators": a, "flags": f, "note": note}
            for g, c, m, v, n, a, f, note in (result[0] if result else [])]


# --------------------------------------------------------------------------------------------
# evaluating model versions
# --------------------------------------------------------------------------------------------

EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 2}


@dataclass
class Evaluation:
    """What ``evaluate_model`` did: the scorecard (None when the run failed) and where it is."""

    model: str
    baseline: str | None
    tier: str
    scorecard: dict | None = None
    report: Path | None = None
    run_ids: list[str] = field(default_factory=list)
    error: str | None = None
    # review-failures only: the reviewers' labels read (``failure_review``'s ``labels`` and
    # ``quarantined_because`` metadata), so a rejected file is never silent
    review_labels: dict | None = None

    @property
    def exit_code(self) -> int:
        """0 pass, 1 fail, 2 inconclusive or error: what a CI job gates a deployment on."""
        if self.error or self.scorecard is None:
            return 2
        return EXIT_CODES[self.scorecard["verdict"]]


def current_eval_set_version(home: DataHome) -> str | None:
    """The eval-set version of the latest month (what a model version is evaluated on)."""
    result = _query(home.warehouse, "select eval_set_version from sampling.eval_set order by month_start desc limit 1")
    return result[0][0][0] if result and result[0] else None


def scored_on(home: DataHome, key: str) -> tuple[str, str] | None:
    """(eval-set version, tier) of a model version's stored scores (of its latest eval-set version,
    the one its scorecard compares with); None when it has none."""
    from eval_pipeline.lib.evaluation.gates import version_order

    if not home.warehouse.exists():
        return None
    with _read_only(home.warehouse) as con:
        try:
            rows = con.execute("select distinct eval_set_version, tier from evaluation.candidate_scores "
                               "where model_version = ?", [key]).fetchall()
        except duckdb.CatalogException:
            return None
    return max(rows, key=lambda row: version_order(row[0])) if rows else None


def stored_scorecard(home: DataHome, key: str, tier: str) -> tuple[dict, Path] | None:
    """The scorecard last made for model version ``key`` on ``tier`` and the path of its HTML
    report: the ``card`` (the whole card as JSON) and ``report_path`` of its ``overall`` row of
    ``evaluation.scorecard``. None when there is none (no table, no row, or only rows written
    before the table had the column). The JSON and HTML reports are for people; this is what
    the commands print and gate on."""
    if not home.warehouse.exists():
        return None
    with _read_only(home.warehouse) as con:
        try:
            found = con.execute("select card, report_path from evaluation.scorecard where model_version = ? "
                                "and tier = ? and slice = 'overall' and card is not null "
                                "order by created_at desc limit 1", [key, tier]).fetchone()
        except (duckdb.CatalogException, duckdb.BinderException):  # no table, or one without the card column
            return None
    return (json.loads(found[0]), Path(found[1])) if found else None


def _run_failure(run: dg.ExecuteInProcessResult) -> str:
    for event in run.all_events:
        if event.event_type_value == "STEP_FAILURE" and event.step_failure_data:
            err = event.step_failure_data.error
            message = err.message.strip() if err else "step failed"
            if err and err.cause:
                message = err.cause.message.strip()
            return f"{event.step_key}: {message}"
    return "the run failed"


def _resolve_versions(home: DataHome, outcome: Evaluation) -> bool:
    """Check ``outcome.model`` (and ``outcome.baseline`` when given) are registered on the data
    home and set ``outcome.baseline`` (default: the registry's latest baseline of the same name;
    None when that is the model itself). False, with ``outcome.error`` set, when they are not."""
    from eval_pipeline.lib.registry.versions import ModelRegistry, RegistryError, parse_model_ref

    model, baseline = outcome.model, outcome.baseline
    try:
        name, _ = parse_model_ref(model)
        registry = ModelRegistry(home.registry)
        registry.get(model)
        if baseline:
            parse_model_ref(baseline)
            registry.get(baseline)
        else:
            found = registry.baseline_for(name)
            baseline = found.key if found and found.key != model else None
    except (KeyError, ValueError, RegistryError) as err:
        outcome.error = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        return False
    outcome.baseline = None if baseline == model else baseline
    return True


def _with_scorecard(home: DataHome, outcome: Evaluation, tier: str) -> Evaluation:
    """``outcome`` with the scorecard its run stored (:func:`stored_scorecard`) and the path of
    the report written for people; an error when the run stored none."""
    stored = stored_scorecard(home, outcome.model, tier)
    if stored is None:
        outcome.error = (f"the run of {outcome.model} stored no {tier}-tier scorecard in {home.warehouse} "
                         "(table evaluation.scorecard)")
        return outcome
    outcome.scorecard, outcome.report = stored
    return outcome


def _started(home: DataHome, outcome: Evaluation, thresholds: str | None) -> Evaluation:
    """``outcome`` with ``error`` set when its versions are not registered or the gates file
    cannot be read: both are refused before anything runs."""
    from eval_pipeline.lib.evaluation.gates import load_thresholds

    if _resolve_versions(home, outcome) and thresholds:
        try:
            load_thresholds(thresholds)
        except ValueError as err:  # ThresholdsError names the file and field
            outcome.error = str(err)
    return outcome


def evaluate_model(home: DataHome, model: str, baseline: str | None = None, tier: str = "deep",
                   thresholds: str | None = None, max_workers: int | None = None, log=print,
                   rescore_baseline: bool = True, progress: Display | None = None) -> Evaluation:
    """Run ``evaluation_job`` in-process for ``model`` (``name:version``), after the baseline's when
    the baseline has no scores on the current eval set and tier yet. ``baseline`` defaults to the
    registry's latest baseline of the same name; ``thresholds`` to the packaged gates file;
    ``max_workers`` (requests in flight) to the ``evaluation`` resource's default.

    ``rescore_baseline``: by default a baseline whose stored scores are on an older eval-set
    version (or a smaller tier) is run again on the current one, so every example is paired (the
    most power). False compares with its stored scores as they are: no call to the baseline's
    endpoint, and only the examples both versions hold are paired (the scorecard says how many).
    A baseline with no stored scores is scored either way. ``progress`` shows the runs' steps as
    their events arrive (``progress.py``)."""
    from eval_pipeline.defs.registry.sensors import evaluation_run_config
    from eval_pipeline.defs.resources import EvaluationSettings

    outcome = _started(home, Evaluation(model=model, baseline=baseline, tier=tier), thresholds)
    if outcome.error:
        return outcome
    current = current_eval_set_version(home)
    if current is None:
        outcome.error = f"no eval set in {home.warehouse}: run `eval-pipeline refresh` for a month first"
        return outcome
    settings = EvaluationSettings(thresholds=thresholds or "")
    if max_workers is not None:
        if max_workers < 1:
            outcome.error = f"max_workers must be at least 1, got {max_workers}"
            return outcome
        settings = EvaluationSettings(thresholds=thresholds or "", max_workers=max_workers)
    defs = build_definitions(home, {"evaluation": settings})
    instance = instance_for(home)
    keys = [k for k in (outcome.baseline, model) if k]
    known = set(instance.get_dynamic_partitions("model_versions"))
    if missing := [k for k in keys if k not in known]:
        instance.add_dynamic_partitions("model_versions", missing)
    job = defs.resolve_job_def("evaluation_job")
    baseline_steps = ("model_registry", "candidate_outputs", "candidate_scores")
    score_baseline = False
    if outcome.baseline:
        stored = scored_on(home, outcome.baseline)
        if stored and not rescore_baseline:
            paired = ("" if stored[0] == current
                      else f"; the candidate runs on {current}, so only the examples both hold are paired")
            log(f"comparing with the baseline {outcome.baseline}'s stored scores ({stored[1]} tier of eval set "
                f"{stored[0]}){paired}")
        elif not (stored and stored[0] == current and stored[1] in (tier, "deep")):
            score_baseline = True
    stages = ([Stage("evaluation_job", baseline_steps, label="baseline")] if score_baseline else [])
    stages.append(Stage("evaluation_job", job_steps(defs, "evaluation_job"),
                        label="candidate" if score_baseline else ""))
    with watch_runs(instance, progress, f"evaluate {model}", stages) as watched:
        if score_baseline:
            log(f"evaluating the baseline {outcome.baseline} first ({tier} tier of eval set {current})")
            run = job.execute_in_process(
                partition_key=outcome.baseline, instance=instance, raise_on_error=False,
                run_config={**_QUIET, **evaluation_run_config(tier)}, tags={"eval_pipeline/tier": tier, **watched},
                asset_selection=[dg.AssetKey(k) for k in baseline_steps])
            outcome.run_ids.append(run.run_id)
            if not run.success:
                outcome.error = f"evaluating the baseline {outcome.baseline} failed: {_run_failure(run)}"
                return outcome
        run = job.execute_in_process(partition_key=model, instance=instance, raise_on_error=False,
                                     run_config={**_QUIET, **evaluation_run_config(tier, outcome.baseline or "")},
                                     tags={"eval_pipeline/tier": tier, **watched})
    outcome.run_ids.append(run.run_id)
    if not run.success:
        outcome.error = f"evaluating {model} failed: {_run_failure(run)}"
        return outcome
    return _with_scorecard(home, outcome, tier)


def review_failures(home: DataHome, model: str, baseline: str | None = None, log=print,
                    thresholds: str | None = None) -> Evaluation:
    """Re-issue a deep evaluation's scorecard with the reviewers' verdicts: materialize
    ``failure_review`` (tasks re-written, ``inbox/`` read) and ``scorecard`` for ``model`` from its
    stored scores, without calling any model endpoint. ``baseline`` and ``thresholds`` (the gates
    file, default the packaged one) as for :func:`evaluate_model`."""
    from eval_pipeline.defs.registry.sensors import evaluation_run_config
    from eval_pipeline.defs.resources import EvaluationSettings

    outcome = _started(home, Evaluation(model=model, baseline=baseline, tier="deep"), thresholds)
    if outcome.error:
        return outcome
    stored = scored_on(home, model)
    if stored is None:
        outcome.error = f"{model} has no stored scores: run `eval-pipeline evaluate --model {model}` first"
        return outcome
    if stored[1] != "deep":
        outcome.error = (f"{model}'s stored scores are of the {stored[1]} tier, which sends no failures for review: "
                         f"run `eval-pipeline evaluate --model {model} --tier deep` first")
        return outcome
    defs = build_definitions(home, {"evaluation": EvaluationSettings(thresholds=thresholds)} if thresholds else None)
    instance = instance_for(home)
    if model not in set(instance.get_dynamic_partitions("model_versions")):
        instance.add_dynamic_partitions("model_versions", [model])
    config = evaluation_run_config("deep", outcome.baseline or "")
    del config["ops"]["candidate_outputs"]  # not run: the stored scores are re-used
    run = defs.resolve_job_def("evaluation_job").execute_in_process(
        partition_key=model, instance=instance, raise_on_error=False, run_config={**_QUIET, **config},
        asset_selection=[dg.AssetKey("failure_review"), dg.AssetKey("scorecard")])
    outcome.run_ids.append(run.run_id)
    if not run.success:
        outcome.error = f"reviewing the failures of {model} failed: {_run_failure(run)}"
        return outcome
    for event in run.get_asset_materialization_events():
        if event.asset_key.to_user_string() == "failure_review":
            meta = event.materialization.metadata
            outcome.review_labels = {"counts": meta["labels"].value, "quarantined_because": meta["quarantined_because"].value}
    return _with_scorecard(home, outcome, "deep")


def register_demo_models(home: DataHome) -> list[str]:
    """Record the demo's two model versions on every eval-set version's examples and register them
    (the baseline first); a version already registered is left as it is. Returns their keys."""
    from eval_pipeline.demo.annotators import load_demo_truth
    from eval_pipeline.demo.models import BASELINE_VERSION, CANDIDATE_VERSION, DEMO_MODEL, write_demo_recordings
    from eval_pipeline.lib.registry.versions import ModelRegistry, ModelVersion

    current = current_eval_set_version(home)
    if current is None:
        raise ValueError(f"no eval set in {home.warehouse}: the demo's models are recorded on its examples")
    with _read_only(home.warehouse) as con:
        examples = con.execute("select eval_set_version, example_id, request_id, task_type, messages, production_output "
                               "from sampling.eval_set_versions").pl().to_dicts()
    paths = write_demo_recordings(examples, load_demo_truth(home.demo_truth), home.recordings, current)
    registry = ModelRegistry(home.registry)
    keys = []
    for version, role, text in ((BASELINE_VERSION, "baseline", "in production since June (answers recorded)"),
                                (CANDIDATE_VERSION, "candidate", "the September release candidate (answers recorded)")):
        mv = ModelVersion(name=DEMO_MODEL, version=version, provider="recorded", recorded_path=str(paths[version]),
                          role=role, registered_at=datetime.now(timezone.utc), description=text)
        if mv.key not in registry.keys():
            registry.register(mv)
        keys.append(mv.key)
    return keys


@dataclass
class ProbeOutcome:
    """What ``eval-pipeline probe-judge`` prints: the month, the probe rows and the observed-bias
    rows of that month, or the error that stopped it."""

    month: str | None = None
    probes: list[dict] = field(default_factory=list)
    observed: list[dict] = field(default_factory=list)
    metadata: dict[str, object] = field(default_factory=dict)
    error: str | None = None


def probe_judge(home: DataHome, month: str | None = None, sample: int = 60, threshold: float = 0.10) -> ProbeOutcome:
    """Materialize ``judge_bias_probes`` (and the observed bias) for ``month`` (YYYY-MM; default:
    the latest month with an eval set) with ``judge_probes_job`` on the data home's instance."""
    from eval_pipeline.defs.resources import JUDGE_ENV, JudgeSettings

    outcome = ProbeOutcome()
    if not JudgeSettings().configured:  # what the run's judge resource will read
        outcome.error = (f"no judge endpoint configured: set {JUDGE_ENV[0]} and {JUDGE_ENV[1]} (and {JUDGE_ENV[2]} "
                         "if the endpoint needs one)")
        return outcome
    if month is None:
        latest = _query(home.warehouse, "select max(month_start) from sampling.eval_set")
        if not latest or latest[0][0][0] is None:
            outcome.error = f"no eval set in {home.warehouse}: run `eval-pipeline refresh` for a month first"
            return outcome
        month = f"{latest[0][0][0]:%Y-%m}"
    try:
        first = datetime.strptime(month, "%Y-%m")
    except ValueError:
        outcome.error = f"--month must be YYYY-MM, got {month!r}"
        return outcome
    outcome.month = month
    counts = _query(home.warehouse,
                    f"select count(*) from sampling.eval_set where month_start = '{first:%Y-%m-%d}'",
                    "select count(*) from labeling.human_labels h join sampling.eval_set e using (example_id) "
                    f"where e.month_start = '{first:%Y-%m-%d}'")
    if counts is None and _query(home.warehouse, "select count(*) from sampling.eval_set") is not None:
        counts = [[(1,)], [(0,)]]  # an eval set but no human_labels table yet
    if not counts or not counts[0][0][0]:
        outcome.error = f"no eval set for {month}: run `eval-pipeline refresh --month {month}` first"
        return outcome
    if not counts[1][0][0]:
        outcome.error = (f"no human labels for the examples of {month}: annotate them (labels inbox, or "
                         "`eval-pipeline labels pull`) and run the labeling job first")
        return outcome
    defs = build_definitions(home)
    run = defs.resolve_job_def("judge_probes_job").execute_in_process(
        partition_key=f"{first:%Y-%m-%d}", instance=instance_for(home), raise_on_error=False,
        run_config={**_QUIET, "ops": {"judge_bias_probes": {"config": {"sample": sample, "threshold": threshold}}}})
    if not run.success:
        outcome.error = f"the judge bias probes failed: {_run_failure(run)}"
        return outcome
    for event in run.get_asset_materialization_events():
        if event.asset_key.to_user_string() == "judge_bias_probes":
            outcome.metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    with _read_only(home.warehouse) as con:
        for name in ("probes", "observed"):
            table = "judge_bias_probes" if name == "probes" else "judge_human_gap"
            rows = con.execute(f"select * from labeling.{table} where month_start = ?", [first]).pl().to_dicts()
            setattr(outcome, name, rows)
    return outcome
