"""gca.study.stats: t comparisons against scipy, Holm by hand, exact power against Monte Carlo, verdicts."""
import math

import numpy as np
import pytest
from scipy import stats as st

from gca.study.stats import (
    CONTRADICTED,
    NOT_DETECTED,
    NOT_TESTED,
    REPRODUCED,
    SMALLER,
    VERDICTS,
    holm,
    mde_from_se,
    minimum_detectable_effect,
    paired_comparison,
    power_from_se,
    seeds_needed,
    verdict,
    welch_comparison,
)


# --- paired and Welch t against scipy -------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 5, 12])
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_paired_matches_scipy_ttest_rel(n, alpha):
    rng = np.random.default_rng(n)
    a = 40 + rng.normal(size=n)
    b = a - 0.5 + 0.8 * rng.normal(size=n)
    c = paired_comparison(a, b, alpha=alpha)
    ref = st.ttest_rel(a, b)
    ci = ref.confidence_interval(confidence_level=1 - alpha)
    assert c.paired and c.n == n and c.df == n - 1 and c.note == ""
    assert c.effect == pytest.approx(np.mean(a - b), rel=1e-12)
    assert c.sd == pytest.approx(np.std(a - b, ddof=1), rel=1e-12)
    assert c.t == pytest.approx(ref.statistic, rel=1e-10)
    assert c.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-10)


@pytest.mark.parametrize("n0,n1", [(2, 2), (3, 5), (10, 4)])
def test_welch_matches_scipy_ttest_ind(n0, n1):
    rng = np.random.default_rng(10 * n0 + n1)
    a = 40 + 2.0 * rng.normal(size=n0)
    b = 39 + 0.5 * rng.normal(size=n1)
    c = welch_comparison(a, b)
    ref = st.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval()
    assert not c.paired and (c.n0, c.n1, c.n) == (n0, n1, min(n0, n1))
    assert c.effect == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    assert c.df == pytest.approx(ref.df, rel=1e-10)
    assert c.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_fewer_than_two_give_no_interval():
    c = paired_comparison([40.0], [39.0])
    assert c.effect == 1.0 and c.n == 1
    assert c.p is None and c.ci_low is None and c.ci_high is None and c.se is None
    assert "n < 2" in c.note
    w = welch_comparison([40.0], [39.0, 38.0, 37.0])
    assert w.effect == pytest.approx(2.0) and w.p is None and "n < 2" in w.note


def test_zero_variance_is_the_limit_of_the_t_test():
    c = paired_comparison([41.0, 42.0, 43.0], [40.5, 41.5, 42.5])  # every difference is 0.5
    assert (c.ci_low, c.ci_high, c.p) == (0.5, 0.5, 0.0) and c.se == 0.0
    assert "zero variance" in c.note
    z = paired_comparison([40.0, 41.0], [40.0, 41.0])  # identical runs (SimCLR ≡ INCE)
    assert (z.effect, z.ci_low, z.ci_high, z.p) == (0.0, 0.0, 0.0, 1.0)
    w = welch_comparison([40.0, 40.0], [39.0, 39.0, 39.0])
    assert (w.ci_low, w.ci_high, w.p, w.df) == (1.0, 1.0, 0.0, 3.0)


# --- Holm --------------------------------------------------------------------------------------

def test_holm_hand_worked():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # 0.001·3 = 0.003, 0.012·2 = 0.024, 0.2·1 = 0.2
    assert holm([0.001, 0.2, 0.012]) == pytest.approx([0.003, 0.2, 0.024])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.04]) == [0.04] and holm([]) == []


def test_holm_is_monotone_and_never_below_the_raw_p():
    p = np.random.default_rng(0).uniform(size=25) ** 3
    adj = np.array(holm(p))
    assert np.all(adj >= p) and np.all(adj <= 1.0)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)


# --- power: exact noncentral t ----------------------------------------------------------------

def _simulated_power(effect, n, sd, paired, sims=20_000, alpha=0.05):
    rng = np.random.default_rng(1234)
    if paired:
        d = effect + sd * rng.standard_normal((sims, n))
        t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
        df = n - 1
    else:  # pooled two-sample t, n per arm
        x = effect + sd * rng.standard_normal((sims, n))
        y = sd * rng.standard_normal((sims, n))
        sp = np.sqrt((x.var(1, ddof=1) + y.var(1, ddof=1)) / 2)
        t = (x.mean(1) - y.mean(1)) / (sp * math.sqrt(2 / n))
        df = 2 * n - 2
    return float(np.mean(np.abs(t) > st.t.ppf(1 - alpha / 2, df)))


@pytest.mark.parametrize("n,sd,paired", [(8, 1.0, True), (4, 0.7, True), (5, 1.17, False)])
def test_mde_has_the_target_power_in_monte_carlo(n, sd, paired):
    mde = minimum_detectable_effect(sd, n, paired=paired)
    assert _simulated_power(mde, n, sd, paired) == pytest.approx(0.80, abs=0.03)
    se = sd / math.sqrt(n) if paired else sd * math.sqrt(2 / n)
    df = n - 1 if paired else 2 * n - 2
    assert power_from_se(mde, se, df) == pytest.approx(0.80, abs=1e-8)


def test_mde_against_the_normal_approximation():
    z = st.norm.ppf(0.975) + st.norm.ppf(0.8)  # 2.80
    # Large n: the exact value meets (z_{1−α/2} + z_power)·se.
    assert minimum_detectable_effect(1.0, 400) == pytest.approx(z / 20, rel=0.01)
    # Small n: the t reference is wider. Issue 12: sd 1.17, 3 seeds per arm, unpaired → ≈ 3.5 points.
    small = minimum_detectable_effect(1.17, 3, paired=False)
    assert 3.4 < small < 3.7 and small > z * 1.17 * math.sqrt(2 / 3)
    # Paired with 10 pairs: d = 1 is the textbook 80 %-power effect (one-sample t, two-sided).
    assert minimum_detectable_effect(1.0, 10) == pytest.approx(0.996, abs=0.002)
    assert minimum_detectable_effect(0.0, 5) == 0.0 and mde_from_se(0.0, 4) == 0.0


def test_seeds_needed_is_the_smallest_n():
    assert seeds_needed(1.0, 1.0) == 10
    for sd, target in [(1.17, 1.0), (0.6, 1.0), (2.0, 2.0)]:
        n = seeds_needed(sd, target)
        assert minimum_detectable_effect(sd, n) <= target
        assert n == 2 or minimum_detectable_effect(sd, n - 1) > target
    assert seeds_needed(0.0, 0.5) == 2
    assert seeds_needed(1.0, 1.0, paired=False) > seeds_needed(1.0, 1.0)
    with pytest.raises(ValueError, match="n_max = 50"):
        seeds_needed(10.0, 0.1, n_max=50)


# --- verdict rule ------------------------------------------------------------------------------

@pytest.mark.parametrize("lo,hi,paper,expected", [
    (0.2, 1.5, 1.0, REPRODUCED),
    (1.2, 2.0, 1.0, REPRODUCED),                    # larger than the paper's: no qualifier
    (0.2, 1.0, 1.0, REPRODUCED),                    # touches the paper's effect: not excluded
    (0.2, 0.8, 1.0, f"{REPRODUCED}, {SMALLER}"),
    (-0.3, 1.5, 1.0, NOT_DETECTED),
    (0.0, 1.5, 1.0, NOT_DETECTED),                  # touches 0: does not exclude it
    (-0.3, 0.8, 1.0, f"{NOT_DETECTED}, {SMALLER}"),
    (-1.5, -0.2, 1.0, CONTRADICTED),
    (-1.5, -0.2, -1.0, REPRODUCED),                 # the paper's side is negative
    (-0.8, -0.2, -1.0, f"{REPRODUCED}, {SMALLER}"),
    (-1.5, 0.3, -1.0, NOT_DETECTED),
    (-0.5, 0.3, -1.0, f"{NOT_DETECTED}, {SMALLER}"),
    (0.2, 1.0, -1.0, CONTRADICTED),
])
def test_verdict_directional(lo, hi, paper, expected):
    assert verdict(lo, hi, paper) == expected
    assert verdict(lo, hi, paper, margin=5.0) == expected  # the margin is for no-difference claims only


@pytest.mark.parametrize("lo,hi,paper,expected", [
    (-0.5, 0.5, 0, REPRODUCED),
    (-1.0, 1.0, None, REPRODUCED),                  # inside, bounds included
    (0.0, 0.0, 0.0, REPRODUCED),
    (-1.5, 0.5, 0, NOT_DETECTED),
    (0.5, 1.6, None, NOT_DETECTED),
    (1.2, 2.0, None, CONTRADICTED),
    (-3.0, -1.1, 0, CONTRADICTED),
])
def test_verdict_no_difference(lo, hi, paper, expected):
    assert verdict(lo, hi, paper, margin=1.0) == expected


def test_every_verdict_word_is_reachable():
    got = {verdict(*args) for args in [(0.2, 1.5, 1.0), (0.2, 0.8, 1.0), (-0.3, 1.5, 1.0),
                                       (-0.3, 0.8, 1.0), (-1.5, -0.2, 1.0)]}
    assert got | {NOT_TESTED} == set(VERDICTS)


# --- input validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("call,match", [
    (lambda: paired_comparison([1, 2, 3], [1, 2]), r"len\(a\) = 3, len\(b\) = 2"),
    (lambda: paired_comparison([1, float("nan")], [1, 2]), r"a\[1\] = nan"),
    (lambda: welch_comparison([1, 2], [1, float("inf")]), r"b\[1\] = inf"),
    (lambda: paired_comparison([], []), "a is empty"),
    (lambda: paired_comparison([[1, 2]], [[1, 2]]), "one-dimensional"),
    (lambda: paired_comparison([1, 2], [1, 2], alpha=1.5), "alpha = 1.5"),
    (lambda: holm([0.2, 1.2]), r"pvalues\[1\] = 1.2"),
    (lambda: holm([float("nan")]), r"pvalues\[0\] = nan"),
    (lambda: minimum_detectable_effect(1.0, 1), "n = 1"),
    (lambda: minimum_detectable_effect(-1.0, 5), "sd_diff = -1.0"),
    (lambda: minimum_detectable_effect(1.0, 5, power=0.04), "power = 0.04"),
    (lambda: seeds_needed(1.0, 0.0), "mde = 0.0"),
    (lambda: mde_from_se(1.0, 0), "df = 0"),
    (lambda: verdict(1.0, 0.5, 1.0), "ci_low = 1.0 > ci_high = 0.5"),
    (lambda: verdict(float("nan"), 0.5, 1.0), "ci_low = nan"),
    (lambda: verdict(-0.1, 0.5, 0.0), "margin"),
    (lambda: verdict(-0.1, 0.5, None, margin=-1.0), "margin = -1.0"),
    (lambda: verdict(-0.1, 0.5, float("inf")), "paper_effect = inf"),
])
def test_bad_input_names_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_strings_are_not_sequences_of_numbers():
    with pytest.raises(TypeError, match="string"):
        paired_comparison("123", "456")
    with pytest.raises(TypeError, match="string"):
        holm("0.1")
