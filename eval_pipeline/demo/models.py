"""The demo's two model versions, as recorded outputs on the eval set (so the evaluation runs offline).

``support-assistant:2026-06`` (the baseline) and ``support-assistant:2026-09`` (the candidate):

- open questions from Arena-Hard: the real answers of ``gpt-3.5-turbo-0125`` (baseline) and
  ``gpt-4-0613`` (candidate) from the Arena-Hard-Auto release (see ``data/README.md``);
- intent routing: the baseline answers what production answered; the candidate answers the same
  except on a few rare intents (the least frequent in the demo traffic that the eval set holds),
  which it routes to a confusable neighbour: the regression the slice gate must catch;
- extraction: the baseline answers what production answered; the candidate fixes most of the
  answers that were wrong (an improvement elsewhere, so the overall rate barely moves);
- everything else (RAG answers, multi-turn, MT-Bench questions): what production answered.

Each recording line carries the example id and the prompt's SHA-256, the two keys the recorded
provider looks outputs up by.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from eval_pipeline.demo import logs as demo_logs
from eval_pipeline.lib.evaluation.scorers import exact_match
from eval_pipeline.lib.registry.providers import prompt_key, write_recording

__all__ = ["DEMO_MODEL", "BASELINE_VERSION", "CANDIDATE_VERSION", "regressed_intents", "demo_outputs",
           "write_demo_recordings"]

DEMO_MODEL = "support-assistant"
BASELINE_VERSION, CANDIDATE_VERSION = "2026-06", "2026-09"
_ANSWER_MODEL = {BASELINE_VERSION: "gpt-3.5-turbo-0125", CANDIDATE_VERSION: "gpt-4-0613"}
_MIN_FLIPS = 8
_FIX_SHARE = 0.9


def _unit(text: str) -> float:
    """A stable number in [0, 1) from text (deterministic choices without a random state)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / 16 ** 12


def _reference(task_type: str, truth: Mapping[str, Any]) -> str | None:
    if task_type == "intent_routing":
        return truth.get("intent")
    if task_type == "extraction" and truth.get("extraction"):
        fields = truth["extraction"]
        return json.dumps({k: fields.get(k) for k in ("amount", "currency", "date")})
    return None


def regressed_intents(examples: Iterable[Mapping[str, Any]], truth: Mapping[str, Mapping[str, Any]],
                      min_flips: int = _MIN_FLIPS) -> list[str]:
    """The rarest intents (by demo traffic rank) among the routing examples the baseline gets right,
    taken until at least ``min_flips`` examples are affected."""
    correct = Counter()
    for ex in examples:
        t = truth.get(str(ex.get("request_id")), {})
        if ex.get("task_type") == "intent_routing" and t.get("intent") and \
                exact_match(ex.get("production_output"), t["intent"]) == 1.0:
            correct[t["intent"]] += 1
    ranked = demo_logs._ranked_intents()  # most frequent first
    chosen, flips = [], 0
    for intent in reversed(ranked):
        if flips >= min_flips:
            break
        if correct[intent]:
            chosen.append(intent)
            flips += correct[intent]
    return chosen


def _wrong_label(intent: str) -> str:
    partners = demo_logs._confusable_partners().get(intent)
    if partners:
        return sorted(partners)[0]
    others = sorted(c for c in demo_logs._data().categories if c != intent)
    return others[int(_unit(intent) * len(others))]


def demo_outputs(examples: Iterable[Mapping[str, Any]], truth: Mapping[str, Mapping[str, Any]],
                 current_version: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Recording rows (``example_id``, ``prompt_sha256``, ``output``) per demo version, for every
    example given; the regressed intents are chosen on ``current_version``'s examples (all when None)."""
    examples = list(examples)
    current = [ex for ex in examples if current_version in (None, ex.get("eval_set_version"))]
    regressed = set(regressed_intents(current, truth))
    examples = list({ex["example_id"]: ex for ex in examples}.values())
    arena = {q["uid"]: q["answers"] for q in demo_logs._data().arena}
    rows: dict[str, list[dict[str, Any]]] = {BASELINE_VERSION: [], CANDIDATE_VERSION: []}
    for ex in examples:
        t = truth.get(str(ex.get("request_id")), {})
        task, produced = ex.get("task_type"), ex.get("production_output") or ""
        outputs = {BASELINE_VERSION: produced, CANDIDATE_VERSION: produced}
        reference = _reference(task, t)
        if t.get("source") == "arena_hard" and t.get("source_id") in arena:
            outputs = {v: arena[t["source_id"]][m] for v, m in _ANSWER_MODEL.items()}
        elif task == "intent_routing" and t.get("intent") in regressed:
            outputs[CANDIDATE_VERSION] = _wrong_label(t["intent"])
        elif task == "extraction" and reference and exact_match(produced, reference) < 1.0 \
                and _unit(ex["example_id"]) < _FIX_SHARE:
            outputs[CANDIDATE_VERSION] = reference
        key = prompt_key(ex["messages"])
        for version, text in outputs.items():
            rows[version].append({"example_id": ex["example_id"], "prompt_sha256": key, "output": text})
    return rows


def write_demo_recordings(examples: Iterable[Mapping[str, Any]], truth: Mapping[str, Mapping[str, Any]],
                          folder: Path, current_version: str | None = None) -> dict[str, Path]:
    """Write one recording file per demo version into ``folder``; returns version -> path."""
    paths = {}
    for version, rows in demo_outputs(examples, truth, current_version).items():
        path = folder / f"{DEMO_MODEL}-{version}.jsonl"
        write_recording(path, rows)
        paths[version] = path
    return paths
