"""Tests for eval_pipeline.lib.scorers: normalisation, exact match, token F1 and ROUGE-L."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from eval_pipeline.lib.rubrics import load_rubrics
from eval_pipeline.lib.scorers import (
    REFERENCE_SCORERS,
    exact_match,
    normalize,
    rouge_l,
    score_reference,
    scorers_for,
    token_f1,
)


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
        "exact_match": 0.0, "token_f1": 0.0, "rouge_l": 0.0}
    with pytest.raises(TypeError, match="reference must be a string"):
        exact_match("x", {"amount": 1})  # type: ignore[arg-type]


def test_scorers_follow_the_rubric():
    rubrics = load_rubrics()
    assert list(REFERENCE_SCORERS) == ["exact_match", "token_f1", "rouge_l"]
    assert scorers_for(rubrics["intent_routing"]) == scorers_for(rubrics["extraction"]) == list(REFERENCE_SCORERS)
    for name in ("rag_qa", "open_question", "multi_turn"):
        assert scorers_for(rubrics[name]) == []
        # open-ended task types never get reference scores, even if some reference text exists
        assert score_reference(rubrics[name], "Cards arrive in 3 days.", "Cards arrive in 3 days.") == {}


def test_score_reference():
    routing = load_rubrics()["intent_routing"]
    assert score_reference(routing, "Card_Arrival", "card_arrival") == {
        "exact_match": 1.0, "token_f1": 1.0, "rouge_l": 1.0}
    wrong = score_reference(routing, "card_delivery_estimate", "card_arrival")
    assert wrong["exact_match"] == 0.0
    assert wrong["token_f1"] == 0.0  # "card_delivery_estimate" is one \w+ token
    assert wrong["rouge_l"] == pytest.approx(0.4)  # rouge splits on "_": LCS 1 (card), P = 1/3, R = 1/2
    assert score_reference(routing, "card_arrival", None) == {}
    assert score_reference(routing, None, "card_arrival") == {"exact_match": 0.0, "token_f1": 0.0, "rouge_l": 0.0}
