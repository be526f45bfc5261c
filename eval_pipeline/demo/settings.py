"""The resource settings ``eval-pipeline demo`` runs the pipeline with, on top of the defaults."""

from __future__ import annotations

from pathlib import Path

from eval_pipeline.demo.redaction import ALLOW_LIST

__all__ = ["THRESHOLDS", "demo_resources"]

#: The demo's gates, per task type (the packaged ``eval_pipeline/thresholds.yaml`` names no category).
THRESHOLDS = Path(__file__).resolve().parent / "thresholds.yaml"


def demo_resources(target_size: int | None = None) -> dict[str, object]:
    """Resource overrides for the demo's refreshes: the redaction settings with the demo's
    allow-list (:data:`eval_pipeline.demo.redaction.ALLOW_LIST`) as ``extra_allow_list``, the
    evaluation settings with the demo's gates (:data:`THRESHOLDS`: the refresh reports the
    precision of their critical slices), and the sampling settings with ``target_size`` when one
    is given."""
    from eval_pipeline.defs.resources import EvaluationSettings, RedactionSettings, SamplingSettings

    resources: dict[str, object] = {"redaction": RedactionSettings(extra_allow_list=list(ALLOW_LIST)),
                                    "evaluation": EvaluationSettings(thresholds=str(THRESHOLDS))}
    if target_size is not None:
        resources["sampling"] = SamplingSettings(target_size=target_size)
    return resources
