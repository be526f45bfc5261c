"""Agreement, gold labels, the review queue and judge calibration."""

from __future__ import annotations

import math

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import cohens_kappa as sm_cohens_kappa

from eval_pipeline.lib.labeling.agreement import (
    adjudicated_references,
    criterion_agreement,
    example_disagreements,
    gold_labels,
    judge_calibration,
    review_queue,
)


def _labels(scores_by_annotator: dict[str, list[int | None]], criterion: str = "correct_intent",
            rubric: str = "intent_routing", scale: str = "binary") -> list[dict]:
    out = []
    for annotator, scores in scores_by_annotator.items():
        for i, score in enumerate(scores):
            if score is not None:
                out.append({"example_id": f"ex_{i:012d}", "eval_set_version": "v1", "task_type": rubric,
                            "rubric": rubric, "scale": scale, "annotator": annotator, "criterion": criterion,
                            "score": score})
    return out


# ----------------------------------------------------------------------------------------------
# agreement
# ----------------------------------------------------------------------------------------------


def test_two_annotators_use_cohens_kappa():
    a = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    b = [1, 1, 1, 1, 1, 0, 0, 0, 0, 1]
    # by hand: observed agreement 8/10; both say 1 six times in ten, so chance agreement
    # 0.6 * 0.6 + 0.4 * 0.4 = 0.52; kappa = (0.8 - 0.52) / (1 - 0.52) = 7/12
    [row] = criterion_agreement(_labels({"ann-a": a, "ann-b": b}))
    assert row["method"] == "cohens_kappa" and row["weights"] is None
    assert row["value"] == pytest.approx(7 / 12)
    assert row["value"] == pytest.approx(cohen_kappa_score(a, b))
    assert (row["n_items"], row["n_annotators"], row["annotators"]) == (10, 2, ["ann-a", "ann-b"])
    assert row["band"] == "moderate" and row["pairwise_agreement"] == pytest.approx(0.8)
    assert row["unclear_rubric"] is True and row["disagreement_about_quality"] is False


def test_two_annotators_three_point_is_linearly_weighted():
    a = [2, 2, 1, 0, 2, 1, 0, 2]
    b = [2, 1, 1, 0, 2, 2, 1, 2]
    [row] = criterion_agreement(_labels({"x": a, "y": b}, "completeness", "rag_qa", "three_point"))
    assert row["weights"] == "linear"
    assert row["value"] == pytest.approx(cohen_kappa_score(a, b, weights="linear"))


def test_three_annotators_with_missing_values_use_krippendorff_alpha():
    data = {
        "ann-a": [2, 2, 1, 0, None, 2, 0, 1, 2, 2],
        "ann-b": [2, 1, 1, 0, 2, 2, None, 1, 2, 0],
        "ann-c": [None, 2, 0, 0, 2, 2, 0, None, 1, 1],
        # a fourth annotator on one item only: that item has 2+ annotators, the others do not change
    }
    labels = _labels(data, "grounded_in_context", "rag_qa", "three_point")
    labels += _labels({"solo": [None] * 10 + [1]}, "grounded_in_context", "rag_qa", "three_point")  # 1 annotator
    [row] = criterion_agreement(labels)
    expected = krippendorff.alpha(reliability_data=np.array(list(data.values()), dtype=float),
                                  level_of_measurement="ordinal", value_domain=[0, 1, 2])
    assert row["method"] == "krippendorff_alpha" and row["weights"] == "ordinal"
    assert row["value"] == pytest.approx(expected)
    assert row["n_items"] == 10 and row["annotators"] == ["ann-a", "ann-b", "ann-c"]

    binary = {k: [None if v is None else int(v > 0) for v in vs] for k, vs in data.items()}
    [row] = criterion_agreement(_labels(binary, "answers_question", "rag_qa", "binary"))
    assert row["value"] == pytest.approx(krippendorff.alpha(
        reliability_data=np.array(list(binary.values()), dtype=float), level_of_measurement="nominal"))


@pytest.mark.parametrize(("b", "kappa", "flags"), [
    # marginals stay 5/5 for both annotators, so chance agreement is 0.5 and kappa = 2 * po - 1
    ([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], 1.0, []),
    ([1, 1, 1, 1, 0, 1, 0, 0, 0, 0], 0.6, []),  # po 0.8: exactly at the threshold, not flagged
    ([1, 1, 1, 0, 0, 1, 1, 0, 0, 0], 0.2, ["unclear_rubric", "disagreement_about_quality"]),  # po 0.6
])
def test_flags_at_the_thresholds(b, kappa, flags):
    a = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    [row] = criterion_agreement(_labels({"a": a, "b": b}))
    assert row["value"] == pytest.approx(kappa)
    assert row["flags"] == flags


def test_flag_between_the_thresholds():
    a = [1, 1, 1, 1, 0, 0, 0, 0]
    b = [1, 1, 1, 0, 1, 0, 0, 0]  # balanced marginals, po 0.75 -> kappa (0.75 - 0.5) / 0.5 = 0.5
    [row] = criterion_agreement(_labels({"a": a, "b": b}))
    assert row["value"] == pytest.approx(0.5)
    assert row["flags"] == ["unclear_rubric"] and row["band"] == "moderate"


def test_one_sided_labels_are_skewed_prevalence_not_an_unclear_rubric():
    """The kappa paradox: 17 of 18 labels pass and the one dissent is alone on its item (alpha 0,
    8 of 9 pairs agree): ``skewed_prevalence``, not ``unclear_rubric``. Labels split as evenly
    with the same low alpha are flagged; so are one-sided labels just under 90% prevalence."""
    lone = {"a": [1, 1, 1, 1, 1, 0], "b": [1, 1, 1, 1, 1, 1], "c": [1, 1, 1, 1, 1, 1]}
    [row] = criterion_agreement(_labels(lone))
    assert row["method"] == "krippendorff_alpha" and row["value"] == pytest.approx(0.0, abs=1e-9)
    assert row["pairwise_agreement"] == pytest.approx(8 / 9) and row["prevalence"] == pytest.approx(17 / 18)
    assert row["flags"] == ["skewed_prevalence"] and not row["unclear_rubric"] and "89% of pairs" in row["note"]

    below = {"a": [1, 1, 1, 0, 1], "b": [1, 1, 1, 1, 0], "c": [1, 1, 1, 1, 1]}  # 13 of 15 = 87%
    [row] = criterion_agreement(_labels(below))
    assert row["prevalence"] < 0.9 and row["value"] < 0.4
    assert row["flags"] == ["unclear_rubric", "disagreement_about_quality"]

    balanced = {"a": [1, 0, 1, 0, 1, 0], "b": [0, 1, 1, 0, 0, 1], "c": [1, 1, 0, 0, 1, 0]}
    [row] = criterion_agreement(_labels(balanced))
    assert row["value"] < 0.4 and row["flags"] == ["unclear_rubric", "disagreement_about_quality"]


def test_constant_labels_give_none_not_nan():
    [row] = criterion_agreement(_labels({"a": [1, 1, 1], "b": [1, 1, 1]}))
    assert row["value"] is None and row["band"] is None and row["flags"] == []
    assert "undefined" in row["note"] and row["pairwise_agreement"] == 1.0
    # a single annotator per item: nothing to compare
    [row] = criterion_agreement(_labels({"a": [1, 0, None], "b": [None, None, 1]}))
    assert row["n_items"] == 0 and row["value"] is None and row["method"] is None
    for r in criterion_agreement(_labels({"a": [0, 0, 0], "b": [0, 0, 0], "c": [0, None, 0]})):
        assert r["value"] is None and not (isinstance(r["value"], float) and math.isnan(r["value"]))


def test_criteria_are_kept_apart_by_rubric():
    labels = (_labels({"a": [1, 0, 1, 0, 1], "b": [1, 0, 1, 0, 1]}, "accuracy", "multi_turn")
              + _labels({"a": [2, 0, 2, 1, 0], "b": [0, 2, 0, 1, 2]}, "accuracy", "open_question", "three_point"))
    rows = {(r["group"], r["criterion"]): r for r in criterion_agreement(labels)}
    assert rows[("multi_turn", "accuracy")]["value"] == pytest.approx(1.0)
    assert rows[("open_question", "accuracy")]["value"] < 0


def test_example_disagreements_lists_only_split_items():
    labels = _labels({"a": [1, 1, 0, 2], "b": [1, 0, 2, 1], "c": [1, 0, 1, None]}, "completeness", "rag_qa",
                     "three_point")
    rows = example_disagreements(labels)
    assert [(r["example_id"], r["labels"], r["spread"], r["flag"]) for r in rows] == [
        ("ex_000000000001", {"a": 1, "b": 0, "c": 0}, 1, "minority_dissent"),
        ("ex_000000000002", {"a": 0, "b": 2, "c": 1}, 2, "no_majority"),
        ("ex_000000000003", {"a": 2, "b": 1}, 1, "no_majority"),
    ]


# ----------------------------------------------------------------------------------------------
# gold labels, review queue, calibration
# ----------------------------------------------------------------------------------------------


def _gold_fixture():
    return gold_labels(_labels({"a": [1, 0, 1, 1, 0], "b": [1, 1, 0, 1, 0], "c": [0, 1, None, 1, 0]}))


def test_gold_majority_tie_and_minority():
    gold = {g["example_id"]: g for g in _gold_fixture()}
    g0 = gold["ex_000000000000"]
    assert (g0["score"], g0["n_annotators"], g0["agreement_share"], g0["disagreement"], g0["tie"]) == (
        1, 3, pytest.approx(2 / 3), True, False)
    assert g0["minority_labels"] == [{"annotator": "c", "score": 0}]
    tie = gold["ex_000000000002"]  # a: 1, b: 0 -> the stricter 0, flagged
    assert (tie["score"], tie["tie"], tie["agreement_share"]) == (0, True, 0.5)
    assert tie["minority_labels"] == [{"annotator": "a", "score": 1}]
    unanimous = gold["ex_000000000003"]
    assert (unanimous["score"], unanimous["disagreement"], unanimous["minority_labels"]) == (1, False, [])
    three = gold_labels(_labels({"a": [2], "b": [1], "c": [0]}, "completeness", "rag_qa", "three_point"))
    assert (three[0]["score"], three[0]["tie"], len(three[0]["minority_labels"])) == (0, True, 2)


def test_gold_references_majority_after_normalization():
    refs = [
        {"example_id": "ex_1", "annotator": "b", "reference": "Card_Arrival "},
        {"example_id": "ex_1", "annotator": "a", "reference": "card_arrival"},
        {"example_id": "ex_1", "annotator": "c", "reference": "card_delivery_estimate"},
        {"example_id": "ex_2", "annotator": "z", "reference": "top_up_failed"},
        {"example_id": "ex_2", "annotator": "y", "reference": "pending_top_up"},
        {"example_id": "ex_3", "annotator": "a", "reference": '{"amount": 5, "currency": "EUR"}'},
        {"example_id": "ex_3", "annotator": "b", "reference": '{"currency":"EUR","amount":5}'},
    ]
    adjudicated = adjudicated_references(refs)
    assert adjudicated["ex_1"]["reference"] == "card_arrival"  # as written by "a", first by id
    assert (adjudicated["ex_1"]["tie"], adjudicated["ex_1"]["agreement_share"]) == (False, pytest.approx(2 / 3))
    assert (adjudicated["ex_2"]["reference"], adjudicated["ex_2"]["tie"]) == ("pending_top_up", True)  # "y" < "z"
    assert (adjudicated["ex_3"]["agreement_share"], adjudicated["ex_3"]["tie"]) == (1.0, False)
    labels = [{"example_id": "ex_1", "annotator": a, "criterion": "correct_intent", "score": 1,
               "rubric": "intent_routing"} for a in "abc"]
    [row] = gold_labels(labels, refs)
    assert (row["reference"], row["reference_tie"]) == ("card_arrival", False)


def test_review_queue_picks_judge_agreeing_with_minority():
    gold = _gold_fixture()
    judge = {
        ("ex_000000000000", "correct_intent"): 0,  # = c's minority label -> review
        ("ex_000000000001", "correct_intent"): 1,  # = majority -> fine
        ("ex_000000000002", "correct_intent"): 1,  # tie went to 0; a said 1 -> review
        ("ex_000000000003", "correct_intent"): 0,  # unanimous 1: judge simply wrong, no minority to side with
        # ex_000000000004 not judged
    }
    queue = review_queue(gold, judge)
    assert [(r["example_id"], r["judge_score"], r["majority_score"], r["tie"]) for r in queue] == [
        ("ex_000000000000", 0, 1, False), ("ex_000000000002", 1, 0, True)]
    rows = [{"example_id": k[0], "criterion": k[1], "score": v} for k, v in judge.items()]
    assert review_queue(gold, rows) == queue


def test_judge_calibration_kappa_interval_and_warning():
    human = [1] * 12 + [0] * 8
    good_judge = [1] * 11 + [0] + [0] * 7 + [1]
    bad_judge = [1] * 7 + [0] * 5 + [0] * 4 + [1] * 4
    gold = gold_labels(_labels({"a": human, "b": human}))
    for judge, warned in ((good_judge, False), (bad_judge, True)):
        scores = {(f"ex_{i:012d}", "correct_intent"): s for i, s in enumerate(judge)}
        [row] = judge_calibration(gold, scores)
        assert row["n"] == 20
        assert row["kappa"] == pytest.approx(cohen_kappa_score(judge, human))
        table = np.zeros((2, 2))
        for j, h in zip(judge, human):
            table[j, h] += 1
        sm = sm_cohens_kappa(table)
        # statsmodels' asymptotic interval, clipped to kappa's range [-1, 1]
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(max(-1.0, sm.kappa_low)),
                                                   pytest.approx(min(1.0, sm.kappa_upp)))
        assert row["ci_low"] < row["kappa"] < row["ci_high"]
        assert (row["warning"] is not None) is warned
    # bad judge by hand: po 11/20, chance 0.55 * 0.6 + 0.45 * 0.4 = 0.51 -> kappa 0.04 / 0.49
    assert row["kappa"] == pytest.approx(0.04 / 0.49)
    assert f"{row['kappa']:.2f}" in row["warning"] and "correct_intent" in row["warning"]


def test_judge_calibration_undefined_kappa_warns():
    gold = gold_labels(_labels({"a": [1, 1, 1], "b": [1, 1, 1]}))
    [row] = judge_calibration(gold, {(f"ex_{i:012d}", "correct_intent"): 1 for i in range(3)})
    assert row["kappa"] is None and row["warning"].startswith("kappa undefined") and row["raw_agreement"] == 1.0


# ----------------------------------------------------------------------------------------------
# degenerate data: undefined with the reason and the raw agreement, never a collapsed interval
# ----------------------------------------------------------------------------------------------


def test_a_judge_giving_every_item_one_score_has_no_kappa_and_no_interval():
    # the humans split 12 passes / 8 fails; the judge passes everything: kappa would be exactly 0
    # with a standard error of about 0 ("0.00, 95% CI -1.8e-07 to 1.8e-07")
    gold = gold_labels(_labels({"a": [1] * 12 + [0] * 8, "b": [1] * 12 + [0] * 8}))
    [row] = judge_calibration(gold, {(f"ex_{i:012d}", "correct_intent"): 1 for i in range(20)})
    assert (row["kappa"], row["ci_low"], row["ci_high"], row["band"]) == (None, None, None, None)
    assert row["warning"] == ("kappa undefined: the judge gave every item the same score (1), so chance agreement "
                              "equals observed agreement and kappa is 0 whatever the agreement; "
                              "raw agreement 60% (12 of 20)")
    assert row["raw_agreement"] == pytest.approx(0.6)


def test_humans_on_one_level_or_a_tiny_set_leave_the_judge_kappa_undefined():
    gold = gold_labels(_labels({"a": [1] * 10, "b": [1] * 10}))
    [row] = judge_calibration(gold, {(f"ex_{i:012d}", "correct_intent"): i % 2 for i in range(10)})
    assert row["kappa"] is None and "the human majority gave every item the same score (1)" in row["warning"]
    assert row["warning"].endswith("raw agreement 50% (5 of 10)")
    gold = gold_labels(_labels({"a": [1, 0, 1, 0], "b": [1, 0, 1, 0]}))
    [row] = judge_calibration(gold, {(f"ex_{i:012d}", "correct_intent"): 1 - i % 2 for i in range(4)})
    assert row["kappa"] is None and row["ci_low"] is None
    assert row["warning"] == "kappa undefined: only 4 items (at least 5 needed); raw agreement 100% (4 of 4)"


def test_perfect_judge_agreement_has_kappa_1_and_no_zero_width_interval():
    gold = gold_labels(_labels({"a": [1, 0] * 5, "b": [1, 0] * 5}))
    [row] = judge_calibration(gold, {(f"ex_{i:012d}", "correct_intent"): 1 - i % 2 for i in range(10)})
    assert row["kappa"] == pytest.approx(1.0) and (row["ci_low"], row["ci_high"]) == (None, None)
    assert row["warning"] is None


def test_one_annotator_on_one_level_makes_the_pair_kappa_undefined():
    [row] = criterion_agreement(_labels({"a": [1] * 8, "b": [1, 1, 1, 1, 1, 1, 0, 0]}))
    assert row["value"] is None and row["flags"] == [] and row["band"] is None
    assert row["note"] == ("kappa is undefined: annotator a gave every item the same score (1), so chance agreement "
                           "equals observed agreement and kappa is 0 whatever the agreement; "
                           "annotators agree on 75% of pairs")


def test_alpha_on_a_tiny_set_is_undefined_with_the_pairwise_agreement():
    [row] = criterion_agreement(_labels({"a": [1, 0, 1], "b": [1, 0, 0], "c": [1, 0, 1]}))
    assert row["method"] == "krippendorff_alpha" and row["value"] is None
    assert row["note"] == "alpha is undefined: only 3 items (at least 5 needed); annotators agree on 78% of pairs"


@settings(derandomize=True, max_examples=80, deadline=None)
@given(n=st.integers(1, 30), annotators=st.integers(2, 4), scale=st.sampled_from(["binary", "three_point"]),
       data=st.data())
def test_agreement_and_calibration_are_a_value_with_a_real_interval_or_undefined_with_a_reason(n, annotators, scale,
                                                                                              data):
    top = 1 if scale == "binary" else 2
    level = st.integers(0, top)
    scores = {f"a{k}": data.draw(st.lists(level, min_size=n, max_size=n)) for k in range(annotators)}
    for row in criterion_agreement(_labels(scores, scale=scale)):
        if row["value"] is None:
            assert "undefined" in row["note"] and "of pairs" in row["note"] and row["flags"] == []
        else:
            assert math.isfinite(row["value"]) and row["n_items"] >= 5
    gold = gold_labels(_labels(scores, scale=scale))
    judge = data.draw(st.lists(level, min_size=n, max_size=n))
    for row in judge_calibration(gold, {(f"ex_{i:012d}", "correct_intent"): s for i, s in enumerate(judge)}):
        if row["kappa"] is None:
            assert (row["ci_low"], row["ci_high"], row["band"]) == (None, None, None)
            assert row["warning"].startswith("kappa undefined: ") and "raw agreement" in row["warning"]
        else:
            assert len(set(judge)) > 1 and row["n"] >= 5 and math.isfinite(row["kappa"])
            if row["ci_low"] is not None:
                assert row["ci_low"] <= row["kappa"] <= row["ci_high"] and row["ci_high"] - row["ci_low"] > 1e-6
