"""Statistics for eval sets: pass-rate intervals, paired comparisons, power and rater agreement.

Plain functions with frozen, typed results and no Dagster import. The work is delegated to
statsmodels, scikit-learn, scipy and the ``krippendorff`` package wherever they already compute
the quantity; only what they lack is written here:

* Newcombe's (1998) hybrid-score interval for a difference of *paired* proportions;
* the closed-form power / sample-size formulas of R's ``power.prop.test`` (statsmodels'
  ``NormalIndPower`` works on Cohen's arcsine effect size ``h`` and does not reproduce them:
  for n=50, p1=.5, p2=.75 it gives power 0.745, not R's 0.7402);
* Connor's (1987) power / sample size for McNemar's test (paired design);
* the minimum detectable effect and the text of ``eval-pipeline power``.

Conventions
-----------
* Rates are proportions in [0, 1]; an *effect* is an absolute difference in pass rate
  (0.05 = 5 percentage points).
* All tests and power calculations are two-sided.
* Bad input raises :class:`ValueError` with a message saying what was wrong. No function returns
  NaN: where a statistic is mathematically undefined (e.g. kappa when both raters use one and the
  same category, so that chance agreement is 1) a ``ValueError`` says so instead.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import krippendorff as _krippendorff
import numpy as np
from scipy import optimize
from scipy.stats import norm
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.contingency_tables import mcnemar as _sm_mcnemar
from statsmodels.stats.inter_rater import aggregate_raters as _sm_aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as _sm_fleiss_kappa
from statsmodels.stats.proportion import proportion_confint

__all__ = [
    "AGREEMENT_BANDS",
    "DEFAULT_DISCORDANCE_RATIO",
    "MCNEMAR_EXACT_BELOW",
    "Agreement",
    "Interval",
    "PairedComparison",
    "PowerAnalysis",
    "agreement_band",
    "cohens_kappa",
    "default_discordance",
    "fleiss_kappa",
    "krippendorff_alpha",
    "minimum_detectable_effect",
    "paired_comparison",
    "paired_comparison_from_counts",
    "power_analysis",
    "power_paired",
    "power_report",
    "power_two_proportions",
    "sample_size_paired",
    "sample_size_paired_unrounded",
    "sample_size_two_proportions",
    "sample_size_two_proportions_unrounded",
    "weighted_wilson_interval",
    "wilson_interval",
]

#: McNemar's test uses the exact binomial form when the number of discordant pairs is below this,
#: and the continuity-corrected chi-square otherwise. The chi-square approximation is usually
#: judged adequate from b + c >= 25 (see e.g. the "McNemar's test" article of Wikipedia, which
#: recommends the exact binomial test when b + c < 25).
MCNEMAR_EXACT_BELOW = 25

#: Default assumption for the share of examples whose outcome flips between two model versions
#: (discordance, p01 + p10) when no measured value is given: DEFAULT_DISCORDANCE_RATIO x the
#: change in pass rate. See :func:`default_discordance`.
DEFAULT_DISCORDANCE_RATIO = 2.0

#: Interpretation bands for agreement coefficients, as (lower bound, name), checked top-down.
#: A coarse project convention built from two published scales: Fleiss (1981, Statistical Methods
#: for Rates and Proportions, 2nd ed., p. 218) calls kappa below 0.40 "poor"; Landis & Koch (1977,
#: Biometrics 33:159-174) call 0.41-0.60 "moderate" and 0.61-0.80 "substantial". We name
#: [0.6, 1] "good". Note that Krippendorff (2004, Content Analysis, 2nd ed., p. 241) asks for
#: alpha >= 0.800 (>= 0.667 for tentative conclusions), stricter than "good" here.
AGREEMENT_BANDS: tuple[tuple[float, str], ...] = ((0.6, "good"), (0.4, "moderate"))

_RATIO_EPS = 1e-9


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------


def _real(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def _count(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer count, got {value!r}")
    result = int(value)
    if result < 0:
        raise ValueError(f"{name} must be a non-negative count, got {result}")
    return result


def _rate(name: str, value: Any) -> float:
    result = _real(name, value)
    if not 0.0 <= result <= 1.0:
        raise ValueError(f"{name} must be a rate in [0, 1], got {result}")
    return result


def _open_unit(name: str, value: Any) -> float:
    result = _real(name, value)
    if not 0.0 < result < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {result}")
    return result


def _confidence(value: Any) -> float:
    return _open_unit("confidence", value)


def _alpha_power(alpha: Any, power: Any) -> tuple[float, float]:
    a = _open_unit("alpha", alpha)
    p = _open_unit("power", power)
    if p <= a / 2:
        raise ValueError(
            f"power ({p}) must exceed alpha/2 ({a / 2}): a two-sided test rejects that often "
            "even when there is no effect"
        )
    return a, p


def _positive_n(name: str, value: Any) -> float:
    result = _real(name, value)
    if result <= 0:
        raise ValueError(f"{name} must be positive, got {result}")
    return result


def _sequence(name: str, values: Any) -> list[Any]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a sequence, got {type(values).__name__}")
    result = list(values)
    if not result:
        raise ValueError(f"{name} is empty")
    return result


def _bools(name: str, values: Any) -> list[bool]:
    out: list[bool] = []
    for i, v in enumerate(_sequence(name, values)):
        if isinstance(v, (bool, np.bool_)):
            out.append(bool(v))
        elif isinstance(v, numbers.Integral) and int(v) in (0, 1):
            out.append(bool(int(v)))
        else:
            raise ValueError(f"{name}[{i}] must be a bool (or 0/1), got {v!r}")
    return out


def _same_length(names: tuple[str, str], a: Sequence[Any], b: Sequence[Any]) -> None:
    if len(a) != len(b):
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same length, got {len(a)} and {len(b)}"
        )


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return True
    return False


def _ceil(x: float) -> int:
    """Round up, ignoring floating-point noise (76.70 -> 77, 312.0000000001 -> 312)."""
    return math.ceil(round(x, 9))


def _z(alpha: float) -> float:
    """Two-sided critical value z_{1 - alpha/2}."""
    return float(norm.ppf(1.0 - alpha / 2.0))


# ----------------------------------------------------------------------------------------------
# intervals
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A confidence interval around a point estimate.

    ``n`` is the number of observations behind the estimate; for a re-weighted pass rate it is
    Kish's effective sample size and need not be an integer.
    """

    low: float
    high: float
    estimate: float
    n: float
    method: str
    confidence: float = 0.95

    @property
    def width(self) -> float:
        return self.high - self.low

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _wilson(successes: float, n: float, confidence: float, method: str) -> Interval:
    low, high = proportion_confint(successes, n, alpha=1.0 - confidence, method="wilson")
    estimate = successes / n
    low = min(max(0.0, float(low)), estimate)
    high = max(min(1.0, float(high)), estimate)
    return Interval(low=low, high=high, estimate=estimate, n=n, method=method, confidence=confidence)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a pass rate ``successes / n``.

    Computed by statsmodels ``proportion_confint(method="wilson")`` (Wilson 1927, JASA
    22:209-212); without continuity correction, as in Newcombe (1998a, Stat Med 17:857-872,
    method 3), e.g. 81/263 -> 0.2553 to 0.3662.
    """
    n_ = _count("n", n)
    k = _count("successes", successes)
    if n_ == 0:
        raise ValueError("n must be at least 1, got 0")
    if k > n_:
        raise ValueError(f"successes ({k}) cannot exceed n ({n_})")
    return _wilson(k, n_, _confidence(confidence), method="wilson")


def weighted_wilson_interval(
    passed: Sequence[bool], weights: Sequence[float], confidence: float = 0.95
) -> Interval:
    """Wilson interval for a re-weighted pass rate, using Kish's effective sample size.

    The estimate is ``sum(w * passed) / sum(w)``; the interval is the Wilson interval of that
    proportion with ``n`` replaced by Kish's effective sample size
    ``n_eff = (sum w)^2 / sum w^2`` (Kish 1965, Survey Sampling, Wiley; equal weights give
    ``n_eff = n`` and the plain Wilson interval). Plugging the effective sample size into a
    binomial interval is the usual design-effect adjustment for weighted survey proportions
    (e.g. Korn & Graubard 1998, Survey Methodology 24:193-201; Dean & Pagano 2015, J Surv Stat
    Methodol 3:484-503). Weights must be finite and non-negative with a positive sum; a zero
    weight drops the example.
    """
    flags = _bools("passed", passed)
    raw = _sequence("weights", weights)
    _same_length(("passed", "weights"), flags, raw)
    w = np.array([_real(f"weights[{i}]", v) for i, v in enumerate(raw)], dtype=float)
    if (w < 0).any():
        bad = int(np.flatnonzero(w < 0)[0])
        raise ValueError(f"weights must be non-negative, weights[{bad}] = {w[bad]}")
    if w.max() <= 0:
        raise ValueError("weights sum to zero: at least one weight must be positive")
    conf = _confidence(confidence)
    w = w / w.max()  # scale-free; avoids overflow in sum w^2
    total = float(w.sum())
    estimate = float(w[np.array(flags, dtype=bool)].sum()) / total
    n_eff = total * total / float((w * w).sum())
    return _wilson(estimate * n_eff, n_eff, conf, method="wilson-kish")


# ----------------------------------------------------------------------------------------------
# paired comparison of two model versions on the same examples
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedComparison:
    """Baseline vs candidate on the same examples.

    ``table`` is oriented with the baseline in rows and the candidate in columns, pass first::

                         candidate pass   candidate fail
        baseline pass    both_pass        baseline_only
        baseline fail    candidate_only   both_fail

    ``difference`` is candidate rate minus baseline rate; ``interval`` is its confidence interval
    (Newcombe 1998 method 10). ``test`` says which McNemar test gave ``statistic`` and
    ``p_value``: ``"exact"`` (statistic = the smaller discordant count, binomial p-value) or
    ``"chi2"`` (continuity-corrected chi-square with 1 df).
    """

    both_pass: int
    baseline_only: int
    candidate_only: int
    both_fail: int
    baseline_rate: float
    candidate_rate: float
    difference: float
    interval: Interval
    test: Literal["exact", "chi2"]
    statistic: float
    p_value: float
    confidence: float

    @property
    def n(self) -> int:
        return self.both_pass + self.baseline_only + self.candidate_only + self.both_fail

    @property
    def table(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return ((self.both_pass, self.baseline_only), (self.candidate_only, self.both_fail))

    @property
    def discordant(self) -> int:
        """Number of examples whose outcome differs between the two versions."""
        return self.baseline_only + self.candidate_only

    @property
    def discordance(self) -> float:
        """Share of examples whose outcome differs (p01 + p10), the input of paired power."""
        return self.discordant / self.n


def _newcombe_paired(
    both_pass: int, baseline_only: int, candidate_only: int, both_fail: int, confidence: float
) -> tuple[float, float]:
    """Newcombe (1998b) method 10 for candidate rate minus baseline rate.

    Newcombe RG (1998) "Improved confidence intervals for the difference between binomial
    proportions based on paired data", Stat Med 17:2635-2650, method 10: the hybrid score
    interval built from the Wilson intervals (l1, u1) of the candidate rate p1 and (l2, u2) of
    the baseline rate p2, combined with the continuity-corrected phi coefficient of the 2x2 table::

        L = d - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        U = d + sqrt((u1 - p1)^2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)^2)

    where phi = A / sqrt(product of the four marginal totals) with A = ad - bc reduced by n/2
    when it exceeds n/2, set to 0 when it lies in [0, n/2], kept when negative; phi = 0 when a
    marginal total is zero.
    """
    n = both_pass + baseline_only + candidate_only + both_fail
    cand_pass = both_pass + candidate_only
    base_pass = both_pass + baseline_only
    p1, p2 = cand_pass / n, base_pass / n
    c1 = _wilson(cand_pass, n, confidence, "wilson")
    c2 = _wilson(base_pass, n, confidence, "wilson")
    l1, u1, l2, u2 = c1.low, c1.high, c2.low, c2.high
    margins = cand_pass * (n - cand_pass) * base_pass * (n - base_pass)
    if margins == 0:
        phi = 0.0
    else:
        a = float(both_pass * both_fail - candidate_only * baseline_only)
        if a > n / 2:
            a -= n / 2
        elif a >= 0:
            a = 0.0
        phi = a / math.sqrt(float(margins))
    d = p1 - p2
    lower = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, min(lower, d)), min(1.0, max(upper, d))


def paired_comparison_from_counts(
    both_pass: int,
    baseline_only: int,
    candidate_only: int,
    both_fail: int,
    confidence: float = 0.95,
    test: Literal["auto", "exact", "chi2"] = "auto",
) -> PairedComparison:
    """:func:`paired_comparison` from the four cells of the 2x2 table (see :class:`PairedComparison`).

    McNemar's test is statsmodels ``mcnemar``. With ``test="auto"`` it is the exact binomial test
    when the discordant pairs number fewer than :data:`MCNEMAR_EXACT_BELOW` (25), and the
    chi-square with continuity correction (Edwards 1948, Psychometrika 13:185-187) otherwise;
    ``"exact"`` or ``"chi2"`` force one. The chi-square is undefined without discordant pairs.
    """
    cells = {
        "both_pass": _count("both_pass", both_pass),
        "baseline_only": _count("baseline_only", baseline_only),
        "candidate_only": _count("candidate_only", candidate_only),
        "both_fail": _count("both_fail", both_fail),
    }
    n = sum(cells.values())
    if n == 0:
        raise ValueError("no examples: all four cells of the paired table are 0")
    conf = _confidence(confidence)
    if test not in ("auto", "exact", "chi2"):
        raise ValueError(f"test must be 'auto', 'exact' or 'chi2', got {test!r}")
    b, c = cells["baseline_only"], cells["candidate_only"]
    used: Literal["exact", "chi2"]
    if test == "auto":
        used = "exact" if b + c < MCNEMAR_EXACT_BELOW else "chi2"
    else:
        used = test
    if used == "chi2" and b + c == 0:
        raise ValueError(
            "the chi-square McNemar test is undefined with no discordant pairs; use test='exact'"
        )
    table = [[cells["both_pass"], b], [c, cells["both_fail"]]]
    result = _sm_mcnemar(table, exact=(used == "exact"), correction=True)
    low, high = _newcombe_paired(cells["both_pass"], b, c, cells["both_fail"], conf)
    base_rate = (cells["both_pass"] + b) / n
    cand_rate = (cells["both_pass"] + c) / n
    diff = cand_rate - base_rate
    return PairedComparison(
        both_pass=cells["both_pass"],
        baseline_only=b,
        candidate_only=c,
        both_fail=cells["both_fail"],
        baseline_rate=base_rate,
        candidate_rate=cand_rate,
        difference=diff,
        interval=Interval(
            low=low, high=high, estimate=diff, n=n, method="newcombe-paired-10", confidence=conf
        ),
        test=used,
        statistic=float(result.statistic),
        p_value=float(min(1.0, result.pvalue)),
        confidence=conf,
    )


def paired_comparison(
    baseline_pass: Sequence[bool],
    candidate_pass: Sequence[bool],
    confidence: float = 0.95,
    test: Literal["auto", "exact", "chi2"] = "auto",
) -> PairedComparison:
    """Compare two model versions run on the same examples (element i of each sequence is example i).

    Returns the 2x2 table (baseline in rows, candidate in columns, pass first: see
    :class:`PairedComparison`), the difference in pass rate (candidate - baseline) with the
    Newcombe (1998, Stat Med 17:2635-2650) method-10 interval for paired proportions, and
    McNemar's test (exact below 25 discordant pairs, continuity-corrected chi-square otherwise).
    """
    base = _bools("baseline_pass", baseline_pass)
    cand = _bools("candidate_pass", candidate_pass)
    _same_length(("baseline_pass", "candidate_pass"), base, cand)
    both = sum(1 for x, y in zip(base, cand) if x and y)
    base_only = sum(1 for x, y in zip(base, cand) if x and not y)
    cand_only = sum(1 for x, y in zip(base, cand) if y and not x)
    neither = len(base) - both - base_only - cand_only
    return paired_comparison_from_counts(both, base_only, cand_only, neither, confidence, test)


# ----------------------------------------------------------------------------------------------
# power and sample size
# ----------------------------------------------------------------------------------------------


def _two_prop_parts(p1: float, p2: float) -> tuple[float, float]:
    """(sd under H0 with pooled rate, sd under H1) for one observation per group, as in R."""
    s0 = math.sqrt((p1 + p2) * ((1 - p1) + (1 - p2)) / 2.0)
    s1 = math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return s0, s1


def power_two_proportions(n: float, p1: float, p2: float, alpha: float = 0.05) -> float:
    """Power of the two-sided test comparing two independent pass rates, ``n`` per group.

    Reproduces R's ``power.prop.test`` (stats package, default ``strict = FALSE``)::

        power = Phi((sqrt(n) |p1 - p2| - z_{1-alpha/2} sqrt((p1 + p2)(q1 + q2) / 2))
                    / sqrt(p1 q1 + p2 q2))

    (the normal-approximation formula without continuity correction, Fleiss, Levin & Paik 2003,
    Statistical Methods for Rates and Proportions, 3rd ed., ch. 4). ``power.prop.test(n = 50,
    p1 = .5, p2 = .75)`` gives power = 0.7401659.
    """
    n_ = _positive_n("n", n)
    r1, r2 = _rate("p1", p1), _rate("p2", p2)
    a = _open_unit("alpha", alpha)
    s0, s1 = _two_prop_parts(r1, r2)
    num = math.sqrt(n_) * abs(r1 - r2) - _z(a) * s0
    if s1 == 0.0:
        if r1 == r2:
            raise ValueError(f"p1 and p2 are both {r1}: there is no variability to test")
        return 1.0  # 0 vs 1: every sample shows the difference
    return float(norm.cdf(num / s1))


def sample_size_two_proportions_unrounded(
    p1: float, p2: float, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Per-group n (not rounded) for two independent pass rates; see :func:`sample_size_two_proportions`."""
    r1, r2 = _rate("p1", p1), _rate("p2", p2)
    a, pw = _alpha_power(alpha, power)
    if r1 == r2:
        raise ValueError(f"p1 and p2 are equal ({r1}): there is no difference to detect")
    s0, s1 = _two_prop_parts(r1, r2)
    return ((_z(a) * s0 + float(norm.ppf(pw)) * s1) / abs(r1 - r2)) ** 2


def sample_size_two_proportions(
    p1: float, p2: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Examples per group to detect pass rate p1 vs p2 with independent samples (two-sided).

    The closed-form inverse of :func:`power_two_proportions`, which is what R's
    ``power.prop.test`` finds numerically::

        n = (z_{1-alpha/2} sqrt((p1 + p2)(q1 + q2) / 2) + z_{power} sqrt(p1 q1 + p2 q2))^2
            / (p1 - p2)^2

    rounded up. ``power.prop.test(p1 = .5, p2 = .75, power = .9)`` gives n = 76.7 -> 77.
    """
    return _ceil(sample_size_two_proportions_unrounded(p1, p2, alpha, power))


def _paired_cells(p01: Any, p10: Any) -> tuple[float, float]:
    a, b = _rate("p01", p01), _rate("p10", p10)
    if a + b > 1.0 + 1e-12:
        raise ValueError(f"p01 + p10 must be at most 1, got {a + b}")
    if a + b == 0.0:
        raise ValueError("p01 and p10 are both 0: no example changes outcome, nothing to test")
    return a, b


def power_paired(n: float, p01: float, p10: float, alpha: float = 0.05) -> float:
    """Power of McNemar's test with ``n`` pairs (Connor 1987, Biometrics 43:207-211).

    ``p01`` = P(baseline fails, candidate passes), ``p10`` = P(baseline passes, candidate fails)
    (the two formulas are symmetric in them). With psi = p01 + p10 (discordance) and
    delta = p01 - p10 (the change in pass rate)::

        power = Phi((sqrt(n) |delta| - z_{1-alpha/2} sqrt(psi)) / sqrt(psi - delta^2))
    """
    n_ = _positive_n("n", n)
    a01, a10 = _paired_cells(p01, p10)
    a = _open_unit("alpha", alpha)
    psi, delta = a01 + a10, a01 - a10
    num = math.sqrt(n_) * abs(delta) - _z(a) * math.sqrt(psi)
    var = psi - delta * delta
    if var <= 0.0:  # all flips go one way and every example flips
        return 1.0 if num > 0 else 0.0
    return float(norm.cdf(num / math.sqrt(var)))


def sample_size_paired_unrounded(
    p01: float, p10: float, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Number of pairs (not rounded) for McNemar's test; see :func:`sample_size_paired`."""
    a01, a10 = _paired_cells(p01, p10)
    a, pw = _alpha_power(alpha, power)
    if a01 == a10:
        raise ValueError(f"p01 and p10 are equal ({a01}): there is no difference to detect")
    psi, delta = a01 + a10, a01 - a10
    return (
        (_z(a) * math.sqrt(psi) + float(norm.ppf(pw)) * math.sqrt(max(0.0, psi - delta**2)))
        / abs(delta)
    ) ** 2


def sample_size_paired(p01: float, p10: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Number of examples (pairs) for a paired comparison analysed with McNemar's test.

    Connor RJ (1987) "Sample size for testing differences in proportions for the paired-sample
    design", Biometrics 43:207-211::

        n = (z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2

    with psi = p01 + p10 and delta = p01 - p10, rounded up. Connor's example p01 = .45,
    p10 = .05, alpha = .05, power = .8 needs 23 pairs.
    """
    return _ceil(sample_size_paired_unrounded(p01, p10, alpha, power))


def _independence_discordance(baseline: float, target: float) -> float:
    """Discordance if the two versions' outcomes were independent given their pass rates."""
    return baseline * (1 - target) + target * (1 - baseline)


def default_discordance(baseline_rate: float, effect: float) -> float:
    """The discordance (p01 + p10) assumed when no measured one is given.

    ``min(DEFAULT_DISCORDANCE_RATIO * effect, independence value)``, i.e. psi = 2 |delta|: for
    every three examples that flip in the direction of the change, one flips the other way
    (p_with = 1.5 delta, p_against = 0.5 delta). Rationale: two versions of the same system
    agree on most examples, and the back-and-forth flips (sampling and judge noise) are a
    fraction of the net change; psi = |delta| (no flips against the change) would be the
    optimistic bound. It is capped at the discordance of independent outcomes,
    ``b (1 - t) + t (1 - b)``, the pessimistic bound for versions whose outcomes are not
    negatively correlated; the cap also keeps the cell probabilities feasible for the baseline.
    This is an assumption, not a measurement: measure psi on a previous paired run
    (:attr:`PairedComparison.discordance`) and pass it instead whenever possible.
    The change is taken towards 50% (see :func:`minimum_detectable_effect`).
    """
    b = _rate("baseline_rate", baseline_rate)
    e = _real("effect", effect)
    target = _target(b, e)
    return min(DEFAULT_DISCORDANCE_RATIO * e, _independence_discordance(b, target))


def _direction(baseline: float) -> int:
    """The harder direction of change: towards 50%, where the binomial variance is largest."""
    return -1 if baseline >= 0.5 else 1


def _target(baseline: float, effect: float) -> float:
    if effect <= 0:
        raise ValueError(f"effect must be positive, got {effect}")
    target = baseline + _direction(baseline) * effect
    if not 0.0 <= target <= 1.0 + 1e-12:
        raise ValueError(
            f"effect {effect} is too large for baseline rate {baseline}: "
            f"the changed rate would be {target:.4g}, outside [0, 1]"
        )
    return min(1.0, max(0.0, target))


def _discordance_value(discordance: Any) -> float | None:
    if discordance is None:
        return None
    if isinstance(discordance, PairedComparison):
        if discordance.discordant == 0:
            raise ValueError(
                "the previous paired run has no discordant examples, so it cannot estimate the "
                "discordance; pass a float instead"
            )
        return discordance.discordance
    value = _real("discordance", discordance)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"discordance must be in (0, 1], got {value}")
    return value


def _paired_cells_for(
    baseline: float, effect: float, discordance: float | None
) -> tuple[float, float]:
    """(p_against, p_with) for a change of ``effect`` towards 50% with the given discordance."""
    target = _target(baseline, effect)
    psi = default_discordance(baseline, effect) if discordance is None else discordance
    if effect > psi + 1e-12:
        raise ValueError(
            f"a change of {effect:.4g} is impossible with discordance {psi:.4g}: the net change "
            "in pass rate cannot exceed the share of examples whose outcome flips"
        )
    p_with = (psi + effect) / 2
    p_against = max(0.0, (psi - effect) / 2)
    # A drop needs p_with <= baseline (flips come from baseline passes) and
    # p_against <= 1 - baseline; a rise the other way round.
    room_with = baseline if target < baseline else 1 - baseline
    room_against = 1 - baseline if target < baseline else baseline
    if p_with > room_with + 1e-12 or p_against > room_against + 1e-12:
        raise ValueError(
            f"discordance {psi:.4g} is inconsistent with baseline rate {baseline:.4g} and a "
            f"change of {effect:.4g}: too many examples would have to flip"
        )
    return p_against, p_with


def _smallest_root(f: Callable[[float], float], hi: float) -> float | None:
    """Smallest x in (0, hi] with f(x) = 0, for f negative near 0; None if f < 0 on the grid."""
    grid = np.geomspace(1e-9, hi, 600)
    values = [f(float(x)) for x in grid]
    for i, v in enumerate(values):
        if v >= 0:
            if i == 0:
                return float(grid[0])
            return float(optimize.brentq(f, float(grid[i - 1]), float(grid[i]), xtol=1e-12))
    return None


def minimum_detectable_effect(
    n: float,
    baseline_rate: float,
    alpha: float = 0.05,
    power: float = 0.8,
    paired: bool = True,
    discordance: float | PairedComparison | None = None,
) -> float:
    """Smallest absolute change in pass rate that ``n`` examples detect with the given power.

    ``n`` is the number of examples run on both versions (paired) or per version (independent).
    The change is taken towards 50% (a drop from a baseline at or above 50%, a rise below it):
    the binomial variance grows towards 50%, so that is the harder direction, and a change of the
    same size the other way is detected with at least this power. Solved with scipy's ``brentq``
    against :func:`power_two_proportions` (independent) or :func:`power_paired` (paired).

    For paired designs the discordance psi = p01 + p10 is taken from ``discordance`` (a float, or
    a :class:`PairedComparison` from a previous paired run, whose discordant share is used), or
    else assumed by :func:`default_discordance` (psi = 2 x the change).
    Raises ValueError when no change at all is detectable at this size.
    """
    n_ = _positive_n("n", n)
    b = _rate("baseline_rate", baseline_rate)
    a, pw = _alpha_power(alpha, power)
    psi = _discordance_value(discordance)
    if not paired and psi is not None:
        raise ValueError("discordance only applies to paired designs (paired=True)")
    sign = _direction(b)
    d_max = b if sign < 0 else 1 - b

    if not paired:

        def f(d: float) -> float:
            return power_two_proportions(n_, b, min(1.0, max(0.0, b + sign * d)), a) - pw

        hi = d_max
    elif psi is None:

        def f(d: float) -> float:
            p_against, p_with = _paired_cells_for(b, d, None)
            return power_paired(n_, p_against, p_with, a) - pw

        hi = d_max
    else:
        fixed = psi

        def f(d: float) -> float:
            return power_paired(n_, max(0.0, (fixed - d) / 2), (fixed + d) / 2, a) - pw

        hi = fixed

    root = _smallest_root(f, hi)
    if root is None:
        if psi is not None:
            raise ValueError(
                f"n = {n_:g} is too small for discordance {psi:.4g}: the net change cannot exceed "
                f"the share of flipped examples ({psi:.4g}), and even that change is not "
                f"detectable with {pw:.0%} power"
            )
        design = "paired" if paired else "independent"
        raise ValueError(
            f"n = {n_:g} is too small: no change in pass rate from {b:.4g} is detectable with "
            f"{pw:.0%} power in the {design} design"
        )
    if paired and psi is not None:
        _check_feasible_either_way(b, root, psi)
    return root


def _check_feasible_either_way(baseline: float, effect: float, psi: float) -> None:
    p_with, p_against = (psi + effect) / 2, (psi - effect) / 2
    drop_ok = p_with <= baseline + 1e-12 and p_against <= 1 - baseline + 1e-12
    rise_ok = p_with <= 1 - baseline + 1e-12 and p_against <= baseline + 1e-12
    if not (drop_ok or rise_ok):
        raise ValueError(
            f"discordance {psi:.4g} is inconsistent with baseline rate {baseline:.4g}: "
            f"a change of {effect:.4g} would need more flips than there are examples to flip"
        )


# ----------------------------------------------------------------------------------------------
# the `eval-pipeline power` report
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerAnalysis:
    """Numbers behind :func:`power_report`.

    ``effect`` is the change analysed: the given one, or, when a set size was given, the paired
    minimum detectable effect at that size. ``*_n`` are examples within the slice (per version
    for ``independent_n``); ``*_total`` scale them to the whole eval set by 1 / slice_share.
    ``mde_*`` are the minimum detectable effects at ``mde_at`` examples (in the slice, per
    version for independent): the paired size needed for ``effect`` when an effect was given,
    the slice's share of ``n_given`` otherwise.
    """

    baseline_rate: float
    target_rate: float
    effect: float
    effect_given: bool
    n_given: int | None
    alpha: float
    power: float
    slice_share: float
    discordance: float
    discordance_measured: bool
    independent_n: int
    paired_n: int
    independent_total: int
    paired_total: int
    mde_at: int
    mde_paired: float
    mde_independent: float


def _scale(n: int, share: float) -> int:
    return _ceil(n / share)


def power_analysis(
    baseline_rate: float,
    effect: float | None = None,
    n: int | None = None,
    slice_share: float = 1.0,
    alpha: float = 0.05,
    power: float = 0.8,
    discordance: float | PairedComparison | None = None,
) -> PowerAnalysis:
    """Compute the numbers of :func:`power_report` (same arguments)."""
    b = _rate("baseline_rate", baseline_rate)
    if (effect is None) == (n is None):
        raise ValueError("give exactly one of effect (a change in pass rate) or n (an eval-set size)")
    share = _real("slice_share", slice_share)
    if not 0.0 < share <= 1.0:
        raise ValueError(f"slice_share must be in (0, 1], got {share}")
    a, pw = _alpha_power(alpha, power)
    psi = _discordance_value(discordance)

    if effect is not None:
        e = _real("effect", effect)
        if not 0.0 < e < 1.0:
            raise ValueError(f"effect must be strictly between 0 and 1, got {e}")
        target = _target(b, e)
        p_against, p_with = _paired_cells_for(b, e, psi)
        paired_n = sample_size_paired(p_against, p_with, a, pw)
        independent_n = sample_size_two_proportions(b, target, a, pw)
        mde_at = paired_n
        mde_paired = minimum_detectable_effect(mde_at, b, a, pw, paired=True, discordance=psi)
        n_given = None
    else:
        n_given = _count("n", n)
        if n_given == 0:
            raise ValueError("n must be at least 1, got 0")
        mde_at = math.floor(round(n_given * share, 9))
        if mde_at < 2:
            raise ValueError(
                f"a slice of {share:g} of {n_given} examples holds {mde_at} example(s); "
                "at least 2 are needed"
            )
        mde_paired = minimum_detectable_effect(mde_at, b, a, pw, paired=True, discordance=psi)
        e = mde_paired
        target = _target(b, e)
        p_against, p_with = _paired_cells_for(b, e, psi)
        paired_n = sample_size_paired(p_against, p_with, a, pw)
        independent_n = sample_size_two_proportions(b, target, a, pw)
    try:
        mde_independent = minimum_detectable_effect(mde_at, b, a, pw, paired=False)
    except ValueError:
        mde_independent = math.inf  # nothing detectable; reported as such, never NaN
    return PowerAnalysis(
        baseline_rate=b,
        target_rate=target,
        effect=e,
        effect_given=effect is not None,
        n_given=n_given,
        alpha=a,
        power=pw,
        slice_share=share,
        discordance=p_against + p_with,
        discordance_measured=psi is not None,
        independent_n=independent_n,
        paired_n=paired_n,
        independent_total=_scale(independent_n, share),
        paired_total=_scale(paired_n, share),
        mde_at=mde_at,
        mde_paired=mde_paired,
        mde_independent=mde_independent,
    )


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return "nothing detectable" if math.isinf(x) else f"{100 * x:.1f} points"


def _pt(x: float) -> str:
    """Adjective form: "a 5.0-point change"."""
    return f"{100 * x:.1f}-point"


def _format_power(r: PowerAnalysis) -> str:
    lines: list[str] = []
    lines.append(f"Power analysis: two-sided alpha {r.alpha:g}, power {r.power:.0%}.")
    direction = "drop" if r.target_rate < r.baseline_rate else "rise"
    change = (
        f"{_pts(r.effect)} ({_pct(r.baseline_rate)} -> {_pct(r.target_rate)}, a {direction}: "
        "changes towards 50% are the harder ones to detect)"
    )
    if r.effect_given:
        lines.append(f"Baseline pass rate {_pct(r.baseline_rate)}; change to detect: {change}.")
    else:
        lines.append(
            f"Baseline pass rate {_pct(r.baseline_rate)}; eval set of {r.n_given:,} examples."
        )
    sliced = r.slice_share < 1.0
    if sliced:
        held = "" if r.effect_given else f"it holds {r.mde_at:,} of the {r.n_given:,} examples, and "
        lines.append(
            f"Slice: {r.slice_share:.0%} of traffic, so {held}the whole eval set needs "
            f"1/{r.slice_share:g} = {1 / r.slice_share:.3g}x the examples the slice needs."
        )
    lines.append("")

    def in_set(n: int, total: int, unit: str) -> str:
        if not sliced:
            return f"{n:,} {unit}"
        return f"{n:,} {unit} in the slice -> {total:,} in the whole eval set"

    if r.effect_given:
        lines.append("Examples needed")
    else:
        lines.append(
            f"Examples needed to detect {_pts(r.effect)} "
            f"({_pct(r.baseline_rate)} -> {_pct(r.target_rate)})"
        )
    paired_size = in_set(r.paired_n, r.paired_total, "examples")
    lines.append(f"  paired design:      {paired_size}, each scored by both versions")
    lines.append(
        "    Same examples for both versions: only examples whose outcome flips carry signal, "
        "so the per-example noise cancels (depends on the discordance, see below)."
    )
    lines.append(
        f"  independent design: {in_set(r.independent_n, r.independent_total, 'examples per version')}"
    )
    lines.append(
        "    Separate examples per version: each pass rate carries its full sampling noise, "
        "and the two noises add up."
    )
    lines.append("")
    where = " in the slice" if sliced else ""
    lines.append(f"Minimum detectable effect with {r.mde_at:,} examples{where}")
    lines.append(f"  paired design:      {_pts(r.mde_paired)}")
    lines.append(
        f"    Smallest change the same {r.mde_at:,} examples scored by both versions detect "
        f"with {r.power:.0%} power."
    )
    lines.append(f"  independent design: {_pts(r.mde_independent)}")
    lines.append(f"    Smallest change detectable with {r.mde_at:,} separate examples per version.")
    lines.append("")
    if r.independent_n > r.paired_n:
        lines.append(
            f"Why: {r.mde_at:,} examples resolve a {_pt(r.effect)} change only in a paired design; "
            f"compared as independent samples, the same change needs {r.independent_n:,} examples "
            "per version."
        )
    else:
        lines.append(
            f"Why: at this discordance pairing gains nothing: a {_pt(r.effect)} change needs "
            f"{r.paired_n:,} paired examples and {r.independent_n:,} per version independently."
        )
    if r.discordance_measured:
        lines.append(
            f"Discordance: {_pct(r.discordance)} of examples flip between versions "
            "(measured on a previous paired run)."
        )
    else:
        if math.isclose(r.discordance, DEFAULT_DISCORDANCE_RATIO * r.effect, rel_tol=1e-9):
            why = f"{DEFAULT_DISCORDANCE_RATIO:g} x the change"
        else:
            why = "the value for independent outcomes, the cap of the default assumption"
        lines.append(
            f"Assumed discordance: {_pct(r.discordance)} of examples flip between versions "
            f"({why}; no measured value given). "
            "Pass the discordance of a previous paired run to replace this assumption."
        )
    return "\n".join(lines)


def power_report(
    baseline_rate: float,
    effect: float | None = None,
    n: int | None = None,
    slice_share: float = 1.0,
    alpha: float = 0.05,
    power: float = 0.8,
    discordance: float | PairedComparison | None = None,
) -> str:
    """The text ``eval-pipeline power`` prints.

    Give the baseline pass rate and exactly one of ``effect`` (the absolute change in pass rate
    to detect) or ``n`` (the eval-set size). The report gives the examples needed in a paired
    design (Connor 1987) and an independent design (R's ``power.prop.test``), and the minimum
    detectable effect of both designs at the paired size needed (effect given) or at ``n``.
    ``slice_share`` in (0, 1] is the share of traffic a slice gets: the whole eval set needs
    1 / slice_share times the examples the slice needs (a 10% slice needs 10x), and with ``n``
    the slice holds ``n * slice_share`` examples. ``discordance`` as in
    :func:`minimum_detectable_effect`.
    """
    return _format_power(
        power_analysis(baseline_rate, effect, n, slice_share, alpha, power, discordance)
    )


# ----------------------------------------------------------------------------------------------
# agreement between raters
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """An agreement coefficient with its interpretation band (see :data:`AGREEMENT_BANDS`)."""

    value: float
    method: str
    band: Literal["poor", "moderate", "good"]
    n_items: int
    n_raters: int
    note: str = ""


def agreement_band(value: float) -> Literal["poor", "moderate", "good"]:
    """"good" at or above 0.6, "moderate" in [0.4, 0.6), "poor" below 0.4 (including negative).

    See :data:`AGREEMENT_BANDS` for the sources.
    """
    v = _real("value", value)
    if v >= 0.6:
        return "good"
    if v >= 0.4:
        return "moderate"
    return "poor"


def _agreement(value: float, method: str, n_items: int, n_raters: int, note: str = "") -> Agreement:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{method} is undefined for this data (computed {v})")
    return Agreement(
        value=v, method=method, band=agreement_band(v), n_items=n_items, n_raters=n_raters, note=note
    )


def _labels(name: str, values: Any) -> list[Hashable]:
    out = _sequence(name, values)
    for i, v in enumerate(out):
        if _is_missing(v):
            raise ValueError(
                f"{name}[{i}] is missing; Cohen's kappa needs complete pairs "
                "(use krippendorff_alpha for data with missing values)"
            )
        if not isinstance(v, Hashable):
            raise ValueError(f"{name}[{i}] must be a hashable label, got {type(v).__name__}")
    return out


def cohens_kappa(
    a: Sequence[Any],
    b: Sequence[Any],
    weights: Literal["linear", "quadratic"] | None = None,
    labels: Sequence[Any] | None = None,
) -> Agreement:
    """Cohen's kappa between two raters (scikit-learn ``cohen_kappa_score``).

    Cohen (1960), Educ Psychol Meas 20:37-46; weighted kappa Cohen (1968), Psychol Bull
    70:213-220. With ``weights`` ("linear" or "quadratic") disagreements are weighted by the
    distance between the *positions* of the two labels in the ordered label list: ``labels``
    gives that order (required for non-numeric labels, whose sorted order would be arbitrary);
    numeric labels default to ascending order.

    Undefined case: when both raters use one and the same category for every item, observed and
    chance agreement are both 1 and kappa is 0/0. This raises ValueError rather than returning
    1.0: such raters have not shown they can tell categories apart.
    """
    x = _labels("a", a)
    y = _labels("b", b)
    _same_length(("a", "b"), x, y)
    if len(x) < 2:
        raise ValueError(f"need at least 2 items to compute kappa, got {len(x)}")
    if weights not in (None, "linear", "quadratic"):
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    order: list[Any] | None = None
    if labels is not None:
        order = _labels("labels", labels)
        if len(set(order)) != len(order):
            raise ValueError("labels contains duplicates")
        known = set(order)
        unknown = sorted({repr(v) for v in x + y if v not in known})
        if unknown:
            raise ValueError(f"values not in labels: {', '.join(unknown)}")
    elif weights is not None and not all(
        isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in x + y
    ):
        raise ValueError(
            "weighted kappa needs ordered categories: pass labels=[...] in order for non-numeric labels"
        )
    used = set(x) | set(y)
    if len(used) == 1:
        only = next(iter(used))
        raise ValueError(
            f"kappa is undefined: both raters gave every item the same category ({only!r}), so "
            "chance agreement is 1; report raw agreement instead"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = cohen_kappa_score(x, y, labels=order, weights=weights, replace_undefined_by=np.nan)
    method = "cohen_kappa" if weights is None else f"cohen_kappa_{weights}"
    return _agreement(value, method, n_items=len(x), n_raters=2)


_LEVELS = ("nominal", "ordinal", "interval", "ratio")


def krippendorff_alpha(
    reliability_data: Sequence[Sequence[Any]],
    level: Literal["nominal", "ordinal", "interval", "ratio"] = "nominal",
    value_domain: Sequence[Any] | None = None,
) -> Agreement:
    """Krippendorff's alpha (``krippendorff`` package): rows = annotators, columns = items.

    Missing ratings are ``None`` or NaN. Nominal data may use any hashable labels; ordinal data
    uses numbers, or any labels with ``value_domain`` giving their order; interval and ratio data
    must be numbers (ratio: non-negative). Krippendorff K (2011) "Computing Krippendorff's
    Alpha-Reliability", Annenberg School for Communication, University of Pennsylvania.

    Raises ValueError when alpha is undefined: fewer than 2 annotators or items, every value
    missing, no item rated by at least two annotators, or a single distinct value among the
    pairable ratings (no disagreement is expected by chance).
    """
    if level not in _LEVELS:
        raise ValueError(f"level must be one of {', '.join(_LEVELS)}; got {level!r}")
    rows = [
        _sequence(f"reliability_data[{i}]", r)
        for i, r in enumerate(_sequence("reliability_data", reliability_data))
    ]
    if len(rows) < 2:
        raise ValueError(f"need at least 2 annotators (rows), got {len(rows)}")
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise ValueError(
                f"every annotator needs one entry per item: row 0 has {width}, row {i} has {len(r)}"
            )
    if width < 2:
        raise ValueError(f"need at least 2 items (columns), got {width}")

    domain_index: dict[Any, int] | None = None
    if value_domain is not None:
        if level in ("interval", "ratio"):
            raise ValueError(f"value_domain applies to nominal and ordinal data, not {level}")
        dom = _sequence("value_domain", value_domain)
        domain_index = {}
        for v in dom:
            if _is_missing(v) or not isinstance(v, Hashable):
                raise ValueError(f"value_domain entries must be hashable values, got {v!r}")
            if v in domain_index:
                raise ValueError(f"value_domain contains {v!r} twice")
            domain_index[v] = len(domain_index)

    codes: dict[Any, int] = {}
    data = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        for j, v in enumerate(r):
            if _is_missing(v):
                continue
            where = f"reliability_data[{i}][{j}]"
            if domain_index is not None:
                if not isinstance(v, Hashable) or v not in domain_index:
                    raise ValueError(f"{where} = {v!r} is not in value_domain")
                data[i, j] = domain_index[v]
            elif level == "nominal":
                if not isinstance(v, Hashable):
                    raise ValueError(f"{where} must be a hashable label, got {type(v).__name__}")
                data[i, j] = codes.setdefault(v, len(codes))
            else:
                num = _real(where, v)
                if level == "ratio" and num < 0:
                    raise ValueError(f"{where} = {num}: ratio data must be non-negative")
                data[i, j] = num

    present = ~np.isnan(data)
    if not present.any():
        raise ValueError("all values are missing")
    pairable = present.sum(axis=0) >= 2
    if not pairable.any():
        raise ValueError("no item was rated by at least two annotators, so nothing can be compared")
    distinct = np.unique(data[:, pairable][present[:, pairable]])
    if len(distinct) < 2:
        raise ValueError(
            "alpha is undefined: every rating on the items rated at least twice has the same value, "
            "so no disagreement is expected by chance"
        )
    kd_domain = list(range(len(domain_index))) if domain_index is not None else None
    value = _krippendorff.alpha(
        reliability_data=data, value_domain=kd_domain, level_of_measurement=level
    )
    return _agreement(
        value,
        f"krippendorff_alpha_{level}",
        n_items=width,
        n_raters=len(rows),
        note=f"{int(pairable.sum())} of {width} items rated by at least two annotators",
    )


def _integral(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, numbers.Integral):
        return True
    return isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer()


def fleiss_kappa(
    table_or_ratings: Sequence[Sequence[Any]],
    kind: Literal["counts", "ratings"] | None = None,
) -> Agreement:
    """Fleiss' kappa for several raters (statsmodels ``fleiss_kappa``; Fleiss 1971, Psychol Bull 76:378-382).

    Rows are items, in both accepted forms (statsmodels' convention; note that
    :func:`krippendorff_alpha` takes annotators in rows):

    * ``kind="counts"``: an items x categories table of how many raters chose each category;
      every row must sum to the same number of raters (at least 2);
    * ``kind="ratings"``: an items x raters table of category labels (turned into counts with
      statsmodels ``aggregate_raters``); no missing ratings (Fleiss' kappa needs the same raters
      per item; use :func:`krippendorff_alpha` otherwise).

    With ``kind=None`` the form is inferred: labels that are not non-negative integers mean
    ratings; integer tables whose rows all sum to the same number >= 2 could be either, and are
    rejected as ambiguous unless ``kind`` is given.
    Raises ValueError when kappa is undefined (all ratings in one category).
    """
    if kind not in (None, "counts", "ratings"):
        raise ValueError(f"kind must be None, 'counts' or 'ratings', got {kind!r}")
    rows = [
        _sequence(f"row {i}", r) for i, r in enumerate(_sequence("table_or_ratings", table_or_ratings))
    ]
    if len(rows) < 2:
        raise ValueError(f"need at least 2 items (rows), got {len(rows)}")
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise ValueError(f"all rows must have the same length: row 0 has {width}, row {i} has {len(r)}")
    flat = [v for r in rows for v in r]

    if kind is None:
        counts_ok = all(_integral(v) and v >= 0 for v in flat) and len(
            {sum(int(v) for v in r) for r in rows}
        ) == 1 and sum(int(v) for v in rows[0]) >= 2
        ratings_ok = width >= 2 and not any(_is_missing(v) for v in flat)
        if counts_ok and ratings_ok:
            raise ValueError(
                "ambiguous input: this integer table could be category counts or ratings; "
                "pass kind='counts' or kind='ratings'"
            )
        kind = "counts" if counts_ok else "ratings"

    if kind == "counts":
        for i, r in enumerate(rows):
            for j, v in enumerate(r):
                if not _integral(v) or v < 0:
                    raise ValueError(f"counts must be non-negative integers, row {i} column {j} is {v!r}")
        table = np.array([[int(v) for v in r] for r in rows], dtype=int)
        sums = table.sum(axis=1)
        if len(set(sums.tolist())) != 1:
            raise ValueError(
                "every item must be rated by the same number of raters, but row sums differ "
                f"(min {int(sums.min())}, max {int(sums.max())})"
            )
        if sums[0] < 2:
            raise ValueError(f"need at least 2 raters per item, rows sum to {int(sums[0])}")
    else:
        if width < 2:
            raise ValueError(f"need at least 2 raters (columns), got {width}")
        codes: dict[Any, int] = {}
        for i, r in enumerate(rows):
            for j, v in enumerate(r):
                if _is_missing(v):
                    raise ValueError(
                        f"rating of item {i} by rater {j} is missing; Fleiss' kappa needs every "
                        "rater on every item (use krippendorff_alpha for missing values)"
                    )
                if not isinstance(v, Hashable):
                    raise ValueError(f"rating of item {i} by rater {j} must be a hashable label")
                codes.setdefault(v, len(codes))
        coded = np.array([[codes[v] for v in r] for r in rows], dtype=int)
        table, _ = _sm_aggregate_raters(coded, n_cat=len(codes))

    n_raters = int(table[0].sum())
    if int((table.sum(axis=0) > 0).sum()) < 2:
        raise ValueError(
            "Fleiss' kappa is undefined: every rating falls in one category, so chance agreement is 1"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = _sm_fleiss_kappa(table, method="fleiss")
    return _agreement(value, "fleiss_kappa", n_items=len(rows), n_raters=n_raters)
