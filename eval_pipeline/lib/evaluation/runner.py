"""Evaluating a model version on an eval set: which examples a tier runs, and how one output is scored.

Tiers:

- ``deep``: every example of the eval-set version.
- ``continuous``: a fixed stratified subset (100-200 examples), small enough for every CI run.
  Each category gets a share proportional to its size, but at least ``min_per_category``
  examples (or all it has), and within a category the examples with the smallest SHA-256 of their
  id are taken. The subset is therefore the same for every run on a version, and an example that
  stays in the next version keeps its rank, so consecutive versions share most of their subset.
  Each chosen example's traffic weight is scaled by its category's ``size / chosen`` so the
  weighted pass rate still estimates the traffic the whole set stands for.

Scoring one output (:func:`score_output`): a provider failure is an ``error``; otherwise every
scorer that fits the task type applies (reference exact match when the rubric has one correct
answer and the example has a reference; the LLM judge's rubric scores when a judge ran), and the
example passes when every applicable scorer passes it. The other reference metrics (token F1,
ROUGE-L, BERTScore F1) are reported in ``scores`` and never decide a pass. An example no scorer
applies to is ``not_scored``: never a pass, never a fail.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from eval_pipeline.lib.evaluation.scorers import score_reference
from eval_pipeline.lib.labeling.rubrics import Rubric

__all__ = ["Tier", "TIERS", "CONTINUOUS_MIN", "CONTINUOUS_MAX", "select_tier", "ExampleScore", "score_output"]

# The tiers a model version is evaluated in: the continuous tier's 100-200 examples, or the whole set.
Tier = Literal["continuous", "deep"]
TIERS: tuple[str, ...] = get_args(Tier)
CONTINUOUS_MIN, CONTINUOUS_MAX = 100, 200


def _rank(example_id: str) -> str:
    return hashlib.sha256(example_id.encode()).hexdigest()


def _allocate(sizes: Mapping[str, int], total: int, minimum: int) -> dict[str, int]:
    """Per-category counts summing to ``total``: proportional (largest remainders) above a floor."""
    take = {c: min(n, minimum) for c, n in sizes.items()}
    left = total - sum(take.values())
    while left > 0:
        room = {c: sizes[c] - take[c] for c in sizes if sizes[c] > take[c]}
        if not room:
            break
        weight = sum(sizes[c] for c in room)
        quota = {c: left * sizes[c] / weight for c in room}
        grant = {c: min(room[c], math.floor(quota[c])) for c in room}
        if not any(grant.values()):
            # hand out the last few by largest remainder
            for c in sorted(room, key=lambda c: (-(quota[c] - math.floor(quota[c])), c))[:left]:
                grant[c] = 1
        for c, g in grant.items():
            take[c] += g
        left = total - sum(take.values())
    return take


def select_tier(examples: Sequence[Mapping[str, Any]], tier: Tier, size: int = 150,
                min_per_category: int = 10) -> list[dict[str, Any]]:
    """The examples a tier runs, each with ``tier_weight`` (its traffic weight scaled to the tier).

    ``size`` is the continuous tier's size, between 100 and 200; a set no larger than that is
    run whole. Examples come back in the order given.
    """
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    if not CONTINUOUS_MIN <= size <= CONTINUOUS_MAX:
        raise ValueError(f"the continuous tier holds {CONTINUOUS_MIN} to {CONTINUOUS_MAX} examples, got {size}")
    rows = [dict(ex) for ex in examples]
    for row in rows:
        row["tier_weight"] = float(row.get("weight") or 0.0)
    if tier == "deep" or len(rows) <= size:
        return rows
    by_category: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_category[str(row.get("category"))].append(row)
    take = _allocate({c: len(v) for c, v in by_category.items()}, size, min_per_category)
    chosen: set[str] = set()
    for category, members in by_category.items():
        picked = sorted(members, key=lambda r: _rank(str(r["example_id"])))[: take[category]]
        scale = len(members) / len(picked)
        for row in picked:
            row["tier_weight"] *= scale
            chosen.add(row["example_id"])
    return [row for row in rows if row["example_id"] in chosen]


@dataclass
class ExampleScore:
    """How one output scored. ``scores`` maps ``metric`` or ``judge.<criterion>`` to its value;
    ``scorers`` names what applied; ``reason`` says why an example is not scored or errored."""

    status: Literal["passed", "failed", "not_scored", "error"]
    scores: dict[str, float] = field(default_factory=dict)
    scorers: list[str] = field(default_factory=list)
    reason: str | None = None
    justifications: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        return {"passed": True, "failed": False}.get(self.status)


def score_output(task_type: str | None, rubric: Rubric | None, output: str | None, output_error: str | None,
                 reference: str | None, judge: Any | None = None, judge_configured: bool = False,
                 metrics: Mapping[str, float] | None = None) -> ExampleScore:
    """Score one model output (see the module docstring for the rule).

    ``judge`` is a :class:`~eval_pipeline.lib.labeling.judge.JudgeResult` for this output, or ``None`` when
    no judge ran; a judge result that is not ok leaves the example to the other scorers (or not
    scored) with the judge's error as the reason. ``metrics`` are this output's reference
    metrics when the caller scored many outputs at once
    (:func:`~eval_pipeline.lib.evaluation.scorers.score_references`, one BERTScore model call for a run);
    without them they are computed here.
    """
    if output_error is not None:
        return ExampleScore(status="error", reason=output_error)
    if rubric is None:
        return ExampleScore(status="not_scored", reason=f"no rubric applies to task type {task_type!r}")
    verdicts: list[bool] = []
    result = ExampleScore(status="not_scored")
    reasons = []
    if rubric.has_reference:
        if reference is None:
            reasons.append("no reference answer for this example yet")
        else:
            metrics = dict(metrics) if metrics is not None else score_reference(rubric, output, reference)
            result.scores.update(metrics)
            result.scorers.append("reference")
            verdicts.append(metrics["exact_match"] >= 1.0)
    if judge is not None:
        if judge.status == "ok":
            result.scores.update({f"judge.{c}": float(s) for c, s in judge.scores.items()})
            result.justifications = dict(judge.justifications)
            result.scorers.append(f"judge:{judge.judge_model}")
            judged = rubric.passes(judge.scores)
            if judged is None:
                reasons.append("the judge left a required criterion unscored")
            else:
                verdicts.append(judged)
        else:
            reasons.append(f"judge {judge.status}: {judge.error}")
    elif not rubric.has_reference and not judge_configured:
        reasons.append("open-ended task: no judge endpoint configured")
    if not verdicts:
        result.reason = "; ".join(reasons) or "no scorer applies"
        return result
    result.status = "passed" if all(verdicts) else "failed"
    result.reason = "; ".join(reasons) or None
    return result
