"""Where a run's steps execute, chosen by ``EVAL_PIPELINE_EXECUTOR``:

``in_process``   (default) every step in the run's own process, one after the other
``multiprocess`` each step in a child process of the run (``dg.multiprocess_executor``)
``dask``         each step as a task on an existing Dask cluster, whose scheduler is at
                 ``EVAL_PIPELINE_DASK_ADDRESS`` (e.g. ``tcp://127.0.0.1:8786``)

With ``multiprocess`` or ``dask`` a run must be launched out of process (``runs._execute``):
the steps' processes rebuild the job from ``eval_pipeline.definitions`` (``job_for_home``, the
data home passed as its argument) and open the run's instance from its reference, so the Dask
workers must start with the storage and model settings the launching process has and see the
same data home on disk. Writers of a DuckDB file queue on its file lock (``lib/core/locks.py``),
whichever process they are in.

The executor is part of the definitions' shape, so the variable is read when they are built
(``build_definitions``, which Dagster calls when it loads the code location), not at import.

dagster-dask is imported only when ``dask`` is chosen (``defs/dask_executor.py`` says why that
executor is not ``dagster_dask.dask_executor`` as it is).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

__all__ = ["DASK_ADDRESS_ENV", "EXECUTOR_ENV", "EXECUTORS", "executor_from_env", "executor_name"]

EXECUTOR_ENV = "EVAL_PIPELINE_EXECUTOR"
DASK_ADDRESS_ENV = "EVAL_PIPELINE_DASK_ADDRESS"
EXECUTORS = ("in_process", "multiprocess", "dask")


def executor_name(env: Mapping[str, str] | None = None) -> str:
    """The executor ``EVAL_PIPELINE_EXECUTOR`` names (``in_process`` when unset or empty).

    Raises:
        ValueError: for a name not in :data:`EXECUTORS`.
    """
    env = os.environ if env is None else env
    name = (env.get(EXECUTOR_ENV) or "in_process").strip()
    if name not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={name!r} is not an executor; set it to one of {', '.join(EXECUTORS)} "
                         f"(or leave it unset for in_process)")
    return name


def executor_from_env(env: Mapping[str, str] | None = None) -> dg.ExecutorDefinition:
    """The executor of the Definitions, from ``EVAL_PIPELINE_EXECUTOR`` (and, for ``dask``,
    ``EVAL_PIPELINE_DASK_ADDRESS``).

    Raises:
        ValueError: for an unknown executor name, or ``dask`` without a scheduler address.
    """
    env = os.environ if env is None else env
    name = executor_name(env)
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    address = (env.get(DASK_ADDRESS_ENV) or "").strip()
    if not address:
        raise ValueError(f"{EXECUTOR_ENV}=dask needs the scheduler of a running Dask cluster in {DASK_ADDRESS_ENV} "
                         f"(e.g. tcp://127.0.0.1:8786)")
    try:
        from eval_pipeline.defs.dask_executor import dask_step_executor
    except ImportError as err:
        raise ValueError(f"{EXECUTOR_ENV}=dask needs dagster-dask (and Dask's distributed), not installed here: "
                         f"pip install dagster-dask==0.29.27 ({err})") from err
    return dask_step_executor.configured({"address": address}, name="dask")
