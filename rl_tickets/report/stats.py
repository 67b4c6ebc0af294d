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

Verdicts are *tests*, not bootstrap intervals; they live in :mod:`rl_tickets.report.verdicts` (and
the bounded test behind "matches dense" in :mod:`rl_tickets.report.bounded`) and are re-exported here,
so ``stats.paired_verdict`` and the verdict words keep working.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

from rl_tickets.report.bounded import bounded_p_greater, metric_range, min_seeds_exact, min_seeds_tied
from rl_tickets.report.verdicts import (
    BELOW_DENSE,
    BETTER,
    DEFAULT_ALPHA,
    DEFAULT_TOLERANCE,
    EXACT_SIGNFLIP_MAX_N,
    INCONCLUSIVE,
    MATCHES,
    NO_DIFFERENCE,
    NOT_ENOUGH_SEEDS,
    SIGNFLIP_RESAMPLES,
    TESTS,
    WORSE,
    PairedArrays,
    PairedResult,
    beats_verdict,
    matches_verdict,
    min_seeds_for,
    p_greater,
    p_two_sided,
    paired_differences,
    paired_verdict,
    paired_verdicts,
    t_interval,
)

__all__ = [
    "BELOW_DENSE",
    "BETTER",
    "DEFAULT_ALPHA",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_N_RESAMPLES",
    "DEFAULT_TOLERANCE",
    "EXACT_SIGNFLIP_MAX_N",
    "INCONCLUSIVE",
    "MATCHES",
    "NO_DIFFERENCE",
    "NOT_ENOUGH_SEEDS",
    "SIGNFLIP_RESAMPLES",
    "TESTS",
    "WORSE",
    "PairedArrays",
    "PairedResult",
    "beats_verdict",
    "bootstrap_ci",
    "bounded_p_greater",
    "holm",
    "iqm",
    "matches_verdict",
    "metric_range",
    "min_seeds_exact",
    "min_seeds_for",
    "min_seeds_tied",
    "p_greater",
    "p_two_sided",
    "paired_differences",
    "paired_verdict",
    "paired_verdicts",
    "summarise",
    "t_interval",
]

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
