"""The resource settings ``eval-pipeline demo`` runs the pipeline with, on top of the defaults."""

from __future__ import annotations

from eval_pipeline.demo.redaction import ALLOW_LIST

__all__ = ["demo_resources"]


def demo_resources(target_size: int | None = None) -> dict[str, object]:
    """Resource overrides for the demo's refreshes: the redaction settings with the demo's
    allow-list (:data:`eval_pipeline.demo.redaction.ALLOW_LIST`) as ``extra_allow_list``, and
    the sampling settings with ``target_size`` when one is given."""
    from eval_pipeline.defs.resources import RedactionSettings, SamplingSettings

    resources: dict[str, object] = {"redaction": RedactionSettings(extra_allow_list=list(ALLOW_LIST))}
    if target_size is not None:
        resources["sampling"] = SamplingSettings(target_size=target_size)
    return resources
