"""Statistics across runs and tasks in rliable's conventions (Agarwal et al., NeurIPS 2021).

Pure functions over arrays, no I/O. ``rliable.library`` cannot be imported beside pandas 3 (through
``arch``), so the report computes the same quantities itself; ``tests/test_aggregates.py`` checks them
against numbers rliable 1.2 produced (``tests/fixtures/rliable_reference.json``).

- Scores of one variant are a list with one array per task (environment): ``runs`` seeds each,
  optionally followed by more axes (e.g. evaluation steps). Tasks may have different numbers of runs.
- The **stratified bootstrap** resamples runs with replacement *within* each task, never across tasks
  (rliable's ``StratifiedBootstrap``); intervals are percentile intervals, rliable's default.
- **IQM**: the 25%-trimmed mean over every run of every task (``aggregate_iqm``).
- **Probability of improvement** P(X > Y): per task the Mann-Whitney U statistic of X against Y over
  ``n_x * n_y`` (ties count one half), averaged over tasks; its bootstrap resamples X and Y
  independently within each task (``StratifiedIndependentBootstrap``).
- **Performance profile** (run-score distribution): the fraction of runs, over all tasks, whose score is
  strictly above each threshold tau.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95

Tasks = Sequence[np.ndarray]
# A statistic of resampled tasks: each array gains a leading resample axis, the result keeps it.
BatchStatistic = Callable[[list[np.ndarray]], np.ndarray]


def _as_tasks(tasks: Tasks) -> list[np.ndarray]:
    """Float arrays, one per task, with the runs on axis 0."""
    arrays = [np.asarray(t, dtype=float) for t in tasks]
    assert arrays and all(a.ndim >= 1 and a.shape[0] > 0 for a in arrays), (
        "give one array per task with at least one run each (runs on axis 0)"
    )
    return arrays


def _resample(tasks: list[np.ndarray], n_resamples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Each task's runs drawn with replacement within the task: arrays of shape ``(n_resamples, runs, ...)``."""
    return [t[rng.integers(0, t.shape[0], size=(n_resamples, t.shape[0]))] for t in tasks]


def percentile_interval(
    samples: np.ndarray, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """The central ``confidence`` percentile interval over axis 0 (NaN resamples are ignored).

    :param samples: bootstrap statistics, resamples on axis 0.
    :param confidence: e.g. 0.95.
    """
    tail = 100.0 * (1.0 - confidence) / 2.0
    return np.nanpercentile(samples, tail, axis=0), np.nanpercentile(samples, 100.0 - tail, axis=0)


def stratified_interval(
    tasks: Tasks,
    statistic: BatchStatistic,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of ``statistic`` under the stratified bootstrap of ``tasks``.

    :param tasks: one array per task, runs on axis 0.
    :param statistic: maps the resampled tasks (each ``(n_resamples, runs, ...)``) to ``(n_resamples, ...)``.
    :param n_resamples: bootstrap resamples.
    :param confidence: interval coverage.
    :param seed: seed of the resampling (a report is reproducible).
    :return: ``(low, high)`` with the statistic's shape.
    """
    rng = np.random.default_rng(seed)
    return percentile_interval(statistic(_resample(_as_tasks(tasks), n_resamples, rng)), confidence)


def _pooled(batch: list[np.ndarray]) -> np.ndarray:
    """All tasks' runs side by side on axis 1: ``(n_resamples, total runs, ...)``."""
    return np.concatenate(batch, axis=1)


def iqm(tasks: Tasks) -> float:
    """Interquartile mean over every run of every task (rliable's ``aggregate_iqm``).

    :param tasks: one array of per-run scores per task.
    """
    return float(scipy.stats.trim_mean(np.concatenate([t.ravel() for t in _as_tasks(tasks)]), 0.25))


def iqm_interval(
    tasks: Tasks, n_resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0
) -> tuple[float, float]:
    """Stratified-bootstrap percentile interval of :func:`iqm`.

    :param tasks: one array of per-run scores per task.
    :param n_resamples: bootstrap resamples.
    :param confidence: interval coverage.
    :param seed: seed of the resampling.
    """
    low, high = stratified_interval(
        [np.ravel(t) for t in tasks],
        lambda batch: scipy.stats.trim_mean(_pooled(batch), 0.25, axis=1),
        n_resamples,
        confidence,
        seed,
    )
    return float(low), float(high)


def mean_band(
    runs: np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise bootstrap interval of the mean over runs of a curve (one task: runs x points).

    A run missing at a point (NaN) is left out of that point's means.

    :param runs: ``(runs, points)``.
    :param n_resamples: bootstrap resamples.
    :param confidence: interval coverage.
    :param seed: seed of the resampling.
    :return: ``(low, high)`` per point; NaN where fewer than two runs have a value.
    """
    runs = np.asarray(runs, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples at a point few runs reach
        low, high = stratified_interval(
            [runs], lambda b: np.nanmean(b[0], axis=1), n_resamples, confidence, seed
        )
    few = np.sum(np.isfinite(runs), axis=0) < 2
    return np.where(few, np.nan, low), np.where(few, np.nan, high)


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) of one task from run scores on the last axis (leading axes: resamples); ties count half."""
    greater = (x[..., :, None] > y[..., None, :]).mean(axis=(-2, -1))
    ties = (x[..., :, None] == y[..., None, :]).mean(axis=(-2, -1))
    return greater + 0.5 * ties


def probability_of_improvement(x_tasks: Tasks, y_tasks: Tasks) -> float:
    """P(X > Y) averaged over tasks (rliable's ``probability_of_improvement``).

    :param x_tasks: per-run scores of X, one array per task.
    :param y_tasks: per-run scores of Y, the same tasks in the same order.
    """
    assert len(x_tasks) == len(y_tasks), "X and Y need the same tasks"
    return float(np.mean([_improvement(np.ravel(x), np.ravel(y)) for x, y in zip(x_tasks, y_tasks)]))


def improvement_interval(
    x_tasks: Tasks,
    y_tasks: Tasks,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of :func:`probability_of_improvement`, X and Y resampled independently within tasks.

    :param x_tasks: per-run scores of X, one array per task.
    :param y_tasks: per-run scores of Y.
    :param n_resamples: bootstrap resamples.
    :param confidence: interval coverage.
    :param seed: seed of the resampling.
    """
    rng = np.random.default_rng(seed)
    xs = _resample([np.ravel(x) for x in _as_tasks(x_tasks)], n_resamples, rng)
    ys = _resample([np.ravel(y) for y in _as_tasks(y_tasks)], n_resamples, rng)
    samples = np.mean([_improvement(x, y) for x, y in zip(xs, ys)], axis=0)
    low, high = percentile_interval(samples, confidence)
    return float(low), float(high)


def _fraction_above(pooled: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of runs (axis -1) strictly above each tau: ``(..., len(taus))``."""
    return (pooled[..., None] > taus).mean(axis=-2)


def performance_profile(tasks: Tasks, taus: np.ndarray) -> np.ndarray:
    """Run-score distribution: the fraction of all runs whose score is above each tau.

    :param tasks: one array of per-run scores per task.
    :param taus: thresholds.
    """
    return _fraction_above(np.concatenate([np.ravel(t) for t in _as_tasks(tasks)]), np.asarray(taus, float))


def profile_interval(
    tasks: Tasks,
    taus: np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified-bootstrap percentile interval of :func:`performance_profile` at each tau.

    :param tasks: one array of per-run scores per task.
    :param taus: thresholds.
    :param n_resamples: bootstrap resamples.
    :param confidence: interval coverage.
    :param seed: seed of the resampling.
    """
    taus = np.asarray(taus, dtype=float)
    return stratified_interval(
        [np.ravel(t) for t in tasks],
        lambda batch: _fraction_above(_pooled(batch), taus),
        n_resamples,
        confidence,
        seed,
    )
