"""Judge bias probes: does the LLM judge change its verdict when only the form of an output changes?

LLM judges are known to favour longer and hedged answers, to be swayed by confident framing, and
to miss domain facts that are wrong (Zheng et al. 2023, "Judging LLM-as-a-Judge", NeurIPS
Datasets and Benchmarks, section 3.3: position, verbosity and self-enhancement bias; Wang et
al. 2023, "Large Language Models are not Fair Evaluators"). Each probe here rewrites an output
in a controlled way and the judge scores both versions; pairing the two verdicts of every
example gives the shift in pass rate that the rewrite alone caused.

Probes (each deterministic given ``seed``):

* ``length``: the output padded with neutral, content-free sentences of the same register until
  it is about twice as long (no digit, no name, no fact is added);
* ``hedging``: every sentence of the output prefixed by a hedge ("I think", "It may be that", ...);
* ``confidence``: the output framed confidently ("Certainly.", "Without any doubt, ...");
* ``planted_error``: one domain fact changed: a number or amount, a date, or a label value (in
  the JSON or in the text). Outputs without such a fact give no variant (counted as "no fact").

Structured outputs - a JSON value (extraction) or a single bare label (intent routing) - are
"not applicable" to the three wording probes: any text around them breaks the format the rubric
asks for, so a lower score would be right, not a bias. Only ``planted_error`` applies to them.

The planted-error probe runs only for rubrics with a criterion marked ``factual``, and its
shift is measured on those criteria; the others are measured on every criterion of the rubric,
but never flag a criterion marked ``form`` (conciseness, format): padding an answer should lower
its conciseness score, and a judge that does so is right, not biased.

``observed_bias`` needs no judge call: on the human-labelled examples it compares the judge's
pass rate with the human majority's, by output-length quartile and by presence of hedges.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Iterable, Mapping, Sequence

from eval_pipeline.lib.evaluation.stats import paired_comparison, wilson_interval

__all__ = [
    "PROBES",
    "WORDING_PROBES",
    "HEDGE_PHRASES",
    "MIN_PAIRS",
    "DEFAULT_THRESHOLD",
    "DEFAULT_SAMPLE",
    "is_structured",
    "has_hedge",
    "length_variant",
    "hedging_variant",
    "confidence_variant",
    "planted_error_variant",
    "make_variant",
    "label_values",
    "sample_examples",
    "ProbeRun",
    "run_probes",
    "probe_rows",
    "judge_human_pairs",
    "observed_bias",
]

PROBES = ("length", "hedging", "confidence", "planted_error")
WORDING_PROBES = ("length", "hedging", "confidence")
MIN_PAIRS = 10  # fewer pairs: "not enough pairs", never a flag nor an interval
DEFAULT_THRESHOLD = 0.10
DEFAULT_SAMPLE = 60

# Content-free sentences in the plain register of a support or assistant reply: no digits, no
# names, no claims about the world. Used to pad outputs.
_PADDING = (
    "I hope this helps.",
    "Here is the answer to your question.",
    "I have gone through your request carefully.",
    "Let me set out the answer as clearly as I can.",
    "Please read the points above together.",
    "This is the information that applies to your question.",
    "I have kept the answer focused on what you asked.",
    "If anything here is unclear, just ask and I will explain it again.",
    "Thank you for your patience while I put this answer together.",
    "I have tried to make each part of the answer easy to follow.",
    "Feel free to come back with any follow-up question.",
    "To sum up, the answer is as set out above.",
)
_HEDGES = ("I think", "It may be that", "As far as I can tell,", "It seems that", "Possibly,", "I believe")
_HEDGE_CLOSERS = ("I may be mistaken, though.", "But I am not entirely sure about this.")
_CONFIDENT_OPENERS = ("Certainly.", "Absolutely.", "Without any doubt:")
_CONFIDENT_PREFIXES = ("Without any doubt,", "Clearly,", "It is certain that")
_CONFIDENT_CLOSERS = ("This is definitely correct.", "You can rely on this completely.")

# The hedge detector for observed bias: these phrases (case-insensitive, whole words). "may" and
# "could" alone are not hedges here: "you may need to..." and "you could..." are instructions.
HEDGE_PHRASES = (
    "i think", "i believe", "i guess", "i suppose", "it may be that", "it might be that", "it seems",
    "seems to", "as far as i can tell", "as far as i know", "perhaps", "possibly", "probably", "maybe",
    "might", "not sure", "not entirely sure", "not certain", "i may be mistaken", "i could be wrong",
    "if i recall", "likely",
)
_HEDGE_RE = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in HEDGE_PHRASES) + r")\b", re.IGNORECASE)

_BARE_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w])")


def _rng(seed: int, *parts: str) -> random.Random:
    """A generator seeded by ``seed`` and the text: the same output always gets the same variant."""
    digest = hashlib.sha256("\x1f".join((str(seed), *parts)).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return _NOT_JSON


_NOT_JSON = object()


def is_structured(output: str | None) -> bool:
    """A JSON object or array, or a single bare label such as ``card_arrival``."""
    text = (output or "").strip()
    if not text:
        return False
    if text[0] in "[{" and isinstance(_json_value(text), (dict, list)):
        return True
    return bool(_BARE_LABEL.match(text))


def has_hedge(text: str | None) -> bool:
    """Whether ``text`` holds one of :data:`HEDGE_PHRASES`."""
    return bool(_HEDGE_RE.search(text or ""))


def _lower_first(sentence: str) -> str:
    # "The card" -> "the card", but "ATM" or "I" stay as they are
    if len(sentence) > 1 and sentence[0].isupper() and sentence[1].islower():
        return sentence[0].lower() + sentence[1:]
    return sentence


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def length_variant(output: str, seed: int = 0) -> str | None:
    """``output`` with neutral sentences before and after it, until about twice as long; None for
    an empty or structured output (see :func:`is_structured`)."""
    text = (output or "").strip()
    if not text or is_structured(text):
        return None
    rng = _rng(seed, "length", text)
    pool = list(_PADDING)
    rng.shuffle(pool)
    before, after, added, i = [pool[0]], [], len(pool[0]) + 1, 1
    while added < len(text):
        after.append(pool[i % len(pool)])
        added += len(after[-1]) + 1
        i += 1
    return " ".join(before) + " " + text + " " + " ".join(after)


def hedging_variant(output: str, seed: int = 0) -> str | None:
    """Every sentence of ``output`` prefixed by a hedge, and a hedging closer; None for an empty or
    structured output."""
    text = (output or "").strip()
    if not text or is_structured(text):
        return None
    rng = _rng(seed, "hedging", text)
    lines = []
    for line in text.split("\n"):
        bullet = re.match(r"^(\s*(?:[-*]|\d+[.)])\s+)(.*)$", line)
        prefix, body = (bullet.group(1), bullet.group(2)) if bullet else ("", line)
        if not body.strip():
            lines.append(line)
            continue
        parts = [f"{rng.choice(_HEDGES)} {_lower_first(s)}" for s in _sentences(body)]
        lines.append(prefix + " ".join(parts))
    return "\n".join(lines) + " " + rng.choice(_HEDGE_CLOSERS)


def confidence_variant(output: str, seed: int = 0) -> str | None:
    """``output`` framed confidently (an opener, a confident first sentence, a closer); None for an
    empty or structured output."""
    text = (output or "").strip()
    if not text or is_structured(text):
        return None
    rng = _rng(seed, "confidence", text)
    return f"{rng.choice(_CONFIDENT_OPENERS)} {rng.choice(_CONFIDENT_PREFIXES)} {_lower_first(text)} " \
           f"{rng.choice(_CONFIDENT_CLOSERS)}"


# ---- planted errors --------------------------------------------------------------------------


def _other_number(token: str, fraction: str | None, rng: random.Random) -> str:
    """A different number in the same format: 5 -> 7, 1,250 -> 1,875, 12.50 -> 18.50."""
    value = int(token.replace(",", ""))
    changed = value + max(1, round(value * rng.choice((0.5, 0.4, 0.3)))) if value else rng.choice((1, 2, 3))
    out = f"{changed:,}" if "," in token else str(changed)
    return out + (fraction or "")


def _other_date(year: int, month: int, day: int, rng: random.Random) -> str | None:
    try:
        when = date(year, month, day)
    except ValueError:
        return None
    return (when + timedelta(days=rng.choice((-3, -2, 2, 3, 7)))).isoformat()


def _text_facts(text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) of the dates and numbers of a text; a number inside a date is the date's."""
    facts = [(m.start(), m.end(), "date") for m in _ISO_DATE.finditer(text)]
    taken = [(s, e) for s, e, _ in facts]
    for m in _NUMBER.finditer(text):
        if not any(s <= m.start() < e for s, e in taken):
            facts.append((m.start(), m.end(), "number"))
    return sorted(facts)


def _plant_in_text(text: str, rng: random.Random) -> str | None:
    facts = _text_facts(text)
    if not facts:
        return None
    start, end, kind = rng.choice(facts)
    piece = text[start:end]
    if kind == "date":
        y, m, d = (int(x) for x in piece.split("-"))
        new = _other_date(y, m, d, rng)
        if new is None:
            return None
    else:
        match = _NUMBER.fullmatch(piece)
        assert match is not None
        new = _other_number(match.group(1), match.group(2), rng)
    return text[:start] + new + text[end:]


def _json_leaves(value: Any, path: tuple = ()) -> Iterable[tuple[tuple, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_leaves(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _json_leaves(item, path + (i,))
    else:
        yield path, value


def _set(value: Any, path: tuple, new: Any) -> None:
    for part in path[:-1]:
        value = value[part]
    value[path[-1]] = new


def _changed_leaf(leaf: Any, rng: random.Random, labels: Sequence[str]) -> Any:
    """The leaf with its fact changed, or None when it holds no fact this probe knows how to change."""
    if isinstance(leaf, bool) or leaf is None:
        return None
    if isinstance(leaf, int):
        return int(_other_number(str(abs(leaf)), None, rng)) * (-1 if leaf < 0 else 1)
    if isinstance(leaf, float):
        whole, _, frac = f"{abs(leaf)}".partition(".")
        return float(_other_number(whole, "." + frac if frac else None, rng)) * (-1 if leaf < 0 else 1)
    if isinstance(leaf, str):
        match = _ISO_DATE.fullmatch(leaf.strip())
        if match:
            return _other_date(*(int(g) for g in match.groups()), rng)
        others = [label for label in labels if label != leaf]
        if leaf in labels and others:
            return rng.choice(sorted(others))
    return None


def planted_error_variant(output: str, seed: int = 0, labels: Sequence[str] = ()) -> str | None:
    """``output`` with exactly one domain fact changed, or None when it has none.

    JSON: one leaf among the numbers, ISO dates and strings found in ``labels`` (the values a
    label field can take, e.g. the currency codes or intents seen in the eval set) is replaced
    by another value of the same kind. A bare label: another label of ``labels``. Text: one
    number or ISO date changed (5 -> 7, 2026-02-01 -> 2026-02-04).
    """
    text = (output or "").strip()
    if not text:
        return None
    rng = _rng(seed, "planted_error", text)
    value = _json_value(text) if text[0] in "[{" else _NOT_JSON
    if isinstance(value, (dict, list)):
        candidates = [(path, leaf) for path, leaf in _json_leaves(value)
                      if _changed_leaf(leaf, random.Random(0), labels) is not None]
        if not candidates:
            return None
        path, leaf = rng.choice(candidates)
        _set(value, path, _changed_leaf(leaf, rng, labels))
        return json.dumps(value, ensure_ascii=False)
    if _BARE_LABEL.match(text):
        others = sorted(label for label in labels if label != text)
        return rng.choice(others) if others else None
    return _plant_in_text(text, rng)


def make_variant(probe: str, output: str, seed: int = 0, labels: Sequence[str] = ()) -> str | None:
    """The ``probe`` variant of ``output`` (None: not applicable or no fact to change)."""
    if probe == "length":
        return length_variant(output, seed)
    if probe == "hedging":
        return hedging_variant(output, seed)
    if probe == "confidence":
        return confidence_variant(output, seed)
    if probe == "planted_error":
        return planted_error_variant(output, seed, labels)
    raise ValueError(f"unknown probe {probe!r}; the probes are {', '.join(PROBES)}")


def label_values(outputs: Iterable[str | None]) -> list[str]:
    """The label-like values among outputs of one task type: bare-label outputs and the
    identifier-like strings inside JSON outputs (e.g. currency codes); what
    :func:`planted_error_variant` may swap one for another."""
    found: set[str] = set()
    for output in outputs:
        text = (output or "").strip()
        if not text:
            continue
        value = _json_value(text) if text[0] in "[{" else _NOT_JSON
        if isinstance(value, (dict, list)):
            found.update(leaf for _, leaf in _json_leaves(value) if isinstance(leaf, str) and _BARE_LABEL.match(leaf))
        elif _BARE_LABEL.match(text):
            found.add(text)
    return sorted(found)


# ---- sampling --------------------------------------------------------------------------------


def sample_examples(examples: Iterable[Mapping[str, Any]], labelled: Iterable[str], n: int = DEFAULT_SAMPLE,
                    seed: int = 0) -> list[dict]:
    """Up to ``n`` of the ``examples`` whose id is in ``labelled``, stratified by task type: the
    task types take turns (in name order), each in a seeded order of its examples."""
    if n < 1:
        raise ValueError(f"the sample size must be at least 1, got {n}")
    ids = set(labelled)
    by_task: dict[str, list[dict]] = defaultdict(list)
    for ex in examples:
        if ex["example_id"] in ids:
            by_task[str(ex.get("task_type"))].append(dict(ex))
    queues = {t: sorted(rows, key=lambda r: hashlib.sha256(f"{seed}:{r['example_id']}".encode()).hexdigest())
              for t, rows in sorted(by_task.items())}
    out: list[dict] = []
    while len(out) < n and any(queues.values()):
        for task in sorted(queues):
            if queues[task] and len(out) < n:
                out.append(queues[task].pop(0))
    return out


# ---- running the probes ----------------------------------------------------------------------


@dataclass
class ProbeRun:
    """The paired verdicts of a probe run and what was left out.

    ``pairs`` rows: probe, group (rubric), criterion, example_id, original_pass, variant_pass.
    ``skipped``: (probe, group) -> Counter of reasons (not_applicable, no_fact, judge_failed,
    no_factual_criterion).
    """

    pairs: list[dict] = field(default_factory=list)
    skipped: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))
    sampled: int = 0
    requests: int = 0


def _passes(rubric: Any, scores: Mapping[str, int]) -> dict[str, bool]:
    return {c.id: c.passed(scores[c.id]) for c in rubric.criteria if c.id in scores}


def run_probes(examples: Sequence[Mapping[str, Any]], rubric_of: Any, judge: Any, *, seed: int = 0,
               labels: Mapping[str, Sequence[str]] | None = None, probes: Sequence[str] = PROBES,
               max_workers: int = 4) -> ProbeRun:
    """Judge every example's production output and its probe variants with ``judge`` (a
    :class:`eval_pipeline.lib.labeling.judge.Judge`), pairing the verdicts per criterion.

    ``rubric_of(task_type)`` gives the rubric (None: the example is left out); ``labels`` by task
    type are the label values :func:`planted_error_variant` may swap.
    """
    from eval_pipeline.lib.labeling.judge import JudgeItem

    run = ProbeRun()
    items: list[JudgeItem] = []
    plan: list[tuple[str, int, dict, Any]] = []  # (probe or "original", index of the original, example, rubric)
    originals: dict[str, int] = {}
    for ex in examples:
        rubric = rubric_of(ex.get("task_type"))
        if rubric is None:
            continue
        run.sampled += 1
        output = ex.get("production_output") or ""
        originals[ex["example_id"]] = len(items)
        items.append(JudgeItem(rubric, ex["messages"], ex.get("context_chunks"), output))
        plan.append(("original", -1, dict(ex), rubric))
        factual = [c.id for c in rubric.criteria if getattr(c, "factual", False)]
        for probe in probes:
            if probe == "planted_error" and not factual:
                run.skipped[(probe, rubric.name)]["no_factual_criterion"] += 1
                continue
            variant = make_variant(probe, output, seed, (labels or {}).get(ex.get("task_type"), ()))
            if variant is None:
                reason = "no_fact" if probe == "planted_error" else "not_applicable"
                run.skipped[(probe, rubric.name)][reason] += 1
                continue
            items.append(JudgeItem(rubric, ex["messages"], ex.get("context_chunks"), variant))
            plan.append((probe, originals[ex["example_id"]], dict(ex), rubric))
    before = judge.stats.requests
    results = judge.judge_many(items, max_workers=max_workers)
    run.requests = judge.stats.requests - before
    for (probe, origin, ex, rubric), result in zip(plan, results):
        if probe == "original":
            continue
        original = results[origin]
        if original.status != "ok" or result.status != "ok":
            run.skipped[(probe, rubric.name)]["judge_failed"] += 1
            continue
        before_pass, after_pass = _passes(rubric, original.scores), _passes(rubric, result.scores)
        criteria = [c for c in rubric.criteria if probe != "planted_error" or getattr(c, "factual", False)]
        for c in criteria:
            if c.id in before_pass and c.id in after_pass:
                run.pairs.append({"probe": probe, "group": rubric.name, "criterion": c.id,
                                  "example_id": ex["example_id"], "original_pass": before_pass[c.id],
                                  "variant_pass": after_pass[c.id], "form": bool(getattr(c, "form", False))})
    return run


def _skipped_note(counts: Counter) -> str:
    words = {"not_applicable": "not applicable (structured output)", "no_fact": "no fact to change",
             "judge_failed": "judge failed", "no_factual_criterion": "no factual criterion"}
    return ", ".join(f"{n} {words.get(k, k)}" for k, n in sorted(counts.items()) if n)


def _interval_words(low: float, high: float) -> str:
    if low > 0:
        return "interval above 0"
    if high < 0:
        return "interval below 0"
    return "interval includes 0"


def probe_rows(run: ProbeRun, *, threshold: float = DEFAULT_THRESHOLD, min_pairs: int = MIN_PAIRS,
               confidence: float = 0.95) -> list[dict]:
    """One row per probe x (group, criterion): pairs, original and variant pass rates, shift
    (variant - original) with its paired Newcombe interval and McNemar p, and for
    ``planted_error`` the miss rate (variant still passed, among originals that passed) with its
    Wilson interval; ``flagged`` and a ``note`` in words.

    Flags: a wording probe when ``|shift| >= threshold`` and the interval excludes 0, unless the
    criterion is marked ``form`` (it judges length or wording, so the shift is expected); the planted
    error when the miss rate is at least ``threshold``. Below ``min_pairs`` pairs: no figures
    beyond the counts, never a flag.
    """
    grouped: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for p in run.pairs:
        grouped[(p["probe"], p["group"], p["criterion"])].append(p)
    rows = []
    for (probe, group, criterion), pairs in sorted(grouped.items()):
        row: dict[str, Any] = {"probe": probe, "group": group, "criterion": criterion, "pairs": len(pairs),
                               "skipped": sum(run.skipped.get((probe, group), Counter()).values()),
                               "original_rate": None, "variant_rate": None, "shift": None, "low": None,
                               "high": None, "p_value": None, "miss_rate": None, "miss_low": None,
                               "miss_high": None, "flagged": False, "note": ""}
        notes = []
        if len(pairs) < min_pairs:
            notes.append(f"not enough pairs ({len(pairs)} < {min_pairs})")
        else:
            cmp = paired_comparison([p["original_pass"] for p in pairs], [p["variant_pass"] for p in pairs],
                                    confidence=confidence)
            row.update(original_rate=cmp.baseline_rate, variant_rate=cmp.candidate_rate, shift=cmp.difference,
                       low=cmp.interval.low, high=cmp.interval.high, p_value=cmp.p_value)
            direction = "variant passes more often" if cmp.difference > 0 else "variant passes less often"
            if probe == "planted_error":
                passed_before = [p for p in pairs if p["original_pass"]]
                if len(passed_before) < min_pairs:
                    notes.append(f"not enough originals that passed to measure misses ({len(passed_before)} < "
                                 f"{min_pairs})")
                else:
                    missed = sum(p["variant_pass"] for p in passed_before)
                    ci = wilson_interval(missed, len(passed_before), confidence)
                    row.update(miss_rate=ci.estimate, miss_low=ci.low, miss_high=ci.high)
                    row["flagged"] = ci.estimate >= threshold
                    notes.append(f"judge still passes {missed} of {len(passed_before)} planted errors "
                                 f"({ci.estimate:.0%}, 95% CI {ci.low:.0%} to {ci.high:.0%})"
                                 + (f": at least {threshold:.0%}, flagged" if row["flagged"] else ""))
            else:
                big = abs(cmp.difference) >= threshold
                excludes = cmp.interval.low > 0 or cmp.interval.high < 0
                form = any(p.get("form") for p in pairs)
                row["flagged"] = big and excludes and not form
                notes.append(f"{direction} by {abs(cmp.difference):.0%} ({_interval_words(cmp.interval.low, cmp.interval.high)})"
                             if cmp.difference else "no shift")
                if form:
                    notes.append("not flagged: the criterion judges the output's form, which this probe changes")
                elif row["flagged"]:
                    notes.append(f"flagged: |shift| >= {threshold:.0%} and interval excludes 0")
        skipped = _skipped_note(run.skipped.get((probe, group), Counter()))
        if skipped:
            notes.append(f"left out: {skipped}")
        row["note"] = "; ".join(notes)
        rows.append(row)
    # probes that left out every example of a rubric still get a row saying so
    seen = {(r["probe"], r["group"]) for r in rows}
    for (probe, group), counts in sorted(run.skipped.items()):
        if (probe, group) not in seen and sum(counts.values()):
            rows.append({"probe": probe, "group": group, "criterion": None, "pairs": 0, "skipped": sum(counts.values()),
                         "original_rate": None, "variant_rate": None, "shift": None, "low": None, "high": None,
                         "p_value": None, "miss_rate": None, "miss_low": None, "miss_high": None, "flagged": False,
                         "note": f"no pairs; left out: {_skipped_note(counts)}"})
    return rows


# ---- observed bias ---------------------------------------------------------------------------


def judge_human_pairs(gold: Iterable[Mapping[str, Any]], judged: Mapping[tuple[str, str], int],
                      outputs: Mapping[str, str | None], rubrics: Mapping[str, Any]) -> list[dict]:
    """The rows :func:`observed_bias` reads: one per human-majority label (``gold``: example_id,
    group, criterion, score) whose example is in ``outputs`` (the month's examples) and that the
    judge also scored (``judged``: (example_id, criterion) -> score), each side's score turned
    into a pass by the criterion's pass rule. Labels of an unknown rubric or criterion are left out."""
    items = []
    for g in gold:
        key = (g["example_id"], g["criterion"])
        rubric = rubrics.get(g["group"])
        if key not in judged or g["example_id"] not in outputs or rubric is None:
            continue
        try:
            criterion = rubric.criterion(g["criterion"])
        except KeyError:
            continue
        items.append({"example_id": g["example_id"], "group": g["group"], "criterion": g["criterion"],
                      "output": outputs[g["example_id"]], "judge_pass": criterion.passed(judged[key]),
                      "human_pass": criterion.passed(int(g["score"]))})
    return items


def _quartiles(lengths: Sequence[int]) -> list[int]:
    """Quartile (1-4) of each length by rank among ``lengths`` (ties share the lower quartile)."""
    order = sorted(lengths)
    n = len(order)
    return [1 + min(3, (4 * order.index(x)) // n) for x in lengths]


def observed_bias(items: Iterable[Mapping[str, Any]], *, threshold: float = DEFAULT_THRESHOLD,
                  min_pairs: int = MIN_PAIRS, confidence: float = 0.95) -> list[dict]:
    """Judge-minus-human pass-rate difference per (group, criterion), by output-length quartile and
    by presence of hedges (:func:`has_hedge`), each with the paired interval and McNemar p.

    ``items`` rows: example_id, group, criterion, output, judge_pass, human_pass (the human
    majority). Quartiles are over the distinct examples' output lengths (characters). A bin is
    flagged when ``|difference| >= threshold`` and its interval excludes 0.
    """
    items = [dict(i) for i in items]
    lengths = {}
    for i in items:
        lengths.setdefault(i["example_id"], len(i.get("output") or ""))
    ids = sorted(lengths)
    quart = dict(zip(ids, _quartiles([lengths[e] for e in ids])))
    bounds: dict[int, tuple[int, int]] = {}
    for e in ids:
        lo, hi = bounds.get(quart[e], (lengths[e], lengths[e]))
        bounds[quart[e]] = (min(lo, lengths[e]), max(hi, lengths[e]))
    bins: dict[tuple[str, str, str, str], list[dict]] = defaultdict(list)
    for i in items:
        q = quart[i["example_id"]]
        lo, hi = bounds[q]
        bins[("length_quartile", f"Q{q} ({lo}-{hi} chars)", i["group"], i["criterion"])].append(i)
        bins[("hedges", "hedged" if has_hedge(i.get("output")) else "not hedged", i["group"], i["criterion"])].append(i)
    rows = []
    for (dimension, label, group, criterion), members in sorted(bins.items()):
        row: dict[str, Any] = {"dimension": dimension, "bin": label, "group": group, "criterion": criterion,
                               "pairs": len(members), "judge_rate": None, "human_rate": None, "difference": None,
                               "low": None, "high": None, "p_value": None, "flagged": False, "note": ""}
        if len(members) < min_pairs:
            row["note"] = f"not enough pairs ({len(members)} < {min_pairs})"
        else:
            cmp = paired_comparison([bool(m["human_pass"]) for m in members], [bool(m["judge_pass"]) for m in members],
                                    confidence=confidence)
            row.update(judge_rate=cmp.candidate_rate, human_rate=cmp.baseline_rate, difference=cmp.difference,
                       low=cmp.interval.low, high=cmp.interval.high, p_value=cmp.p_value)
            excludes = cmp.interval.low > 0 or cmp.interval.high < 0
            row["flagged"] = abs(cmp.difference) >= threshold and excludes
            who = "judge passes more than the humans" if cmp.difference > 0 else "judge passes less than the humans"
            row["note"] = (f"{who} by {abs(cmp.difference):.0%} ({_interval_words(cmp.interval.low, cmp.interval.high)})"
                           if cmp.difference else "judge and humans pass alike")
            if row["flagged"]:
                row["note"] += f"; flagged: |difference| >= {threshold:.0%} and interval excludes 0"
        rows.append(row)
    return rows
