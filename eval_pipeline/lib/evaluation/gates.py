"""Deployment gates: the thresholds file and the verdict a scorecard reaches with it.

A gate applies to the whole set ("overall") or to one slice (``category=intent_routing``,
``user_segment=enterprise``, ...). It can hold an absolute ``floor`` on the pass rate and a
``max_drop``: the largest fall against the baseline that is tolerated, measured on the examples
both versions were scored on. Each check ends in one of three states, and the state says how
sure we are, not just what the point estimate is:

- floor: ``pass`` when the Wilson interval lies at or above the floor, ``fail`` when it lies
  below it, ``inconclusive`` when it straddles it;
- max drop: ``fail`` when the drop is beyond the limit *and* significant (McNemar p < alpha and
  the Newcombe interval of the difference below 0); ``pass`` when the interval's lower end rules
  out a drop beyond the limit (a non-inferiority test at the same confidence); otherwise
  ``inconclusive``, with the minimum detectable effect at this size and the examples needed to
  tell a drop of the limit's size.

The baseline's stored scores may be on an older eval-set version than the candidate's (a version
is re-drawn every month; an example keeps its id across versions). The paired figures then use
only the examples both were run on, and the scorecard's ``comparison`` entry says which versions
met and how many examples they share; with none shared the drop gates cannot be evaluated and are
inconclusive, never passed.

Only the overall gate and slices marked ``critical`` decide the verdict; a non-critical slice that
fails or cannot be told is reported as a warning. Examples the provider failed on are never
passes or fails: they are counted as errors, and more of them than ``max_error_share`` makes the
verdict inconclusive (the model was not really evaluated).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from statsmodels.stats.proportion import samplesize_confint_proportion

from eval_pipeline.lib.core.yamlfile import YAMLFileError, read_yaml_file
from eval_pipeline.lib.evaluation.stats import minimum_detectable_effect, paired_comparison, weighted_wilson_interval, wilson_interval

__all__ = ["Gate", "SliceGate", "Thresholds", "ThresholdsError", "load_thresholds", "DEFAULT_THRESHOLDS",
           "slice_names", "build_scorecard", "scorecard_text", "STATUSES", "compare_versions", "latest_scoring",
           "version_order", "judge_reliability_card", "judge_reliability_lines", "with_human_review",
           "human_review_lines"]

DEFAULT_THRESHOLDS = Path(__file__).resolve().parents[2] / "thresholds.yaml"
STATUSES = ("passed", "failed", "not_scored", "error")
_POWER = 0.8


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Gate(_Strict):
    """Limits on one pass rate: an absolute floor and/or the largest drop against the baseline."""

    floor: float | None = Field(default=None, ge=0.0, le=1.0)
    max_drop: float | None = Field(default=None, gt=0.0, lt=1.0)


class SliceGate(Gate):
    critical: bool = False


class Thresholds(_Strict):
    """The thresholds file (``eval_pipeline/thresholds.yaml`` by default)."""

    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    max_error_share: float = Field(default=0.0, ge=0.0, le=1.0)
    slice_keys: list[str] = Field(default_factory=lambda: ["category"])
    overall: Gate = Field(default_factory=Gate)
    default_slice: Gate = Field(default_factory=Gate)
    slices: dict[str, SliceGate] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _slice_names(self) -> Thresholds:
        for name in self.slices:
            key, sep, value = name.partition("=")
            if not sep or not key or not value:
                raise ValueError(f"slices: {name!r} is not a slice name; expected key=value, e.g. category=intent_routing")
            if key not in self.slice_keys:
                raise ValueError(f"slices: {name!r} uses key {key!r}, which is not in slice_keys {self.slice_keys}")
        return self

    def gate_for(self, slice_name: str) -> SliceGate:
        if slice_name in self.slices:
            return self.slices[slice_name]
        return SliceGate(floor=self.default_slice.floor, max_drop=self.default_slice.max_drop, critical=False)


class ThresholdsError(ValueError):
    pass


def load_thresholds(path: str | os.PathLike[str] | None = None) -> Thresholds:
    """Read and validate a thresholds file; errors name the file and the field."""
    target = Path(path) if path else DEFAULT_THRESHOLDS
    try:
        data = read_yaml_file(target)
    except OSError as err:
        raise ThresholdsError(f"{target}: cannot read thresholds file: {err}") from err
    except YAMLFileError as err:
        raise ThresholdsError(str(err)) from None
    if data is None:
        data = {}  # an empty file: every default
    if not isinstance(data, dict):
        raise ThresholdsError(f"{target}: expected a mapping of threshold fields at the top level, "
                              f"got {type(data).__name__}")
    try:
        return Thresholds.model_validate(data)
    except ValidationError as err:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in err.errors()]
        raise ThresholdsError(f"{target}: " + "; ".join(problems)) from err


# --------------------------------------------------------------------------------------------
# slices
# --------------------------------------------------------------------------------------------


def slice_names(slice_json: str | Mapping[str, Any] | None, keys: Sequence[str]) -> list[str]:
    """``{"category": "rag_qa", "user_segment": "pro"}`` -> ``["category=rag_qa", "user_segment=pro"]``
    for the configured keys (a missing or null key gives no slice)."""
    if slice_json is None:
        return []
    values = json.loads(slice_json) if isinstance(slice_json, str) else slice_json
    return [f"{key}={values[key]}" for key in keys if values.get(key) not in (None, "")]


# --------------------------------------------------------------------------------------------
# eval-set versions
# --------------------------------------------------------------------------------------------


def version_order(version: str | None) -> tuple[int, int, str]:
    """Sort key of an eval-set version name: ``v2`` before ``v10`` (by number); a name that is not
    ``v<number>`` (or None) sorts before every numbered one."""
    text = version or ""
    digits = text[1:] if text[:1] in ("v", "V") else ""
    return (1, int(digits), text) if digits.isdigit() else (0, 0, text)


def latest_scoring(rows: Iterable[Mapping[str, Any]]) -> tuple[str | None, list[dict]]:
    """The rows of one scoring out of a model version's stored scores: those of its latest eval-set
    version (rows carry ``eval_set_version``). Each run replaces a version's stored scores, so they
    normally hold one eval-set version; rows left from an older scoring (a table written otherwise,
    or by hand) must not be paired as if they were part of it. Returns the version (None when there
    are no rows) and its rows."""
    every = [dict(r) for r in rows]
    if not every:
        return None, []
    latest = max({r.get("eval_set_version") for r in every}, key=version_order)
    return latest, [r for r in every if r.get("eval_set_version") == latest]


def _name(version: str | None) -> str:
    return version or "an unknown version"


def compare_versions(candidate_ids: Iterable[str], baseline_ids: Iterable[str], candidate_version: str | None,
                     baseline_version: str | None) -> dict[str, Any]:
    """What the candidate's run and the baseline's have in common: their eval-set versions, and how
    many examples (by example id, which is stable across versions) are in both, only in the
    candidate's run, only in the baseline's; with a one-line ``summary`` for the report and the
    command line.

    The counts are of the examples each version was run on (its tier of its eval-set version),
    whatever their status; the paired figures then use those of the shared examples both versions
    scored as a pass or a fail. A ``baseline_version`` of None is taken to be the candidate's.
    """
    cand, base = set(candidate_ids), set(baseline_ids)
    baseline_version = candidate_version if baseline_version is None else baseline_version
    same = baseline_version == candidate_version
    shared, c_only, b_only = len(cand & base), len(cand - base), len(base - cand)
    if same:
        head = f"baseline and candidate scored on the same eval-set version {_name(candidate_version)}"
        extra = ", ".join([f"{c_only} only in the candidate's run"] * bool(c_only)
                          + [f"{b_only} only in the baseline's run"] * bool(b_only))
    else:
        head = f"baseline scored on {_name(baseline_version)}, candidate on {_name(candidate_version)}"
        extra = f"{c_only} only in {_name(candidate_version)}, {b_only} only in {_name(baseline_version)}"
    if not shared:
        summary = (f"{head}: no example is in both runs ({extra}), so nothing is paired and the drop gates are "
                   "not evaluated (inconclusive)")
    elif same and not b_only and not c_only:
        summary = f"{head}: all {shared} examples shared"
    elif same and not c_only:
        # a subset of the baseline's run (a continuous run against a deep one): every candidate example is paired
        summary = f"{head}: all {shared} of the candidate's examples shared (the baseline's run holds {b_only} more)"
    else:
        summary = f"{head}: paired on {shared} shared examples ({extra})"
    return {"candidate_version": candidate_version, "baseline_version": baseline_version, "same_version": same,
            "shared_examples": shared, "candidate_only_examples": c_only, "baseline_only_examples": b_only,
            "summary": summary}


@dataclass(frozen=True)
class _Baseline:
    """The baseline's side of the pairing: pass or fail of each shared example it scored, the ids
    of every example it was run on, and the comparison of the two runs."""

    passed: Mapping[str, bool]
    examples: frozenset[str]
    comparison: Mapping[str, Any]
    has_scores: bool = True


# --------------------------------------------------------------------------------------------
# one gate
# --------------------------------------------------------------------------------------------


def _pts(x: float) -> str:
    return f"{100 * x:.1f}"


def _p(x: float) -> str:
    return f"{x:.3g}"


def _rate_part(rows: list[dict], confidence: float) -> dict[str, Any]:
    scored = [r for r in rows if r["status"] in ("passed", "failed")]
    passed = sum(r["status"] == "passed" for r in scored)
    part = {"examples": len(rows), "scored": len(scored), "passed": passed, "failed": len(scored) - passed,
            "not_scored": sum(r["status"] == "not_scored" for r in rows),
            "errors": sum(r["status"] == "error" for r in rows), "rate": None, "low": None, "high": None}
    if scored:
        ci = wilson_interval(passed, len(scored), confidence)
        part.update(rate=ci.estimate, low=ci.low, high=ci.high)
    return part


def _floor_check(part: dict, floor: float, confidence: float, share: float) -> tuple[str, str, int | None]:
    ci = wilson_interval(part["passed"], part["scored"], confidence)
    where = f"pass rate {_pts(ci.estimate)}% ({confidence:.0%} CI {_pts(ci.low)} to {_pts(ci.high)})"
    if ci.low >= floor:
        return "pass", f"{where} is above the floor of {_pts(floor)}%", None
    if ci.high < floor:
        return "fail", f"{where} is below the floor of {_pts(floor)}% by {_pts(floor - ci.estimate)} points", None
    needed = None
    if abs(ci.estimate - floor) > 1e-9:
        # scored examples for an interval whose half-width is the distance to the floor, scaled to the set
        in_slice = float(samplesize_confint_proportion(ci.estimate, abs(ci.estimate - floor), alpha=1 - confidence))
        needed = math.ceil(in_slice / max(min(share, 1.0), 1e-9))
    return "inconclusive", f"{where} straddles the floor of {_pts(floor)}%", needed


def _drop_check(pairs: list[tuple[bool, bool]], max_drop: float, confidence: float,
                share: float) -> tuple[str, str, dict, float | None, int | None]:
    base = [b for b, _ in pairs]
    cand = [c for _, c in pairs]
    cmp = paired_comparison(base, cand, confidence=confidence)
    alpha = 1 - confidence
    paired = {"n": cmp.n, "difference": cmp.difference, "low": cmp.interval.low, "high": cmp.interval.high,
              "p_value": cmp.p_value, "test": cmp.test, "candidate_only": cmp.candidate_only,
              "baseline_only": cmp.baseline_only}
    d = cmp.difference
    moved = f"dropped {_pts(-d)} points" if d < 0 else f"rose {_pts(d)} points" if d > 0 else "did not change"
    change = (f"{moved} ({confidence:.0%} CI {_pts(cmp.interval.low)} to {_pts(cmp.interval.high)}), "
              f"McNemar p={_p(cmp.p_value)}; {cmp.baseline_only} example(s) newly failing and "
              f"{cmp.candidate_only} newly passing of {cmp.n} paired")
    if cmp.difference < -max_drop and cmp.p_value < alpha and cmp.interval.high < 0:
        return "fail", f"{change}: beyond its {_pts(max_drop)}-point limit", paired, None, None
    if cmp.interval.low >= -max_drop:
        return "pass", f"{change}: a drop beyond {_pts(max_drop)} points is ruled out", paired, None, None
    psi = cmp if cmp.discordant else None
    try:
        mde = minimum_detectable_effect(cmp.n, cmp.baseline_rate, alpha=alpha, power=_POWER, paired=True,
                                        discordance=psi)
    except ValueError:
        mde = None
    needed = _paired_examples_needed(d, cmp.discordance if cmp.discordant else 2 * max_drop, max_drop,
                                     confidence, share)
    why = (f"{change}: {cmp.n} paired examples cannot tell whether the drop exceeds {_pts(max_drop)} points"
           + (f" (they detect a change of {_pts(mde)} points with {_POWER:.0%} power)" if mde is not None else ""))
    return "inconclusive", why, paired, mde, needed


def _paired_examples_needed(d: float, discordance: float, max_drop: float, confidence: float,
                            share: float) -> int | None:
    """Examples in the whole set for the paired interval to settle the gate, if the observed
    difference ``d`` and discordance (share of flipped examples) held at the larger size.

    The variance of a paired difference in proportions is ``(p01 + p10 - d^2) / n`` (e.g. Connor
    1987, Biometrics 43:207-211), so the interval's half-width is ``z * sqrt((psi - d^2) / n)``.
    When the drop is within the limit (``d >= -max_drop``) the interval must clear ``-max_drop``
    (a non-inferiority margin of ``d + max_drop``); when it is beyond the limit, it must clear 0
    (margin ``|d|``). The count in the slice is scaled by 1 / its share of the set.
    """
    margin = d + max_drop if d >= -max_drop else -d
    variance = discordance - d * d
    if margin <= 0 or variance <= 0:
        return None
    z = float(NormalDist().inv_cdf(1 - (1 - confidence) / 2))
    in_slice = math.ceil(z * z * variance / (margin * margin))
    return math.ceil(in_slice / max(min(share, 1.0), 1e-9))


def _worse(a: str, b: str) -> str:
    order = {"fail": 3, "inconclusive": 2, "pass": 1, "not_gated": 0}
    return a if order[a] >= order[b] else b


def _unpaired(row: dict, baseline: _Baseline) -> str:
    """The max-drop detail of a slice with no pair to compare (an inconclusive gate): no baseline
    scores at all or nothing shared between the two runs (the gate is not evaluated), none of
    this slice's examples in the baseline's run, or none of them scored by both."""
    cmp = baseline.comparison
    if not baseline.has_scores:
        return "max drop not evaluated: the baseline has no scores"
    if not cmp["shared_examples"]:
        return (f"max drop not evaluated: the baseline's run on {_name(cmp['baseline_version'])} and the "
                f"candidate's on {_name(cmp['candidate_version'])} share no example")
    if not row["shared_examples"]:
        return (f"max drop inconclusive: none of this slice's {row['examples']} examples is in the baseline's run "
                f"on {_name(cmp['baseline_version'])}, so there is nothing to pair")
    return f"max drop inconclusive: none of this slice's {row['shared_examples']} shared examples was scored by both"


def _gate_row(name: str, rows: list[dict], baseline: _Baseline | None, gate: Gate, critical: bool,
              confidence: float, total_scored: int) -> dict[str, Any]:
    part = _rate_part(rows, confidence)
    row: dict[str, Any] = {"slice": name, "critical": critical, **part, "baseline": None, "paired": None,
                           "floor": gate.floor, "max_drop": gate.max_drop, "status": "not_gated", "detail": "",
                           "mde": None, "mde_note": None, "needed_examples": None, "shared_examples": None}
    scored = [r for r in rows if r["status"] in ("passed", "failed")]
    pairs = []
    if baseline is not None:
        # only the examples both runs hold are paired (the baseline's may be on another eval-set version)
        row["shared_examples"] = sum(r["example_id"] in baseline.examples for r in rows)
        pairs = [(baseline.passed[r["example_id"]], r["status"] == "passed") for r in scored
                 if r["example_id"] in baseline.passed]
        if pairs:
            ci = wilson_interval(sum(b for b, _ in pairs), len(pairs), confidence)
            row["baseline"] = {"rate": ci.estimate, "low": ci.low, "high": ci.high, "scored": len(pairs)}
    if not scored:
        row["status"] = "not_scored"
        row["detail"] = (f"none of its {part['examples']} examples could be scored "
                         f"({part['not_scored']} not scored, {part['errors']} errors)")
        return row
    status, details = "not_gated", []
    share = len(scored) / max(total_scored, 1)
    if gate.floor is not None:
        s, text, needed = _floor_check(part, gate.floor, confidence, share)
        status, row["needed_examples"] = _worse(status, s), needed
        details.append(f"floor {s}: {text}")
    if gate.max_drop is not None:
        if pairs:
            s, text, paired, mde, needed = _drop_check(pairs, gate.max_drop, confidence, share)
            row["paired"], row["mde"] = paired, mde
            if needed is not None:
                row["needed_examples"] = max(needed, row["needed_examples"] or 0)
            status = _worse(status, s)
            details.append(f"max drop {s}: {text}")
        elif baseline is not None:
            status = _worse(status, "inconclusive")
            details.append(_unpaired(row, baseline))
    if not details:
        details.append(f"pass rate {_pts(part['rate'])}% ({confidence:.0%} CI {_pts(part['low'])} to "
                       f"{_pts(part['high'])}); no gate configured")
    row["status"], row["detail"] = status, "; ".join(details)
    return row


# --------------------------------------------------------------------------------------------
# the scorecard
# --------------------------------------------------------------------------------------------


def _one_version(rows: list[dict]) -> str | None:
    """The eval-set version the baseline's rows state (None when they state none)."""
    versions = sorted({r["eval_set_version"] for r in rows if r.get("eval_set_version")}, key=version_order)
    if len(versions) > 1:
        raise ValueError(f"the baseline's rows are on eval-set versions {', '.join(versions)}: pass the rows of one "
                         "scoring (latest_scoring picks them), or they would be paired as one run")
    return versions[0] if versions else None


def _fully_paired(comparison: Mapping[str, Any]) -> bool:
    """Every example of the candidate's run is in the baseline's, on the same eval-set version (the
    baseline's run may hold more: a deep run against a continuous one)."""
    return bool(comparison["same_version"] and comparison["shared_examples"]
                and not comparison["candidate_only_examples"])


def build_scorecard(candidate: Iterable[Mapping[str, Any]], baseline: Iterable[Mapping[str, Any]] | None,
                    thresholds: Thresholds, *, model: str, baseline_model: str | None, eval_set_version: str | None,
                    tier: str, created_at: str, baseline_eval_set_version: str | None = None,
                    judge_reliability: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The scorecard of a model version (the shape ``lib/evaluation/report.py`` renders).

    ``candidate`` rows: ``example_id``, ``slice`` (JSON), ``weight`` (traffic the example stands
    for), ``status`` (one of :data:`STATUSES`). ``baseline`` rows: ``example_id`` and ``status``
    (only its passed/failed rows are used, paired with the candidate's by example id); ``None``
    when there is no baseline (a first evaluation, or the baseline itself).

    ``eval_set_version`` is the candidate's; ``baseline_eval_set_version`` the one the baseline's
    rows were scored on (default: the one their ``eval_set_version`` field states, else the
    candidate's). When they differ only the examples in both runs are paired, and the card's
    ``comparison`` entry (see :func:`compare_versions`) says how many that is; a reason line says
    so whenever not every candidate example is shared with a run of the same version.

    ``judge_reliability`` (optional): the latest judge bias probe rows and observed-bias rows
    (``{"month", "probes", "observed"}``); candidate rows may then carry ``rubric``, the rubric
    the judge scored the example with (None when only reference metrics scored it). See
    :func:`judge_reliability_card`: it never changes the verdict.
    """
    rows = [dict(r) for r in candidate]
    for r in rows:
        if r["status"] not in STATUSES:
            raise ValueError(f"example {r['example_id']}: status {r['status']!r} is not one of {STATUSES}")
    base, comparison = None, None
    if baseline is not None:
        base_rows = [dict(r) for r in baseline]
        candidate_ids = {r["example_id"] for r in rows}
        if base_rows:
            version = baseline_eval_set_version or _one_version(base_rows)
            comparison = compare_versions(candidate_ids, (r["example_id"] for r in base_rows), eval_set_version,
                                          version)
        else:
            who = f"baseline {baseline_model}" if baseline_model else "the baseline"
            comparison = {"candidate_version": eval_set_version, "baseline_version": baseline_eval_set_version,
                          "same_version": False, "shared_examples": 0, "candidate_only_examples": len(candidate_ids),
                          "baseline_only_examples": 0,
                          "summary": f"{who} has no scores: evaluate it first; no paired comparison was made"}
        base = _Baseline(passed={r["example_id"]: r["status"] == "passed" for r in base_rows
                                 if r["status"] in ("passed", "failed") and r["example_id"] in candidate_ids},
                         examples=frozenset(r["example_id"] for r in base_rows), comparison=comparison,
                         has_scores=bool(base_rows))
    conf = thresholds.confidence
    total_scored = sum(r["status"] in ("passed", "failed") for r in rows)
    overall = _gate_row("overall", rows, base, thresholds.overall, True, conf, total_scored)
    by_slice: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        for name in slice_names(r.get("slice"), thresholds.slice_keys):
            by_slice[name].append(r)
    for name in thresholds.slices:
        by_slice.setdefault(name, [])
    slices = []
    for name in sorted(by_slice):
        gate = thresholds.gate_for(name)
        slices.append(_gate_row(name, by_slice[name], base, gate, gate.critical, conf, total_scored))

    scored = [r for r in rows if r["status"] in ("passed", "failed")]
    weighted = None
    if scored and any((r.get("weight") or 0) > 0 for r in scored):
        ci = weighted_wilson_interval([r["status"] == "passed" for r in scored],
                                      [float(r.get("weight") or 0.0) for r in scored], conf)
        weighted = {"estimate": ci.estimate, "low": ci.low, "high": ci.high, "n_eff": ci.n}
    # how big a change the whole set can detect at all (paired, 80% power): against a baseline,
    # on the examples the two runs share (all of them when both ran on the same version)
    n_comparable = (len(scored) if base is None or not base.has_scores
                    else sum(r["example_id"] in base.examples for r in scored))
    if overall["mde"] is None and n_comparable:
        rate = overall["baseline"]["rate"] if overall["baseline"] else overall["rate"]
        psi = None
        if overall["paired"] and overall["paired"]["n"]:
            flips = overall["paired"]["candidate_only"] + overall["paired"]["baseline_only"]
            psi = flips / overall["paired"]["n"] if flips else None
        try:
            overall["mde"] = minimum_detectable_effect(n_comparable, rate, alpha=1 - conf, power=_POWER, paired=True,
                                                       discordance=psi)
        except ValueError as err:  # e.g. too few examples for any change to be detectable
            overall["mde"], overall["mde_note"] = None, str(err)

    reasons, warnings = [], []
    verdict = "pass"
    for row in [overall, *slices]:
        label = "overall" if row["slice"] == "overall" else f"slice {row['slice']}"
        status = row["status"]
        if status == "not_scored":
            if row["critical"] and row["examples"]:
                verdict = _worse(verdict, "inconclusive")
                reasons.append(f"critical {label}: {row['detail']}")
            elif row["slice"] in thresholds.slices and not row["examples"]:
                warnings.append(f"warning: {label} has no examples in this set")
            continue
        if status in ("fail", "inconclusive"):
            text = f"{label} {status}: {row['detail']}"
            if status == "inconclusive" and row["needed_examples"]:
                text += f"; about {row['needed_examples']} scored examples in the set would settle it"
            if row["critical"]:
                verdict = _worse(verdict, status)
                reasons.append(text)
            else:
                warnings.append(f"warning (not critical): {text}")
    counts = {k: overall[k] for k in ("examples", "scored", "passed", "failed", "not_scored", "errors")}
    if counts["examples"] and counts["errors"] / counts["examples"] > thresholds.max_error_share:
        verdict = _worse(verdict, "inconclusive")
        reasons.append(f"{counts['errors']} of {counts['examples']} examples errored (the provider gave no output): "
                       f"more than the {thresholds.max_error_share:.0%} allowed, so the version was not fully evaluated")
    if counts["examples"] == 0:
        verdict = "inconclusive"
        reasons.append("the eval set has no examples for this tier")
    if not counts["scored"] and counts["examples"]:
        verdict = _worse(verdict, "inconclusive")
        reasons.append("no example could be scored (configure a judge endpoint for open-ended task types)")
    if verdict == "pass":
        reasons.insert(0, "every gate of the overall rate and the critical slices passed")
    if comparison is not None and not _fully_paired(comparison):
        reasons.append(comparison["summary"])  # what the paired figures above were computed on
    card = {
        "model": model, "baseline": baseline_model, "eval_set_version": eval_set_version,
        "baseline_eval_set_version": comparison["baseline_version"] if comparison else None, "tier": tier,
        "created_at": created_at, "verdict": verdict, "reasons": reasons + warnings, "counts": counts,
        "comparison": comparison, "overall": overall, "weighted": weighted, "worst_slice": _worst_slice(slices),
        "slices": slices,
    }
    card.update(judge_reliability_card(rows, judge_reliability, thresholds.slice_keys))
    return card


def judge_reliability_card(rows: Iterable[Mapping[str, Any]], reliability: Mapping[str, Any] | None,
                           slice_keys: Sequence[str]) -> dict[str, Any]:
    """The card's ``judge_reliability`` entry and its ``warnings``.

    ``reliability``: ``{"month", "probes", "observed"}`` (rows of ``judge_bias_probes`` and
    ``judge_human_gap``) and optionally ``required`` (rubric name -> its required criteria), None
    when no probe has run. A criterion is flagged by a probe row or an observed-bias bin with
    ``flagged`` set. Every gate (the overall one, then each slice) with examples the judge scored
    with a rubric (a row's ``rubric``) whose flagged criterion decides a pass (is required; every
    criterion when ``required`` is not given) gets one warning per flag, naming the gate, the
    criterion and the probe; a flagged optional criterion is listed but warns no gate, and slices
    scored only by reference metrics get none. These are warnings: the verdict does not depend on
    them.
    """
    if not reliability:
        return {"judge_reliability": None, "warnings": []}
    probes = [dict(r) for r in reliability.get("probes") or []]
    observed = [dict(r) for r in reliability.get("observed") or []]
    flagged = [{"group": r["group"], "criterion": r["criterion"], "probe": r["probe"], "note": r.get("note") or ""}
               for r in probes if r.get("flagged")]
    flagged += [{"group": r["group"], "criterion": r["criterion"], "note": r.get("note") or "",
                 "probe": f"observed bias ({r['dimension'].replace('_', ' ')} {r['bin']})"}
                for r in observed if r.get("flagged")]
    required = reliability.get("required")
    deciding = [f for f in flagged if required is None or f["criterion"] in (required.get(f["group"]) or ())]
    rubrics_of: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.get("rubric"):
            for name in ["overall", *slice_names(r.get("slice"), slice_keys)]:
                rubrics_of[name].add(str(r["rubric"]))
    warnings = []
    for name in sorted(rubrics_of, key=lambda n: (n != "overall", n)):
        gate = "the overall gate" if name == "overall" else f"slice {name}"
        for f in deciding:
            if f["group"] in rubrics_of[name]:
                warnings.append(f"judge reliability: {gate} is scored by the judge with rubric {f['group']}, "
                                f"whose criterion {f['criterion']} is flagged by the {f['probe']} probe; "
                                "its pass rate may be biased (a warning: the verdict is unchanged)")
    return {"judge_reliability": {"month": reliability.get("month"), "probes": probes, "observed": observed,
                                  "flagged": flagged},
            "warnings": warnings}


def _worst_slice(slices: list[dict]) -> str | None:
    """The slice that dropped most against the baseline; without a baseline, the lowest pass rate.
    Ties go to the slice whose interval reaches lower."""
    scored = [s for s in slices if s["scored"]]
    if not scored:
        return None
    paired = [s for s in scored if s["paired"]]
    if paired:
        worst = min(paired, key=lambda s: (s["paired"]["difference"], s["paired"]["low"]))
        if worst["paired"]["difference"] < 0:
            return worst["slice"]
    return min(scored, key=lambda s: (s["rate"], s["low"]))["slice"]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def scorecard_text(card: Mapping[str, Any]) -> str:
    """The verdict table printed by ``eval-pipeline evaluate`` (plain text, fixed-width).

    A ``comparison:`` line says which eval-set versions were compared and on how many shared
    examples; when not every candidate example is shared, a ``paired`` column gives each slice's paired n
    (the examples behind its change and McNemar p, fewer than it scored)."""
    c = card["counts"]
    against = f" vs {card['baseline']}" if card.get("baseline") else " (no baseline: floors only)"
    lines = [f"verdict: {card['verdict'].upper()}  {card['model']}{against}",
             f"  eval set {card['eval_set_version']}, {card['tier']} tier: {c['examples']} examples, {c['scored']} scored "
             f"({c['passed']} passed, {c['failed']} failed), {c['not_scored']} not scored, {c['errors']} errors"]
    comparison = card.get("comparison")
    if comparison:
        lines.append(f"  comparison: {comparison['summary']}")
    show_paired = bool(comparison) and not _fully_paired(comparison)
    weighted = card.get("weighted")
    if weighted:
        lines.append(f"  traffic-weighted pass rate {_pct(weighted['estimate'])} "
                     f"(95% CI {_pct(weighted['low'])} to {_pct(weighted['high'])}, effective n {weighted['n_eff']:.0f})")
    if card["overall"].get("mde") is not None:
        on = " on the shared examples" if show_paired and comparison["shared_examples"] else ""
        lines.append(f"  the set detects a change of {100 * card['overall']['mde']:.1f} points overall{on} "
                     "(paired, 80% power)")
    elif card["overall"].get("mde_note"):
        lines.append(f"  the detectable change is undefined: {card['overall']['mde_note']}")
    paired_head = f"{'paired':>6}  " if show_paired else ""
    header = f"  {'slice':<34} {'crit':<4} {'scored':>6}  {paired_head}{'pass rate [95% CI]':<22} {'baseline':>8}  " \
             f"{'change [95% CI]':<24} {'McNemar p':>9}  status"
    lines += [""]
    if show_paired:
        lines.append("  (pass rate: the candidate's, on all it scored; baseline, change and McNemar p: on the paired "
                     "examples)")
    lines += [header, "  " + "-" * (len(header) - 2)]
    for s in [card["overall"], *card["slices"]]:
        rate = "-" if s["rate"] is None else f"{_pct(s['rate'])} [{_pct(s['low'])}, {_pct(s['high'])}]"
        base = _pct((s["baseline"] or {}).get("rate"))
        p = s["paired"]
        change = "-" if not p else f"{100 * p['difference']:+.1f} [{100 * p['low']:+.1f}, {100 * p['high']:+.1f}]"
        pval = "-" if not p else f"{p['p_value']:.3g}"
        paired = f"{p['n'] if p else '-':>6}  " if show_paired else ""
        lines.append(f"  {s['slice']:<34} {'yes' if s['critical'] else '':<4} {s['scored']:>6}  {paired}{rate:<22} "
                     f"{base:>8}  {change:<24} {pval:>9}  {s['status']}")
    lines += ["", f"  worst slice: {card.get('worst_slice') or '-'}", "  reasons:"]
    lines += [f"  - {reason}" for reason in card["reasons"]]
    lines += judge_reliability_lines(card)
    lines += human_review_lines(card)
    return "\n".join(lines)


def judge_reliability_lines(card: Mapping[str, Any]) -> list[str]:
    """One line per judge-reliability warning of the card (none without warnings)."""
    return [f"  ! {warning}" for warning in card.get("warnings") or []]


def with_human_review(card: dict[str, Any], counts: Mapping[str, int] | None,
                      overturned: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Add the human review of the failures to a card built from human-corrected statuses.

    ``counts`` are :func:`eval_pipeline.lib.evaluation.review.review_counts` (None: the tier sends nothing
    for review); ``overturned`` the overturned examples (``example_id``, ``note``). The card gets
    ``human_review`` ({counts, overturned}) and, while failures wait for a review, a reason line."""
    if counts is None:
        card["human_review"] = None
        return card
    card["human_review"] = {"counts": dict(counts), "overturned": [dict(o) for o in overturned]}
    if counts["awaiting_review"]:
        card["reasons"].append(f"{counts['awaiting_review']} of {counts['failures']} failures awaiting human review")
    return card


def human_review_lines(card: Mapping[str, Any]) -> list[str]:
    """The card's one human-review line for :func:`scorecard_text` (none when nothing was sent)."""
    review = card.get("human_review")
    if not review:
        return []
    c = review["counts"]
    return [f"  human review of failures: {c['failures']} failures, {c['reviewed']} reviewed "
            f"({c['confirmed']} confirmed, {c['overturned']} overturned), {c['awaiting_review']} awaiting review"
            + (f", {c['no_rubric']} with no rubric (not sent)" if c.get("no_rubric") else "")]
