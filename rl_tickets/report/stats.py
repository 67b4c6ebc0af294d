"""Statistics for lottery-ticket reports: IQM, bootstrap confidence intervals and paired verdicts.

Pure functions over arrays, no I/O. Conventions follow rliable (Agarwal et al., NeurIPS 2021),
the tool Graesser et al. 2022 and Obando-Ceron et al. 2024 use for deep-RL sparsity results:

- the interquartile mean (IQM) is ``scipy.stats.trim_mean(x, 0.25)``, rliable's definition;
- confidence intervals are percentile bootstrap intervals over seeds (rliable's default method).
  Within one experiment there is a single task, so rliable's *stratified* bootstrap (resample
  runs within each task) reduces to this plain bootstrap over seeds. We call
  ``scipy.stats.bootstrap`` directly: ``rliable.library`` imports ``arch``, whose import breaks
  with recent pandas, and the report must not depend on that.

Percentile rather than BCa because BCa returns NaN on degenerate samples (a capped return of
500 on every seed is common in CartPole), while the percentile interval of a constant sample is
exactly that constant. These intervals are *descriptive* (the summary tables and plots).

Verdicts are *tests*, not bootstrap intervals: a percentile bootstrap of the mean paired difference
said "better" or "worse" under the null in 17.7% of trials at 5 seeds (8.7% at 10) against a nominal
5%, because with few seeds it is far too narrow. :func:`paired_verdict` uses a paired t-test (or an
exact sign-flip permutation test) whose error rate under the null is at most its level; the tests in
``tests/test_stats.py`` check that by simulation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

# Verdict words, shared by the report and the tests.
BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no difference"
NOT_ENOUGH_SEEDS = "not enough seeds"
MATCHES = "matches"
BELOW_DENSE = "below dense"
INCONCLUSIVE = "inconclusive"

DEFAULT_N_RESAMPLES = 10_000
DEFAULT_CONFIDENCE = 0.95

Statistic = Callable[..., float | np.ndarray]


def _finite(x: ArrayLike) -> np.ndarray:
    """Return ``x`` as a flat float array with NaN and inf removed (missing seeds, failed levels)."""
    arr = np.asarray(x, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def iqm(x: ArrayLike, axis: int | None = None) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle 50% of values (rliable's definition).

    :param x: values, e.g. one final return per seed.
    :param axis: axis to reduce; ``None`` flattens (scipy's ``trim_mean`` uses axis 0 by default,
        we flatten so that a plain list of seeds just works).
    :return: the 25%-trimmed mean; NaN for an empty input.
    """
    arr = np.asarray(x, dtype=float)
    if axis is None:
        arr = arr.ravel()
        if arr.size == 0:
            return float("nan")
        return float(scipy.stats.trim_mean(arr, 0.25))
    return scipy.stats.trim_mean(arr, 0.25, axis=axis)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Vectorised mean, so ``scipy.stats.bootstrap`` evaluates all resamples at once."""
    return np.mean(x, axis=axis)


def _rng_kwargs(seed: int) -> dict[str, np.random.Generator]:
    """Pass the generator under the keyword this scipy accepts (``rng`` since 1.15)."""
    params = inspect.signature(scipy.stats.bootstrap).parameters
    key = "rng" if "rng" in params else "random_state"
    return {key: np.random.default_rng(seed)}


def bootstrap_ci(
    x: ArrayLike,
    statistic: Statistic = _mean,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic`` over the values of ``x``.

    :param x: values (NaN are dropped, as a missing seed).
    :param statistic: a function of the sample; if it takes an ``axis`` keyword (like
        :func:`iqm` or ``np.mean``) scipy evaluates it vectorised, which is much faster.
    :param confidence: confidence level, e.g. 0.95.
    :param n_resamples: number of bootstrap resamples.
    :param seed: seed of the resampling, so a report is reproducible.
    :return: ``(low, high)``; ``(nan, nan)`` for fewer than two values, and ``(v, v)`` for a
        constant sample ``v`` (every resample has the same statistic).
    """
    arr = _finite(x)
    if arr.size < 2:
        return float("nan"), float("nan")
    if np.all(arr == arr[0]):
        point = float(statistic(arr))
        return point, point
    result = scipy.stats.bootstrap(
        (arr,),
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        **_rng_kwargs(seed),
    )
    ci = result.confidence_interval
    return float(ci.low), float(ci.high)


def summarise(
    values: ArrayLike,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    seed: int = 0,
) -> dict[str, float]:
    """Summary of one metric over seeds: ``n, mean, std, iqm, ci_low, ci_high``.

    The CI is the bootstrap CI of the mean (the point the tables and plots show); ``std`` is
    the sample standard deviation (ddof=1), NaN for a single seed.

    :param values: one value per seed; NaN entries are ignored.
    :param confidence: confidence level of the interval.
    :param n_resamples: bootstrap resamples.
    :param seed: seed of the resampling.
    :return: a dict with float values (``n`` as a float-compatible int).
    """
    arr = _finite(values)
    n = int(arr.size)
    low, high = bootstrap_ci(arr, _mean, confidence, n_resamples, seed)
    return {
        "n": n,
        "mean": float(arr.mean()) if n else float("nan"),
        "std": float(arr.std(ddof=1)) if n > 1 else float("nan"),
        "iqm": iqm(arr),
        "ci_low": low,
        "ci_high": high,
    }


# Verdict tests: a paired t-test (can give a verdict from 2 paired seeds; assumes roughly normal
# differences) or an exact sign-flip permutation test (no distributional assumption beyond symmetry
# of the differences under the null; its smallest two-sided p-value is 2 / 2**n).
TESTS = ("t", "signflip")
DEFAULT_ALPHA = 0.05
DEFAULT_TOLERANCE = 0.05
# Sign-flip p-values are exact (all 2**n sign patterns) up to this many seeds, Monte Carlo beyond.
EXACT_SIGNFLIP_MAX_N = 16
SIGNFLIP_RESAMPLES = 100_000


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
    :param ci_low: lower bound of the two-sided ``1 - alpha`` t-interval of that mean.
    :param ci_high: upper bound.
    :param n: number of seeds where both ``a`` and ``b`` are finite.
    :param verdict: one of the verdict words of this module.
    :param p_value: for ``beats`` the two-sided p-value of "mean difference = 0"; for ``matches`` the
        one-sided p-value of "mean difference <= -margin" (NaN when there are too few seeds).
    :param margin: the non-inferiority margin in the metric's units (0 for ``beats``).
    :param test: the test that produced the p-value.
    :param p_below: for ``matches`` the one-sided p-value of "mean difference >= -margin" (the
        evidence for "below dense"); NaN for ``beats``.
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
    """Two-sided ``1 - alpha`` Student-t interval of the mean of ``diffs``.

    Constant differences (e.g. every seed at CartPole's cap of 500 in both variants) have zero
    spread: the interval is that constant, never NaN.

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


def _t_p_greater(diffs: np.ndarray, shift: float) -> float:
    """One-sided t-test p-value of "mean(diffs) <= shift" against "mean(diffs) > shift"."""
    centred = diffs - shift
    mean, sd = float(centred.mean()), float(centred.std(ddof=1))
    if sd == 0.0:
        # Every difference equal: the evidence is as strong as it gets in that direction, or none.
        return 0.0 if mean > 0 else 1.0
    t = mean / (sd / np.sqrt(centred.size))
    return float(scipy.stats.t.sf(t, df=centred.size - 1))


def _signflip_p_greater(diffs: np.ndarray, shift: float, seed: int = 0) -> float:
    """One-sided sign-flip permutation p-value of "mean(diffs - shift) <= 0".

    Under the null the centred differences are symmetric about 0, so every sign pattern is equally
    likely; the p-value is the fraction of patterns whose mean is at least the observed one
    (exact enumeration up to :data:`EXACT_SIGNFLIP_MAX_N` seeds, else Monte Carlo with the observed
    pattern counted, which keeps the test valid).
    """
    centred = diffs - shift
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


def p_greater(diffs: np.ndarray, shift: float = 0.0, test: str = "t") -> float:
    """One-sided p-value of "mean difference <= shift" (small: the mean is above ``shift``).

    :param diffs: paired differences (at least 2).
    :param shift: the null boundary (0, or minus a non-inferiority margin).
    :param test: ``"t"`` (paired t-test) or ``"signflip"`` (exact sign-flip permutation test).
    """
    assert test in TESTS, f"test must be one of {TESTS}, got {test!r}"
    return _t_p_greater(diffs, shift) if test == "t" else _signflip_p_greater(diffs, shift)


def p_two_sided(diffs: np.ndarray, test: str = "t") -> float:
    """Two-sided p-value of "mean difference = 0": twice the smaller one-sided p-value, at most 1.

    :param diffs: paired differences (at least 2).
    :param test: ``"t"`` or ``"signflip"``.
    """
    if np.all(diffs == 0):
        return 1.0
    upper = p_greater(diffs, 0.0, test)
    lower = p_greater(-diffs, 0.0, test)
    return float(min(1.0, 2.0 * min(upper, lower)))


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


def paired_verdict(
    a: ArrayLike,
    b: ArrayLike,
    min_seeds: int = 5,
    *,
    question: Literal["beats", "matches"] = "beats",
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = DEFAULT_ALPHA,
    test: str = "t",
) -> PairedResult:
    """Verdict of a paired test on the per-seed differences ``a - b``.

    - ``question="beats"`` (Yu et al. 2020: a winning ticket beats parameter-matched controls): a
      two-sided test of "mean difference = 0" at ``alpha``, split into its sides: ``"better"`` or
      ``"worse"`` (each at most ``alpha / 2`` under the null), else ``"no difference"``.
    - ``question="matches"`` (Frankle & Carbin 2019: the ticket is not worse than the dense
      network): one-sided non-inferiority with margin ``m = tolerance * |mean(b)|``. ``"matches"``
      if "mean difference <= -m" is rejected at ``alpha / 2`` (equivalently the ``1 - alpha``
      t-interval's lower end lies above ``-m`` under the t-test), ``"below dense"`` if "mean
      difference >= -m" is rejected at ``alpha / 2``, else ``"inconclusive"``. A ticket that
      clearly beats dense also matches. The margin is relative to the dense mean so one value works
      for returns and accuracies alike.

    With fewer than ``max(min_seeds, min_seeds_for(test, alpha))`` paired seeds the verdict is
    ``"not enough seeds"`` (the numbers are still filled in where they can be computed).

    :param a: per-seed values of the ticket.
    :param b: per-seed values of the comparison, aligned with ``a`` (NaN for a missing seed).
    :param min_seeds: minimum number of paired seeds for a verdict.
    :param question: ``"beats"`` or ``"matches"``.
    :param tolerance: relative non-inferiority margin for ``"matches"``; ignored for ``"beats"``.
    :param alpha: two-sided level of the test and one minus the interval's confidence.
    :param test: ``"t"`` (paired t-test) or ``"signflip"`` (exact sign-flip permutation test).
    :return: a :class:`PairedResult`.
    """
    assert question in ("beats", "matches"), f"question must be 'beats' or 'matches', got {question!r}"
    assert tolerance >= 0, f"tolerance is a non-negative fraction of the dense mean, got {tolerance}"
    assert 0 < alpha < 1, f"alpha is a level in (0, 1), got {alpha}"
    a_kept, b_kept = _paired(a, b)
    diffs = a_kept - b_kept
    n = int(diffs.size)
    diff_mean = float(diffs.mean()) if n else float("nan")
    lo, hi = t_interval(diffs, alpha)
    margin = tolerance * abs(float(b_kept.mean())) if (question == "matches" and n) else 0.0
    if n < max(min_seeds, min_seeds_for(test, alpha), 2):
        return PairedResult(diff_mean, lo, hi, n, NOT_ENOUGH_SEEDS, float("nan"), margin, test)
    if question == "beats":
        p = p_two_sided(diffs, test)
        return PairedResult(diff_mean, lo, hi, n, beats_verdict(diff_mean, p, alpha), p, margin, test)
    p_match = p_greater(diffs, -margin, test)
    p_below = p_greater(-diffs, margin, test)
    verdict = matches_verdict(p_match, p_below, alpha)
    return PairedResult(diff_mean, lo, hi, n, verdict, p_match, margin, test, p_below)


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count as tests).

    Rejecting where the adjusted p-value is below alpha controls the family-wise error rate at alpha.

    :param p_values: raw p-values of one family of tests.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out
