"""Clustering: the month's records in clusters a person can read, with stable ids across months."""

import base64
import json
from datetime import date, datetime

import dagster as dg
import numpy as np
import polars as pl
from dagster_duckdb import DuckDBResource

from eval_pipeline.defs.partitions import monthly_partitions
from eval_pipeline.defs.resources import (ClusteringSettings, PipelineSettings, add_missing_columns, clustered_sample,
                                          read_table)
from eval_pipeline.lib.clustering.clusters import UNCLUSTERED, cluster_month, cluster_table_markdown, drift_table_markdown
from eval_pipeline.lib.embeddings.encode import from_storage, rows_with_vectors, to_storage
from eval_pipeline.lib.ingest.records import FAILURE_SIGNALS
from eval_pipeline.lib.storage.tables import CLUSTER_DRIFT_SCHEMA, CLUSTER_TABLE_SCHEMA, LOG_CLUSTERS_SCHEMA, conform, frame

_MONTHLY = {"schema": "clustering"}


# What clustering reads of every record of the month (not the conversation ids, hashes, model
# ids; the vectors are read apart, straight into one float16 array: month_vectors).
_CLUSTER_COLUMNS = ["request_id", "timestamp", "embed_text", "task_type", "user_segment", "thumbs",
                    *(s for s in FAILURE_SIGNALS if s != "thumbs_down")]


@dg.multi_asset(
    group_name="clustering",
    partitions_def=monthly_partitions,
    ins={"log_embeddings": dg.AssetIn(metadata={"columns": _CLUSTER_COLUMNS})},
    outs={
        "log_clusters": dg.AssetOut(kinds={"polars", "duckdb"}, io_manager_key="lake_io_manager",
                                    metadata={**_MONTHLY, "partition_expr": "timestamp"},
                                    description="The stable cluster id of every record of the month ('unclustered' for noise)."),
        "cluster_table": dg.AssetOut(kinds={"polars", "duckdb"}, metadata={**_MONTHLY, "partition_expr": "month_start"},
                                     description="One row per cluster: size, share, keywords, examples, quality-signal rates, "
                                                 "task types, segments, centroid."),
        "cluster_drift": dg.AssetOut(kinds={"polars", "duckdb"}, metadata={**_MONTHLY, "partition_expr": "month_start"},
                                     description="This month's clusters matched to the previous month's: continuing "
                                                 "(grown / shrunk / stable), new, gone, with sizes both months."),
    },
)
def log_clusters(context: dg.AssetExecutionContext, settings: PipelineSettings, clustering: ClusteringSettings,
                 warehouse: DuckDBResource, log_embeddings: pl.DataFrame):
    """Clusters the month's records and describes each cluster. The first month is clustered
    (UMAP, then HDBSCAN or k-means); a later month is assigned to the latest earlier month's
    clusters first, so a topic still in traffic keeps its id, and only its novel records are
    clustered for new topics (``lib/clustering/identity.py``); when too much of it is novel, or a refit is
    asked for, it is clustered afresh and matched one-to-one (the drift rows' ``mode`` says which).

    One step makes all three tables because the ids come from the match with last month: the
    record assignments, the cluster table and the drift rows must agree.
    """
    month = date.fromisoformat(context.partition_key)
    month_start = datetime(month.year, month.month, 1)
    missing = 0
    if log_embeddings.height:
        # the month in (timestamp, request id) order; its vectors read in batches into one
        # float16 array in that order, never a column of blobs (a million records: 768 MB)
        rows, vectors, missing = rows_with_vectors(warehouse.get_connection,
                                                   log_embeddings.sort("timestamp", "request_id"))
        if missing:
            context.log.warning(f"{missing} records of the month have no stored vector: not clustered")
    else:
        rows, vectors = pl.DataFrame(), np.zeros((0, 1), np.float32)

    history = read_table(warehouse, "clustering.cluster_table", CLUSTER_TABLE_SCHEMA).filter(pl.col("month") < month)
    clustered = history.filter(pl.col("centroid").is_not_null())
    previous_month = clustered["month"].max() if clustered.height else None
    last = clustered.filter(pl.col("month") == previous_month) if previous_month else clustered
    previous = [(r["cluster_id"], from_storage([r["centroid"]])[0], r["size"]) for r in last.iter_rows(named=True)]
    previous_total = int(history.filter(pl.col("month") == previous_month)["size"].sum()) if previous_month else 0

    rules = clustering.rules()
    reference = (clustered_sample(warehouse, previous_month, rules.sample, clustering.seed)
                 if previous and rows.height else None)
    result = cluster_month(rows, vectors, clustering.config(), previous=previous, previous_total=previous_total,
                           known_ids=[i for i in history["cluster_id"].to_list() if i != UNCLUSTERED],
                           reference=reference, rules=rules, growth=clustering.growth, title=f"{month:%Y-%m}:")
    for message in result.messages:
        context.log.info(message)

    assignments = conform(pl.DataFrame(result.assignments).with_columns(month=pl.lit(month)), LOG_CLUSTERS_SCHEMA)
    table = frame([{
        **{k: entry[k] for k in ("cluster_id", "name", "size", "share", "keywords", "examples", "example_request_ids",
                                 "failure_rate", "status")},
        **{k: v for k, v in entry.items() if k.endswith("_rate")},
        "month": month, "month_start": month_start,
        "task_types": json.dumps(entry["task_types"]), "user_segments": json.dumps(entry["user_segments"]),
        "centroid": None if entry["centroid"] is None else to_storage(entry["centroid"])[0],
    } for entry in result.table], CLUSTER_TABLE_SCHEMA)
    drift = frame([{**r.as_dict(), "month": month, "month_start": month_start, "mode": result.mode}
                   for r in result.drift], CLUSTER_DRIFT_SCHEMA)
    add_missing_columns(warehouse, "clustering.cluster_drift", CLUSTER_DRIFT_SCHEMA)  # an older home's table

    map_md = "(no records this month)"
    if result.png:
        path = settings.data_home.reports / "clusters" / f"{month:%Y-%m}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(result.png)
        map_md = f"![cluster map {month:%Y-%m}](data:image/png;base64,{base64.b64encode(result.png).decode()})"
    notes = "\n".join(f"- {m}" for m in result.messages)
    params = result.result.params()
    statuses = drift.group_by("status").len().sort("status")
    yield dg.Output(assignments, output_name="log_clusters", metadata={
        "dagster/row_count": assignments.height,
        "clusters": params["n_clusters"],
        "unclustered_share": params["noise_share"],
        "criterion": result.result.criterion,
        "records_without_vector": missing,
        "clustering": dg.MetadataValue.json(params),
        "messages": dg.MetadataValue.md(notes or "(none)"),
    })
    yield dg.Output(table, output_name="cluster_table", metadata={
        "dagster/row_count": table.height,
        "clusters": dg.MetadataValue.md(cluster_table_markdown(result.table) if result.table else "(no clusters)"),
        "map": dg.MetadataValue.md(map_md),
        **({"map_file": dg.MetadataValue.path(str(settings.data_home.reports / "clusters" / f"{month:%Y-%m}.png"))}
           if result.png else {}),
    })
    yield dg.Output(drift, output_name="cluster_drift", metadata={
        "dagster/row_count": drift.height,
        "previous_month": str(previous_month) if previous_month else "none",
        "mode": result.mode,
        "mode_reason": result.mode_reason,
        "continuing_share": round(result.continuing_share, 4),
        "novel_share": round(result.novel_share, 4) if result.novel_share is not None else float("nan"),
        "by_status": dg.MetadataValue.json(dict(zip(statuses["status"].to_list(), statuses["len"].to_list()))),
        "drift": dg.MetadataValue.md(drift_table_markdown(result.drift)),
    })

