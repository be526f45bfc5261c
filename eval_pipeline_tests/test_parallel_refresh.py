"""A month's days in parallel worker processes give the same day tables as one after the other."""

import duckdb
import polars as pl
from month_template import MONTH, PER_DAY, template_resources, write_month_logs

from eval_pipeline import runs
from eval_pipeline.lib.core.paths import DataHome
from eval_pipeline.lib.embeddings.encode import from_storage
from eval_pipeline.runs import recycle_after, refresh_month, table_counts

TABLES = {
    "restricted": {"ingest.raw_logs": "request_id", "ingest.quarantined_logs": "source_file, source_line"},
    "warehouse": {"privacy.redacted_logs": "request_id", "embeddings.log_embeddings": "request_id"},
}


def _read(home: DataHome) -> dict[str, pl.DataFrame]:
    out = {}
    for zone, tables in TABLES.items():
        path = home.raw_warehouse if zone == "restricted" else home.warehouse
        with duckdb.connect(str(path), read_only=True) as con:
            for table, order in tables.items():
                out[table] = con.execute(f"select * from {table} order by {order}").pl()
    return out


def test_parallel_days_give_the_same_tables_as_sequential_days(refreshed_month, tmp_path, monkeypatch):
    """...also when the workers are replaced part way (here after 10 days: a record budget of 150
    against days of up to 14 records, as a 1M-record month's 36k-record days meet RECYCLE_RECORDS)."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "unused"))
    monkeypatch.setattr(runs, "RECYCLE_RECORDS", 150)
    # one after the other: the session's reference month (28 days of 12 records, workers=1; month_template.py)
    reference = refreshed_month.result
    assert reference.success and len(reference.days) == 28 and reference.monthly_jobs == ["monthly_refresh_job"]
    said = list(refreshed_month.said)
    home = DataHome.resolve(tmp_path / "parallel").ensure()
    write_month_logs(home)
    result = refresh_month(home, MONTH, log=said.append, workers=2, resources=template_resources())
    assert result.success and len(result.days) == 28 and result.monthly_jobs == ["monthly_refresh_job"]
    homes = [refreshed_month.home, home]
    assert said == ["  days of up to 14 records: each day worker is replaced after 10 days"]
    sequential, parallel = (_read(h) for h in homes)
    assert sequential["ingest.raw_logs"].height == 28 * PER_DAY
    for table in sequential:
        left, right = sequential[table], parallel[table]
        # columns that name the run or its moment differ by construction; vectors are compared
        # by cosine: torch's sums depend on its thread count (2 here, 1 per worker), which moves
        # the last float16 bit of an occasional vector (seen: 1 of 336, cosine 0.99997)
        drop = [c for c in left.columns if c in ("created_at", "materialized_at", "run_id", "vector")]
        assert left.drop(drop).equals(right.drop(drop)), table
        if "vector" in left.columns:
            a, b = from_storage(left["vector"].to_list()), from_storage(right["vector"].to_list())
            assert float((a * b).sum(axis=1).min()) > 0.9999, table
    # The monthly tables are not compared cell by cell: UMAP turns a last-bit difference in one
    # vector into other clusters. Both months are clustered and sampled over the same records.
    counts = [{t: n for t, n in table_counts(h).items() if t.split(".")[0] in ("ingest", "privacy", "embeddings")}
              for h in homes]
    assert counts[0] == counts[1] and counts[0]["embeddings.embedding_cache"] > 0
    clustered = []
    for home in homes:
        with duckdb.connect(str(home.warehouse), read_only=True) as con:
            clustered.append(con.execute("select request_id from clustering.log_clusters order by 1").fetchall())
    assert clustered[0] == clustered[1] and len(clustered[0]) == 28 * PER_DAY
    # both runs used both caches: the parallel home has one cache file shared by its workers
    assert homes[1].redaction_cache.exists()


def test_a_worker_is_replaced_only_when_its_days_would_pass_the_record_budget():
    assert recycle_after([3_600] * 28, workers=2, budget=110_000) is None  # 100k records a month: 50k a worker
    assert recycle_after([36_000] * 28, workers=2, budget=110_000) == 3  # 1M: 14 days of 36k a worker
    assert recycle_after([500_000, 10], workers=2, budget=110_000) == 1  # a day above the budget: one day a worker
    assert recycle_after([], workers=2) is None and recycle_after([0, 0], workers=2) is None
    # the default budget: a 100k-record month keeps its two workers, a 1M-record month takes a fresh one per day
    assert recycle_after([3_600] * 28, workers=2) is None and recycle_after([36_000] * 28, workers=2) == 1
