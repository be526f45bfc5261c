"""The one code location Dagster loads: ``dagster dev -m eval_pipeline.definitions``.

Importing this module builds nothing and touches nothing: ``defs`` is a ``@dg.definitions``
function, which Dagster calls when it loads the code location (``dagster dev``, ``dagster
definitions validate``, a code server). Only then are the settings that decide the shape of the
definitions read from the environment: the data home (``EVAL_PIPELINE_HOME``, default
``./data``; the IO managers' DuckDB paths derive from it), where the large tables are
(``EVAL_PIPELINE_STORAGE``: which IO manager class stores them) and the executor
(``EVAL_PIPELINE_EXECUTOR``). Everything else a run needs (the judge's endpoint and key) is read
by its resource when a run uses it. No folder is created here: the IO managers and the assets
create the folders they write into when they first write.
"""

from __future__ import annotations

import dagster as dg

from eval_pipeline.defs.clustering import assets as clustering_assets
from eval_pipeline.defs.embeddings import assets as embedding_assets
from eval_pipeline.defs.evaluation import assets as evaluation_assets
from eval_pipeline.defs.executors import executor_from_env
from eval_pipeline.defs.ingest import assets as ingest_assets
from eval_pipeline.defs.ingest import checks as ingest_checks
from eval_pipeline.defs.ingest import sensors as ingest_sensors
from eval_pipeline.defs.labeling import assets as labeling_assets
from eval_pipeline.defs.labeling import sensors as labeling_sensors
from eval_pipeline.defs.privacy import assets as privacy_assets
from eval_pipeline.defs.privacy import checks as privacy_checks
from eval_pipeline.defs.privacy import schedules as privacy_schedules
from eval_pipeline.defs.registry import assets as registry_assets
from eval_pipeline.defs.registry import sensors as registry_sensors
from eval_pipeline.defs.resources import build_resources, with_overrides
from eval_pipeline.defs.sampling import assets as sampling_assets
from eval_pipeline.defs.sampling import schedules as sampling_schedules
from eval_pipeline.lib.core.paths import DataHome

__all__ = ["build_definitions", "defs", "job_for_home"]


def build_definitions(home: DataHome | None = None, resources: dict[str, object] | None = None) -> dg.Definitions:
    """All assets, checks, jobs, schedules and sensors, with resources bound to a data home
    (``resources`` replaces some of them, e.g. an ``evaluation`` resource with another thresholds file;
    a settings group's fields are set on top of the data home's ``settings.yaml``).

    ``home`` None: the one ``EVAL_PIPELINE_HOME`` names (default ``./data``). Building creates
    nothing on disk and changes no environment variable."""
    home = home or DataHome.resolve()
    return dg.Definitions(
        assets=dg.load_assets_from_modules([ingest_assets, privacy_assets, embedding_assets, clustering_assets,
                                            sampling_assets, labeling_assets, registry_assets, evaluation_assets]),
        asset_checks=dg.load_asset_checks_from_modules([ingest_checks, privacy_checks]),
        jobs=[ingest_sensors.landing_manifest_job, ingest_sensors.ingest_job, privacy_schedules.raw_retention_job,
              sampling_schedules.monthly_refresh_job, labeling_assets.labeling_job, labeling_assets.judge_probes_job,
              evaluation_assets.evaluation_job],
        schedules=[privacy_schedules.raw_retention_schedule, sampling_schedules.month_end_ingest_schedule,
                   sampling_schedules.monthly_refresh_schedule],
        sensors=[ingest_sensors.landing_sensor, labeling_sensors.labels_sensor, registry_sensors.model_registry_sensor],
        resources=with_overrides(build_resources(home), resources),
        # One DuckDB file takes one writer process at a time: steps run in the run's process
        # unless EVAL_PIPELINE_EXECUTOR says otherwise (defs/executors.py; writers then queue on its lock).
        executor=executor_from_env(),
    )


def job_for_home(name: str, root: str) -> dg.JobDefinition:
    """The job ``name`` of the definitions bound to the data home at ``root``: what the processes
    that run a run's steps out of process (multiprocess, Dask) rebuild it from (``runs._execute``
    points them here, with JSON arguments)."""
    return build_definitions(DataHome.resolve(root)).resolve_job_def(name)


@dg.definitions
def defs() -> dg.Definitions:
    """The code location: the definitions of the data home ``EVAL_PIPELINE_HOME`` names, built
    when Dagster loads them (not when this module is imported)."""
    return build_definitions()
