"""The lake (lib/storage/lake.py): one Parquet object per partition, replaced whole, read lazily by
DuckDB through views; on a local folder and on a real S3-compatible server (moto's, on 127.0.0.1)."""

import urllib.request
from datetime import datetime

import boto3
import duckdb
import polars as pl
import pytest

from eval_pipeline.lib.privacy.retention import purge_raw_zone, raw_older_than
from eval_pipeline.lib.storage.lake import Lake, StorageLocations, attach, ensure_view, registered_name
from eval_pipeline.lib.storage.tables import QUARANTINE_SCHEMA, RAW_LOGS_SCHEMA, REDACTED_LOGS_SCHEMA, frame


def redacted(day: str, n: int) -> pl.DataFrame:
    at = datetime.fromisoformat(day)
    return frame([{"request_id": f"{day}-{i}", "conversation_id": f"c{i}", "turn_index": 0,
                   "timestamp": at.replace(minute=i), "user_input": f"text {i}", "pii_counts": "{}", "withheld": []}
                  for i in range(n)], REDACTED_LOGS_SCHEMA)


def test_locations_default_to_the_embedded_store_and_keep_the_raw_zone_apart(tmp_path):
    assert not StorageLocations.resolve({}).lake
    local = StorageLocations.resolve({"EVAL_PIPELINE_STORAGE": str(tmp_path / "lake")})
    assert local.main == str(tmp_path / "lake") and local.raw == str(tmp_path / "lake" / "restricted")
    s3 = StorageLocations.resolve({"EVAL_PIPELINE_STORAGE": "s3://team-bucket/evals/",
                                   "EVAL_PIPELINE_RAW_STORAGE": "s3://team-raw/evals"})
    assert (s3.main, s3.raw) == ("s3://team-bucket/evals", "s3://team-raw/evals")
    with pytest.raises(ValueError, match="EVAL_PIPELINE_STORAGE is not"):
        StorageLocations.resolve({"EVAL_PIPELINE_RAW_STORAGE": "s3://team-raw/x"})
    with pytest.raises(ValueError, match="inside the raw zone"):
        StorageLocations.resolve({"EVAL_PIPELINE_STORAGE": "s3://b1/raw/main", "EVAL_PIPELINE_RAW_STORAGE": "s3://b1/raw"})
    with pytest.raises(ValueError, match="its own prefix"):
        StorageLocations.resolve({"EVAL_PIPELINE_STORAGE": "s3://b1/x", "EVAL_PIPELINE_RAW_STORAGE": "s3://b1/x/"})
    with pytest.raises(ValueError, match="scheme 'gs'"):
        StorageLocations.resolve({"EVAL_PIPELINE_STORAGE": "gs://bucket/x"})
    with pytest.raises(ValueError, match="needs a bucket"):
        StorageLocations.resolve({"EVAL_PIPELINE_STORAGE": "s3:///x"})


def exercise(lake: Lake) -> None:
    """What every lake must do, whatever its filesystem."""
    table = "privacy.redacted_logs"
    assert lake.keys(table) == [] and lake.dataset(table, REDACTED_LOGS_SCHEMA).to_table().num_rows == 0
    for day, n in (("2026-03-01", 5), ("2026-03-02", 7)):
        assert lake.write(table, day, redacted(day, n).to_arrow()) > 0
    lake.write(table, "2026-03-01", redacted("2026-03-01", 3).to_arrow())  # a re-run replaces the object
    assert lake.keys(table) == ["2026-03-01", "2026-03-02"]
    assert lake.rows(table, ["2026-03-01", "2026-03-02", "2026-03-09"]) == {"2026-03-01": 3, "2026-03-02": 7}
    one_day = pl.from_arrow(lake.dataset(table, REDACTED_LOGS_SCHEMA, ["2026-03-02"]).to_table(columns=["request_id"]))
    assert one_day["request_id"].to_list() == [f"2026-03-02-{i}" for i in range(7)]
    with duckdb.connect() as con:  # SQL names the table as it would in the DuckDB file
        assert attach(con, lake, "main") == ["privacy.redacted_logs", "embeddings.log_embeddings", "clustering.log_clusters"]
        ensure_view(con, table)
        ensure_view(con, table)  # idempotent
        assert con.execute("select count(*), min(request_id) from privacy.redacted_logs").fetchone() == (10, "2026-03-01-0")
        ensure_view(con, "embeddings.log_embeddings")
        assert con.execute("select count(*) from embeddings.log_embeddings").fetchone() == (0,)  # no partition yet: no rows
    assert lake.delete(table, ["2026-03-01", "2026-03-05"]) == {"2026-03-01": 3}
    assert lake.keys(table) == ["2026-03-02"]
    with pytest.raises(ValueError, match="not a partition key"):
        lake.write(table, "../escape", redacted("2026-03-01", 1).to_arrow())


def test_a_local_lake_stores_one_object_per_partition(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    exercise(lake)
    assert sorted(p.name for p in (tmp_path / "lake" / "privacy" / "redacted_logs").iterdir()) == ["2026-03-02.parquet"]


def test_a_local_write_that_fails_leaves_the_old_object_and_no_partial_file(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    table = "privacy.redacted_logs"
    lake.write(table, "2026-03-01", redacted("2026-03-01", 4).to_arrow())
    with pytest.raises(FileNotFoundError):
        lake.write(table, "2026-03-01", tmp_path / "no-such-spool-file.parquet")
    assert lake.rows(table, ["2026-03-01"]) == {"2026-03-01": 4}
    assert [p.name for p in (tmp_path / "lake" / "privacy" / "redacted_logs").iterdir()] == ["2026-03-01.parquet"]


def test_a_killed_writers_partial_file_is_deleted_by_the_next_write_on_its_host(tmp_path):
    import socket
    import subprocess
    import sys

    lake = Lake(str(tmp_path / "lake"))
    table = "privacy.redacted_logs"
    lake.write(table, "2026-03-01", redacted("2026-03-01", 2).to_arrow())
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    folder = tmp_path / "lake" / "privacy" / "redacted_logs"
    killed = folder / f".2026-03-02.{socket.gethostname()}.{gone}-0123.partial"  # as a killed write leaves it
    elsewhere = folder / f".2026-03-02.another-host.{gone}-0123.partial"  # another host's: not ours to judge
    for path in (killed, elsewhere):
        path.write_bytes(b"half an object")
    lake.write(table, "2026-03-03", redacted("2026-03-03", 2).to_arrow())
    assert not killed.exists() and elsewhere.exists()
    assert lake.keys(table) == ["2026-03-01", "2026-03-03"]


def test_the_restricted_zone_is_owner_only_and_retention_deletes_its_objects(tmp_path):
    raw = Lake(str(tmp_path / "lake" / "restricted"), restricted=True)
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]
    for i, day in enumerate(days):
        rows = [{"request_id": f"{day}-{j}", "timestamp": datetime.fromisoformat(day), "messages": [],
                 "source_file": "a.jsonl", "source_line": j + 1} for j in range(i + 1)]
        raw.write("ingest.raw_logs", day, frame(rows, RAW_LOGS_SCHEMA).to_arrow())
    raw.write("ingest.quarantined_logs", "2026-03-01", frame(
        [{"source_file": "a.jsonl", "source_line": 9, "reason": "invalid_json"}], QUARANTINE_SCHEMA).to_arrow())
    assert (tmp_path / "lake" / "restricted").stat().st_mode & 0o777 == 0o700
    cutoff = datetime.fromisoformat("2026-03-03").date()
    with duckdb.connect() as con:
        assert raw_older_than(con, tmp_path, {}, cutoff, lake=raw) == {
            "ingest.raw_logs": 3, "ingest.quarantined_logs": 1, "landing_files": 0}
        purged = purge_raw_zone(con, tmp_path, {}, cutoff, lake=raw)
        assert sorted((t, d.isoformat(), n) for t, d, n in purged.rows) == [
            ("ingest.quarantined_logs", "2026-03-01", 1), ("ingest.raw_logs", "2026-03-01", 1),
            ("ingest.raw_logs", "2026-03-02", 2)]
        assert sum(raw_older_than(con, tmp_path, {}, cutoff, lake=raw).values()) == 0
    assert raw.keys("ingest.raw_logs") == ["2026-03-03"] and raw.keys("ingest.quarantined_logs") == []


@pytest.fixture
def s3_server(monkeypatch):
    """moto's S3-compatible server on 127.0.0.1 (real HTTP), with the usual AWS variables set."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in (("AWS_ACCESS_KEY_ID", "lake-key"), ("AWS_SECRET_ACCESS_KEY", "lake-secret"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ENDPOINT_URL", endpoint)):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    client = boto3.client("s3", endpoint_url=endpoint)
    yield client
    # moto keeps its buckets in this process, across servers: empty them for the next test
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
    server.stop()


def test_a_lake_on_an_s3_compatible_server(s3_server):
    s3_server.create_bucket(Bucket="eval-lake")
    lake = Lake("s3://eval-lake/team/evals")
    exercise(lake)
    # pyarrow keeps an empty "folder/" marker where a delete emptied a prefix: nothing else is there
    listed = [o["Key"] for o in s3_server.list_objects_v2(Bucket="eval-lake")["Contents"] if not o["Key"].endswith("/")]
    assert listed == ["team/evals/privacy/redacted_logs/2026-03-02.parquet"]
    assert lake.describe("privacy.redacted_logs", "2026-03-02") == "s3://eval-lake/team/evals/privacy/redacted_logs/2026-03-02.parquet"


def test_the_raw_zone_uses_its_own_credentials(s3_server, monkeypatch):
    """The restricted lake signs with EVAL_PIPELINE_RAW_AWS_*: the server sees another access key."""
    s3_server.create_bucket(Bucket="eval-raw")
    monkeypatch.setenv("EVAL_PIPELINE_RAW_AWS_ACCESS_KEY_ID", "raw-only-key")
    monkeypatch.setenv("EVAL_PIPELINE_RAW_AWS_SECRET_ACCESS_KEY", "raw-only-secret")
    seen = []
    import moto.core.responses as responses

    original = responses.BaseResponse.setup_class

    def spy(self, request, *args, **kwargs):
        seen.append(request.headers.get("Authorization", ""))
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(responses.BaseResponse, "setup_class", spy)
    raw = Lake("s3://eval-raw/evals", restricted=True)
    raw.write("ingest.raw_logs", "2026-03-01", frame([], RAW_LOGS_SCHEMA).to_arrow())
    Lake("s3://eval-raw/evals").keys("ingest.raw_logs")
    assert any("Credential=raw-only-key/" in header for header in seen)
    assert any("Credential=lake-key/" in header for header in seen)
    assert registered_name("ingest.raw_logs") == "lake__ingest__raw_logs"


def test_a_data_home_filled_without_a_lake_moves_into_one(tmp_path, monkeypatch, capsys):
    """`eval-pipeline move-to-lake`: the DuckDB tables become one object per day, read back
    through views; a table left in place would hide the lake's rows, so ensure_view refuses it."""
    from eval_pipeline.cli import main
    from eval_pipeline.lib.core.paths import DataHome
    from eval_pipeline.lib.storage.lake import LakeConflict

    home = DataHome.resolve(tmp_path / "home").ensure()
    rows = pl.concat([redacted("2026-03-01", 4), redacted("2026-03-02", 6)])  # noqa: F841 - read by name in the SQL
    with duckdb.connect(str(home.warehouse)) as con:
        con.execute("create schema privacy")
        con.execute("create table privacy.redacted_logs as select * from rows")
        con.execute("create schema sampling; create table sampling.eval_set as select 1 as x")  # a small table: stays
    monkeypatch.setenv("EVAL_PIPELINE_STORAGE", str(tmp_path / "lake"))
    lake = Lake(str(tmp_path / "lake"))
    with duckdb.connect(str(home.warehouse)) as con:
        attach(con, lake, "main")
        with pytest.raises(LakeConflict, match="move-to-lake"):
            ensure_view(con, "privacy.redacted_logs")
    assert main(["move-to-lake", "--home", str(home.root)]) == 0
    assert "privacy.redacted_logs: 10 rows in 2 partitions" in capsys.readouterr().out
    assert lake.rows("privacy.redacted_logs", ["2026-03-01", "2026-03-02"]) == {"2026-03-01": 4, "2026-03-02": 6}
    with duckdb.connect(str(home.warehouse)) as con:
        attach(con, lake, "main")
        kinds = dict(con.execute("select table_name, table_type from information_schema.tables "
                                 "where table_schema in ('privacy', 'sampling')").fetchall())
        assert kinds == {"redacted_logs": "VIEW", "eval_set": "BASE TABLE"}
        assert con.execute("select count(*) from privacy.redacted_logs").fetchone() == (10,)
    assert main(["move-to-lake", "--home", str(home.root)]) == 0  # again: nothing left to move
    assert "nothing to move" in capsys.readouterr().out
    monkeypatch.delenv("EVAL_PIPELINE_STORAGE")
    assert main(["move-to-lake", "--home", str(home.root)]) == 2
    assert "EVAL_PIPELINE_STORAGE is not set" in capsys.readouterr().err
