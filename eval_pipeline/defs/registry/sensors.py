"""The registry sensor: every newly registered model version gets its partition and one evaluation run."""

import json

import dagster as dg

from eval_pipeline.defs.evaluation.assets import evaluation_job
from eval_pipeline.defs.partitions import model_versions
from eval_pipeline.defs.resources import EvaluationSettings, PipelineSettings
from eval_pipeline.lib.registry.versions import ModelRegistry, RegistryError


def evaluation_run_config(tier: str, baseline: str = "") -> dict:
    """Run config of ``evaluation_job``: the tier of ``candidate_outputs``, the baseline of ``scorecard``."""
    return {"ops": {"candidate_outputs": {"config": {"tier": tier}},
                    "scorecard": {"config": {"baseline": baseline}}}}


@dg.sensor(job=evaluation_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def model_registry_sensor(context: dg.SensorEvaluationContext, settings: PipelineSettings,
                          evaluation: EvaluationSettings):
    """Watches ``<data home>/registry/models.jsonl``. A version not seen before gets a partition
    of ``model_versions`` and one ``evaluation_job`` run (registry, outputs, scores, scorecard) on
    the ``sensor_tier`` of the ``evaluation`` resource. The cursor lists the versions already
    requested and the run key is ``evaluate:<name>:<version>``, so each version runs exactly once.
    Baselines are requested before candidates, so a candidate finds its baseline's scores; a
    version that already has a scorecard (evaluated with ``eval-pipeline evaluate``) is skipped."""
    try:
        versions = ModelRegistry(settings.data_home.registry).load()
    except RegistryError as err:
        return dg.SkipReason(f"the registry file cannot be read: {err}")
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    new = [mv for mv in versions if mv.key not in seen]
    if not new:
        return dg.SkipReason(f"no new model version ({len(versions)} registered)")
    # a version `eval-pipeline evaluate` already scored in this instance is not run again
    scored = context.instance.get_materialized_partitions(dg.AssetKey("scorecard"))
    new.sort(key=lambda mv: (mv.role != "baseline", mv.registered_at))
    keys = [mv.key for mv in new if mv.key not in scored]
    cursor = json.dumps(sorted(seen | {mv.key for mv in new}))
    if not keys:
        context.update_cursor(cursor)
        return dg.SkipReason(f"the new version(s) {', '.join(mv.key for mv in new)} already have a scorecard")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"evaluate:{key}", partition_key=key,
                                    run_config=evaluation_run_config(evaluation.sensor_tier),
                                    tags={"eval_pipeline/tier": evaluation.sensor_tier})
                      for key in keys],
        dynamic_partitions_requests=[model_versions.build_add_request(keys)],
        cursor=cursor,
    )
