"""An executor that runs each step of a run as a task on an existing Dask cluster; imported only
when ``EVAL_PIPELINE_EXECUTOR=dask`` (``defs/executors.py``).

On the workers a step runs through dagster-dask's own entry point (``query_on_dask_worker``:
the job rebuilt from its reconstructable pointer, the one-step plan executed against the run's
instance). The orchestration differs from ``dagster_dask.dask_executor`` in two ways it needs:

* A task's arguments travel as one serialized string. Dask walks the tuples among a task's
  arguments for futures, and the run of a time-partitioned job holds a Dagster record that
  refuses iteration, so dagster-dask 0.29.27 on Dask 2026.8 fails every partitioned run at
  ``client.submit`` ("Iteration is not allowed on `@record` TimeWindowPartitionsDefinition").
* A step runs only when every step it depends on succeeded, as in the in-process executor.
  dagster-dask runs a step whatever became of those, so the step after a failed blocking asset
  check (``log_embeddings`` after the PII leak check) would still run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import dagster as dg
from dagster._core.execution.retries import RetryMode
from dagster_dask.executor import query_on_dask_worker
from distributed import Client, as_completed

__all__ = ["DaskStepExecutor", "dask_step_executor"]


@dg.executor(
    name="dask",
    config_schema={"address": dg.Field(dg.StringSource, description="The scheduler of a running Dask cluster, "
                                                                    "e.g. tcp://127.0.0.1:8786.")},
    requirements=dg.multiple_process_executor_requirements(),
)
def dask_step_executor(init_context) -> "DaskStepExecutor":
    """Each step as a task on the Dask cluster whose scheduler is at ``address``."""
    return DaskStepExecutor(init_context.executor_config["address"])


class DaskStepExecutor(dg.Executor):
    def __init__(self, address: str) -> None:
        self.address = address

    @property
    def retries(self) -> RetryMode:
        return RetryMode.DISABLED

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        if not plan_context.instance.is_persistent:
            raise dg.DagsterInvariantViolationError("steps on a Dask cluster need a persistent Dagster instance "
                                                    "(DAGSTER_HOME), which the workers write the run's events to")
        run = plan_context.dagster_run
        shared = [plan_context.reconstructable_job, run, plan_context.run_config, plan_context.instance.get_ref(),
                  execution_plan.known_state]
        with Client(self.address) as client:
            tasks = {}
            for level in execution_plan.get_steps_to_execute_by_level():
                for step in level:
                    upstream = [tasks[key] for step_input in step.step_inputs for key in step_input.dependency_keys]
                    tasks[step.key] = client.submit(_step_task, upstream, dg.serialize_value([*shared, step.key]),
                                                    key=f"{run.job_name}.{step.key}-{run.run_id}", pure=False)
            for _, (_, _, events) in as_completed(list(tasks.values()), with_results=True):
                yield from dg.deserialize_value(events, list)


def _step_task(upstream: Sequence[tuple[str, bool, str]], task: str) -> tuple[str, bool, str]:
    """On a worker: (step key, succeeded, its serialized events). The step runs only when every
    step it depends on succeeded; otherwise its one event says which did not."""
    recon_job, run, run_config, instance_ref, known_state, step_key = dg.deserialize_value(task, list)
    failed = sorted({key for key, succeeded, _ in upstream if not succeeded})
    if failed:
        from dagster._core.events import EngineEventData

        with dg.DagsterInstance.from_ref(instance_ref) as instance:
            event = instance.report_engine_event(
                f"Step {step_key} not run: the step(s) it depends on did not succeed ({', '.join(failed)})",
                run, EngineEventData(), step_key=step_key)
        return step_key, False, dg.serialize_value([event])
    events = list(query_on_dask_worker(None, recon_job, run, run_config, [step_key], instance_ref, known_state))
    return step_key, any(event.is_step_success for event in events), dg.serialize_value(events)
