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
exactly that constant.
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


@dataclass(frozen=True)
class PairedResult:
    """Outcome of a paired per-seed comparison ``a - b``.

    :param diff_mean: mean over seeds of ``a - b``.
    :param ci_low: lower bound of the bootstrap CI of that mean.
    :param ci_high: upper bound.
    :param n: number of seeds where both ``a`` and ``b`` are finite.
    :param verdict: one of the verdict words of this module.
    """

    diff_mean: float
    ci_low: float
    ci_high: float
    n: int
    verdict: str


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


def paired_verdict(
    a: ArrayLike,
    b: ArrayLike,
    min_seeds: int = 3,
    *,
    question: Literal["beats", "matches"] = "beats",
    tolerance: float = 0.0,
    confidence: float = DEFAULT_CONFIDENCE,
    n_resamples: int = DEFAULT_N_RESAMPLES,
    seed: int = 0,
) -> PairedResult:
    """Verdict from the bootstrap CI of the mean paired difference ``a - b`` over seeds.

    Two questions, both on the same interval ``[lo, hi]``:

    - ``question="beats"`` (Yu et al. 2020: a winning ticket beats parameter-matched controls):
      ``"better"`` if ``lo > 0``, ``"worse"`` if ``hi < 0``, else ``"no difference"``.
    - ``question="matches"`` (Frankle & Carbin 2019: the ticket is not worse than the dense
      network), a non-inferiority test with margin ``m = tolerance * |mean(b)|``:
      ``"matches"`` if ``lo >= -m``, ``"below dense"`` if ``hi < -m`` (the whole interval is
      worse than the margin), else ``"inconclusive"`` (the data cannot tell).
      The tolerance is *relative* to the dense mean so one value works for returns and
      accuracies alike. Its default of 0 is the strict reading ("at least as good"): with noisy
      returns the CI often straddles 0, and then we say "inconclusive" rather than claim a
      match; pass e.g. ``tolerance=0.05`` to accept a 5% loss.

    With fewer than ``max(min_seeds, 2)`` paired seeds the verdict is ``"not enough seeds"``
    (the numbers are still filled in where they can be computed).

    :param a: per-seed values of the ticket.
    :param b: per-seed values of the comparison, aligned with ``a`` (NaN for a missing seed).
    :param min_seeds: minimum number of paired seeds for a verdict.
    :param question: ``"beats"`` or ``"matches"``.
    :param tolerance: relative non-inferiority margin for ``"matches"``; ignored for ``"beats"``.
    :param confidence: confidence level of the interval.
    :param n_resamples: bootstrap resamples.
    :param seed: seed of the resampling.
    :return: a :class:`PairedResult`.
    """
    assert question in ("beats", "matches"), f"question must be 'beats' or 'matches', got {question!r}"
    assert tolerance >= 0, f"tolerance is a non-negative fraction of the dense mean, got {tolerance}"
    diffs = paired_differences(a, b)
    n = int(diffs.size)
    diff_mean = float(diffs.mean()) if n else float("nan")
    lo, hi = bootstrap_ci(diffs, _mean, confidence, n_resamples, seed)
    if n < max(min_seeds, 2):
        return PairedResult(diff_mean, lo, hi, n, NOT_ENOUGH_SEEDS)
    if question == "beats":
        verdict = BETTER if lo > 0 else WORSE if hi < 0 else NO_DIFFERENCE
    else:
        # The margin is relative to the comparison's mean over the same paired seeds.
        margin = tolerance * abs(float(np.mean(_paired(a, b)[1])))
        verdict = MATCHES if lo >= -margin else BELOW_DENSE if hi < -margin else INCONCLUSIVE
    return PairedResult(diff_mean, lo, hi, n, verdict)
