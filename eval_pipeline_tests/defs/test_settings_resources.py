"""The settings resources: fields taken from the lib configs, choices refused at load, one drift threshold."""

from __future__ import annotations

import dagster as dg
import pydantic
import pytest

from eval_pipeline.definitions import build_definitions
from eval_pipeline.defs.resources import (ClusteringSettings, EmbeddingSettings, EvaluationSettings, RedactionSettings,
                                          SamplingSettings)
from eval_pipeline.defs.sampling import assets as sampling_assets
from eval_pipeline.lib.clustering.clusters import DRIFT_THRESHOLD, ClusterConfig
from eval_pipeline.lib.clustering.identity import IdentityRules
from eval_pipeline.lib.core.paths import DataHome
from eval_pipeline.lib.core.settings import declared
from eval_pipeline.lib.embeddings.encode import EmbeddingConfig
from eval_pipeline.lib.privacy.redaction import RedactionConfig
from eval_pipeline.lib.sampling.draw import SamplingConfig

# (resource, its field, the lib config that declares it, the field's name there)
DECLARED = [
    (ClusteringSettings, "method", ClusterConfig, "method"),
    (ClusteringSettings, "max_fit_sample", ClusterConfig, "max_fit_sample"),
    (ClusteringSettings, "drift_threshold", IdentityRules, "match_cosine"),
    (ClusteringSettings, "refit", IdentityRules, "refit"),
    (EmbeddingSettings, "precision", EmbeddingConfig, "precision"),
    (EmbeddingSettings, "max_seq_length", EmbeddingConfig, "max_seq_length"),
    (SamplingSettings, "slice_keys", SamplingConfig, "slice_keys"),
    (SamplingSettings, "signal_weights", SamplingConfig, "signal_weights"),
    (RedactionSettings, "score_threshold", RedactionConfig, "score_threshold"),
]

# (resource, choice field, a wrong value, the allowed values)
CHOICES = [
    (ClusteringSettings, "method", "hdbscn", ["hdbscan", "kmeans"]),
    (EmbeddingSettings, "precision", "fp16", ["auto", "float32", "bfloat16", "int8"]),
    (EmbeddingSettings, "mode", "dynamic", ["transformer", "static"]),
    (EvaluationSettings, "sensor_tier", "shallow", ["continuous", "deep"]),
]
RESOURCE_KEYS = {ClusteringSettings: "clustering", EmbeddingSettings: "embedding", EvaluationSettings: "evaluation"}

EVAL_SET = [dg.AssetKey(k) for k in sampling_assets.EVAL_SET_OUTPUTS]  # one step, its outputs together


@pytest.mark.parametrize("resource, name, owner, field", DECLARED)
def test_a_setting_is_the_lib_configs_declaration(resource, name, owner, field):
    """Type, default and doc of a resource field come from its lib config, so the launchpad shows
    the lib's doc and both sides change together."""
    lib = declared(owner, field)
    model_field = resource.model_fields[name]
    assert model_field.annotation == lib.annotation
    assert model_field.default == lib.default
    assert model_field.description == lib.doc and lib.doc


def test_default_settings_build_the_default_lib_configs():
    assert ClusteringSettings().config() == ClusterConfig()
    assert ClusteringSettings().rules() == IdentityRules()
    assert SamplingSettings().config() == SamplingConfig()
    assert EmbeddingSettings().config() == EmbeddingConfig()
    assert RedactionSettings().config() == RedactionConfig()


def test_settings_reach_the_lib_configs():
    clustering = ClusteringSettings(method="kmeans", k=12, drift_threshold=0.8, refit=True)
    assert (clustering.config().method, clustering.config().k) == ("kmeans", 12)
    assert (clustering.rules().match_cosine, clustering.rules().refit) == (0.8, True)
    sampling = SamplingSettings(slice_keys=["task_type"], target_size=40).config(merge_cosine=0.8)
    assert (sampling.slice_keys, sampling.target_size, sampling.merge_cosine) == (("task_type",), 40, 0.8)
    assert "merge_cosine" not in SamplingSettings.model_fields  # the clustering resource's drift_threshold
    assert EmbeddingSettings(precision="float32").config(cache_dir="x") == EmbeddingConfig(precision="float32",
                                                                                            cache_dir="x")


@pytest.mark.parametrize("resource, name, bad, allowed", CHOICES)
def test_a_wrong_choice_is_refused_when_the_resource_is_built(resource, name, bad, allowed):
    with pytest.raises(pydantic.ValidationError) as caught:
        resource(**{name: bad})
    message = str(caught.value)
    assert name in message and repr(bad) in message
    assert all(f"'{value}'" in message for value in allowed), message


def test_the_launchpad_offers_the_choices():
    """A Literal field becomes a Dagster enum in the resource's config schema (a drop-down in the UI)."""
    field = ClusteringSettings.to_config_schema().as_field().config_type.fields["method"]
    assert isinstance(field.config_type, dg.Enum)
    assert sorted(field.config_type.config_values) == ["hdbscan", "kmeans"]
    assert field.default_value == "hdbscan" and field.description == declared(ClusterConfig, "method").doc


@pytest.fixture(scope="module")
def definitions(tmp_path_factory):
    return build_definitions(DataHome.resolve(tmp_path_factory.mktemp("settings") / "home"))


@pytest.mark.parametrize("resource, name, bad, allowed", CHOICES)
def test_a_wrong_choice_in_run_config_fails_validation_before_any_step(definitions, resource, name, bad, allowed):
    job = definitions.resolve_job_def("monthly_refresh_job")
    run_config = {"resources": {RESOURCE_KEYS[resource]: {"config": {name: bad}}}}
    with pytest.raises(dg.DagsterInvalidConfigError) as caught:
        dg.validate_run_config(job, run_config)
    message = str(caught.value)
    assert f"{RESOURCE_KEYS[resource]}:config:{name}" in message and bad in message
    assert all(value in message for value in allowed), message


def test_a_run_with_a_wrong_choice_runs_no_step(definitions):
    job = definitions.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.ephemeral() as instance:
        with pytest.raises(dg.DagsterInvalidConfigError, match="clustering:config:method"):
            job.execute_in_process(partition_key="2026-03-01", asset_selection=EVAL_SET,
                                   instance=instance,
                                   run_config={"resources": {"clustering": {"config": {"method": "hdbscn"}}}})
        assert instance.get_runs() == []  # refused before a run (let alone a step) existed


def test_eval_set_merges_at_the_clustering_drift_threshold(definitions):
    """The eval_set asset builds its sampling config with the clustering resource's
    drift_threshold (on a month with no records: quick, and the config is in its metadata)."""
    job = definitions.resolve_implicit_global_asset_job_def()
    for threshold in (DRIFT_THRESHOLD, 0.8):
        result = job.execute_in_process(partition_key="2026-03-01", asset_selection=EVAL_SET,
                                        run_config={"resources": {"clustering": {"config": {
                                            "drift_threshold": threshold}}}})
        settings = next(m for m in result.asset_materializations_for_node("eval_set")
                        if m.asset_key == dg.AssetKey("eval_set")).metadata["settings"].data
        assert settings["merge_cosine"] == threshold
