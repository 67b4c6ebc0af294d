"""The report's headline metric per level (``rl-tickets-report --metric final|best|auc``).

- ``final``: the value ``levels.csv`` holds, the evaluation at the end of the level (RL: mean return of
  the final deterministic evaluation; supervised: test accuracy at the early-stopping iteration).
- ``best``: the maximum over the level's evaluations in ``eval_curve.csv`` (Vischer et al. 2022 plot
  the mean *best* performance). On CartPole the final return saturates at 500 and hides differences.
- ``auc``: the trapezoidal area under the evaluation curve over the level's evaluated steps, divided by
  their span (last evaluated step − first): the curve's time average, in the metric's own units.
  Undefined (NaN, shown as "–") with fewer than 2 evaluations, e.g. ``eval.every=0``.
- ``last10``: the mean over the last 10% of the level's evaluations (``int(0.1 * n)``, at least one),
  Graesser et al. 2022's metric (``average_last_fraction=0.1`` in google-research/rigl's ``rigl/rl``).

The evaluation curve is ``eval/return_mean`` (RL) or ``test/accuracy`` (supervised) against ``step``.
A level without a curve (an untrained supermask row: nothing was trained) has one evaluation, its
``levels.csv`` value: its best is that value and its auc is undefined. Best and auc of a return lie in
the same range as the return, so a verdict's bounds hold for all three metrics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rl_tickets.report.records import Experiment, read_csv

METRICS = ("final", "best", "auc", "last10")
# last10: the fraction of the last evaluations averaged (Graesser et al. 2022).
LAST_FRACTION = 0.1
DEFAULT_METRIC = "final"
CURVE_FILE = "eval_curve.csv"
STEP_COLUMN = "step"
RL_CURVE_COLUMN = "eval/return_mean"
SUPERVISED_CURVE_COLUMN = "test/accuracy"


def curve_column(exp: Experiment) -> str:
    """The ``eval_curve.csv`` column the metric is taken from (RL return or supervised test accuracy).

    :param exp: the experiment.
    """
    return SUPERVISED_CURVE_COLUMN if exp.is_supervised else RL_CURVE_COLUMN


def read_curve(directory: Path | None, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A level's evaluations: steps (sorted, a step logged twice keeps its last value) and values.

    :param directory: the level directory (``None``: no evaluations).
    :param column: the value column.
    :return: two equal-length float arrays, empty when there is no usable curve.
    """
    df = read_csv(directory / CURVE_FILE) if directory is not None else pd.DataFrame()
    if df.empty or not {STEP_COLUMN, column} <= set(df.columns):
        return np.zeros(0), np.zeros(0)
    xy = pd.DataFrame(
        {
            "x": pd.to_numeric(df[STEP_COLUMN], errors="coerce"),
            "y": pd.to_numeric(df[column], errors="coerce"),
        }
    ).dropna()
    xy = xy.drop_duplicates("x", keep="last").sort_values("x")
    return xy["x"].to_numpy(float), xy["y"].to_numpy(float)


def best_of(values: np.ndarray) -> float:
    """The maximum evaluation; NaN without any.

    :param values: the level's evaluation values.
    """
    return float(np.max(values)) if values.size else float("nan")


def auc_of(steps: np.ndarray, values: np.ndarray) -> float:
    """Trapezoidal area under the curve divided by its span; NaN with fewer than 2 evaluations.

    :param steps: evaluated steps, increasing and distinct.
    :param values: the values at those steps.
    """
    if steps.size < 2:
        return float("nan")
    widths = np.diff(steps)
    area = float(np.sum(widths * (values[1:] + values[:-1]) / 2.0))
    return area / float(steps[-1] - steps[0])


def last_fraction_of(values: np.ndarray, fraction: float = LAST_FRACTION) -> float:
    """The mean of the last ``int(fraction * n)`` evaluations (at least one); NaN without any.

    :param values: the level's evaluation values, in step order.
    :param fraction: the fraction of evaluations averaged.
    """
    if not values.size:
        return float("nan")
    return float(np.mean(values[-max(1, int(fraction * values.size)) :]))


def level_metric(directory: Path | None, column: str, metric: str, final: float) -> float:
    """One level's metric.

    :param directory: the level directory (its ``eval_curve.csv``), or ``None``.
    :param column: the curve's value column.
    :param metric: ``final``, ``best`` or ``auc``.
    :param final: the level's ``levels.csv`` value (the final metric, and the only evaluation of a
        level without a curve).
    """
    assert metric in METRICS, f"metric must be one of {METRICS}, got {metric!r}"
    if metric == "final":
        return final
    steps, values = read_curve(directory, column)
    if not steps.size:
        steps, values = np.zeros(1), np.array([final], dtype=float)
    if metric == "last10":
        return last_fraction_of(values)
    return best_of(values) if metric == "best" else auc_of(steps, values)


def metric_label(exp: Experiment, metric: str) -> str:
    """What the chosen metric is, for axis labels and table headers.

    :param exp: the experiment.
    :param metric: ``final``, ``best`` or ``auc``.
    """
    if exp.is_supervised:
        what, unit = "test accuracy", "iterations"
        final = f"test accuracy at early stop ({exp.metric})"
    else:
        what, unit = "return", "steps"
        final = f"final return ({exp.metric})"
    return {
        "final": final,
        "best": f"best {what} (max over evaluations)",
        "auc": f"{what} AUC (area under the evaluation curve / {unit})",
        "last10": f"{what}, mean of the last 10% of evaluations",
    }[metric]


def metric_definition(exp: Experiment, metric: str) -> str:
    """One sentence defining the metric, for ``summary.md``.

    :param exp: the experiment.
    :param metric: ``final``, ``best`` or ``auc``.
    """
    curve = f"`{curve_column(exp)}` in each level's `{CURVE_FILE}`"
    return {
        "final": f"the level's value in `levels.csv` (`{exp.metric}`), its end-of-level evaluation",
        "best": f"the maximum over the level's evaluations ({curve})",
        "auc": f"the trapezoidal area under {curve} over the evaluated steps, divided by their span; "
        "undefined (–) with fewer than 2 evaluations",
        "last10": f"the mean of the last 10% of the level's evaluations ({curve}; int(0.1 n), at least one), "
        "Graesser et al. 2022's metric",
    }[metric]
