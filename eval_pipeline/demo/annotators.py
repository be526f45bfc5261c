"""Simulated human annotators for the demo: the score an attentive annotator would give each
rubric criterion, from what the demo generator knows about its logs (``<data home>/demo_truth``),
and three annotators who start from it with a little noise, written as a Label Studio JSON export.

One criterion (:data:`DEFAULT_AMBIGUOUS`) gets much more noise, so the demo shows the pipeline
flagging an unclear rubric. Moved here from ``lib/labeling/agreement.py``: the pipeline measures the
agreement of whatever annotators it is given and knows nothing of these.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from eval_pipeline.lib.labeling.annotation import criterion_levels, label_studio_tasks, rubric_for

__all__ = ["DEFAULT_AMBIGUOUS", "load_demo_truth", "simulate_annotators", "true_scores"]

#: The criterion the simulated annotators disagree on (a subjective one: how complete is complete?).
DEFAULT_AMBIGUOUS = ("rag_qa", "completeness")


def load_demo_truth(path: str | Path) -> dict[str, dict[str, Any]]:
    """The demo generator's truth records by request id, from ``<data home>/demo_truth`` (the
    folder) or its ``records.jsonl``."""
    path = Path(path)
    if path.is_dir():
        path = path / "records.jsonl"
    out = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                out[record["request_id"]] = record
    return out


@lru_cache(maxsize=1)
def _intents() -> tuple[str, ...]:
    from eval_pipeline.demo.banking77 import load_queries  # a CSV read, only when simulating

    _texts, categories = load_queries()
    return tuple(sorted(set(categories.tolist())))


@lru_cache(maxsize=1)
def _topic_groups() -> dict[str, frozenset[str]]:
    from eval_pipeline.demo.logs import CONFUSABLE_GROUPS

    out: dict[str, set[str]] = defaultdict(set)
    for group in CONFUSABLE_GROUPS:
        for intent in group:
            out[intent].update(group)
    return {k: frozenset(v) for k, v in out.items()}


_LABEL_PREFIX = re.compile(r"^\s*(?:intent\s*:|the intent is)\s*", re.IGNORECASE)
_DECLINE = re.compile(r"couldn't find|could not find|not able to find", re.IGNORECASE)


def _routing_scores(output: str, truth: Mapping[str, Any]) -> dict[str, int]:
    intents = set(_intents())
    stripped = _LABEL_PREFIX.sub("", output).strip().strip(".\"'`")
    label = stripped.replace(" ", "_")  # "card arrival" still names card_arrival
    true_intent = truth.get("intent")
    correct = label == true_intent
    return {
        "correct_intent": int(correct),
        "bare_label_format": int(output in intents),
        "valid_label": int(stripped in intents),
        "topic_match": int(correct or label in _topic_groups().get(str(true_intent), frozenset())),
    }


def _parse_object(text: str) -> tuple[dict[str, Any] | None, bool]:
    """(the JSON object a reader would see, whether the whole text is exactly that object)."""
    try:
        value = json.loads(text.strip())
        if isinstance(value, dict):
            return value, True
    except json.JSONDecodeError:
        pass
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            value = json.loads(text[start:end + 1].replace("'", '"'))
            if isinstance(value, dict):
                return value, False
        except json.JSONDecodeError:
            pass
    return None, False


def _extraction_scores(output: str, truth: Mapping[str, Any]) -> dict[str, int]:
    obj, exact = _parse_object(output)
    want = truth.get("extraction") or {}
    obj = obj or {}
    amount = obj.get("amount")
    amount_ok = (isinstance(amount, (int, float)) and not isinstance(amount, bool)
                 and want.get("amount") is not None and math.isclose(float(amount), float(want["amount"])))
    return {
        "valid_json": int(exact),
        "correct_amount": int(amount_ok),
        "correct_currency": int(obj.get("currency") == want.get("currency") and want.get("currency") is not None),
        "correct_date": int(obj.get("date") == want.get("date") and want.get("date") is not None),
        "complete_schema": int(set(obj) == {"amount", "currency", "date"}
                               and all(v is not None for v in obj.values())),
    }


def _rag_scores(output: str, truth: Mapping[str, Any], rng: random.Random) -> dict[str, int]:
    hit = bool(truth.get("retrieval_hit"))
    declined = bool(_DECLINE.search(output))
    if hit or declined:
        # a grounded answer, or an honest "not in the help centre"
        grounded, supported, answers = 2, 1, 1
        complete = 2 if hit and rng.random() < 0.75 else 1
    else:
        # the retrieval missed and the model answered from a passage about something else
        grounded, supported, answers, complete = 0, 0, 0, 0
    return {
        "grounded_in_context": grounded,
        "no_unsupported_claims": supported,
        "answers_question": answers,
        "completeness": complete,
        "format_and_length": int("[kb-" not in output and len(output) < 700),
    }


def true_scores(example: Mapping[str, Any], rubric: Any, truth: Mapping[str, Any] | None,
                seed: int = 0) -> dict[str, int]:
    """The score an attentive annotator would give each criterion, from the demo truth.

    Intent routing: the label against the true intent, its spelling against the 77 allowed
    labels, the confusable groups for topic match. Extraction: the JSON fields against the true
    fields. RAG: the retrieval hit (an answer after a miss is ungrounded unless the model declined).
    Other criteria (open questions, chats): the top level, with some failures on examples that
    carry failure signals. Deterministic for ``seed``.
    """
    truth = truth or {}
    output = str(example.get("production_output") or "")
    rng = random.Random(f"{seed}:truth:{example.get('example_id')}")
    task = example.get("task_type")
    if task == "intent_routing":
        known = _routing_scores(output, truth)
    elif task == "extraction":
        known = _extraction_scores(output, truth)
    elif task == "rag_qa":
        known = _rag_scores(output, truth, rng)
    else:
        known = {}
    failing = bool(example.get("failure_signals")) or truth.get("error") is not None
    out = {}
    for criterion in rubric.criteria:
        levels = criterion_levels(criterion)
        if criterion.id in known:
            out[criterion.id] = known[criterion.id]
        elif failing and rng.random() < 0.5:
            out[criterion.id] = rng.choice(levels[:-1])
        else:
            out[criterion.id] = levels[-1] if rng.random() < 0.9 else levels[-2]
    return out


def _true_reference(example: Mapping[str, Any], truth: Mapping[str, Any]) -> str | None:
    if example.get("task_type") == "intent_routing" and truth.get("intent"):
        return str(truth["intent"])
    if example.get("task_type") == "extraction" and truth.get("extraction"):
        fields = truth["extraction"]
        return json.dumps({k: fields.get(k) for k in ("amount", "currency", "date")})
    return None


def simulate_annotators(
    examples: Iterable[Mapping[str, Any]],
    rubrics: Mapping[str, Any],
    truth_by_request_id: Mapping[str, Mapping[str, Any]],
    seed: int = 0,
    annotators: Sequence[str] = ("ann-a", "ann-b", "ann-c"),
    ambiguous: tuple[str, str] | None = DEFAULT_AMBIGUOUS,
    noise: float = 0.02,
    ambiguous_noise: float = 0.4,
    reference_noise: float = 0.05,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Simulated human annotation of ``examples`` for the demo, as a Label Studio JSON export.

    Each annotator starts from :func:`true_scores` and moves each criterion to a random other
    level with probability ``noise``, except the ``ambiguous`` (task type, criterion), where the
    probability is ``ambiguous_noise`` so its agreement falls into the "unclear rubric" range. For
    rubrics with a reference, annotators write the true intent (``reference_noise``: a random other
    intent) or the true extraction JSON. Annotators are identified by email = their name.

    Why ``noise`` is 0.02: the demo's criteria are skewed (most outputs pass), and with three
    annotators on a few dozen examples Krippendorff's alpha of a clear but skewed criterion was
    about 0.5 at 0.04 and fell below 0.6 on several criteria; at 0.02 (careful annotators on
    objective criteria) only the ambiguous criterion (alpha about 0.05-0.2) is flagged as an unclear
    rubric, and nearly-constant criteria are reported as ``skewed_prevalence``.

    Returns ``(export_tasks, truth_rows)``: the export (feed it to
    :func:`eval_pipeline.lib.labeling.annotation.read_annotation_file` after writing it as ``.json``) and one
    row per (example, criterion) with ``example_id``, ``task_type``, ``criterion``, ``true_score``
    and ``true_reference``. Examples without a rubric are left out. Deterministic for ``seed``.
    """
    export: list[dict[str, Any]] = []
    truth_rows: list[dict[str, Any]] = []
    annotation_id = 0
    for ex in examples:
        rubric = rubric_for(rubrics, ex.get("task_type"))
        if rubric is None:
            continue
        truth = truth_by_request_id.get(str(ex.get("request_id")), {})
        true = true_scores(ex, rubric, truth, seed=seed)
        reference = _true_reference(ex, truth) if rubric.has_reference else None
        eid = str(ex["example_id"])
        for criterion in rubric.criteria:
            truth_rows.append({"example_id": eid, "task_type": ex.get("task_type"), "criterion": criterion.id,
                               "true_score": true[criterion.id], "true_reference": reference})
        task = label_studio_tasks([ex], rubric)[0]
        task["id"] = len(export) + 1
        task["annotations"] = []
        for user_no, annotator in enumerate(annotators, start=1):
            rng = random.Random(f"{seed}:annotate:{eid}:{annotator}")
            result = []
            for criterion in rubric.criteria:
                levels = criterion_levels(criterion)
                p = ambiguous_noise if ambiguous == (ex.get("task_type"), criterion.id) else noise
                score = true[criterion.id]
                if rng.random() < p:
                    score = rng.choice([lv for lv in levels if lv != score])
                result.append({"from_name": criterion.id, "to_name": "output", "type": "choices",
                               "value": {"choices": [str(score)]}})
            if reference is not None:
                text = reference
                if ex.get("task_type") == "intent_routing" and rng.random() < reference_noise:
                    text = rng.choice([i for i in _intents() if i != reference])
                result.append({"from_name": "reference", "to_name": "output", "type": "textarea",
                               "value": {"text": [text]}})
            annotation_id += 1
            task["annotations"].append({
                "id": annotation_id, "completed_by": {"id": user_no, "email": annotator},
                "was_cancelled": False, "ground_truth": False, "result": result,
            })
        export.append(task)
    return export, truth_rows
