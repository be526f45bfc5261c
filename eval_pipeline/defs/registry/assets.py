"""``model_registry``: the registered model versions, from the registry file under the data home.

``eval-pipeline register-model`` appends a version to ``<data home>/registry/models.jsonl``
(``lib/registry/versions.py`` refuses a version registered twice); this asset reads the file into the
warehouse so the evaluation assets and the UI see it, and the registry sensor requests the
evaluation of every new version.
"""

import json

import dagster as dg
import polars as pl

from eval_pipeline.defs.resources import PipelineSettings
from eval_pipeline.lib.registry.versions import ModelRegistry, ModelVersion
from eval_pipeline.lib.storage.tables import markdown_table

MODEL_REGISTRY = pl.Schema({"key": pl.String, "name": pl.String, "version": pl.String, "provider": pl.String,
                            "base_url": pl.String, "model": pl.String, "api_key_env": pl.String,
                            "recorded_path": pl.String, "params": pl.String, "role": pl.String,
                            "registered_at": pl.Datetime("us", "UTC"), "description": pl.String})


def registry_frame(versions: list[ModelVersion]) -> pl.DataFrame:
    rows = [{**mv.model_dump(), "key": mv.key, "params": json.dumps(mv.params, sort_keys=True)} for mv in versions]
    return pl.DataFrame([{c: r.get(c) for c in MODEL_REGISTRY} for r in rows], schema=MODEL_REGISTRY)


def version_from_row(row: dict) -> ModelVersion:
    """A registry table row back to its :class:`ModelVersion`."""
    fields = {k: v for k, v in row.items() if k in ModelVersion.model_fields}
    fields["params"] = json.loads(row.get("params") or "{}")
    return ModelVersion(**fields)


@dg.asset(group_name="registry", kinds={"polars", "duckdb"}, metadata={"schema": "registry"})
def model_registry(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dg.Output[pl.DataFrame]:
    """Registered model versions: name, version, provider (an OpenAI-compatible endpoint's
    base_url and model, or a file of recorded outputs), registered_at and role (baseline or
    candidate). API keys are never stored: a registration names the environment variable."""
    path = settings.data_home.registry
    df = registry_frame(ModelRegistry(path).load())
    view = df.select("key", "provider", "role", "registered_at", "model", "recorded_path") if df.height else df
    return dg.Output(df, metadata={
        "dagster/row_count": df.height,
        "registry_file": dg.MetadataValue.path(str(path)),
        "baselines": dg.MetadataValue.json(df.filter(pl.col("role") == "baseline")["key"].to_list()),
        "versions": dg.MetadataValue.md(markdown_table(view, max_cell=70) if df.height
                                        else "(none registered: `eval-pipeline register-model --help`)"),
    })
