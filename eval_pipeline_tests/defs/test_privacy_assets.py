"""Privacy through the real Dagster runtime: redaction, the restricted zone, retention, the leak check."""

import json
import stat
import subprocess
import sys
from datetime import date, timedelta

import dagster as dg
import duckdb
import polars as pl
from conftest import good_record

from eval_pipeline.definitions import build_definitions
from eval_pipeline.defs.ingest import assets as ingest_assets
from eval_pipeline.defs.ingest import checks as ingest_checks
from eval_pipeline.defs.privacy import assets as privacy_assets
from eval_pipeline.defs.privacy import checks as privacy_checks
from eval_pipeline.defs.resources import PipelineSettings, RedactionSettings, build_resources
from eval_pipeline.lib.core.paths import DataHome
from eval_pipeline.lib.privacy.redaction import DEFAULT_ENTITIES
from eval_pipeline.lib.storage.spool import spool_dir

ALL = [ingest_assets.landing_manifest, ingest_assets.ingested_logs, ingest_checks.records_reconcile,
       ingest_checks.raw_logs_expectations, privacy_assets.redacted_logs, privacy_assets.raw_retention_log,
       privacy_checks.no_pii_leak, privacy_checks.raw_within_retention]
DAY = dg.AssetSelection.assets("raw_logs", "quarantined_logs", "redacted_logs")
SYSTEM = {"role": "system", "content": "You are the support assistant of a digital bank."}


def conversation_file(home, day="2026-03-02"):
    """Two turns of one conversation naming a person, an email and a phone; another conversation naming someone else."""
    turn0_user = {"role": "user", "content": "Hi, I'm Sarah Connor, my email is sarah.connor@example.com. My card never arrived."}
    turn0_reply = "Sorry Sarah Connor, I will look into it. Can you confirm your phone number?"
    turn1_user = {"role": "user", "content": "Sure, it is +44 20 7946 0958. Sarah Connor again, thanks."}
    other_user = {"role": "user", "content": "My name is James Holden and I was charged twice, call me on +1 (415) 555-0132."}
    records = [
        good_record("p-1", f"{day}T09:00:00Z", conversation_id="conv-a", turn_index=0,
                    messages=[SYSTEM, turn0_user], completion=turn0_reply),
        good_record("p-2", f"{day}T09:02:00Z", conversation_id="conv-a", turn_index=1,
                    messages=[SYSTEM, turn0_user, {"role": "assistant", "content": turn0_reply}, turn1_user],
                    completion="Thanks, I have ordered a new card to your address.",
                    feedback={"thumbs": "down", "comment": "write to me at sarah.connor@example.com"}),
        good_record("p-3", f"{day}T10:00:00Z", conversation_id="conv-b", messages=[SYSTEM, other_user],
                    completion="I am sorry James Holden, the duplicate charge will be refunded.",
                    retrieved_chunks=[{"doc_id": "kb-1", "text": "Refunds take 3-5 days. Contact James Holden at jh@example.org.", "score": 0.7}]),
    ]
    path = home.landing / "chat" / f"{day}.canonical.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run_day(home, day, resources=None, raise_on_error=True):
    resources = resources or build_resources(home)
    assert dg.materialize(ALL, resources=resources, selection=["landing_manifest"]).success
    return dg.materialize(ALL, resources=resources, partition_key=day, selection=DAY, raise_on_error=raise_on_error)


def redacted(home) -> pl.DataFrame:
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        return con.execute("select * from privacy.redacted_logs order by request_id").pl()


def test_no_asset_but_redacted_logs_reads_raw_text(home):
    graph = build_definitions(home).resolve_asset_graph()
    for raw in ("raw_logs", "quarantined_logs"):
        readers = {k.to_user_string() for k in graph.get(dg.AssetKey(raw)).child_keys}
        assert readers <= {"redacted_logs"}, f"{raw} is read by {readers - {'redacted_logs'}}"
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("raw_logs")).child_keys} == {"redacted_logs"}


def test_raw_records_live_only_in_the_owner_only_zone(home):
    conversation_file(home)
    assert run_day(home, "2026-03-02").success
    assert stat.S_IMODE(home.restricted.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.landing.stat().st_mode) == 0o700
    with duckdb.connect(str(home.warehouse), read_only=True) as con:
        tables = {f"{s}.{t}" for s, t in con.execute("select table_schema, table_name from information_schema.tables").fetchall()}
    assert "privacy.redacted_logs" in tables and not tables & {"ingest.raw_logs", "ingest.quarantined_logs"}
    with duckdb.connect(str(home.raw_warehouse), read_only=True) as con:
        assert con.execute("select count(*) from ingest.raw_logs where request_id like 'p-%'").fetchone()[0] == 3


def test_redaction_is_consistent_within_a_conversation_and_leak_free(home):
    conversation_file(home)
    result = run_day(home, "2026-03-02")
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["no_pii_leak"].passed
    rows = {r["request_id"]: r for r in redacted(home).filter(pl.col("request_id").str.starts_with("p-")).to_dicts()}
    first, second, other = rows["p-1"], rows["p-2"], rows["p-3"]
    text = json.dumps([first, second, other], default=str)
    for value in ("Sarah Connor", "sarah.connor@example.com", "7946 0958", "James Holden", "555-0132", "jh@example.org"):
        assert value not in text
    # turn 0 and turn 1 of conv-a: the repeated history is redacted identically
    assert second["messages"][1]["content"] == first["messages"][1]["content"]
    assert "<PERSON_1>" in first["user_input"] and "<EMAIL_ADDRESS_1>" in first["user_input"]
    assert "<PERSON_1>" in second["user_input"] and "<PHONE_NUMBER_1>" in second["user_input"]
    assert second["feedback_comment"] == "write to me at <EMAIL_ADDRESS_1>"
    # another conversation numbers its own people; the chunk's name and email are redacted too
    assert "<PERSON_1>" in other["user_input"] and "<PERSON_1>" in other["retrieved_chunks"][0]["text"]
    assert "<EMAIL_ADDRESS_1>" in other["retrieved_chunks"][0]["text"]
    assert json.loads(second["pii_counts"])["PHONE_NUMBER"] >= 1
    # ordinary words survive
    assert "My card never arrived." in first["user_input"] and "charged twice" in other["user_input"]


def test_leak_check_fails_on_a_planted_leak(home):
    conversation_file(home)
    leaky = RedactionSettings(entities=[e for e in DEFAULT_ENTITIES if e != "EMAIL_ADDRESS"])
    resources = {**build_resources(home), "redaction": leaky}
    result = run_day(home, "2026-03-02", resources=resources, raise_on_error=False)
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "no_pii_leak")
    assert check.passed is False
    # p-1's message and its user_input column, p-2's repeated history and its comment, p-3's chunk
    assert check.metadata["residual_by_type"].value["EMAIL_ADDRESS"] == 5


def test_retention_deletes_old_raw_days_and_files_and_proves_it(tmp_path):
    home = DataHome.resolve(tmp_path / "fresh").ensure()  # only the two days below
    today = date.today()
    old_day, new_day = (today - timedelta(days=40)).isoformat(), (today - timedelta(days=2)).isoformat()
    old_file = conversation_file(home, old_day)
    conversation_file(home, new_day)
    instance = dg.DagsterInstance.ephemeral()
    resources = {**build_resources(home), "settings": PipelineSettings(home=str(home.root), raw_retention_days=30)}
    assert dg.materialize(ALL, resources=resources, selection=["landing_manifest"], instance=instance).success
    for day in (old_day, new_day):
        assert dg.materialize(ALL, resources=resources, partition_key=day, selection=DAY, instance=instance).success

    before = dg.materialize(ALL, resources=resources, selection=dg.AssetSelection.checks(privacy_checks.raw_within_retention),
                            instance=instance, raise_on_error=False)
    assert before.get_asset_check_evaluations()[0].passed is False  # the old day is still there

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = spool_dir(home.raw_warehouse) / f"{int(gone.stdout)}-0.parquet"  # raw rows a killed run left in transit
    left.write_bytes(b"raw text")
    result = dg.materialize(ALL, resources=resources, selection=["raw_retention_log"], instance=instance)
    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == "raw_within_retention" and check.passed
    log = result.asset_materializations_for_node("raw_retention_log")[0].metadata
    assert log["rows_deleted"].value == 3 and log["days_deleted"].value == 1
    assert log["landing_files_deleted"].value == [old_file.relative_to(home.landing).as_posix()]
    assert not old_file.exists()
    assert log["spool_files_deleted"].value == 1 and not left.exists()
    with duckdb.connect(str(home.raw_warehouse), read_only=True) as con:
        days = {str(d) for (d,) in con.execute("select distinct cast(timestamp as date) from ingest.raw_logs").fetchall()}
    assert days == {new_day}
    # redacted data is kept; Dagster is told the old raw partition's data is gone
    assert set(redacted(home)["timestamp"].dt.date().cast(pl.String)) == {old_day, new_day}
    observed = instance.fetch_observations(dg.AssetKey("raw_logs"), limit=10).records
    assert [(r.partition_key, r.asset_observation.metadata["deleted_by_retention"].value) for r in observed] == [(old_day, True)]


def test_re_materializing_a_day_analyses_nothing_again(home):
    conversation_file(home)

    def analysis(result):
        [mat] = result.asset_materializations_for_node("redacted_logs")
        return {k: mat.metadata[k].value for k in ("distinct_texts", "cache_hits", "texts_analysed")}

    first = analysis(run_day(home, "2026-03-02"))
    before = redacted(home)
    second = analysis(run_day(home, "2026-03-02"))
    assert first["distinct_texts"] > 5 and first["texts_analysed"] == first["distinct_texts"] - first["cache_hits"] > 0
    assert second == {"distinct_texts": first["distinct_texts"], "cache_hits": first["distinct_texts"], "texts_analysed": 0}
    assert redacted(home).equals(before)  # the same rows, from the cached analysis
    assert home.redaction_cache.exists()
