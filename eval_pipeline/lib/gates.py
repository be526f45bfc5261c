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
from pathlib import Path
from statistics import NormalDist
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from statsmodels.stats.proportion import samplesize_confint_proportion

from eval_pipeline.lib.stats import minimum_detectable_effect, paired_comparison, weighted_wilson_interval, wilson_interval

__all__ = ["Gate", "SliceGate", "Thresholds", "ThresholdsError", "load_thresholds", "DEFAULT_THRESHOLDS",
           "slice_names", "build_scorecard", "scorecard_text", "STATUSES"]

DEFAULT_THRESHOLDS = Path(__file__).resolve().parent.parent / "thresholds.yaml"
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
        data = yaml.safe_load(target.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ThresholdsError(f"{target}: cannot read thresholds file: {err}") from err
    except yaml.YAMLError as err:
        raise ThresholdsError(f"{target}: not valid YAML: {err}") from err
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


def _gate_row(name: str, rows: list[dict], baseline: Mapping[str, bool] | None, gate: Gate, critical: bool,
              confidence: float, total_scored: int) -> dict[str, Any]:
    part = _rate_part(rows, confidence)
    row: dict[str, Any] = {"slice": name, "critical": critical, **part, "baseline": None, "paired": None,
                           "floor": gate.floor, "max_drop": gate.max_drop, "status": "not_gated", "detail": "",
                           "mde": None, "needed_examples": None}
    scored = [r for r in rows if r["status"] in ("passed", "failed")]
    pairs = []
    if baseline is not None:
        pairs = [(baseline[r["example_id"]], r["status"] == "passed") for r in scored if r["example_id"] in baseline]
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
            details.append("max drop inconclusive: no example of this slice was scored for the baseline too")
    if not details:
        details.append(f"pass rate {_pts(part['rate'])}% ({confidence:.0%} CI {_pts(part['low'])} to "
                       f"{_pts(part['high'])}); no gate configured")
    row["status"], row["detail"] = status, "; ".join(details)
    return row


# --------------------------------------------------------------------------------------------
# the scorecard
# --------------------------------------------------------------------------------------------


def build_scorecard(candidate: Iterable[Mapping[str, Any]], baseline: Iterable[Mapping[str, Any]] | None,
                    thresholds: Thresholds, *, model: str, baseline_model: str | None, eval_set_version: str | None,
                    tier: str, created_at: str) -> dict[str, Any]:
    """The scorecard of a model version (the shape ``lib/report.py`` renders).

    ``candidate`` rows: ``example_id``, ``slice`` (JSON), ``weight`` (traffic the example stands
    for), ``status`` (one of :data:`STATUSES`). ``baseline`` rows: ``example_id`` and ``status``
    (only its passed/failed rows are used, paired with the candidate's by example id); ``None``
    when there is no baseline (a first evaluation, or the baseline itself).
    """
    rows = [dict(r) for r in candidate]
    for r in rows:
        if r["status"] not in STATUSES:
            raise ValueError(f"example {r['example_id']}: status {r['status']!r} is not one of {STATUSES}")
    base_map = None
    if baseline is not None:
        base_map = {r["example_id"]: r["status"] == "passed" for r in baseline if r["status"] in ("passed", "failed")}
    conf = thresholds.confidence
    total_scored = sum(r["status"] in ("passed", "failed") for r in rows)
    overall = _gate_row("overall", rows, base_map, thresholds.overall, True, conf, total_scored)
    by_slice: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        for name in slice_names(r.get("slice"), thresholds.slice_keys):
            by_slice[name].append(r)
    for name in thresholds.slices:
        by_slice.setdefault(name, [])
    slices = []
    for name in sorted(by_slice):
        gate = thresholds.gate_for(name)
        slices.append(_gate_row(name, by_slice[name], base_map, gate, gate.critical, conf, total_scored))

    scored = [r for r in rows if r["status"] in ("passed", "failed")]
    weighted = None
    if scored and any((r.get("weight") or 0) > 0 for r in scored):
        ci = weighted_wilson_interval([r["status"] == "passed" for r in scored],
                                      [float(r.get("weight") or 0.0) for r in scored], conf)
        weighted = {"estimate": ci.estimate, "low": ci.low, "high": ci.high, "n_eff": ci.n}
    # how big a change the whole set can detect at all (paired, 80% power)
    if overall["mde"] is None and scored:
        rate = overall["baseline"]["rate"] if overall["baseline"] else overall["rate"]
        psi = None
        if overall["paired"] and overall["paired"]["n"]:
            flips = overall["paired"]["candidate_only"] + overall["paired"]["baseline_only"]
            psi = flips / overall["paired"]["n"] if flips else None
        try:
            overall["mde"] = minimum_detectable_effect(len(scored), rate, alpha=1 - conf, power=_POWER, paired=True,
                                                       discordance=psi)
        except ValueError:
            overall["mde"] = None

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
    return {
        "model": model, "baseline": baseline_model, "eval_set_version": eval_set_version, "tier": tier,
        "created_at": created_at, "verdict": verdict, "reasons": reasons + warnings, "counts": counts,
        "overall": overall, "weighted": weighted, "worst_slice": _worst_slice(slices), "slices": slices,
    }


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
    """The verdict table printed by ``eval-pipeline evaluate`` (plain text, fixed-width)."""
    c = card["counts"]
    against = f" vs {card['baseline']}" if card.get("baseline") else " (no baseline: floors only)"
    lines = [f"verdict: {card['verdict'].upper()}  {card['model']}{against}",
             f"  eval set {card['eval_set_version']}, {card['tier']} tier: {c['examples']} examples, {c['scored']} scored "
             f"({c['passed']} passed, {c['failed']} failed), {c['not_scored']} not scored, {c['errors']} errors"]
    weighted = card.get("weighted")
    if weighted:
        lines.append(f"  traffic-weighted pass rate {_pct(weighted['estimate'])} "
                     f"(95% CI {_pct(weighted['low'])} to {_pct(weighted['high'])}, effective n {weighted['n_eff']:.0f})")
    if card["overall"].get("mde") is not None:
        lines.append(f"  the set detects a change of {100 * card['overall']['mde']:.1f} points overall (paired, 80% power)")
    header = f"  {'slice':<34} {'crit':<4} {'scored':>6}  {'pass rate [95% CI]':<22} {'baseline':>8}  " \
             f"{'change [95% CI]':<24} {'McNemar p':>9}  status"
    lines += ["", header, "  " + "-" * (len(header) - 2)]
    for s in [card["overall"], *card["slices"]]:
        rate = "-" if s["rate"] is None else f"{_pct(s['rate'])} [{_pct(s['low'])}, {_pct(s['high'])}]"
        base = _pct((s["baseline"] or {}).get("rate"))
        p = s["paired"]
        change = "-" if not p else f"{100 * p['difference']:+.1f} [{100 * p['low']:+.1f}, {100 * p['high']:+.1f}]"
        pval = "-" if not p else f"{p['p_value']:.3g}"
        lines.append(f"  {s['slice']:<34} {'yes' if s['critical'] else '':<4} {s['scored']:>6}  {rate:<22} {base:>8}  "
                     f"{change:<24} {pval:>9}  {s['status']}")
    lines += ["", f"  worst slice: {card.get('worst_slice') or '-'}", "  reasons:"]
    lines += [f"  - {reason}" for reason in card["reasons"]]
    return "\n".join(lines)
