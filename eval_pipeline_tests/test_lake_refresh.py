"""A month with the large tables on local Parquet storage (EVAL_PIPELINE_STORAGE): two day runs at
once, each writing its own objects; the reconcile, quality and leak checks pass on every day; the
eval set is drawn from the lake; retention deletes the raw zone's objects."""

from datetime import date, datetime, timezone

import dagster as dg
import duckdb

from eval_pipeline.definitions import build_definitions
from eval_pipeline.defs.resources import PipelineSettings
from eval_pipeline.demo.logs import generate_logs
from eval_pipeline.lib.core.paths import DataHome
from eval_pipeline.lib.storage.lake import Lake
from eval_pipeline.runs import instance_for, load_eval_set, refresh_month, table_counts

DAY_CHECKS = {"records_reconcile", "raw_logs_expectations", "no_pii_leak"}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans that overlap at one moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = best = 0
    for _, step in edges:
        running += step
        best = max(best, running)
    return best


def test_a_month_on_local_parquet_storage_runs_its_days_in_parallel(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    monkeypatch.setenv("EVAL_PIPELINE_STORAGE", str(tmp_path / "lake"))  # the worker processes inherit it
    home = DataHome.resolve(tmp_path / "home").ensure()
    generate_logs(home.landing / "demo", date(2026, 2, 1), 28, 10, seed=4, truth_dir=home.demo_truth)
    result = refresh_month(home, "2026-02", log=print, workers=2)
    assert result.success, result.failed

    # one object per day and table, the raw zone under its own prefix; none of them in DuckDB
    main, raw = Lake(str(tmp_path / "lake")), Lake(str(tmp_path / "lake" / "restricted"), restricted=True)
    days = [f"2026-02-{d:02d}" for d in range(1, 29)]
    for lake, table in ((raw, "ingest.raw_logs"), (raw, "ingest.quarantined_logs"),
                        (main, "privacy.redacted_logs"), (main, "embeddings.log_embeddings")):
        assert lake.keys(table) == days, table
    assert main.keys("clustering.log_clusters") == ["2026-02-01"]
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        records_in = con.execute("select sum(records) from ingest.landing_manifest").fetchone()[0]
    assert sum(raw.rows("ingest.raw_logs", days).values()) == 28 * 10
    assert sum(raw.rows("ingest.quarantined_logs", days).values()) == records_in - 28 * 10 > 0
    for path, zone in ((home.warehouse, "main"), (home.raw_warehouse, "raw")):
        with duckdb.connect(str(path), read_only=True) as con:
            kinds = dict(con.execute("select table_schema || '.' || table_name, table_type from information_schema.tables "
                                     "where table_schema in ('ingest', 'privacy', 'embeddings', 'clustering')").fetchall())
        lake_tables = {t for t, kind in kinds.items() if kind == "VIEW"}
        assert lake_tables == ({"ingest.raw_logs", "ingest.quarantined_logs"} if zone == "raw" else
                               {"privacy.redacted_logs", "embeddings.log_embeddings", "clustering.log_clusters"})
    counts = table_counts(home)  # read through the views
    assert counts["privacy.redacted_logs"] == counts["embeddings.log_embeddings"] == counts["clustering.log_clusters"]
    assert counts["ingest.raw_logs"] + counts["ingest.quarantined_logs"] == records_in

    # every day's checks ran and passed, and two day runs ran at once
    instance = instance_for(home)
    checked: dict[str, set[str]] = {}
    spans = []
    for record in instance.get_run_records(dg.RunsFilter(job_name="ingest_job")):
        day = record.dagster_run.tags["dagster/partition"]
        spans.append((record.start_time, record.end_time))
        for entry in instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = entry.dagster_event.event_specific_data
            assert evaluation.passed, (day, evaluation.check_name, evaluation.metadata)
            checked.setdefault(day, set()).add(evaluation.check_name)
    assert sorted(checked) == days and all(names == DAY_CHECKS for names in checked.values())
    assert most_at_once(spans) == 2

    # the eval set was drawn from the lake's records
    version, examples = load_eval_set(home)
    assert version == "v1" and len(examples) > 100
    with duckdb.connect() as con:
        lake_ids = {r[0] for r in con.execute(f"select request_id from read_parquet('{tmp_path}/lake/privacy/redacted_logs/*.parquet')").fetchall()}
    assert {e["request_id"] for e in examples} <= lake_ids

    # retention: the raw objects of the days before the cutoff are deleted, the redacted ones kept
    before = sum(raw.rows("ingest.raw_logs", days[:14]).values()) + sum(raw.rows("ingest.quarantined_logs", days[:14]).values())
    keep_days = (datetime.now(timezone.utc).date() - date(2026, 2, 15)).days
    defs = build_definitions(home, {"settings": PipelineSettings(home=str(home.root), raw_retention_days=keep_days)})
    run = defs.resolve_job_def("raw_retention_job").execute_in_process(instance=instance, raise_on_error=False)
    assert run.success
    assert [(e.check_name, e.passed) for e in run.get_asset_check_evaluations()] == [("raw_within_retention", True)]
    assert raw.keys("ingest.raw_logs") == days[14:] and main.keys("privacy.redacted_logs") == days
    deleted = run.asset_materializations_for_node("raw_retention_log")[0].metadata["rows_deleted"].value
    assert deleted == before and before > 0
