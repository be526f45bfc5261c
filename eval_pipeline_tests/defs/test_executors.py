"""The executor the Definitions get from ``EVAL_PIPELINE_EXECUTOR``, and the run config a
resource override becomes for a run whose steps run elsewhere. (Runs on a Dask cluster:
``test_scale_out.py``.)"""

import dagster as dg
import pytest

from eval_pipeline.definitions import build_definitions
from eval_pipeline.defs.executors import executor_from_env, executor_name
from eval_pipeline.defs.resources import ClusteringSettings, SamplingSettings
from eval_pipeline.lib.core.paths import DataHome
from eval_pipeline.runs import _resource_config


@pytest.mark.parametrize("env", [{}, {"EVAL_PIPELINE_EXECUTOR": ""}, {"EVAL_PIPELINE_EXECUTOR": "in_process"}])
def test_steps_run_in_the_runs_process_by_default(env):
    assert executor_name(env) == "in_process" and executor_from_env(env) is dg.in_process_executor


def test_multiprocess_is_dagsters_own():
    assert executor_from_env({"EVAL_PIPELINE_EXECUTOR": "multiprocess"}) is dg.multiprocess_executor


@pytest.mark.parametrize("env, message", [
    ({"EVAL_PIPELINE_EXECUTOR": "dask-cluster"},
     r"EVAL_PIPELINE_EXECUTOR='dask-cluster' is not an executor; set it to one of in_process, multiprocess, dask"),
    ({"EVAL_PIPELINE_EXECUTOR": "dask"},
     r"EVAL_PIPELINE_EXECUTOR=dask needs the scheduler of a running Dask cluster in EVAL_PIPELINE_DASK_ADDRESS"),
    ({"EVAL_PIPELINE_EXECUTOR": "dask", "EVAL_PIPELINE_DASK_ADDRESS": "  "}, r"in EVAL_PIPELINE_DASK_ADDRESS"),
])
def test_an_unknown_executor_or_a_missing_address_is_refused(env, message):
    with pytest.raises(ValueError, match=message):
        executor_from_env(env)


def test_dask_is_configured_for_the_cluster_at_the_address():
    pytest.importorskip("dagster_dask")
    executor = executor_from_env({"EVAL_PIPELINE_EXECUTOR": "dask", "EVAL_PIPELINE_DASK_ADDRESS": "tcp://10.0.0.5:8786"})

    @dg.op
    def step() -> None: ...

    @dg.job(executor_def=executor)
    def one_step() -> None:
        step()

    assert dg.validate_run_config(one_step)["execution"] == {"dask": {"address": "tcp://10.0.0.5:8786"}}


def test_the_definitions_take_the_executor_from_the_environment(tmp_path, monkeypatch):
    home = DataHome.resolve(tmp_path / "home")
    assert build_definitions(home).resolve_job_def("ingest_job").executor_def is dg.in_process_executor
    monkeypatch.setenv("EVAL_PIPELINE_EXECUTOR", "multiprocess")
    assert build_definitions(home).resolve_job_def("ingest_job").executor_def is dg.multiprocess_executor
    monkeypatch.setenv("EVAL_PIPELINE_EXECUTOR", "threads")
    with pytest.raises(ValueError, match="EVAL_PIPELINE_EXECUTOR='threads'"):
        build_definitions(home)


def test_resource_overrides_reach_other_processes_as_run_config(tmp_path):
    home = DataHome.resolve(tmp_path / "home")
    overrides = {"sampling": SamplingSettings(target_size=40), "clustering": ClusteringSettings(refit=True)}
    assert _resource_config(overrides, home) == {"sampling": {"config": {"target_size": 40}},
                                                 "clustering": {"config": {"refit": True}}}
    with pytest.raises(ValueError, match="resource 'sampling': a ClusteringSettings cannot reach the steps"):
        _resource_config({"sampling": ClusteringSettings()}, home)
