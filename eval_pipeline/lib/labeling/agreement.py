"""Agreement between annotators, gold labels, the review queue and judge calibration.

Plain Python (no Dagster import). Inputs are the label dicts of
:class:`eval_pipeline.lib.labeling.annotation.AnnotationBatch` (``example_id``, ``annotator``,
``criterion``, ``score`` and, when known, ``task_type``, ``rubric`` and ``scale``). Statistics
come from :mod:`eval_pipeline.lib.evaluation.stats` (Cohen's kappa, Krippendorff's alpha, agreement bands);
the confidence interval of a judge's kappa comes from statsmodels (see :func:`judge_calibration`).

Conventions
-----------
* Labels are grouped by rubric (``rubric``, else ``task_type``), rubric version
  (``rubric_version``, see :func:`eval_pipeline.lib.labeling.rubrics.rubric_version`) and criterion: one
  criterion id may exist in several rubrics (``accuracy``) with different meanings, and a
  criterion whose levels were reworded is another question, so labels of two rubric versions are
  never pooled. :func:`current_version_labels` keeps only the labels of each rubric's current
  version, for gold labels and the judge's calibration.
* Three-point criteria are ordinal: two annotators are compared with linearly weighted Cohen's
  kappa and more annotators with ordinal Krippendorff's alpha, so 1 vs 2 is a smaller
  disagreement than 0 vs 2. Binary criteria use unweighted kappa and nominal alpha.
* Undefined statistics (all labels the same, a single item) are reported as ``value=None`` with a
  note, never NaN.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import norm
from statsmodels.stats.inter_rater import cohens_kappa as _sm_cohens_kappa

from eval_pipeline.lib.evaluation.stats import cohens_kappa, krippendorff_alpha
from eval_pipeline.lib.labeling.annotation import criterion_levels, rubric_for
from eval_pipeline.lib.labeling.rubrics import rubric_version

__all__ = [
    "JUDGE_WARNING_BELOW",
    "MIN_AGREEMENT_ITEMS",
    "QUALITY_DISAGREEMENT_BELOW",
    "UNCLEAR_RUBRIC_BELOW",
    "adjudicated_references",
    "criterion_agreement",
    "current_version_labels",
    "example_disagreements",
    "gold_labels",
    "judge_calibration",
    "review_queue",
]

#: Agreement below this flags the criterion ``unclear_rubric``: annotators read the level
#: descriptions differently (the "good" band of :data:`eval_pipeline.lib.evaluation.stats.AGREEMENT_BANDS`).
UNCLEAR_RUBRIC_BELOW = 0.6
#: Agreement below this also flags ``disagreement_about_quality``: people disagree about what good
#: looks like, not just about wording (the "poor" band).
QUALITY_DISAGREEMENT_BELOW = 0.4
#: A judge whose kappa with the human majority is below this gets a warning.
JUDGE_WARNING_BELOW = 0.6
#: Kappa or alpha on fewer items than this is reported undefined (with the raw agreement): on a
#: handful of items one label moves it by more than the width of a band.
MIN_AGREEMENT_ITEMS = 5

_Key = tuple[str, str | None, str]  # (group, rubric version, criterion)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _group(label: Mapping[str, Any]) -> str:
    return str(label.get("rubric") or label.get("task_type") or "")


def _version(label: Mapping[str, Any]) -> str | None:
    # None: labels from a caller that records no versions at all (they are one group)
    value = label.get("rubric_version")
    return None if value is None else str(value)


def current_version_labels(labels: Iterable[Mapping[str, Any]],
                           rubrics: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], dict[str, int]]:
    """The labels made under their rubric's current version, and per rubric name how many were not
    (older versions and ``unknown``: kept in the table, not used for gold labels or calibration).

    ``rubrics``: the rubrics (any keys, e.g. ``load_rubrics()``); a label of a rubric that is no
    longer there counts as older too."""
    current = {r.name: rubric_version(r) for r in rubrics.values()}  # keyed by name or by task type
    kept, older = [], Counter()
    for lab in labels:
        name = _group(lab)
        if name in current and _version(lab) == current[name]:
            kept.append(lab)
        else:
            older[name] += 1
    return kept, dict(sorted(older.items()))


def _scale(rows: Iterable[Mapping[str, Any]]) -> str:
    """The criterion's scale from the labels; inferred from the scores when they do not say."""
    rows = list(rows)
    scales = {r.get("scale") for r in rows if r.get("scale")}
    if scales:
        return "three_point" if "three_point" in scales else "binary"
    return "three_point" if any(int(r["score"]) > 1 for r in rows) else "binary"


def _levels(scale: str) -> list[int]:
    return [0, 1, 2] if scale == "three_point" else [0, 1]


def _by_item(labels: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str | None, str, str], dict[str, int]]:
    """(group, rubric version, criterion, example) -> {annotator: score}; a repeated annotator keeps
    the last score."""
    out: dict[tuple[str, str | None, str, str], dict[str, int]] = defaultdict(dict)
    for lab in labels:
        key = (_group(lab), _version(lab), str(lab["criterion"]), str(lab["example_id"]))
        out[key][str(lab["annotator"])] = int(lab["score"])
    return out


def _sort_key(key: tuple) -> tuple:
    # None (no version recorded) sorts with the empty string
    return tuple("" if part is None else part for part in key)


def _undefined_reason(n: int, raters: Sequence[tuple[str, Sequence[int]]]) -> str | None:
    """Why a chance-corrected agreement between ``raters`` (name, scores) says nothing, else None.

    A rater who gives every item the same score makes kappa exactly 0 whatever the other does
    (observed and chance agreement are then equal), and its standard error collapses to about 0:
    "kappa 0.00, 95% CI -1.8e-07 to 1.8e-07" reads as a precise finding of no agreement when
    there is nothing to measure.
    """
    if n < MIN_AGREEMENT_ITEMS:
        return f"only {n} item{'s' if n != 1 else ''} (at least {MIN_AGREEMENT_ITEMS} needed)"
    for name, scores in raters:
        levels = set(scores)
        if len(levels) == 1:
            return (f"{name} gave every item the same score ({next(iter(levels))}), so chance agreement equals "
                    "observed agreement and kappa is 0 whatever the agreement")
    return None


def _pairwise_agreement(items: Sequence[Mapping[str, int]]) -> float | None:
    """Share of annotator pairs (within an item) that gave the same score; a plain description
    that is still defined when kappa is not."""
    same = total = 0
    for scores in items:
        values = list(scores.values())
        for i in range(len(values)):
            for j in range(i + 1, len(values)):
                total += 1
                same += values[i] == values[j]
    return same / total if total else None


SKEWED_PREVALENCE = 0.9


def _prevalence(items: Iterable[Mapping[str, int]]) -> float | None:
    """Share of all labels that are the most common level."""
    counts = Counter(score for scores in items for score in scores.values())
    total = sum(counts.values())
    return max(counts.values()) / total if total else None


def _with_raw_agreement(reason: str, pairwise: float | None) -> str:
    if pairwise is None:
        return reason
    return f"{reason}; annotators agree on {pairwise:.0%} of pairs"


def _flags(value: float | None) -> list[str]:
    if value is None:
        return []
    flags = []
    if value < UNCLEAR_RUBRIC_BELOW:
        flags.append("unclear_rubric")
    if value < QUALITY_DISAGREEMENT_BELOW:
        flags.append("disagreement_about_quality")
    return flags


# ----------------------------------------------------------------------------------------------
# agreement
# ----------------------------------------------------------------------------------------------


def criterion_agreement(labels: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Inter-annotator agreement per (rubric, rubric version, criterion) on the items with at
    least 2 annotators: labels of two rubric versions are never pooled.

    Exactly two annotators: Cohen's kappa (``method="cohens_kappa"``, linearly weighted on
    three-point criteria). More: Krippendorff's alpha over the annotator x item matrix with missing
    values (``method="krippendorff_alpha"``, ordinal on three-point, nominal on binary criteria).
    Each row: ``group``, ``rubric_version``, ``criterion``, ``scale``, ``n_items``, ``n_annotators``, ``annotators``,
    ``method``, ``weights``, ``value`` (None when undefined), ``band``, ``pairwise_agreement``,
    ``unclear_rubric`` (value < 0.6), ``disagreement_about_quality`` (value < 0.4), ``flags``,
    ``prevalence`` (share of the most common level) and ``note``. When a low value comes with
    90% or more of the labels on one level, the only flag is ``skewed_prevalence`` (the kappa
    paradox): the rubric is not shown to be unclear, the data are one-sided, and the note gives
    the share of annotator pairs agreeing. (A rule that also asked 90% of pairs to agree called
    a rubric unclear for one dissenting label in 18: 3 annotators on 6 items, alpha 0, 8 of 9
    pairs agreeing. Every label off the main level disagrees with at most the m - 1 other
    annotators of its item, so at 90% prevalence at least 80% of pairs agree anyway.)
    """
    labels = list(labels)
    scale_of: dict[_Key, str] = {}
    for key, rows in _group_rows(labels).items():
        scale_of[key] = _scale(rows)
    items: dict[_Key, dict[str, dict[str, int]]] = defaultdict(dict)
    for (g, v, c, eid), scores in _by_item(labels).items():
        items[(g, v, c)][eid] = scores
    out = []
    for (g, v, c) in sorted(items, key=_sort_key):
        multi = {eid: s for eid, s in sorted(items[(g, v, c)].items()) if len(s) >= 2}
        annotators = sorted({a for s in multi.values() for a in s})
        scale = scale_of[(g, v, c)]
        levels = _levels(scale)
        row: dict[str, Any] = {
            "group": g, "rubric_version": v, "criterion": c, "scale": scale, "n_items": len(multi),
            "n_annotators": len(annotators), "annotators": annotators,
            "pairwise_agreement": _pairwise_agreement(list(multi.values())),
            "method": None, "weights": None, "value": None, "band": None, "note": "",
        }
        if len(annotators) == 2:
            a, b = annotators
            row["method"] = "cohens_kappa"
            row["weights"] = "linear" if scale == "three_point" else None
            xs, ys = [multi[e][a] for e in multi], [multi[e][b] for e in multi]
            why = _undefined_reason(len(multi), [(f"annotator {a}", xs), (f"annotator {b}", ys)])
            try:
                if why is not None:
                    raise ValueError(f"kappa is undefined: {why}")
                result = cohens_kappa(xs, ys, weights=row["weights"], labels=levels)
                row["value"], row["band"] = result.value, result.band
            except ValueError as err:
                row["note"] = _with_raw_agreement(str(err), row["pairwise_agreement"])
        elif len(annotators) > 2:
            row["method"] = "krippendorff_alpha"
            level = "ordinal" if scale == "three_point" else "nominal"
            row["weights"] = level
            matrix = [[multi[e].get(a) for e in multi] for a in annotators]
            try:
                if len(multi) < MIN_AGREEMENT_ITEMS:
                    raise ValueError(f"alpha is undefined: {_undefined_reason(len(multi), [])}")
                result = krippendorff_alpha(matrix, level=level, value_domain=levels)
                row["value"], row["band"] = result.value, result.band
            except ValueError as err:
                row["note"] = _with_raw_agreement(str(err), row["pairwise_agreement"])
        else:
            row["note"] = "no item was labelled by at least two annotators"
        flags = _flags(row["value"])
        prevalence = _prevalence(multi.values())
        row["prevalence"] = prevalence
        if flags and prevalence is not None and prevalence >= SKEWED_PREVALENCE:
            # The kappa paradox (Feinstein & Cicchetti 1990, J Clin Epidemiol 43:543-549): when
            # nearly every label is the same category, chance agreement is nearly 1 and kappa or
            # alpha falls near 0 even though the annotators almost always agree. Say so instead of
            # calling the rubric unclear.
            flags = ["skewed_prevalence"]
            row["note"] = (f"{prevalence:.0%} of the labels are one level and annotators agree on "
                           f"{row['pairwise_agreement']:.0%} of pairs: chance-corrected agreement is unreliable here")
        row["unclear_rubric"] = "unclear_rubric" in flags
        row["disagreement_about_quality"] = "disagreement_about_quality" in flags
        row["flags"] = flags
        out.append(row)
    return out


def _group_rows(labels: Iterable[Mapping[str, Any]]) -> dict[_Key, list[Mapping[str, Any]]]:
    out: dict[_Key, list[Mapping[str, Any]]] = defaultdict(list)
    for lab in labels:
        out[(_group(lab), _version(lab), str(lab["criterion"]))].append(lab)
    return out


def example_disagreements(labels: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every (example, criterion) whose annotators do not all agree.

    Rows: ``example_id``, ``group``, ``rubric_version``, ``criterion``, ``labels`` ({annotator: score}),
    ``n_annotators``, ``spread`` (highest minus lowest score) and ``flag``: ``no_majority`` when the
    most frequent score is shared by several levels, else ``minority_dissent``.
    """
    out = []
    for (g, v, c, eid), scores in sorted(_by_item(labels).items(), key=lambda kv: _sort_key(kv[0])):
        if len(scores) < 2 or len(set(scores.values())) == 1:
            continue
        counts = Counter(scores.values()).most_common()
        tie = len(counts) > 1 and counts[0][1] == counts[1][1]
        out.append({
            "example_id": eid, "group": g, "rubric_version": v, "criterion": c, "labels": dict(sorted(scores.items())),
            "n_annotators": len(scores), "spread": max(scores.values()) - min(scores.values()),
            "flag": "no_majority" if tie else "minority_dissent",
        })
    return out


# ----------------------------------------------------------------------------------------------
# gold labels
# ----------------------------------------------------------------------------------------------


def _normalize_reference(text: str) -> str:
    """Whitespace- and case-insensitive form; JSON references compare as canonical JSON so
    ``{"a": 1}`` equals ``{"a":1}``."""
    stripped = text.strip()
    try:
        parsed = json.loads(stripped)
    except (json.JSONDecodeError, ValueError):
        parsed = None
    if isinstance(parsed, (dict, list)):
        return json.dumps(parsed, sort_keys=True, separators=(",", ":")).casefold()
    return " ".join(stripped.split()).casefold()


def adjudicated_references(references: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per example: the majority reference after normalization (:func:`_normalize_reference`).

    Returns ``{example_id: {"reference", "n_annotators", "agreement_share", "tie", "references"}}``;
    ``reference`` is the text as written by the first annotator (by id) of the winning group. A
    tie is flagged and goes to the group of the first annotator by id.
    """
    by_example: dict[str, dict[str, str]] = defaultdict(dict)
    for ref in references:
        by_example[str(ref["example_id"])][str(ref["annotator"])] = str(ref["reference"])
    out = {}
    for eid, texts in sorted(by_example.items()):
        groups: dict[str, list[str]] = defaultdict(list)
        for annotator in sorted(texts):
            groups[_normalize_reference(texts[annotator])].append(annotator)
        best = max(len(v) for v in groups.values())
        winners = [v for v in groups.values() if len(v) == best]
        chosen = min(winners, key=lambda members: members[0])  # first annotator by id
        out[eid] = {
            "reference": texts[chosen[0]].strip(), "n_annotators": len(texts),
            "agreement_share": best / len(texts), "tie": len(winners) > 1,
            "references": dict(sorted(texts.items())),
        }
    return out


def gold_labels(labels: Iterable[Mapping[str, Any]],
                references: Iterable[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The adjudicated label of each (example, criterion): the majority of its annotators.

    A tie goes to the lower level, the stricter verdict, and is flagged ``tie``. Rows:
    ``example_id``, ``eval_set_version``, ``task_type``, ``group``, ``criterion``, ``scale``,
    ``rubric_version`` (labels of two versions give two rows: filter with
    :func:`current_version_labels` first), ``score`` (the majority), ``n_annotators``, ``agreement_share`` (share of annotators who gave
    the majority score), ``disagreement``, ``tie``, ``labels`` ({annotator: score}) and
    ``minority_labels`` (``[{"annotator", "score"}]`` of those who did not give it). With
    ``references``, each row also has ``reference``, ``reference_tie`` and
    ``reference_agreement_share`` from :func:`adjudicated_references` (None when the example has
    no reference).
    """
    labels = list(labels)
    meta: dict[tuple[str, str | None, str, str], Mapping[str, Any]] = {}
    for lab in labels:
        meta[(_group(lab), _version(lab), str(lab["criterion"]), str(lab["example_id"]))] = lab
    scales = {k: _scale(v) for k, v in _group_rows(labels).items()}
    refs = adjudicated_references(references) if references is not None else None
    out = []
    for (g, v, c, eid), scores in sorted(_by_item(labels).items(), key=lambda kv: _sort_key(kv[0])):
        counts = Counter(scores.values())
        best = max(counts.values())
        majority = min(v for v, n in counts.items() if n == best)  # ties -> lower, stricter level
        row: dict[str, Any] = {
            "example_id": eid, "eval_set_version": meta[(g, v, c, eid)].get("eval_set_version"),
            "task_type": meta[(g, v, c, eid)].get("task_type"), "group": g, "criterion": c,
            "scale": scales[(g, v, c)], "rubric_version": v, "score": majority, "n_annotators": len(scores),
            "agreement_share": best / len(scores), "disagreement": len(counts) > 1,
            "tie": sum(1 for n in counts.values() if n == best) > 1,
            "labels": dict(sorted(scores.items())),
            "minority_labels": [{"annotator": a, "score": s} for a, s in sorted(scores.items()) if s != majority],
        }
        if refs is not None:
            ref = refs.get(eid)
            row["reference"] = ref["reference"] if ref else None
            row["reference_tie"] = ref["tie"] if ref else None
            row["reference_agreement_share"] = ref["agreement_share"] if ref else None
        out.append(row)
    return out


# ----------------------------------------------------------------------------------------------
# the judge against the humans
# ----------------------------------------------------------------------------------------------


def _judge_lookup(judge_scores: Any) -> dict[tuple[str, str], int]:
    """``{(example_id, criterion): score}`` from that mapping or from rows with ``example_id``,
    ``criterion`` and ``score`` (or ``judge_score``); rows without a score are skipped."""
    if isinstance(judge_scores, Mapping):
        return {(str(k[0]), str(k[1])): int(v) for k, v in judge_scores.items() if v is not None}
    out = {}
    for row in judge_scores:
        score = row.get("score", row.get("judge_score"))
        if score is not None:
            out[(str(row["example_id"]), str(row["criterion"]))] = int(score)
    return out


def review_queue(gold: Iterable[Mapping[str, Any]], judge_scores: Any) -> list[dict[str, Any]]:
    """Items where the judge sides with a human minority against the majority.

    These are the cases where the gold label itself is most likely to be wrong, so a reviewer
    should look at them before the judge is blamed. Rows: ``example_id``, ``group``,
    ``criterion``, ``judge_score``, ``majority_score``, ``labels``, ``minority_labels``, ``tie``.
    """
    judge = _judge_lookup(judge_scores)
    out = []
    for g in gold:
        key = (str(g["example_id"]), str(g["criterion"]))
        if key not in judge:
            continue
        score = judge[key]
        if score != g["score"] and any(m["score"] == score for m in g["minority_labels"]):
            out.append({
                "example_id": key[0], "group": g.get("group"), "criterion": key[1], "judge_score": score,
                "majority_score": g["score"], "labels": g["labels"], "minority_labels": g["minority_labels"],
                "tie": g.get("tie", False),
            })
    return out


def _kappa_interval(judge: Sequence[int], human: Sequence[int], levels: Sequence[int],
                    weights: str | None, confidence: float = 0.95) -> tuple[float, float] | None:
    """Asymptotic confidence interval of (weighted) kappa from statsmodels ``cohens_kappa``
    (Fleiss, Cohen & Everitt 1969 standard error), clipped to [-1, 1]; None when that standard
    error is 0 or not finite (perfect agreement), where a zero-width interval would claim a
    precision the data do not have."""
    index = {lv: i for i, lv in enumerate(levels)}
    table = np.zeros((len(levels), len(levels)))
    for j, h in zip(judge, human):
        table[index[j], index[h]] += 1
    result = _sm_cohens_kappa(table, wt=weights) if weights else _sm_cohens_kappa(table)
    z = float(norm.ppf(0.5 + confidence / 2))
    se = float(result.std_kappa)
    kappa = float(result.kappa)
    if not math.isfinite(se) or se < 1e-9:
        return None
    return max(-1.0, kappa - z * se), min(1.0, kappa + z * se)


def judge_calibration(gold: Iterable[Mapping[str, Any]], judge_scores: Any) -> list[dict[str, Any]]:
    """Per (rubric, rubric version, criterion): how well the judge agrees with the human majority.

    Gold rows of two rubric versions are never pooled; pass only the current version's (see
    :func:`current_version_labels`) with judge scores made under that version.

    Cohen's kappa between judge and gold score (linearly weighted on three-point criteria) from
    :func:`eval_pipeline.lib.evaluation.stats.cohens_kappa`, with a 95% asymptotic interval from statsmodels
    ``cohens_kappa`` (its standard error of kappa). Rows: ``group``, ``rubric_version``,
    ``criterion``, ``scale``,
    ``n``, ``kappa`` (None when undefined), ``ci_low``, ``ci_high``, ``band``,
    ``raw_agreement``, ``judge_pass_rate``, ``human_pass_rate`` (share at the top level),
    ``warning`` (text when kappa < 0.6 or undefined, else None).
    """
    judge = _judge_lookup(judge_scores)
    pairs: dict[_Key, list[tuple[int, int]]] = defaultdict(list)
    scales: dict[_Key, str] = {}
    for g in gold:
        key = (str(g["example_id"]), str(g["criterion"]))
        if key in judge:
            gk = (str(g.get("group") or ""), _version(g), key[1])
            pairs[gk].append((judge[key], int(g["score"])))
            scales[gk] = g.get("scale") or scales.get(gk) or "binary"
    out = []
    for gk in sorted(pairs, key=_sort_key):
        scale = scales[gk]
        if any(max(p) > 1 for p in pairs[gk]):
            scale = "three_point"
        levels = _levels(scale)
        weights = "linear" if scale == "three_point" else None
        js = [p[0] for p in pairs[gk]]
        hs = [p[1] for p in pairs[gk]]
        row: dict[str, Any] = {
            "group": gk[0], "rubric_version": gk[1], "criterion": gk[2], "scale": scale, "n": len(js), "kappa": None,
            "ci_low": None, "ci_high": None, "band": None,
            "raw_agreement": sum(j == h for j, h in zip(js, hs)) / len(js),
            "judge_pass_rate": sum(j == levels[-1] for j in js) / len(js),
            "human_pass_rate": sum(h == levels[-1] for h in hs) / len(hs), "warning": None,
        }
        agreed = sum(j == h for j, h in zip(js, hs))
        raw = f"raw agreement {agreed / len(js):.0%} ({agreed} of {len(js)})"
        why = _undefined_reason(len(js), [("the judge", js), ("the human majority", hs)])
        try:
            if why is not None:
                raise ValueError(why)
            result = cohens_kappa(js, hs, weights=weights, labels=levels)
            row["kappa"], row["band"] = result.value, result.band
            interval = _kappa_interval(js, hs, levels, weights)
            if interval is not None:
                row["ci_low"], row["ci_high"] = interval
            if result.value < JUDGE_WARNING_BELOW:
                ci = (f"95% CI {row['ci_low']:.2f} to {row['ci_high']:.2f}" if interval is not None
                      else "no interval: its standard error is 0")
                row["warning"] = (f"judge agrees with the human majority only at kappa {result.value:.2f} "
                                  f"({ci}) on {len(js)} items; do not trust its {gk[2]} scores without review")
        except ValueError as err:
            row["warning"] = f"kappa undefined: {err}; {raw}"
        out.append(row)
    return out
