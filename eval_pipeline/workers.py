"""The entry points of the worker processes that run a month's days in parallel (see
``runs.day_pool``). Kept free of heavy imports at module level: a spawned worker imports this
module first, so its initializer can limit threads and silence Dagster's preview warnings
before Dagster, torch or spaCy load."""

from __future__ import annotations

import os
import warnings

__all__ = ["init_worker", "ingest_day", "ready"]

_DEFS: dict[tuple[str, str], object] = {}


def init_worker(threads: int, root: str | None = None, overrides: dict[str, dict] | None = None) -> None:
    """Run once per worker: ``threads`` for torch, BLAS and polars, the command line's warning filters,
    and, given the data home ``root``, the redaction and embedding models loaded (so they load
    while the parent scans the landing folder, not in the first day's run): the default ones, or
    the redaction model of the ``redaction`` settings in ``overrides`` (as for :func:`ingest_day`)."""
    warnings.filterwarnings("ignore", message=".*is currently in (preview|beta).*")
    # before polars loads: its thread pool (one thread per core by default) otherwise wakes and
    # spins on every small frame operation while the other worker has the second core
    os.environ.setdefault("POLARS_MAX_THREADS", str(threads))
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    import torch

    torch.set_num_threads(threads)
    from eval_pipeline.defs.resources import EmbeddingSettings, RedactionSettings
    from eval_pipeline.lib.embeddings.encode import get_embedder
    from eval_pipeline.lib.privacy.redaction import get_redactor

    if root is not None:
        from eval_pipeline.lib.core.paths import DataHome

        get_redactor(RedactionSettings(**(overrides or {}).get("redaction", {}).get("config", {})).config())
        get_embedder(EmbeddingSettings().config(cache_dir=str(DataHome.resolve(root).cache / "embeddings")))


def ready() -> None:
    """A task that does nothing: submitted once per worker so the pool starts them all at once."""


def ingest_day(root: str, day: str, tags: dict[str, str] | None = None,
               overrides: dict[str, dict] | None = None) -> tuple[str, str, bool, list[str]]:
    """One day's ingest run on the data home ``root`` (definitions built once per worker and set
    of overrides, the instance opened once per worker), with ``tags``. ``overrides`` are resource
    settings that replace the defaults, as ``runs._resource_config`` writes them
    (``{"redaction": {"config": {...}}}``): plain data, so they cross the process boundary; each
    is rebuilt as the default resource's type."""
    import json

    from eval_pipeline.definitions import build_definitions
    from eval_pipeline.defs.resources import build_resources
    from eval_pipeline.lib.core.paths import DataHome
    from eval_pipeline.runs import ingest_day_run, instance_for

    home = DataHome.resolve(root)
    key = (root, json.dumps(overrides or {}, sort_keys=True, default=str))
    if key not in _DEFS:
        defaults = build_resources(home)
        resources = {name: type(defaults[name])(**spec.get("config", {})) for name, spec in (overrides or {}).items()}
        _DEFS[key] = (build_definitions(home, resources or None), instance_for(home))
    defs, instance = _DEFS[key]  # type: ignore[misc]
    return ingest_day_run(defs, instance, day, tags=tags)
