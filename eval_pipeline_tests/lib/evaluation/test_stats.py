"""Tests for eval_pipeline.lib.evaluation.stats: published values (each with its source), properties, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval_pipeline.lib.evaluation import stats as S
from eval_pipeline.lib.evaluation.stats import (
    Agreement,
    Interval,
    PairedComparison,
    agreement_band,
    cohens_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    minimum_detectable_effect,
    paired_comparison,
    paired_comparison_from_counts,
    power_analysis,
    power_paired,
    power_report,
    power_two_proportions,
    sample_size_paired,
    sample_size_paired_unrounded,
    sample_size_two_proportions,
    sample_size_two_proportions_unrounded,
    weighted_wilson_interval,
    wilson_interval,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Krippendorff K (2011) "Computing Krippendorff's Alpha-Reliability", example C (4 observers,
# 12 units, missing values); the same matrix is in the docstring of the `krippendorff` package.
KRIPP_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories, kappa = 0.210.
FLEISS_WIKIPEDIA = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]

# Agresti (1990) / Friendly (2000, Visualizing Categorical Data, p. 91): husbands' (rows) and
# wives' (columns) ratings of 91 couples, the `SexualFun` data of R's vcd package.
SEXUAL_FUN = [[7, 7, 2, 3], [2, 8, 3, 7], [1, 5, 4, 9], [2, 8, 9, 14]]


def _raters_from_table(table: list[list[int]]) -> tuple[list[int], list[int]]:
    a: list[int] = []
    b: list[int] = []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            a += [i] * count
            b += [j] * count
    return a, b


# ---------------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # Newcombe RG (1998) "Two-sided confidence intervals for the single proportion: comparison
        # of seven methods", Stat Med 17:857-872, Table I, method 3 (Wilson score, no CC).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombe_table_1(k: int, n: int, low: float, high: float) -> None:
    ci = wilson_interval(k, n)
    assert isinstance(ci, Interval)
    assert ci.low == pytest.approx(low, abs=5e-5)
    assert ci.high == pytest.approx(high, abs=5e-5)
    assert ci.estimate == pytest.approx(k / n)
    assert ci.n == n
    assert ci.method == "wilson"


def test_wilson_all_successes_reaches_one() -> None:
    ci = wilson_interval(20, 20)
    assert ci.high == 1.0
    assert ci.low < 1.0


@FAST
@given(
    n=st.integers(min_value=1, max_value=5000),
    frac=st.floats(min_value=0, max_value=1),
    confidence=st.floats(min_value=0.5, max_value=0.999),
)
def test_wilson_contains_estimate_and_stays_in_unit_interval(
    n: int, frac: float, confidence: float
) -> None:
    k = round(frac * n)
    ci = wilson_interval(k, n, confidence)
    assert 0.0 <= ci.low <= ci.estimate <= ci.high <= 1.0


@FAST
@given(
    passed=st.lists(st.booleans(), min_size=1, max_size=200),
    weight=st.floats(min_value=1e-3, max_value=1e3),
)
def test_weighted_wilson_with_equal_weights_is_the_plain_wilson(
    passed: list[bool], weight: float
) -> None:
    weighted = weighted_wilson_interval(passed, [weight] * len(passed))
    plain = wilson_interval(sum(passed), len(passed))
    assert weighted.n == pytest.approx(len(passed))
    assert weighted.estimate == pytest.approx(plain.estimate)
    assert weighted.low == pytest.approx(plain.low, abs=1e-9)
    assert weighted.high == pytest.approx(plain.high, abs=1e-9)


@FAST
@given(
    data=st.lists(
        st.tuples(st.booleans(), st.floats(min_value=0.01, max_value=100)), min_size=1, max_size=100
    )
)
def test_weighted_wilson_contains_estimate_and_stays_in_unit_interval(
    data: list[tuple[bool, float]],
) -> None:
    passed = [p for p, _ in data]
    weights = [w for _, w in data]
    ci = weighted_wilson_interval(passed, weights)
    assert 0.0 <= ci.low <= ci.estimate <= ci.high <= 1.0
    assert 1.0 - 1e-9 <= ci.n <= len(data) + 1e-9  # Kish: 1 <= n_eff <= n


def test_weighted_wilson_uses_kish_effective_sample_size() -> None:
    # weights 1,1,1,3: n_eff = 6^2 / 12 = 3 (Kish 1965); pass rate (1 + 3) / 6.
    ci = weighted_wilson_interval([False, False, True, True], [1, 1, 1, 3])
    assert ci.n == pytest.approx(3.0)
    assert ci.estimate == pytest.approx(4 / 6)
    assert ci.method == "wilson-kish"


def test_weighted_wilson_zero_weight_drops_example() -> None:
    ci = weighted_wilson_interval([True, False, True], [1.0, 0.0, 1.0])
    plain = wilson_interval(2, 2)
    assert ci.estimate == pytest.approx(1.0)
    assert ci.low == pytest.approx(plain.low)


# ---------------------------------------------------------------------------------- paired


def test_mcnemar_chi2_with_continuity_correction() -> None:
    # Table of the example in Wikipedia's "McNemar's test" article, [[101, 121], [59, 33]].
    # Continuity-corrected statistic (Edwards 1948, Psychometrika 13:185-187):
    # (|121 - 59| - 1)^2 / (121 + 59) = 20.672; 180 discordant pairs >= 25 -> chi2;
    # p = chi2(1 df) survival at 20.672 = 5.45e-06.
    r = paired_comparison_from_counts(101, 121, 59, 33)
    assert r.test == "chi2"
    assert r.statistic == pytest.approx(20.672, abs=5e-4)
    assert r.p_value == pytest.approx(5.45e-06, rel=1e-2)
    assert r.table == ((101, 121), (59, 33))
    assert r.discordant == 180


def test_mcnemar_exact_p_value() -> None:
    # Same table, exact McNemar: two-sided binomial p = 2 * P(X <= 59 | n = 180, p = 1/2)
    # = 4.43e-06 (value from the task brief; the binomial formula is McNemar 1947,
    # Psychometrika 12:153-157, exact form).
    r = paired_comparison_from_counts(101, 121, 59, 33, test="exact")
    assert r.test == "exact"
    assert r.p_value == pytest.approx(4.43e-06, rel=2e-3)
    assert r.statistic == 59


def test_mcnemar_auto_uses_exact_below_25_discordant_pairs() -> None:
    assert paired_comparison_from_counts(50, 12, 12, 20).test == "exact"  # 24 discordant
    assert paired_comparison_from_counts(50, 12, 13, 20).test == "chi2"  # 25 discordant


def test_paired_comparison_from_sequences_orientation() -> None:
    baseline = [True, True, True, False, False, True]
    candidate = [True, False, True, True, False, True]
    r = paired_comparison(baseline, candidate)
    assert isinstance(r, PairedComparison)
    # rows = baseline (pass, fail), columns = candidate (pass, fail)
    assert r.table == ((3, 1), (1, 1))
    assert r.baseline_rate == pytest.approx(4 / 6)
    assert r.candidate_rate == pytest.approx(4 / 6)
    assert r.difference == pytest.approx(0.0)
    assert r.test == "exact"
    assert r.p_value == pytest.approx(1.0)
    assert r.n == 6
    assert r.discordance == pytest.approx(2 / 6)


def test_newcombe_paired_interval_published_example() -> None:
    # Fagerland, Lydersen & Laake (2017) Statistical Analysis of Contingency Tables, ch. 8,
    # Cavo et al. (2012) example [[59, 6], [16, 80]]: Newcombe square-and-add (= Newcombe 1998,
    # Stat Med 17:2635-2650, method 10) estimate -0.0621, 95% CI -0.1186 to -0.0046, for
    # (row-1 margin) - (column-1 margin). Here the row margin is the candidate: both pass 59,
    # candidate only 6, baseline only 16, both fail 80.
    r = paired_comparison_from_counts(59, 16, 6, 80)
    assert r.difference == pytest.approx(-0.0621, abs=5e-5)
    assert r.interval.low == pytest.approx(-0.1186, abs=5e-5)
    assert r.interval.high == pytest.approx(-0.0046, abs=5e-5)
    assert r.interval.method == "newcombe-paired-10"
    # swapping the roles mirrors the interval
    s = paired_comparison_from_counts(59, 6, 16, 80)
    assert s.interval.low == pytest.approx(-r.interval.high)
    assert s.interval.high == pytest.approx(-r.interval.low)


@FAST
@given(
    pairs=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=300),
    confidence=st.floats(min_value=0.5, max_value=0.999),
)
def test_paired_interval_contains_difference(
    pairs: list[tuple[bool, bool]], confidence: float
) -> None:
    r = paired_comparison([a for a, _ in pairs], [b for _, b in pairs], confidence)
    assert -1.0 <= r.interval.low <= r.difference <= r.interval.high <= 1.0
    assert 0.0 <= r.p_value <= 1.0
    assert not math.isnan(r.statistic)


# ---------------------------------------------------------------------------------- power


def test_power_matches_r_power_prop_test() -> None:
    # R: power.prop.test(n = 50, p1 = .5, p2 = .75) -> power = 0.7401659
    assert power_two_proportions(50, 0.5, 0.75) == pytest.approx(0.7402, abs=5e-5)


def test_sample_size_matches_r_power_prop_test() -> None:
    # R: power.prop.test(p1 = .5, p2 = .75, power = .9) -> n = 76.7 (per group), so 77
    assert sample_size_two_proportions_unrounded(0.5, 0.75, power=0.9) == pytest.approx(76.7, abs=0.05)
    assert sample_size_two_proportions(0.5, 0.75, power=0.9) == 77
    # symmetric in p1 / p2
    assert sample_size_two_proportions(0.75, 0.5, power=0.9) == 77


def test_connor_worked_example() -> None:
    # Connor RJ (1987) Biometrics 43:207-211, worked example: p01 = .45, p10 = .05, alpha .05,
    # power .8 -> 23 pairs.
    assert sample_size_paired(0.45, 0.05, power=0.8) == 23
    assert sample_size_paired_unrounded(0.45, 0.05) == pytest.approx(22.01, abs=0.01)


@pytest.mark.parametrize(("p1", "p2"), [(0.8, 0.75), (0.5, 0.75), (0.1, 0.02), (0.95, 0.99)])
def test_sample_size_and_power_are_inverse(p1: float, p2: float) -> None:
    n = sample_size_two_proportions_unrounded(p1, p2, power=0.8)
    assert power_two_proportions(n, p1, p2) == pytest.approx(0.8, abs=1e-9)
    m = sample_size_paired_unrounded(abs(p1 - p2) / 2, abs(p1 - p2) * 1.5, power=0.8)
    assert power_paired(m, abs(p1 - p2) / 2, abs(p1 - p2) * 1.5) == pytest.approx(0.8, abs=1e-9)


@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("baseline", [0.05, 0.3, 0.5, 0.8, 0.99])
def test_minimum_detectable_effect_round_trips(paired: bool, baseline: float) -> None:
    n = 400
    mde = minimum_detectable_effect(n, baseline, paired=paired)
    assert 0 < mde < 1
    target = baseline - mde if baseline >= 0.5 else baseline + mde
    if paired:
        psi = S.default_discordance(baseline, mde)
        p_against, p_with = (psi - mde) / 2, (psi + mde) / 2
        assert power_paired(n, p_against, p_with) == pytest.approx(0.8, abs=1e-6)
    else:
        assert power_two_proportions(n, baseline, target) == pytest.approx(0.8, abs=1e-6)


def test_minimum_detectable_effect_shrinks_with_n() -> None:
    small = minimum_detectable_effect(100, 0.8, paired=False)
    large = minimum_detectable_effect(1000, 0.8, paired=False)
    assert large < small


def test_minimum_detectable_effect_uses_measured_discordance() -> None:
    previous = paired_comparison_from_counts(75, 5, 5, 15)  # discordance 10%
    from_run = minimum_detectable_effect(350, 0.8, discordance=previous)
    from_float = minimum_detectable_effect(350, 0.8, discordance=0.10)
    assert from_run == pytest.approx(from_float)
    assert power_paired(350, (0.10 - from_run) / 2, (0.10 + from_run) / 2) == pytest.approx(0.8, abs=1e-6)
    # more churn between versions -> harder to detect
    assert minimum_detectable_effect(350, 0.8, discordance=0.3) > from_float


# ---------------------------------------------------------------------------------- report


def test_power_report_paired_versus_independent() -> None:
    r = power_analysis(0.8, effect=0.05)
    # computed from Connor (1987) and R's power.prop.test formulas, with psi = 2 x 0.05 = 0.10
    assert r.paired_n < 400
    assert r.independent_n > 900
    assert r.paired_n == sample_size_paired(0.025, 0.075)
    assert r.independent_n == sample_size_two_proportions(0.8, 0.75)
    assert r.discordance == pytest.approx(0.10)
    assert r.mde_independent > 0.05 >= r.mde_paired
    text = power_report(0.8, effect=0.05)
    assert f"{r.paired_n:,} examples" in text
    assert f"{r.independent_n:,} examples per version" in text
    assert "only in a paired design" in text
    assert "Assumed discordance: 10.0%" in text


def test_power_report_slice_share_multiplies_by_inverse() -> None:
    whole = power_analysis(0.8, effect=0.05)
    sliced = power_analysis(0.8, effect=0.05, slice_share=0.1)
    assert sliced.paired_n == whole.paired_n
    assert sliced.paired_total == 10 * whole.paired_n
    assert sliced.independent_total == 10 * whole.independent_n
    text = power_report(0.8, effect=0.05, slice_share=0.1)
    assert f"{10 * whole.paired_n:,} in the whole eval set" in text
    assert f"{10 * whole.independent_n:,} in the whole eval set" in text


def test_power_report_from_set_size() -> None:
    r = power_analysis(0.8, n=350)
    assert r.mde_at == 350
    assert r.mde_paired == pytest.approx(minimum_detectable_effect(350, 0.8))
    assert r.mde_independent == pytest.approx(minimum_detectable_effect(350, 0.8, paired=False))
    assert r.paired_n <= 350
    text = power_report(0.8, n=350)
    assert "eval set of 350 examples" in text
    assert f"{100 * r.mde_paired:.1f} points" in text
    # with a 10% slice, only 35 examples are in the slice
    assert power_analysis(0.8, n=350, slice_share=0.1).mde_at == 35


# ---------------------------------------------------------------------------------- agreement


def test_krippendorff_2011_published_values() -> None:
    # Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability", example C:
    # nominal 0.743, ordinal 0.815, interval 0.849, ratio 0.797.
    expected = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}
    for level, value in expected.items():
        result = krippendorff_alpha(KRIPP_2011, level=level)
        assert isinstance(result, Agreement)
        assert result.value == pytest.approx(value, abs=5e-4), level
        assert result.method == f"krippendorff_alpha_{level}"
        assert result.n_raters == 4 and result.n_items == 12


def test_krippendorff_missing_as_nan_and_labels_with_domain() -> None:
    with_nan = [[np.nan if v is None else v for v in row] for row in KRIPP_2011]
    assert krippendorff_alpha(with_nan, "ordinal").value == pytest.approx(0.815, abs=5e-4)
    # Same data as ordered labels (docstring of the krippendorff package): ordinal 0.815,
    # nominal 0.743.
    names = {1: "very low", 2: "low", 3: "mid", 4: "high", 5: "very high"}
    labelled = [[None if v is None else names[v] for v in row] for row in KRIPP_2011]
    domain = ["very low", "low", "mid", "high", "very high"]
    assert krippendorff_alpha(labelled, "ordinal", value_domain=domain).value == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(labelled, "nominal").value == pytest.approx(0.743, abs=5e-4)


@FAST
@given(
    data=st.integers(min_value=2, max_value=8).flatmap(
        lambda items: st.tuples(
            st.lists(
                st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=items, max_size=items),
                min_size=2,
                max_size=4,
            ),
            st.permutations(range(items)),
            st.sampled_from(["nominal", "ordinal", "interval", "ratio"]),
        )
    )
)
def test_krippendorff_invariant_to_item_order(
    data: tuple[list[list[int | None]], list[int], str],
) -> None:
    rows, perm, level = data
    permuted = [[row[j] for j in perm] for row in rows]
    try:
        original = krippendorff_alpha(rows, level).value
    except ValueError:
        with pytest.raises(ValueError):
            krippendorff_alpha(permuted, level)
        return
    assert krippendorff_alpha(permuted, level).value == pytest.approx(original, abs=1e-9)


def test_cohens_kappa_sklearn_docs_example() -> None:
    # scikit-learn `cohen_kappa_score` docstring example -> 0.6875
    y1 = ["negative", "positive", "negative", "neutral", "positive"]
    y2 = ["negative", "positive", "negative", "neutral", "negative"]
    result = cohens_kappa(y1, y2)
    assert result.value == pytest.approx(0.6875)
    assert result.method == "cohen_kappa"
    assert result.band == "good"


def test_weighted_kappa_published_values() -> None:
    # R vcd::Kappa(SexualFun) documented output (Friendly 2000, p. 91): unweighted 0.1293,
    # weighted with equal-spacing (= linear) weights 0.2374.
    a, b = _raters_from_table(SEXUAL_FUN)
    assert cohens_kappa(a, b).value == pytest.approx(0.1293, abs=5e-5)
    linear = cohens_kappa(a, b, weights="linear")
    assert linear.value == pytest.approx(0.2374, abs=5e-5)
    assert linear.method == "cohen_kappa_linear"
    # quadratic weights: cross-checked against statsmodels' independent implementation
    from statsmodels.stats.inter_rater import cohens_kappa as sm_cohens_kappa

    expected = sm_cohens_kappa(np.array(SEXUAL_FUN), wt="quadratic").kappa
    assert cohens_kappa(a, b, weights="quadratic").value == pytest.approx(expected)


def test_weighted_kappa_uses_given_label_order() -> None:
    names = ["never", "fairly often", "very often", "always"]
    a, b = _raters_from_table(SEXUAL_FUN)
    la, lb = [names[i] for i in a], [names[i] for i in b]
    assert cohens_kappa(la, lb, weights="linear", labels=names).value == pytest.approx(0.2374, abs=5e-5)


@FAST
@given(st.lists(st.sampled_from(["pass", "fail", "partial"]), min_size=2, max_size=50))
def test_kappa_of_identical_raters_is_one(labels: list[str]) -> None:
    if len(set(labels)) < 2:
        with pytest.raises(ValueError, match="undefined"):
            cohens_kappa(labels, labels)
        return
    assert cohens_kappa(labels, labels).value == pytest.approx(1.0)
    assert cohens_kappa(labels, labels, weights="quadratic", labels=["fail", "partial", "pass"]).value == pytest.approx(1.0)


def test_fleiss_kappa_wikipedia_example() -> None:
    # Wikipedia, "Fleiss' kappa", worked example -> 0.210
    result = fleiss_kappa(FLEISS_WIKIPEDIA, kind="counts")
    assert result.value == pytest.approx(0.210, abs=5e-4)
    assert result.n_items == 10 and result.n_raters == 14
    assert result.band == "poor"


def test_fleiss_kappa_from_ratings_matches_counts() -> None:
    ratings = [
        [cat for cat, count in enumerate(row) for _ in range(count)] for row in FLEISS_WIKIPEDIA
    ]
    labelled = [[f"c{v}" for v in row] for row in ratings]
    expected = fleiss_kappa(FLEISS_WIKIPEDIA, kind="counts").value
    assert fleiss_kappa(labelled).value == pytest.approx(expected)  # strings: inferred as ratings
    assert fleiss_kappa(ratings, kind="ratings").value == pytest.approx(expected)


def test_fleiss_kappa_rejects_ambiguous_integer_table() -> None:
    with pytest.raises(ValueError, match="ambiguous"):
        fleiss_kappa(FLEISS_WIKIPEDIA)


@pytest.mark.parametrize(
    ("value", "band"),
    [(-0.2, "poor"), (0.0, "poor"), (0.399, "poor"), (0.4, "moderate"), (0.599, "moderate"), (0.6, "good"), (1.0, "good")],
)
def test_agreement_bands(value: float, band: str) -> None:
    assert agreement_band(value) == band


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: wilson_interval(0, 0), "n must be at least 1"),
        (lambda: wilson_interval(5, 3), r"successes \(5\) cannot exceed n \(3\)"),
        (lambda: wilson_interval(-1, 3), "successes must be a non-negative count"),
        (lambda: wilson_interval(1, -3), "n must be a non-negative count"),
        (lambda: wilson_interval(1.5, 3), "successes must be an integer count"),
        (lambda: wilson_interval(1, 3, confidence=1.0), "confidence must be strictly between 0 and 1"),
        (lambda: wilson_interval(1, 3, confidence=0), "confidence must be strictly between 0 and 1"),
        (lambda: wilson_interval(1, 3, confidence=float("nan")), "confidence must be finite"),
        (lambda: weighted_wilson_interval([], []), "passed is empty"),
        (lambda: weighted_wilson_interval([True], [1.0, 2.0]), "same length"),
        (lambda: weighted_wilson_interval([True, False], [1.0, -2.0]), "non-negative"),
        (lambda: weighted_wilson_interval([True, False], [0.0, 0.0]), "weights sum to zero"),
        (lambda: weighted_wilson_interval([True, False], [1.0, float("inf")]), "finite"),
        (lambda: weighted_wilson_interval([True, "yes"], [1.0, 1.0]), r"passed\[1\] must be a bool"),
        (lambda: paired_comparison([True, False], [True]), "same length"),
        (lambda: paired_comparison([], []), "baseline_pass is empty"),
        (lambda: paired_comparison([True], [True], confidence=1.5), "confidence"),
        (lambda: paired_comparison([True], [False], test="z"), "test must be"),
        (lambda: paired_comparison_from_counts(0, 0, 0, 0), "no examples"),
        (lambda: paired_comparison_from_counts(1, -1, 0, 0), "baseline_only must be a non-negative count"),
        (lambda: paired_comparison_from_counts(5, 0, 0, 5, test="chi2"), "no discordant pairs"),
        (lambda: power_two_proportions(50, 1.2, 0.5), r"p1 must be a rate in \[0, 1\]"),
        (lambda: power_two_proportions(0, 0.5, 0.7), "n must be positive"),
        (lambda: power_two_proportions(10, 1.0, 1.0), "no variability"),
        (lambda: sample_size_two_proportions(0.5, 0.5), "no difference to detect"),
        (lambda: sample_size_two_proportions(0.5, -0.1), r"p2 must be a rate in \[0, 1\]"),
        (lambda: sample_size_two_proportions(0.5, 0.6, alpha=0), "alpha must be strictly between"),
        (lambda: sample_size_two_proportions(0.5, 0.6, power=1.0), "power must be strictly between"),
        (lambda: sample_size_paired(0.3, 0.3), "no difference to detect"),
        (lambda: sample_size_paired(0.7, 0.6), "p01 \\+ p10 must be at most 1"),
        (lambda: sample_size_paired(0.0, 0.0), "both 0"),
        (lambda: minimum_detectable_effect(0, 0.8), "n must be positive"),
        (lambda: minimum_detectable_effect(100, 1.5), r"baseline_rate must be a rate in \[0, 1\]"),
        (lambda: minimum_detectable_effect(2, 0.8), "too small"),
        (lambda: minimum_detectable_effect(100, 0.8, discordance=0.0), r"discordance must be in \(0, 1\]"),
        (lambda: minimum_detectable_effect(100, 0.8, paired=False, discordance=0.1), "only applies to paired"),
        (lambda: minimum_detectable_effect(100, 0.8, discordance=paired_comparison_from_counts(5, 0, 0, 5)), "no discordant examples"),
        (lambda: minimum_detectable_effect(350, 0.8, discordance=0.02), "too small for discordance"),
        (lambda: power_report(0.8), "exactly one of effect"),
        (lambda: power_report(0.8, effect=0.05, n=300), "exactly one of effect"),
        (lambda: power_report(0.8, effect=0.05, slice_share=0), r"slice_share must be in \(0, 1\]"),
        (lambda: power_report(0.8, effect=0.05, slice_share=1.5), r"slice_share must be in \(0, 1\]"),
        (lambda: power_report(0.8, effect=0.9), "too large for baseline rate"),
        (lambda: power_report(0.8, effect=-0.05), "effect must be strictly between 0 and 1"),
        (lambda: power_report(0.8, effect=0.05, discordance=0.03), "impossible with discordance"),
        (lambda: power_report(0.8, n=0), "n must be at least 1"),
        (lambda: power_report(0.8, n=10, slice_share=0.1), "at least 2 are needed"),
        (lambda: power_report(-0.1, effect=0.05), r"baseline_rate must be a rate in \[0, 1\]"),
        (lambda: cohens_kappa([1, 2], [1]), "same length"),
        (lambda: cohens_kappa([], []), "a is empty"),
        (lambda: cohens_kappa([1], [1]), "at least 2 items"),
        (lambda: cohens_kappa(["a", "a"], ["a", "a"]), "undefined"),
        (lambda: cohens_kappa([1, None], [1, 2]), "missing"),
        (lambda: cohens_kappa([1, 2], [1, 2], weights="cubic"), "weights must be"),
        (lambda: cohens_kappa(["lo", "hi"], ["lo", "hi"], weights="linear"), "pass labels"),
        (lambda: cohens_kappa(["lo", "hi"], ["lo", "mid"], labels=["lo", "hi"]), "not in labels"),
        (lambda: krippendorff_alpha([[1, 2, 3]]), "at least 2 annotators"),
        (lambda: krippendorff_alpha([[1], [1]]), "at least 2 items"),
        (lambda: krippendorff_alpha([[1, 2], [1]]), "one entry per item"),
        (lambda: krippendorff_alpha([[None, None], [None, np.nan]]), "all values are missing"),
        (lambda: krippendorff_alpha([[1, None], [None, 2]]), "no item was rated by at least two"),
        (lambda: krippendorff_alpha([[1, 1, 2], [1, 1, None]]), "alpha is undefined"),
        (lambda: krippendorff_alpha([[1, 2], [1, 2]], level="nominalish"), "level must be one of"),
        (lambda: krippendorff_alpha([["a", "b"], ["a", "b"]], level="interval"), "must be a real number"),
        (lambda: krippendorff_alpha([[1, -2], [1, 2]], level="ratio"), "non-negative"),
        (lambda: krippendorff_alpha([[1, 2], [1, 3]], level="ordinal", value_domain=[1, 2]), "not in value_domain"),
        (lambda: krippendorff_alpha([[1, 2], [1, 2]], level="interval", value_domain=[1, 2]), "value_domain applies"),
        (lambda: krippendorff_alpha([], "nominal"), "reliability_data is empty"),
        (lambda: fleiss_kappa([[2, 0]]), "at least 2 items"),
        (lambda: fleiss_kappa([[2, 0], [1, 2]], kind="counts"), "same number of raters"),
        (lambda: fleiss_kappa([[1, 0], [0, 1]], kind="counts"), "at least 2 raters per item"),
        (lambda: fleiss_kappa([["a"], ["b"]], kind="ratings"), "at least 2 raters"),
        (lambda: fleiss_kappa([["a", None], ["b", "b"]]), "missing"),
        (lambda: fleiss_kappa([["a", "a"], ["a", "a"]]), "undefined"),
        (lambda: fleiss_kappa([[3, 0], [3, 0]], kind="counts"), "undefined"),
        (lambda: fleiss_kappa([[1, -1], [0, 0]], kind="counts"), "non-negative integers"),
        (lambda: fleiss_kappa([[1, 2], [2, 1]], kind="table"), "kind must be"),
        (lambda: agreement_band(float("nan")), "finite"),
    ],
)
def test_bad_input_raises_value_error(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()


def test_no_function_returns_nan_for_degenerate_but_valid_input() -> None:
    # all pass on both sides: difference 0, exact McNemar p = 1, finite interval
    r = paired_comparison([True] * 10, [True] * 10)
    assert r.p_value == 1.0 and r.difference == 0.0
    assert not any(math.isnan(x) for x in (r.interval.low, r.interval.high, r.statistic))
    # raters who disagree completely with single categories: kappa 0 (defined)
    assert cohens_kappa(["a", "a"], ["b", "b"]).value == pytest.approx(0.0)
    assert "nan" not in power_report(0.5, n=30).lower()
