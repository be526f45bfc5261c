"""Reference metrics: compare a response with the one correct answer of its example.

They apply only to task types whose rubric has ``has_reference: true`` (a routing label, an
extracted JSON object). Open-ended task types get none: ROUGE or token F1 against a single sample
answer punishes good answers worded differently, so those are left to the rubric judge.

Every scorer takes ``(prediction, reference)`` and returns a float in [0, 1]. A missing
prediction (``None``) scores 0.0; a reference must be a string (``json.dumps`` a structured one).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

    from eval_pipeline.lib.rubrics import Rubric

__all__ = [
    "Scorer",
    "REFERENCE_SCORERS",
    "normalize",
    "exact_match",
    "token_f1",
    "rouge_l",
    "scorers_for",
    "score_reference",
]

Scorer = Callable[[str | None, str], float]

# What a model wraps around an answer without changing it: whitespace, quotes, brackets, sentence
# punctuation and markdown emphasis. Not "-", "$", "%" or "+", which change a value.
_WRAPPING = " \t\r\n.,;:!?'\"`*()[]<>\u201c\u201d\u2018\u2019\u00ab\u00bb"
# SQuAD's answer normalisation drops English articles before counting tokens.
_ARTICLES = frozenset({"a", "an", "the"})
_TOKEN = re.compile(r"\w+")


def _canonical_json(value: Any) -> Any:
    # 1250 and 1250.0 are the same amount; bool is an int subclass and must stay a bool.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _canonical_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical_json(item) for item in value]
    return value


def normalize(text: str) -> str:
    """Canonical form for comparison.

    JSON objects and arrays are parsed and re-dumped with sorted keys (so key order and spacing do
    not matter); other text has whitespace collapsed and surrounding quotes/punctuation stripped.
    Both are lowercased.
    """
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            pass  # not JSON after all: compare as text
        else:
            dumped = json.dumps(_canonical_json(parsed), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            return dumped.lower()
    return " ".join(stripped.lower().split()).strip(_WRAPPING)


def _check(prediction: object, reference: object) -> None:
    if not isinstance(reference, str):
        raise TypeError(f"reference must be a string (json.dumps a structured one), got {type(reference).__name__}")
    if prediction is not None and not isinstance(prediction, str):
        raise TypeError(f"prediction must be a string or None, got {type(prediction).__name__}")


def exact_match(prediction: str | None, reference: str) -> float:
    """1.0 when prediction and reference are equal after :func:`normalize`, else 0.0."""
    _check(prediction, reference)
    if prediction is None:
        return 0.0
    return 1.0 if normalize(prediction) == normalize(reference) else 0.0


def _tokens(text: str) -> list[str]:
    return [token for token in _TOKEN.findall(normalize(text)) if token not in _ARTICLES]


def token_f1(prediction: str | None, reference: str) -> float:
    """SQuAD-style F1 over the bags of normalised word tokens (articles and punctuation dropped)."""
    _check(prediction, reference)
    if prediction is None:
        return 0.0
    predicted, expected = _tokens(prediction), _tokens(reference)
    if not predicted or not expected:
        # SQuAD convention: two empty answers agree; one empty answer gets nothing.
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _rouge_scorer() -> RougeScorer:
    # Imported on first use: rouge_score pulls in nltk, which is slow to import.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str | None, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence, Porter-stemmed tokens) from ``rouge_score``.

    Its tokenizer keeps only ASCII letters and digits, so non-English text scores near 0.
    """
    _check(prediction, reference)
    if prediction is None:
        return 0.0
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


REFERENCE_SCORERS: dict[str, Scorer] = {
    "exact_match": exact_match,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
}


def scorers_for(rubric: Rubric) -> list[str]:
    """Names of the reference scorers that apply to a rubric's task types: all or none."""
    return list(REFERENCE_SCORERS) if rubric.has_reference else []


def score_reference(rubric: Rubric, prediction: str | None, reference: str | None) -> dict[str, float]:
    """Every applicable reference metric, by name; ``{}`` when none applies or there is no reference."""
    if reference is None:
        return {}
    return {name: REFERENCE_SCORERS[name](prediction, reference) for name in scorers_for(rubric)}
