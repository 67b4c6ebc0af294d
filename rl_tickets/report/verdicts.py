"""Paired verdicts: "beats <control>?" and "matches dense?" with their error rates held at every n.

Verdicts are *tests*, not bootstrap intervals: a percentile bootstrap of the mean paired difference
said "better" or "worse" under the null in 17.7% of trials at 5 seeds (8.7% at 10) against a nominal
5%, because with few seeds it is far too narrow.

- **beats** (the arms are exchangeable under the null, so the differences are symmetric about 0): a
  paired t-test, or the exact sign-flip permutation test. When every difference is equal the t
  statistic is undefined; its p-value is then the exact sign-flip one, ``2**-n`` one-sided.
- **matches** (non-inferiority, "ticket mean >= dense mean - margin"): the ticket and dense differ in
  distribution under the null, so symmetry is not available, and RL returns are capped, tied and
  bimodal. The p-value is the larger of the t-test's (or sign-flip's) and that of a distribution-free
  test for bounded values (:func:`rl_tickets.report.bounded.bounded_p_greater`), which is valid at
  every n given the metric's range. All seeds tied at a cap is then what it is: evidence worth
  ``(1 - margin / range)**n``, no more. "below dense" is the mirror image, built the same way (dense
  failing on a few seeds is as common as the ticket failing).

``docs/verdicts.md`` has the argument, the seeds needed, and the error rates measured by
``scripts/verdict_error_rates.py``; ``tests/test_stats.py`` re-measures them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

from rl_tickets.report.bounded import bounded_p_greater, metric_range

# Verdict words, shared by the report and the tests.
BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no difference"
NOT_ENOUGH_SEEDS = "not enough seeds"
MATCHES = "matches"
BELOW_DENSE = "below dense"
INCONCLUSIVE = "inconclusive"

TESTS = ("t", "signflip")
DEFAULT_ALPHA = 0.05
DEFAULT_TOLERANCE = 0.05
# Sign-flip p-values are exact (all 2**n sign patterns) up to this many seeds, Monte Carlo beyond.
EXACT_SIGNFLIP_MAX_N = 16
SIGNFLIP_RESAMPLES = 100_000
_EPS = float(np.finfo(float).eps)

Bounds = tuple[float, float] | None


def min_seeds_for(test: str, alpha: float = DEFAULT_ALPHA) -> int:
    """The smallest number of paired seeds at which ``test`` can reject at ``alpha`` (two-sided).

    The t-test can reject from n = 2 (one degree of freedom, a large enough t). The exact sign-flip
    test's smallest two-sided p-value is ``2 / 2**n``, so it needs ``2 / 2**n <= alpha`` (n = 6 at 0.05).

    :param test: ``"t"`` or ``"signflip"``.
    :param alpha: the two-sided level.
    """
    assert test in TESTS, f"test must be one of {TESTS}, got {test!r}"
    if test == "t":
        return 2
    n = 1
    while 2.0 / 2**n > alpha:
        n += 1
    return n


@dataclass(frozen=True)
class PairedResult:
    """Outcome of a paired per-seed comparison ``a - b``.

    :param diff_mean: mean over seeds of ``a - b``.
    :param ci_low: lower bound of the two-sided ``1 - alpha`` t-interval of that mean (descriptive).
    :param ci_high: upper bound.
    :param n: number of seeds where both ``a`` and ``b`` are finite.
    :param verdict: one of the verdict words of this module.
    :param p_value: for ``beats`` the two-sided p-value of "mean difference = 0"; for ``matches`` the
        one-sided p-value of "mean difference <= -margin" (NaN when there are too few seeds).
    :param margin: the non-inferiority margin in the metric's units (0 for ``beats``).
    :param test: the test that produced the p-value.
    :param p_below: for ``matches`` the one-sided p-value of "mean difference >= -margin" (the
        evidence for "below dense"); NaN for ``beats``.
    :param low: for ``matches`` the metric's lowest value the bounded test assumed (``bounds`` widened
        to the data, or the data's hull with 0 without ``bounds``); NaN for ``beats``.
    :param high: the highest value it assumed.
    """

    diff_mean: float
    ci_low: float
    ci_high: float
    n: int
    verdict: str
    p_value: float = float("nan")
    margin: float = 0.0
    test: str = "t"
    p_below: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")


def _paired(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The entries of ``a`` and ``b`` at the seeds where both are finite."""
    a_arr = np.asarray(a, dtype=float).ravel()
    b_arr = np.asarray(b, dtype=float).ravel()
    assert a_arr.shape == b_arr.shape, (
        f"paired values need one entry per seed in both arrays, got {a_arr.shape} and {b_arr.shape}; "
        "align them on the seed first (use NaN for a missing seed)"
    )
    keep = np.isfinite(a_arr) & np.isfinite(b_arr)
    return a_arr[keep], b_arr[keep]


def paired_differences(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Per-seed differences ``a - b`` over the seeds where both are finite.

    :param a: values per seed (e.g. the ticket), aligned with ``b``.
    :param b: values per seed of the comparison (a control or the dense network).
    :return: the finite differences.
    """
    a_kept, b_kept = _paired(a, b)
    return a_kept - b_kept


def t_interval(diffs: np.ndarray, alpha: float = DEFAULT_ALPHA) -> tuple[float, float]:
    """Two-sided ``1 - alpha`` Student-t interval of the mean of ``diffs`` (descriptive).

    Constant differences have zero spread: the interval is that constant, never NaN. It describes
    the sample; it is not evidence (a verdict on such data comes from :func:`paired_verdict`).

    :param diffs: paired differences.
    :param alpha: one minus the confidence level.
    :return: ``(low, high)``; NaN for fewer than two values.
    """
    n = diffs.size
    if n < 2:
        return float("nan"), float("nan")
    mean = float(diffs.mean())
    sem = float(diffs.std(ddof=1)) / np.sqrt(n)
    if sem == 0.0:
        return mean, mean
    half = float(scipy.stats.t.ppf(1.0 - alpha / 2.0, df=n - 1)) * sem
    return mean - half, mean + half


def _constant_rows(diffs: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Rows of ``diffs`` whose entries are all equal, up to the rounding of values of size ``scale``."""
    return np.ptp(diffs, axis=1) <= 4.0 * _EPS * scale


def _t_p_greater_rows(centred: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """One-sided t-test p-values of "mean <= 0" per row of ``centred``, shape ``(k, n)``.

    A constant row has no t statistic; its p-value is the exact sign-flip one, ``2**-n`` when the
    constant is positive and 1 otherwise, never 0.
    """
    n = centred.shape[1]
    mean = centred.mean(axis=1)
    sd = centred.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / np.sqrt(n))
    p = scipy.stats.t.sf(np.where(constant, 0.0, t), df=n - 1)
    return np.where(constant, np.where(mean > 0, 0.5**n, 1.0), p)


def _signflip_p_greater(centred: np.ndarray, seed: int = 0) -> float:
    """One-sided sign-flip permutation p-value of "mean(centred) <= 0" for one sample.

    Under the null the centred differences are symmetric about 0, so every sign pattern is equally
    likely; the p-value is the fraction of patterns whose mean is at least the observed one
    (exact enumeration up to :data:`EXACT_SIGNFLIP_MAX_N` seeds, else Monte Carlo with the observed
    pattern counted, which keeps the test valid).
    """
    n = centred.size
    observed = float(centred.mean())
    tol = 1e-12 * max(1.0, float(np.abs(centred).max()))
    if n <= EXACT_SIGNFLIP_MAX_N:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        means = patterns @ np.abs(centred) / n
        return float(np.mean(means >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(SIGNFLIP_RESAMPLES, n))
    means = signs @ np.abs(centred) / n
    return float((1 + np.sum(means >= observed - tol)) / (1 + SIGNFLIP_RESAMPLES))


def _p_greater_rows(centred: np.ndarray, constant: np.ndarray, test: str) -> np.ndarray:
    """One-sided p-values of "mean <= 0" per row, by ``test``."""
    if test == "t":
        return _t_p_greater_rows(centred, constant)
    return np.array([_signflip_p_greater(row) for row in centred])


def p_greater(diffs: np.ndarray, shift: float = 0.0, test: str = "t") -> float:
    """One-sided p-value of "mean difference <= shift" (small: the mean is above ``shift``).

    Assumes the differences minus ``shift`` are symmetric under the null (exchangeable arms); for
    non-inferiority on bounded data :func:`paired_verdict` adds the bounded test.

    :param diffs: paired differences (at least 2).
    :param shift: the null boundary (0, or minus a non-inferiority margin).
    :param test: ``"t"`` (paired t-test) or ``"signflip"`` (exact sign-flip permutation test).
    """
    assert test in TESTS, f"test must be one of {TESTS}, got {test!r}"
    d = np.asarray(diffs, dtype=float)[None, :]
    constant = _constant_rows(d, np.abs(d).max(axis=1))
    return float(_p_greater_rows(d - shift, constant, test)[0])


def _two_sided_rows(diffs: np.ndarray, constant: np.ndarray, test: str) -> np.ndarray:
    """Two-sided p-values of "mean = 0" per row: twice the smaller one-sided one, at most 1."""
    upper = _p_greater_rows(diffs, constant, test)
    lower = _p_greater_rows(-diffs, constant, test)
    p = np.minimum(1.0, 2.0 * np.minimum(upper, lower))
    return np.where(np.all(diffs == 0, axis=1), 1.0, p)


def p_two_sided(diffs: np.ndarray, test: str = "t") -> float:
    """Two-sided p-value of "mean difference = 0": twice the smaller one-sided p-value, at most 1.

    :param diffs: paired differences (at least 2).
    :param test: ``"t"`` or ``"signflip"``.
    """
    assert test in TESTS, f"test must be one of {TESTS}, got {test!r}"
    d = np.asarray(diffs, dtype=float)[None, :]
    return float(_two_sided_rows(d, _constant_rows(d, np.abs(d).max(axis=1)), test)[0])


def beats_verdict(diff_mean: float, p_value: float, alpha: float) -> str:
    """ "better"/"worse" when the two-sided ``p_value`` is below ``alpha`` (each side at alpha/2).

    :param diff_mean: mean paired difference (its sign picks the side).
    :param p_value: two-sided p-value (Holm-adjusted when correcting for multiple comparisons).
    :param alpha: the two-sided level.
    """
    if p_value < alpha:
        return BETTER if diff_mean > 0 else WORSE
    return NO_DIFFERENCE


def matches_verdict(p_match: float, p_below: float, alpha: float) -> str:
    """Non-inferiority: "matches" if "mean <= -margin" is rejected at alpha/2 (one-sided), "below
    dense" if "mean >= -margin" is rejected at alpha/2, else "inconclusive".

    :param p_match: one-sided p-value of "mean difference <= -margin".
    :param p_below: one-sided p-value of "mean difference >= -margin".
    :param alpha: the two-sided level (each one-sided question at alpha/2).
    """
    if p_match < alpha / 2.0:
        return MATCHES
    if p_below < alpha / 2.0:
        return BELOW_DENSE
    return INCONCLUSIVE


@dataclass(frozen=True)
class PairedArrays:
    """:func:`paired_verdicts` for ``k`` samples at once: every field has shape ``(k,)``."""

    diff_mean: np.ndarray
    verdict: np.ndarray
    p_value: np.ndarray
    margin: np.ndarray
    p_below: np.ndarray
    low: np.ndarray
    high: np.ndarray


def paired_verdicts(
    a: ArrayLike,
    b: ArrayLike,
    *,
    question: Literal["beats", "matches"] = "beats",
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = DEFAULT_ALPHA,
    test: str = "t",
    bounds: Bounds = None,
) -> PairedArrays:
    """The tests of :func:`paired_verdict` on ``k`` complete samples of ``n`` seeds at once.

    Same arguments as :func:`paired_verdict` but ``a`` and ``b`` have shape ``(k, n)`` with no missing
    seed and ``n >= 2``; the seed minimum is the caller's. Simulations of the error rates use it.
    """
    a2 = np.atleast_2d(np.asarray(a, dtype=float))
    b2 = np.atleast_2d(np.asarray(b, dtype=float))
    assert a2.shape == b2.shape and a2.shape[1] >= 2, f"need (k, n >= 2) arrays, got {a2.shape}, {b2.shape}"
    assert np.all(np.isfinite(a2)) and np.all(np.isfinite(b2)), "drop missing seeds first"
    diffs = a2 - b2
    constant = _constant_rows(diffs, np.maximum(np.abs(a2).max(axis=1), np.abs(b2).max(axis=1)))
    diff_mean = diffs.mean(axis=1)
    k = diffs.shape[0]
    nan = np.full(k, np.nan)
    if question == "beats":
        p = _two_sided_rows(diffs, constant, test)
        verdict = np.where(p < alpha, np.where(diff_mean > 0, BETTER, WORSE), NO_DIFFERENCE)
        return PairedArrays(diff_mean, verdict.astype(object), p, np.zeros(k), nan, nan, nan)
    margin = tolerance * np.abs(b2.mean(axis=1))
    low, high = metric_range(a2, b2, bounds)
    # "mean difference <= -margin": the larger of the symmetric test's p-value and the bounded one's.
    p_symmetric = _p_greater_rows(diffs + margin[:, None], constant, test)
    p_match = np.maximum(p_symmetric, bounded_p_greater(diffs, -margin, low - high))
    p_below = _p_greater_rows(-diffs - margin[:, None], constant, test)
    p_below = np.maximum(p_below, bounded_p_greater(-diffs, margin, low - high))
    if bounds is None:
        # Constant differences say nothing about the size of a failure; with the range only guessed,
        # the verdict would rest on the guess alone.
        p_match = np.where(constant, 1.0, p_match)
        p_below = np.where(constant, 1.0, p_below)
    verdict = np.where(
        p_match < alpha / 2.0, MATCHES, np.where(p_below < alpha / 2.0, BELOW_DENSE, INCONCLUSIVE)
    )
    return PairedArrays(diff_mean, verdict.astype(object), p_match, margin, p_below, low, high)


def paired_verdict(
    a: ArrayLike,
    b: ArrayLike,
    min_seeds: int = 5,
    *,
    question: Literal["beats", "matches"] = "beats",
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = DEFAULT_ALPHA,
    test: str = "t",
    bounds: Bounds = None,
) -> PairedResult:
    """Verdict of a paired test on the per-seed differences ``a - b``.

    - ``question="beats"`` (Yu et al. 2020: a winning ticket beats parameter-matched controls): a
      two-sided test of "mean difference = 0" at ``alpha``, split into its sides: ``"better"`` or
      ``"worse"`` (each at most ``alpha / 2`` under the null), else ``"no difference"``. Under the
      null the arms are exchangeable, so the differences are symmetric: the sign-flip test is exact,
      and the t-test is what it approximates (constant differences get the sign-flip p-value).
    - ``question="matches"`` (Frankle & Carbin 2019: the ticket is not worse than the dense
      network): one-sided non-inferiority with margin ``m = tolerance * |mean(b)|``. ``"matches"``
      if "mean difference <= -m" is rejected at ``alpha / 2``, ``"below dense"`` if "mean difference
      >= -m" is rejected at ``alpha / 2``, else ``"inconclusive"``. Each p-value is the larger of the
      symmetric test's (t or sign-flip, which assume near-normal or symmetric differences) and that of
      the bounded test of :func:`rl_tickets.report.bounded.bounded_p_greater`, which holds for every
      distribution inside the metric's range. So the verdict's error rate is at most ``alpha / 2`` on
      capped, tied and two-point data when ``bounds`` is the metric's true range, at every n: with
      ``n`` tied seeds "matches" needs ``(1 - m / (high - low))**n < alpha / 2`` at least (71 seeds
      at a 5% margin on CartPole). A studentised bootstrap cannot do this: it never sees a failure
      absent from the sample, and is 0/0 on tied seeds. Without ``bounds`` the range is the hull of 0
      and the observed values (a guess), and constant differences give ``"inconclusive"``.

    With fewer than ``max(min_seeds, min_seeds_for(test, alpha))`` paired seeds the verdict is
    ``"not enough seeds"`` (the numbers are still filled in where they can be computed).

    :param a: per-seed values of the ticket.
    :param b: per-seed values of the comparison, aligned with ``a`` (NaN for a missing seed).
    :param min_seeds: minimum number of paired seeds for a verdict.
    :param question: ``"beats"`` or ``"matches"``.
    :param tolerance: relative non-inferiority margin for ``"matches"``; ignored for ``"beats"``.
    :param alpha: two-sided level of the test and one minus the interval's confidence.
    :param test: ``"t"`` (paired t-test) or ``"signflip"`` (exact sign-flip permutation test).
    :param bounds: ``(low, high)``, the lowest and highest value the metric can take (e.g. ``(0, 1)``
        for an accuracy, ``(0, 500)`` for CartPole-v1's return); used by ``"matches"`` only.
    :return: a :class:`PairedResult`.
    """
    assert question in ("beats", "matches"), f"question must be 'beats' or 'matches', got {question!r}"
    assert tolerance >= 0, f"tolerance is a non-negative fraction of the dense mean, got {tolerance}"
    assert 0 < alpha < 1, f"alpha is a level in (0, 1), got {alpha}"
    assert test in TESTS, f"test must be one of {TESTS}, got {test!r}"
    a_kept, b_kept = _paired(a, b)
    diffs = a_kept - b_kept
    n = int(diffs.size)
    diff_mean = float(diffs.mean()) if n else float("nan")
    lo, hi = t_interval(diffs, alpha)
    margin = tolerance * abs(float(b_kept.mean())) if (question == "matches" and n) else 0.0
    if n < max(min_seeds, min_seeds_for(test, alpha), 2):
        return PairedResult(diff_mean, lo, hi, n, NOT_ENOUGH_SEEDS, float("nan"), margin, test)
    r = paired_verdicts(
        a_kept[None, :],
        b_kept[None, :],
        question=question,
        tolerance=tolerance,
        alpha=alpha,
        test=test,
        bounds=bounds,
    )
    return PairedResult(
        diff_mean,
        lo,
        hi,
        n,
        str(r.verdict[0]),
        float(r.p_value[0]),
        float(r.margin[0]),
        test,
        float(r.p_below[0]),
        float(r.low[0]),
        float(r.high[0]),
    )
