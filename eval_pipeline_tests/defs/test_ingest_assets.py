"""The ingest assets through the real Dagster runtime into a DuckDB file under tmp_path."""

import json
from collections import Counter

import dagster as dg
import duckdb
import polars as pl
from conftest import mixed_lines

from eval_pipeline.definitions import build_definitions
from eval_pipeline.defs.ingest import assets, checks
from eval_pipeline.defs.resources import PipelineSettings, build_resources

INGEST = [assets.landing_manifest, assets.ingested_logs, checks.records_reconcile, checks.raw_logs_expectations]
DAY_SELECTION = dg.AssetSelection.assets("raw_logs", "quarantined_logs")


def materialize_manifest(home):
    result = dg.materialize(INGEST, resources=build_resources(home), selection=["landing_manifest"])
    assert result.success
    return result


def materialize_day(home, day, instance=None):
    result = dg.materialize(INGEST, resources=build_resources(home), partition_key=day,
                            selection=DAY_SELECTION, instance=instance)
    assert result.success
    return result


def query(home, sql) -> pl.DataFrame:
    """Query the restricted zone (raw_logs, quarantined_logs) and, attached, the warehouse."""
    with duckdb.connect(str(home.raw_warehouse), read_only=True) as con:
        return con.execute(sql).pl()


def test_a_day_lands_in_raw_and_quarantine_with_exact_counts(home):
    materialize_manifest(home)
    result = materialize_day(home, "2026-03-02")
    checks_passed = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks_passed == {"records_reconcile": True, "raw_logs_expectations": True}

    raw = query(home, "select * from ingest.raw_logs order by request_id")
    # from the samples: req-0001, req-0002, req-0101 (openai) and the OTLP span on 03-02; from the mixed file: ok-1, ok-2
    assert raw["request_id"].to_list() == ["chatcmpl-otel-1", "ok-1", "ok-2", "req-0001", "req-0002", "req-0101"]
    assert raw.filter(pl.col("request_id") == "req-0002")["messages"].list.len().item() == 4
    quarantined = query(home, "select * from ingest.quarantined_logs")
    expected = Counter(reason for _, reason in mixed_lines() if reason is not None)
    assert Counter(quarantined["reason"].to_list()) == expected
    assert set(quarantined["source_file"]) == {"app/mixed.canonical.jsonl"}

    reconcile = next(e for e in result.get_asset_check_evaluations() if e.check_name == "records_reconcile")
    assert reconcile.metadata["records_in"].value == 6 + sum(expected.values())


def test_rematerializing_a_day_leaves_identical_rows(home):
    materialize_manifest(home)
    materialize_day(home, "2026-03-02")
    materialize_day(home, "2026-03-03")
    before_raw = query(home, "select * exclude (messages, retrieved_chunks, post_processing) from ingest.raw_logs order by request_id")
    before_q = query(home, "select * from ingest.quarantined_logs order by source_file, source_line")
    materialize_day(home, "2026-03-02")
    after_raw = query(home, "select * exclude (messages, retrieved_chunks, post_processing) from ingest.raw_logs order by request_id")
    after_q = query(home, "select * from ingest.quarantined_logs order by source_file, source_line")
    assert before_raw.equals(after_raw) and before_q.equals(after_q)
    assert query(home, "select count(*) as n, count(distinct request_id) as d from ingest.raw_logs").row(0) == (9, 9)


def test_an_empty_day_still_writes_typed_tables(home):
    materialize_manifest(home)
    result = materialize_day(home, "2026-04-01")
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert query(home, "select count(*) from ingest.raw_logs").item() == 0
    assert "reason" in query(home, "select * from ingest.quarantined_logs").columns


def test_reconcile_check_fails_when_records_go_missing(home):
    materialize_manifest(home)
    # the manifest now claims one more record on the day than the files hold
    with duckdb.connect(str(home.warehouse)) as con:  # the manifest is in the warehouse, not the raw zone
        con.execute("""update ingest.landing_manifest set days = '{"2026-03-02": 15, "2026-03-03": 1}'
                       where path = 'app/mixed.canonical.jsonl'""")
    result = dg.materialize(INGEST, resources=build_resources(home), partition_key="2026-03-02",
                            selection=DAY_SELECTION, raise_on_error=False)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["records_reconcile"].passed is False
    assert evaluations["records_reconcile"].metadata["unaccounted"].value == 1
    assert evaluations["raw_logs_expectations"].passed is True


def test_a_file_changed_after_the_manifest_is_refused_until_rescanned(home):
    materialize_manifest(home)
    path = home.landing / "app" / "mixed.canonical.jsonl"
    late = {"request_id": "late", "timestamp": "2026-03-02T20:00:00Z", "messages": [{"role": "user", "content": "hi"}],
            "completion": "", "model": "m"}
    path.write_bytes(path.read_bytes() + json.dumps(late).encode() + b"\n")
    result = dg.materialize(INGEST, resources=build_resources(home), partition_key="2026-03-02",
                            selection=DAY_SELECTION, raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "mixed.canonical.jsonl: changed or removed since the landing manifest was built" in failure
    manifest = materialize_manifest(home)
    meta = manifest.asset_materializations_for_node("landing_manifest")[0].metadata
    assert meta["changed_days"].value == ["2026-03-02", "2026-03-03"]
    materialize_day(home, "2026-03-02")
    assert query(home, "select count(*) from ingest.raw_logs where request_id = 'late'").item() == 1


def test_landing_sensor_requests_the_manifest_then_the_changed_days(home):
    defs = build_definitions(home)
    instance = dg.DagsterInstance.ephemeral()
    sensor = defs.get_sensor_def("landing_sensor")
    settings = PipelineSettings(home=str(home.root), raw_retention_days=3650)  # the samples are from March 2026

    first = sensor(dg.build_sensor_context(instance=instance, resources={"settings": settings}))
    assert [r.job_name for r in first] == ["landing_manifest_job"]

    defs.resolve_job_def("landing_manifest_job").execute_in_process(instance=instance)
    context = dg.build_sensor_context(instance=instance, resources={"settings": settings}, cursor=_cursor_after(first))
    second = sensor(context)
    assert sorted((r.job_name, r.partition_key) for r in second) == [
        ("ingest_job", "2026-03-02"), ("ingest_job", "2026-03-03")]
    # nothing changed since: the third tick skips
    third = sensor(dg.build_sensor_context(instance=instance, resources={"settings": settings}, cursor=context.cursor))
    assert isinstance(third, dg.SkipReason)
    # days older than the raw retention are never re-ingested
    short = PipelineSettings(home=str(home.root), raw_retention_days=30)
    aged = sensor(dg.build_sensor_context(instance=instance, resources={"settings": short}, cursor=_cursor_after(first)))
    assert isinstance(aged, dg.SkipReason)


def _cursor_after(first_requests) -> str:
    # the first tick stored the fingerprint only (no manifest had been materialized yet)
    fingerprint = first_requests[0].run_key.removeprefix("manifest-")
    return json.dumps({"fingerprint": fingerprint})


def test_definitions_list_every_asset_check_job_and_sensor(home):
    defs = build_definitions(home)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()} == {
        "landing_manifest": "ingest", "raw_logs": "ingest", "quarantined_logs": "ingest",
        "redacted_logs": "privacy", "raw_retention_log": "privacy", "log_embeddings": "embeddings",
        "log_clusters": "clustering", "cluster_table": "clustering", "cluster_drift": "clustering",
        "eval_set": "sampling", "eval_set_versions": "sampling", "eval_set_changelog": "sampling",
        "eval_set_summary": "sampling", "annotation_tasks": "labeling", "judge_labels": "labeling", "human_labels": "labeling",
        "human_references": "labeling", "label_quarantine": "labeling", "label_agreement": "labeling",
        "gold_labels": "labeling", "gold_references": "labeling", "review_queue": "labeling",
        "judge_bias_probes": "labeling", "judge_human_gap": "labeling",
        "model_registry": "registry", "candidate_outputs": "evaluation", "candidate_scores": "evaluation",
        "failure_review": "evaluation", "scorecard": "evaluation"}
    # daily feeds monthly: the clustering assets read the month's daily embeddings
    monthly = {"log_clusters", "cluster_table", "cluster_drift", "eval_set", "eval_set_versions", "eval_set_changelog",
               "eval_set_summary", "annotation_tasks", "judge_labels", "judge_bias_probes", "judge_human_gap"}
    for key in monthly | {"log_embeddings"}:
        partitions = graph.get(dg.AssetKey(key)).partitions_def
        assert partitions.get_cron_schedule() == ("0 0 1 * *" if key in monthly else "0 0 * * *")
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("log_clusters")).parent_keys} == {"log_embeddings"}
    # the eval set's versions, changelog and summary are assets of the eval_set step, drawn from the
    # month's records and clusters; the month's eval set is read from (or written with) the versions
    drawn_from = {"redacted_logs", "log_embeddings", "log_clusters", "cluster_drift"}
    for key in ("eval_set_versions", "eval_set_changelog", "eval_set_summary"):
        node = graph.get(dg.AssetKey(key))
        assert {k.to_user_string() for k in node.parent_keys} == drawn_from, key
        assert node.metadata["dagster/table_name"] == f"sampling.{key}" and node.description, key
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("eval_set")).parent_keys} == drawn_from | {"eval_set_versions"}
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("eval_set_versions")).child_keys} == {"eval_set"}
    assert {"annotation_tasks", "candidate_outputs"} <= {k.to_user_string()
                                                         for k in graph.get(dg.AssetKey("eval_set")).child_keys}
    # one step, never a part of it: the tables and the month's set are written together
    [step] = {defs.resolve_assets_def(dg.AssetKey(k)) for k in ("eval_set", "eval_set_versions", "eval_set_changelog",
                                                                 "eval_set_summary")}
    assert step.op.name == "eval_set" and not step.can_subset
    refresh = defs.resolve_job_def("monthly_refresh_job").asset_layer.selected_asset_keys
    assert {"eval_set", "eval_set_versions", "eval_set_changelog", "eval_set_summary"} <= {
        k.to_user_string() for k in refresh}
    assert {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys} == {
        ("raw_logs", "records_reconcile"), ("raw_logs", "raw_logs_expectations"),
        ("redacted_logs", "no_pii_leak"), ("raw_retention_log", "raw_within_retention")}
    # one dynamic partition per registered model version
    for key in ("candidate_outputs", "candidate_scores", "failure_review", "scorecard"):
        partitions = graph.get(dg.AssetKey(key)).partitions_def
        assert isinstance(partitions, dg.DynamicPartitionsDefinition) and partitions.name == "model_versions"
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("candidate_outputs")).parent_keys} == {
        "model_registry", "eval_set"}
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("candidate_scores")).parent_keys} == {
        "candidate_outputs", "eval_set", "gold_references"}
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("scorecard")).parent_keys} == {
        "model_registry", "candidate_scores", "failure_review"}
    assert {s.name for s in defs.sensors} == {"landing_sensor", "labels_sensor", "model_registry_sensor"}
    assert {s.name for s in defs.schedules} == {"raw_retention_schedule", "month_end_ingest_schedule",
                                                "monthly_refresh_schedule"}
    assert {j.name for j in defs.jobs} == {"landing_manifest_job", "ingest_job", "raw_retention_job", "monthly_refresh_job",
                                            "labeling_job", "judge_probes_job", "evaluation_job"}


def test_io_manager_connections_are_memory_limited_and_read_more_than_the_limit(home):
    """The IO managers open DuckDB with a buffer limit (IO_MEMORY_LIMIT), so the checkpoint after
    a day's write cannot take what it likes; what an IO manager does still works beyond the
    limit: a table several times its size is written, half of it deleted, the rest read whole into Arrow."""
    from eval_pipeline.defs.resources import IO_MEMORY_LIMIT

    resources = build_resources(home)
    for name in ("io_manager", "raw_io_manager"):
        assert resources[name].connection_config == {"memory_limit": IO_MEMORY_LIMIT}, name
    limited = build_resources(home, io_memory_limit="32MB")["io_manager"].connection_config
    path = str(home.root / "limit.duckdb")
    with duckdb.connect(path, config=limited) as con:
        assert con.execute("select current_setting('memory_limit')").fetchone()[0] == "30.5 MiB"  # 32 MB
        con.execute("create table big as select range as r, md5(range::varchar) || repeat('x', 60) as s "
                    "from range(1500000)")  # about 140 MB of strings
        con.execute("delete from big where r % 2 = 1")
        table = con.execute("select * from big").to_arrow_table()
    assert table.num_rows == 750_000 and table.nbytes > 2 * 32 * 10**6


def test_hostile_lines_cost_one_record_each_not_the_day(tmp_path):
    """A day whose file opens with a byte-order mark and holds a line nested 100,000 deep and one
    with an unpaired surrogate escape, plus a gzip'd file cut off midway: the manifest and the
    day succeed, every valid record lands, each hostile line is quarantined with its reason."""
    from conftest import good_record
    import gzip

    from eval_pipeline.lib.core.paths import DataHome

    home = DataHome.resolve(tmp_path / "home").ensure()
    folder = home.landing / "app"
    folder.mkdir(parents=True)
    valid = [good_record(f"ok-{i}", f"2026-03-02T0{i}:00:00Z") for i in range(1, 5)]
    deep = json.dumps(good_record("deep", "2026-03-02T06:00:00Z"))[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    surrogate = json.dumps(good_record("lone", "2026-03-02T07:00:00Z")).replace('"lone"', '"lo\\ud800ne"')
    lines = [b"\xef\xbb\xbf" + json.dumps(valid[0]).encode(), deep.encode(), json.dumps(valid[1]).encode(),
             surrogate.encode(), json.dumps(valid[2]).encode(), json.dumps(valid[3]).encode()]
    (folder / "hostile.canonical.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    zipped = b"".join(json.dumps(good_record(f"gz-{i}", f"2026-03-02T10:{i % 60:02d}:00Z",
                                             completion="y" * (i % 97))).encode() + b"\n" for i in range(400))
    packed = gzip.compress(zipped)
    (folder / "cut.canonical.jsonl.gz").write_bytes(packed[: len(packed) // 2])

    manifest = dg.materialize(INGEST, resources=build_resources(home), selection=["landing_manifest"])
    assert manifest.success
    result = materialize_day(home, "2026-03-02")
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "records_reconcile": True, "raw_logs_expectations": True}

    raw_ids = query(home, "select request_id from ingest.raw_logs")["request_id"].to_list()
    assert {f"ok-{i}" for i in range(1, 5)} <= set(raw_ids)
    kept_from_gzip = sorted(int(r[3:]) for r in raw_ids if r.startswith("gz-"))
    assert kept_from_gzip == list(range(len(kept_from_gzip))) and 0 < len(kept_from_gzip) < 400
    quarantined = query(home, "select source_file, source_line, reason, field from ingest.quarantined_logs "
                              "order by source_file, source_line").rows()
    assert quarantined == [
        ("app/cut.canonical.jsonl.gz", len(kept_from_gzip) + 1, "corrupt_file", ""),
        ("app/hostile.canonical.jsonl", 2, "too_deeply_nested", ""),
        ("app/hostile.canonical.jsonl", 4, "invalid_text", "request_id"),
    ]
    first = query(home, "select source_line from ingest.raw_logs where request_id = 'ok-1'").item()
    assert first == 1  # the BOM line is a record, not invalid_json


def test_openinference_and_langfuse_files_land_in_their_day(tmp_path):
    """The trace formats through the real runtime: each LLM span or generation is a raw row with
    its source format; a malformed observation is quarantined; the day reconciles."""
    import shutil

    from conftest import FIXTURES

    from eval_pipeline.lib.core.paths import DataHome

    home = DataHome.resolve(tmp_path / "home").ensure()
    folder = home.landing / "traces"
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "traces" / "rag_and_chat.openinference.jsonl", folder / "phoenix-export.jsonl")  # by content
    shutil.copy(FIXTURES / "traces" / "billing.langfuse.jsonl", folder / "billing.langfuse.jsonl")
    with (folder / "billing.langfuse.jsonl").open("a") as f:
        f.write(json.dumps({"id": "lf-trace-0009", "observations": ["obs-0901"]}) + "\n")

    materialize_manifest(home)
    result = materialize_day(home, "2026-03-02")
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "records_reconcile": True, "raw_logs_expectations": True}
    raw = query(home, "select source_format, count(*) as n from ingest.raw_logs group by 1 order by 1").rows()
    assert raw == [("langfuse", 4), ("openinference", 5)]
    chunks = query(home, "select len(retrieved_chunks) from ingest.raw_logs where request_id = '1000000000000003'")
    assert chunks.item() == 3
    assert query(home, "select source_file, source_line, reason, field from ingest.quarantined_logs").rows() == [
        ("traces/billing.langfuse.jsonl", 4, "wrong_type", "observations[0]")]
    [event] = [m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == "raw_logs"]
    assert event.materialization.metadata["skipped_non_llm_spans"].value == 6 + 3
