"""The study's statistics: paired and Welch t comparisons, Holm's correction, exact power, verdicts.

Every comparison is *arm 0 − arm 1* in the units it is given (the claims ledger passes points,
i.e. accuracy × 100). Conventions (the pre-registered rule, issue 12 items 4–5):

* **Paired by seed** (the study's design: for a seed every method sees the same data subset,
  initial weights and augmentation stream). With differences ``d_i = a_i − b_i``, ``i = 1..n``::

      d̄ = mean(d),  s_d = sd(d) (ddof 1),  se = s_d / √n,  df = n − 1
      t = d̄ / se,   p = 2·P(T_df > |t|),   CI = d̄ ± t_{df, 1−α/2} · se

* **Welch** (unpaired arms, ``pairing: null``)::

      se² = s_0²/n_0 + s_1²/n_1,   df = se⁴ / ((s_0²/n_0)²/(n_0−1) + (s_1²/n_1)²/(n_1−1))

* **Power, exact**: the two-sided t test rejects with probability
  ``P(|T'| > t_{df,1−α/2})`` where ``T' ~ nct(df, δ/se)`` (noncentral t). The *minimum detectable
  effect* (MDE) is the ``δ > 0`` at which that probability equals the target power; it is solved
  with the noncentral t, not the normal approximation ``(z_{1−α/2} + z_{power})·se``, which is
  too optimistic at the study's handful of seeds.
* **Holm** (step-down, within a family of ``m`` tests): with ``p_(1) ≤ … ≤ p_(m)``,
  ``p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j))``.
* **Verdict** from the 95 % interval, see :func:`verdict`.

Degenerate inputs are handled explicitly, never through NaN: ``n < 2`` (no variance) gives a
comparison with ``effect`` but no ``se``/``t``/``p``/interval (``note`` says so); zero variance
gives the interval ``[effect, effect]`` with ``p = 0`` when ``effect ≠ 0`` and ``p = 1`` when it is
0 (the limits of the t test), and ``note`` says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import optimize
from scipy import stats as _st

__all__ = [
    "Comparison",
    "paired_comparison",
    "welch_comparison",
    "holm",
    "power_from_se",
    "mde_from_se",
    "minimum_detectable_effect",
    "seeds_needed",
    "verdict",
    "REPRODUCED",
    "CONTRADICTED",
    "NOT_DETECTED",
    "NOT_TESTED",
    "SMALLER",
    "VERDICTS",
]

#: The verdict words (issue 12 item 5); ``SMALLER`` is appended as ``", smaller than the paper's"``.
REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
NOT_DETECTED = "not detected"
NOT_TESTED = "not tested"  # fewer than 2 usable runs (pairs) per arm: no interval, no verdict
SMALLER = "smaller than the paper's"
#: Every string :func:`verdict` (or the claims ledger, for ``n < 2``) can return.
VERDICTS = (
    REPRODUCED,
    f"{REPRODUCED}, {SMALLER}",
    NOT_DETECTED,
    f"{NOT_DETECTED}, {SMALLER}",
    CONTRADICTED,
    NOT_TESTED,
)


@dataclass(frozen=True)
class Comparison:
    """The result of one two-arm comparison (arm 0 − arm 1).

    Attributes:
        effect: ``d̄`` (paired) or ``x̄_0 − x̄_1`` (Welch).
        se: standard error of ``effect``; ``None`` when ``n < 2``.
        df: degrees of freedom of the t reference; ``None`` when ``n < 2``.
        t: the t statistic; ``None`` when ``n < 2`` or the variance is zero.
        p: two-sided p-value; ``None`` when ``n < 2``.
        ci_low, ci_high: the ``1 − α`` interval; ``None`` when ``n < 2``.
        n: pairs (paired) or the smaller arm's size (Welch).
        n0, n1: runs per arm.
        sd: sd of the differences (paired) or ``√((s_0² + s_1²)/2)`` (Welch); ``None`` when ``n < 2``.
        paired: whether the comparison is paired.
        alpha: the level of the interval.
        note: ``""``, or why the comparison is degenerate.
    """

    effect: float
    se: Optional[float]
    df: Optional[float]
    t: Optional[float]
    p: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    n: int
    n0: int
    n1: int
    sd: Optional[float]
    paired: bool
    alpha: float
    note: str = ""


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

def _check_alpha(alpha: float, name: str = "alpha") -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ValueError(f"{name} = {alpha!r} must be a number in (0, 1), e.g. 0.05")
    return float(alpha)


def _check_power(power: float, alpha: float) -> float:
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not alpha < power < 1.0:
        raise ValueError(f"power = {power!r} must be a number in (alpha = {alpha}, 1), e.g. 0.8")
    return float(power)


def _vector(x: Sequence[float], name: str) -> np.ndarray:
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got a string")
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a sequence of numbers ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; pass at least one value per arm")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}[{i}] = {float(arr[i])!r} is not finite; drop or fix that run")
    return arr


def _check_positive(x: float, name: str, *, allow_zero: bool = False) -> float:
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    if not ok or x < 0 or (x == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name} = {x!r} must be a finite number {bound}")
    return float(x)


# --------------------------------------------------------------------------------------------
# t comparisons
# --------------------------------------------------------------------------------------------

def _t_summary(effect: float, se: float, df: float, alpha: float) -> tuple:
    """(t, p, ci_low, ci_high, note) of ``effect`` with standard error ``se`` on ``df`` degrees."""
    if se == 0.0:
        # The limits of the t test as the variance goes to 0 (scipy would return nan/inf).
        return None, (1.0 if effect == 0.0 else 0.0), effect, effect, "zero variance: the interval is the point"
    t = effect / se
    p = float(min(1.0, 2.0 * _st.t.sf(abs(t), df)))
    half = float(_st.t.ppf(1.0 - alpha / 2.0, df)) * se
    return float(t), p, effect - half, effect + half, ""


def paired_comparison(a: Sequence[float], b: Sequence[float], *, alpha: float = 0.05) -> Comparison:
    """Paired two-sided t comparison of arm ``a`` − arm ``b`` (same seed at the same index).

    ``d_i = a_i − b_i``; ``CI = d̄ ± t_{n−1, 1−α/2} · s_d/√n``; ``p = 2·P(T_{n−1} > |d̄|/(s_d/√n))``
    (matches ``scipy.stats.ttest_rel``). ``n < 2``: no interval, ``note`` says so. Zero variance:
    interval ``[d̄, d̄]``, ``p = 0`` (``d̄ ≠ 0``) or ``1`` (``d̄ = 0``).

    Raises:
        ValueError: arms of different lengths, a non-finite value, or ``alpha`` outside (0, 1).
    """
    alpha = _check_alpha(alpha)
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.size != b.size:
        raise ValueError(
            f"paired arms need one value per seed in both: len(a) = {a.size}, len(b) = {b.size}; "
            "drop unmatched seeds or use welch_comparison"
        )
    d = a - b
    n = int(d.size)
    effect = float(d.mean())
    if n < 2:
        return Comparison(effect, None, None, None, None, None, None, n, n, n, None, True, alpha,
                          "n < 2: no variance, no interval")
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    t, p, lo, hi, note = _t_summary(effect, se, float(n - 1), alpha)
    return Comparison(effect, se, float(n - 1), t, p, lo, hi, n, n, n, sd, True, alpha, note)


def welch_comparison(a: Sequence[float], b: Sequence[float], *, alpha: float = 0.05) -> Comparison:
    """Welch's unpaired two-sided t comparison of arm ``a`` − arm ``b``.

    ``se² = s_a²/n_a + s_b²/n_b``, Welch–Satterthwaite ``df`` (module docstring),
    ``CI = (x̄_a − x̄_b) ± t_{df, 1−α/2}·se`` (matches ``scipy.stats.ttest_ind(equal_var=False)``).
    Either arm with ``n < 2``: no interval. Both variances zero: ``df = n_a + n_b − 2`` and the
    interval is the point.
    """
    alpha = _check_alpha(alpha)
    a, b = _vector(a, "a"), _vector(b, "b")
    n0, n1 = int(a.size), int(b.size)
    effect = float(a.mean() - b.mean())
    n = min(n0, n1)
    if n < 2:
        return Comparison(effect, None, None, None, None, None, None, n, n0, n1, None, False, alpha,
                          "n < 2 in an arm: no variance, no interval")
    v0, v1 = float(a.var(ddof=1)) / n0, float(b.var(ddof=1)) / n1
    se = math.sqrt(v0 + v1)
    df = float(n0 + n1 - 2) if se == 0.0 else (v0 + v1) ** 2 / (v0 ** 2 / (n0 - 1) + v1 ** 2 / (n1 - 1))
    sd = math.sqrt((float(a.var(ddof=1)) + float(b.var(ddof=1))) / 2.0)
    t, p, lo, hi, note = _t_summary(effect, se, df, alpha)
    return Comparison(effect, se, df, t, p, lo, hi, n, n0, n1, sd, False, alpha, note)


# --------------------------------------------------------------------------------------------
# multiplicity
# --------------------------------------------------------------------------------------------

def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    ``p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j))`` over the ascending order ``p_(1) ≤ … ≤ p_(m)``;
    monotone in the p-values, capped at 1. Reject ``H_(i)`` at level α iff ``p̃_(i) ≤ α``. Ties keep
    their input order (the adjusted values of tied p-values are equal anyway).

    Raises:
        ValueError: a p-value outside [0, 1] or not finite.
    """
    if isinstance(pvalues, (str, bytes)):
        raise TypeError("pvalues must be a sequence of numbers, got a string")
    p = np.asarray(list(pvalues), dtype=float)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be one-dimensional, got shape {p.shape}")
    for i, v in enumerate(p.tolist()):
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ValueError(f"pvalues[{i}] = {v!r} is not a p-value in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.maximum.accumulate(adjusted)
    out = np.empty(m)
    out[order] = adjusted
    return [float(v) for v in out]


# --------------------------------------------------------------------------------------------
# power
# --------------------------------------------------------------------------------------------

def power_from_se(effect: float, se: float, df: float, *, alpha: float = 0.05) -> float:
    """Exact power of the two-sided t test: ``P(T' > c) + P(T' < −c)``, ``T' ~ nct(df, effect/se)``,
    ``c = t_{df, 1−α/2}``."""
    alpha = _check_alpha(alpha)
    se = _check_positive(se, "se")
    df = _check_positive(df, "df")
    nc = float(effect) / se
    c = float(_st.t.ppf(1.0 - alpha / 2.0, df))
    # P(T' < −c) = P(−T' > c) with −T' ~ nct(df, −nc): scipy's nct.cdf(−c, df, nc) returns NaN for
    # some large nc at df = 1, the mirrored survival function does not.
    return float(_st.nct.sf(c, df, nc) + _st.nct.sf(c, df, -nc))


def mde_from_se(se: float, df: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The effect ``δ > 0`` at which the two-sided t test (standard error ``se``, ``df`` degrees)
    has the given power (:func:`power_from_se`), solved exactly with the noncentral t.
    ``se = 0`` gives 0."""
    alpha = _check_alpha(alpha)
    power = _check_power(power, alpha)
    se = _check_positive(se, "se", allow_zero=True)
    df = _check_positive(df, "df")
    if se == 0.0:
        return 0.0

    def gap(nc: float) -> float:
        return power_from_se(nc, 1.0, df, alpha=alpha) - power

    hi = float(_st.t.ppf(1.0 - alpha / 2.0, df) + _st.norm.ppf(power)) + 1.0
    while gap(hi) < 0.0:  # power rises monotonically in the noncentrality
        hi *= 2.0
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-10, rtol=1e-12)) * se


def _design(sd: float, n: int, paired: bool) -> tuple[float, float]:
    """(se, df) of the planned design: paired ``s_d/√n, n − 1``; two arms of ``n``: ``s·√(2/n), 2n − 2``."""
    if paired:
        return sd / math.sqrt(n), float(n - 1)
    return sd * math.sqrt(2.0 / n), float(2 * n - 2)


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n = {n!r} must be an integer ≥ 2 (seeds per arm)")
    return int(n)


def minimum_detectable_effect(sd_diff: float, n: int, *, alpha: float = 0.05, power: float = 0.8,
                              paired: bool = True) -> float:
    """Smallest true effect the design detects with the given power (exact noncentral t).

    Paired (default): ``sd_diff`` is the sd of the per-seed differences, ``n`` the number of pairs,
    ``se = sd_diff/√n``, ``df = n − 1``. Unpaired (``paired=False``, equal arms, pooled t):
    ``sd_diff`` is the sd of one run, ``n`` the runs per arm, ``se = sd·√(2/n)``, ``df = 2n − 2``.
    For large ``n`` the result approaches ``(z_{1−α/2} + z_{power})·se`` (≈ 2.80·se at 0.05/0.8).
    """
    sd_diff = _check_positive(sd_diff, "sd_diff", allow_zero=True)
    n = _check_n(n)
    se, df = _design(sd_diff, n, paired)
    return mde_from_se(se, df, alpha=alpha, power=power)


def seeds_needed(sd_diff: float, mde: float, *, alpha: float = 0.05, power: float = 0.8,
                 paired: bool = True, n_max: int = 10_000) -> int:
    """Smallest ``n ≥ 2`` with ``minimum_detectable_effect(sd_diff, n, ...) ≤ mde``.

    The MDE falls monotonically with ``n``, so this is a bisection over ``[2, n_max]``.

    Raises:
        ValueError: bad inputs, or not even ``n_max`` seeds reach the target (raise ``mde`` or ``n_max``).
    """
    sd_diff = _check_positive(sd_diff, "sd_diff", allow_zero=True)
    mde = _check_positive(mde, "mde")
    n_max = _check_n(n_max)

    def ok(n: int) -> bool:
        return minimum_detectable_effect(sd_diff, n, alpha=alpha, power=power, paired=paired) <= mde

    if ok(2):
        return 2
    if not ok(n_max):
        worst = minimum_detectable_effect(sd_diff, n_max, alpha=alpha, power=power, paired=paired)
        raise ValueError(
            f"mde = {mde!r} is not reached with n_max = {n_max} seeds (MDE there {worst:.4g}); "
            "raise mde or n_max"
        )
    lo, hi = 2, n_max  # ok(lo) is False, ok(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


# --------------------------------------------------------------------------------------------
# verdict
# --------------------------------------------------------------------------------------------

def _number(x: float, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)) or not math.isfinite(x):
        raise ValueError(f"{name} = {x!r} must be a finite number")
    return float(x)


def verdict(ci_low: float, ci_high: float, paper_effect: Optional[float], *,
            margin: Optional[float] = None) -> str:
    """The pre-registered verdict of a claim from its interval (issue 12 item 5).

    Directional claim (``paper_effect ≠ 0``; its sign is the paper's side, its size the paper's
    effect, in the interval's units):

    ============================================  ================================================
    interval                                      verdict
    ============================================  ================================================
    excludes 0 on the paper's side                ``"reproduced"``
    excludes 0 on the other side                  ``"contradicted"``
    contains 0                                    ``"not detected"``
    ============================================  ================================================

    and ``", smaller than the paper's"`` is appended (to "reproduced" or "not detected") when the
    interval also lies entirely between 0's side and the paper's effect, i.e. excludes the paper's
    effect on the side of 0 (``ci_high < paper_effect`` for a positive effect). An interval that
    touches 0 does not exclude it.

    No-difference claim (``paper_effect`` is ``0`` or ``None``): needs the pre-registered
    equivalence ``margin`` ``m > 0`` (same units). ``"reproduced"`` when ``−m ≤ ci_low`` and
    ``ci_high ≤ m`` (the interval lies inside the margin); ``"contradicted"`` when the interval
    lies entirely outside it (``ci_low > m`` or ``ci_high < −m``); ``"not detected"`` otherwise.
    ``margin`` is ignored for directional claims.

    Raises:
        ValueError: non-finite bounds, ``ci_low > ci_high``, or a no-difference claim without a
        positive margin.
    """
    lo, hi = _number(ci_low, "ci_low"), _number(ci_high, "ci_high")
    if lo > hi:
        raise ValueError(f"ci_low = {lo!r} > ci_high = {hi!r}; pass the interval in order")
    if paper_effect is None or paper_effect == 0:
        if margin is None:
            raise ValueError(
                f"paper_effect = {paper_effect!r} is a no-difference claim: pass the pre-registered "
                "equivalence margin (margin=..., in points)"
            )
        m = _check_positive(margin, "margin")
        if -m <= lo and hi <= m:
            return REPRODUCED
        if lo > m or hi < -m:
            return CONTRADICTED
        return NOT_DETECTED
    effect = _number(paper_effect, "paper_effect")
    sign = 1.0 if effect > 0 else -1.0
    lo, hi = sorted((sign * lo, sign * hi))  # now the paper's side is positive
    size = abs(effect)
    if hi < 0.0:
        return CONTRADICTED
    word = REPRODUCED if lo > 0.0 else NOT_DETECTED
    return f"{word}, {SMALLER}" if hi < size else word
