"""Sampling: the versioned eval set, drawn from the month's clusters and refreshed every month."""

import base64
import json
from collections.abc import Iterator
from dataclasses import asdict
from datetime import date, datetime

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from eval_pipeline.defs.partitions import monthly_partitions
from eval_pipeline.defs.resources import (ClusteringSettings, EvaluationSettings, PipelineSettings, SamplingSettings,
                                          clustered_sample, read_table)
from eval_pipeline.lib.clustering.identity import IdentityRules, stale_examples
from eval_pipeline.lib.embeddings.encode import READ_MEMORY_LIMIT, from_storage, rows_with_vectors
from eval_pipeline.lib.evaluation.gates import version_order
from eval_pipeline.lib.sampling.draw import fields_read
from eval_pipeline.lib.sampling.eval_set import (base_version, build_version, changelog_markdown, coverage_table,
                                        outcomes_by_stratum, plot_coverage, reusable_version, slice_precision,
                                        summary_line)
from eval_pipeline.lib.storage.spool import StoredPartition
from eval_pipeline.lib.storage.tables import (EVAL_SET_CHANGELOG_SCHEMA, EVAL_SET_SCHEMA, EVAL_SET_SUMMARY_SCHEMA,
                                     REDACTED_LOGS_SCHEMA, ColumnRows, frame, markdown_table)

VERSIONS = "sampling.eval_set_versions"
CHANGELOG = "sampling.eval_set_changelog"
SUMMARY = "sampling.eval_set_summary"
# What an example copies from its record; read only for the records drawn (see _details).
_TEXT_COLUMNS = ("messages", "retrieved_chunks", "completion")


def _append_version(warehouse: DuckDBResource, version: str, tables: dict[str, pl.DataFrame]) -> None:
    """Append one eval-set version's rows to the append-only tables (each created on first use)
    in one transaction: a process killed part way leaves none of them, never some. Rows already
    held for ``version`` (left by an earlier attempt) are replaced, so the version is never
    appended twice; rows of other versions are never touched."""
    with warehouse.get_connection() as con:
        con.execute("begin transaction")
        try:
            for table, df in tables.items():
                arrow = df.to_arrow()  # noqa: F841 - read by name in the SQL
                con.execute(f"create schema if not exists {table.split('.')[0]}")
                con.execute(f"create table if not exists {table} as select * from arrow where false")
                con.execute(f"delete from {table} where eval_set_version = ?", [version])
                con.execute(f"insert into {table} select * from arrow")
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise


def _details(warehouse: DuckDBResource, records: list[dict]) -> list[dict]:
    """``records`` with their texts (``_TEXT_COLUMNS`` of ``privacy.redacted_logs``) added, in order;
    a record is found by its request id and timestamp (so by its own day's partition)."""
    keys = pl.DataFrame({"request_id": [r["request_id"] for r in records],  # noqa: F841 - read by name in the SQL
                         "timestamp": [r["timestamp"] for r in records]}, schema={"request_id": pl.String,
                                                                                  "timestamp": pl.Datetime("us")})
    with warehouse.get_connection() as con:
        con.execute(f"set memory_limit = '{READ_MEMORY_LIMIT}'")  # the join scans a month of texts: keep few pages
        texts = pl.DataFrame(con.execute(
            f"select r.request_id, r.timestamp, {', '.join('r.' + c for c in _TEXT_COLUMNS)} "
            "from privacy.redacted_logs r join keys using (request_id, timestamp)").arrow())
    found = {(row["request_id"], row["timestamp"]): row for row in texts.to_dicts()}
    return [{**r, **{c: found.get((r["request_id"], r["timestamp"]), {}).get(c) for c in _TEXT_COLUMNS}}
            for r in records]


def _stale(warehouse: DuckDBResource, previous: list[dict], vectors, month: date, seed: int,
           rules: IdentityRules) -> dict[str, str]:
    """example_id -> reason for the previous version's examples whose topic left the traffic
    (``identity.stale_examples`` under the clustering resource's ``rules``: around the example and
    the records of its topic, this month's records are under half as dense as the two months'
    sizes would make them); empty without last
    month's vectors."""
    reference = clustered_sample(warehouse, None, rules.sample, seed, before=month)
    if reference is None:
        return {}
    keys = pl.DataFrame({"request_id": [e["request_id"] for e in previous], "timestamp": [e["timestamp"] for e in previous],
                         "example_id": [e["example_id"] for e in previous]},
                        schema={"request_id": pl.String, "timestamp": pl.Datetime("us"), "example_id": pl.String})
    found, example_vectors, _ = rows_with_vectors(warehouse.get_connection, keys)
    flags = stale_examples(example_vectors, reference.vectors, vectors, rules, seed)
    return {eid: "its topic left the traffic: few of this month's records around it"
            for eid, flag in zip(found["example_id"], flags) if flag}


def _last_scores(warehouse: DuckDBResource, version: str | None) -> list[dict]:
    """``example_id`` and ``status`` of the latest scorecard made on eval-set ``version`` (empty
    when none was made): what the refresh's Neyman allocation and the slice precision read."""
    if not version:
        return []
    with warehouse.get_connection() as con:
        tables = {r[0] for r in con.execute("select table_name from information_schema.tables "
                                            "where table_schema = 'evaluation'").fetchall()}
        if not {"scorecard", "candidate_scores"} <= tables:
            return []
        found = con.execute("select model_version from evaluation.scorecard where eval_set_version = ? "
                            "order by created_at desc limit 1", [version]).fetchone()
        if not found:
            return []
        return [{"example_id": e, "status": st} for e, st in con.execute(
            "select example_id, status from evaluation.candidate_scores where model_version = ? and eval_set_version = ?",
            [found[0], version]).fetchall()]


def _appended_outputs(version: str, reused: str | None, appended: dict[str, pl.DataFrame], archive: pl.DataFrame,
                      changelog_all: pl.DataFrame, summaries: dict[str, dict], changelog_md: str,
                      changelog_file) -> Iterator[dg.Output]:
    """The materializations of the three append-only tables for the month: what this run
    appended to each (``dagster/row_count``; nothing when a version was kept) and what each holds."""
    held = (f"no new version: {reused} kept (same examples)" if reused
            else f"{version} appended" if appended else "nothing to append (no examples, no changes)")
    sizes = dict(archive.group_by("eval_set_version").len().iter_rows()) if archive.height else {}
    yield dg.Output(None, output_name="eval_set_versions", metadata={
        "dagster/row_count": appended[VERSIONS].height if appended else 0,
        "eval_set_version": version, "appended": held, "table_rows": archive.height,
        "examples_per_version": dg.MetadataValue.json(dict(sorted(sizes.items(), key=lambda kv: version_order(kv[0])))),
    })
    yield dg.Output(None, output_name="eval_set_changelog", metadata={
        "dagster/row_count": appended[CHANGELOG].height if appended else 0,
        "eval_set_version": version, "appended": held, "table_rows": changelog_all.height,
        "changelog": dg.MetadataValue.md(changelog_md),
        "changelog_file": dg.MetadataValue.path(str(changelog_file)),
    })
    ordered = sorted(summaries.values(), key=lambda r: version_order(r["eval_set_version"]))
    yield dg.Output(None, output_name="eval_set_summary", metadata={
        "dagster/row_count": appended[SUMMARY].height if appended else 0,
        "eval_set_version": version, "appended": held, "table_rows": len(summaries),
        "summary": summary_line(summaries[version]) if version in summaries else "(no summary: no version made)",
        "versions": dg.MetadataValue.md(markdown_table(pl.DataFrame(ordered, schema=EVAL_SET_SUMMARY_SCHEMA).with_columns(
            pl.col(pl.Float64).round(3))) if ordered else "(no version yet)"),
    })


# The outputs of ``eval_set``: the month's current version (written by the IO manager into its
# month partition) and the three append-only tables the step writes itself, in one transaction.
EVAL_SET_OUTPUTS = ("eval_set", "eval_set_versions", "eval_set_changelog", "eval_set_summary")
_DRAWN_FROM = {dg.AssetKey(k) for k in ("redacted_logs", "log_embeddings", "log_clusters", "cluster_drift")}
_APPENDED = ("Appended by the ``eval_set`` step, never updated: a version's rows of the three tables "
             "(``eval_set_versions``, ``eval_set_changelog``, ``eval_set_summary``) are written in one "
             "transaction, so a killed run leaves none of them; a month re-run with the same examples "
             "appends nothing, and one giving other examples appends a new version beside the old one. "
             "The IO manager does not write it (a partition replaced on a re-run would lose that history).")

_EVAL_SET_DOC = """The eval-set version this month produced.

The first month draws the initial set (stratified by cluster, a floor per stratum, failure
signals weighted, near-duplicates collapsed). Later months start from the latest earlier
version and keep it within 10% of its target: examples of gone topics or of strata 2x
over-represented are removed, the set is refilled and new clusters get their floor (Neyman's
allocation when a scorecard was made on that version), the rest is kept untouched. The
month's partition holds the version current that month, read from ``eval_set_versions``:
re-materializing a month that would give the same examples keeps its version; a different
result becomes a new version. Examples of a "gone" cluster move to the cluster that continues
its topic at the clustering resource's ``drift_threshold``, the threshold the drift table was
matched at.

Reads outside the declared dependencies: the earlier versions (``eval_set_versions``,
``eval_set_changelog``, ``eval_set_summary`` of earlier months, written by this same step)
and the latest scorecard made on the previous version (``evaluation.scorecard`` and
``evaluation.candidate_scores``, for Neyman's allocation and the slice precision). Declaring
the scorecard would make a cycle (the evaluation assets read the eval set), so it is read
as it stands when the month runs.
"""


def _table_out(table: str, schema: pl.Schema, what: str) -> dg.AssetOut:
    """An output whose rows the ``eval_set`` step appends to ``table`` itself (see ``_APPENDED``)."""
    return dg.AssetOut(
        dagster_type=dg.Nothing, kinds={"duckdb"}, description=f"{what}\n\n{_APPENDED}",
        metadata={"dagster/table_name": table, "storage": "append-only, written by the eval_set step",
                  "dagster/column_schema": dg.TableSchema(columns=[
                      dg.TableColumn(name, str(dtype)) for name, dtype in schema.items()])})


@dg.multi_asset(
    name="eval_set",
    group_name="sampling",
    partitions_def=monthly_partitions,
    outs={
        "eval_set": dg.AssetOut(kinds={"polars", "duckdb"}, description=_EVAL_SET_DOC,
                                metadata={"schema": "sampling", "partition_expr": "month_start"}),
        "eval_set_versions": _table_out(VERSIONS, EVAL_SET_SCHEMA, (
            "Every eval-set version ever made, one row per example per version (the eval-example "
            "contract); a month's partition is the version that month made, if it made one.")),
        "eval_set_changelog": _table_out(CHANGELOG, EVAL_SET_CHANGELOG_SCHEMA, (
            "One row per example a version added, removed or moved to a re-cut cluster: version, "
            "month, action, reason, cluster, stratum. Its metadata has the CHANGELOG of every version "
            "(also ``<data home>/reports/eval_set/CHANGELOG.md``).")),
        "eval_set_summary": _table_out(SUMMARY, EVAL_SET_SUMMARY_SCHEMA, (
            "One row per eval-set version: size against target, churn (added, removed, moved), the "
            "share of the month's traffic in continuing clusters, how the month was clustered and "
            "how the additions were allocated.")),
    },
    ins={"log_clusters": dg.AssetIn(metadata={"columns": ["request_id", "cluster_id"]})},
    # every output is drawn from the month's records, clusters and drift; the month's eval set is
    # the version current that month, so it is read from (or written with) eval_set_versions
    internal_asset_deps={"eval_set": _DRAWN_FROM | {dg.AssetKey("eval_set_versions")},
                         "eval_set_versions": _DRAWN_FROM, "eval_set_changelog": _DRAWN_FROM,
                         "eval_set_summary": _DRAWN_FROM},
)
def eval_set(context: dg.AssetExecutionContext, settings: PipelineSettings, sampling: SamplingSettings,
             clustering: ClusteringSettings, evaluation: EvaluationSettings, warehouse: DuckDBResource, redacted_logs: StoredPartition,
             log_embeddings: StoredPartition, log_clusters: pl.DataFrame,
             cluster_drift: pl.DataFrame) -> Iterator[dg.Output]:
    """The month's eval-set version (``eval_set``) and the append-only tables of every version
    (``eval_set_versions``, ``eval_set_changelog``, ``eval_set_summary``): see their descriptions."""
    month = date.fromisoformat(context.partition_key)
    config = sampling.config(merge_cosine=clustering.drift_threshold)
    versions = read_table(warehouse, VERSIONS, EVAL_SET_SCHEMA)
    changelog_all = read_table(warehouse, CHANGELOG, EVAL_SET_CHANGELOG_SCHEMA)
    names, base = base_version(versions.select("eval_set_version", "month").unique().to_dicts(),
                               changelog_all.select("eval_set_version", "month").unique().to_dicts(), month)
    previous = versions.filter(pl.col("eval_set_version") == base).to_dicts() if base else []

    records = pl.DataFrame()
    vectors = from_storage([], dim=1)
    # of every record of the month only the fields the draw reads (fields_read: the settings'
    # slice keys and signals included) are read, and only they become Python objects; an
    # example's texts are read for the drawn records alone (details). The vectors are read in
    # batches straight into one float16 array (month_vectors), never as a column of blobs.
    needed = fields_read(config)
    month_rows = redacted_logs.rows
    if month_rows and log_clusters.height and log_embeddings.rows:
        drawn_from = redacted_logs.frame(*(f'"{c}"' for c in REDACTED_LOGS_SCHEMA if c in needed))
        records, vectors, _ = rows_with_vectors(
            warehouse.get_connection, drawn_from.join(log_clusters, on="request_id", how="inner").sort("request_id"))
        del drawn_from
    rows = ColumnRows(records.select([c for c in records.columns if c in needed])) if records.height else []
    drift = cluster_drift.to_dicts() if cluster_drift.height else []
    continuing_share = (float(cluster_drift.filter(pl.col("status") == "continuing")["current_share"].sum())
                        if cluster_drift.height and base else None)
    cluster_mode = cluster_drift["mode"][0] if cluster_drift.height else None
    if month_rows and records.height < month_rows:
        context.log.warning(f"{month_rows - records.height} records of the month have no cluster or "
                            "embedding (re-run log_embeddings and log_clusters for the month) and are not sampled")

    stale = (_stale(warehouse, previous, vectors, month, sampling.seed, clustering.rules())
             if previous and len(vectors) else None)
    scores = _last_scores(warehouse, base) if previous else []
    outcomes = outcomes_by_stratum(scores, previous) if scores else None
    build = build_version(rows, vectors, month, config, previous=previous, drift=drift, existing_versions=names,
                          details=lambda chosen: _details(warehouse, list(chosen)), outcomes=outcomes, stale=stale)
    appended: dict[str, pl.DataFrame] = {}  # table -> the rows this run appended (none when a version is kept)
    reused = reusable_version(versions.select("eval_set_version", "month", "example_id").to_dicts(), month, build)
    if reused:
        # the version current this month; its rows carry this month so the partition holds them
        df = (versions.filter(pl.col("eval_set_version") == reused).sort("example_id")
              .with_columns(pl.lit(month).alias("month"), pl.lit(datetime(month.year, month.month, 1)).cast(pl.Datetime("us")).alias("month_start")))
        version = reused
        # a month with nothing to refresh from changed nothing; a re-run shows the version's own changes
        changes = (changelog_all.clear() if build.unchanged
                   else changelog_all.filter(pl.col("eval_set_version") == reused))
        if not build.unchanged:
            build.messages.append(f"same examples as {reused}, already made for {month:%Y-%m}: kept, no new version")
    else:
        df = frame(sorted(build.rows, key=lambda r: r["example_id"]), EVAL_SET_SCHEMA)
        changes = frame(build.changelog, EVAL_SET_CHANGELOG_SCHEMA)
        version = build.version
        if df.height or changes.height:
            summary_row = frame([{
                **build.churn(len(previous)), "eval_set_version": version, "month": month, "based_on": base,
                "target_size": config.target_size, "continuing_share": continuing_share, "cluster_mode": cluster_mode,
                "allocation": "initial" if build.initial else build.allocation}], EVAL_SET_SUMMARY_SCHEMA)
            appended = {VERSIONS: df, CHANGELOG: changes, SUMMARY: summary_row}
            _append_version(warehouse, version, appended)
            changelog_all = pl.concat([changelog_all, changes])
    for message in build.messages:
        context.log.info(message)

    archive = versions if reused or not df.height else pl.concat([versions, df])
    sizes = {name: 0 for name in names} | {version: 0} | dict(archive.group_by("eval_set_version").len().iter_rows())
    summaries = {r["eval_set_version"]: r for r in read_table(warehouse, SUMMARY, EVAL_SET_SUMMARY_SCHEMA).to_dicts()}
    summary_md = changelog_markdown(changelog_all.to_dicts(), sizes, summaries=summaries)
    reports = settings.data_home.reports / "eval_set"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "CHANGELOG.md").write_text(f"# Eval set changelog\n\n{summary_md}\n", encoding="utf-8")

    table, coverage = coverage_table(df.to_dicts(), rows, config.slice_keys)
    png = plot_coverage(table, f"eval set {version} ({month:%Y-%m}): coverage of this month's traffic")
    (reports / f"coverage_{month:%Y-%m}.png").write_bytes(png)
    added = changes.filter(pl.col("action") == "added").height
    removed = changes.filter(pl.col("action") == "removed").height
    coverage_df = pl.DataFrame(table).with_columns(
        (pl.col("traffic_share") * 100).round(1).alias("traffic %"), (pl.col("set_share") * 100).round(1).alias("set %"),
        pl.col("ratio").cast(pl.Float64).round(2)).select("stratum", "records", "traffic %", "examples", "set %", "ratio") if table else pl.DataFrame()
    churn = summaries.get(version) or build.churn(len(previous))
    thresholds = evaluation.load_thresholds()
    critical = [name for name, gate in thresholds.slices.items() if gate.critical]
    precision = (slice_precision(previous, df.to_dicts(), scores, critical, thresholds.slice_keys, thresholds.confidence)
                 if previous and critical else [])
    for row in precision:
        if row["half_width_before"] is not None:
            context.log.info(f"{row['slice']}: {row['examples_before']} -> {row['examples_after']} examples; expected "
                             f"{thresholds.confidence:.0%} interval half-width {100 * row['half_width_before']:.1f} -> "
                             f"{100 * row['half_width_after']:.1f} points at its last pass rate {row['last_rate']:.1%}")
    yield from _appended_outputs(version, reused, appended, archive, changelog_all, summaries, summary_md,
                                 reports / "CHANGELOG.md")
    yield dg.Output(df, output_name="eval_set", metadata={
        "dagster/row_count": df.height,
        "eval_set_version": version,
        "size": df.height,
        "target_size": config.target_size,
        "churn": dg.MetadataValue.json({k: churn.get(k) for k in ("size", "previous_size", "added", "removed", "moved",
                                                                   "churn")}),
        "continuing_share": continuing_share if continuing_share is not None else float("nan"),
        "cluster_mode": cluster_mode or "none",
        "allocation": "initial" if build.initial else build.allocation,
        "critical_slice_precision": dg.MetadataValue.md(markdown_table(pl.DataFrame(precision).with_columns(
            pl.col(pl.Float64).round(4))) if precision else "(no scorecard on the previous version, or no critical slice)"),
        "based_on": (base + (" (empty: drawn afresh)" if base and not previous else "")) if base else "none (initial draw)",
        "added": added,
        "removed": removed,
        "changes": dg.MetadataValue.md(changelog_markdown(changes.to_dicts(), {version: df.height})),
        "changelog": dg.MetadataValue.md(summary_md),
        "changelog_file": dg.MetadataValue.path(str(reports / "CHANGELOG.md")),
        "coverage": dg.MetadataValue.json(coverage),
        "coverage_by_stratum": dg.MetadataValue.md(markdown_table(coverage_df.head(40)) if table else "(no traffic)"),
        "coverage_plot": dg.MetadataValue.md(f"![coverage](data:image/png;base64,{base64.b64encode(png).decode()})"),
        "task_types": dg.MetadataValue.json(dict(df.group_by("task_type").len().sort("len", descending=True).iter_rows())
                                            if df.height else {}),
        "messages": dg.MetadataValue.md("\n".join(f"- {m}" for m in build.messages) or "(none)"),
        "settings": dg.MetadataValue.json(json.loads(json.dumps(asdict(config)))),
        "built_at": datetime.now().isoformat(timespec="seconds"),
    })
