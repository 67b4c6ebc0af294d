"""Points on the straight line between two trained networks: weights, and normalisation statistics.

``(1 - alpha) * a + alpha * b`` rather than ``torch.lerp`` (``a + alpha * (b - a)``): the former is
exactly ``a`` at alpha 0 and exactly ``b`` at alpha 1 in floating point, so the ends of the path are the
two copies themselves, bit for bit. Where both copies have a pruned weight (exactly 0) every point has
0 there too; the evaluators still apply the mask at every point, so the invariant never rests on that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def interpolate(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """The parameters ``(1 - alpha) * a + alpha * b``, name by name.

    :param a: the first copy's parameters.
    :param b: the second copy's (same names and shapes).
    :param alpha: 0 gives ``a`` exactly, 1 gives ``b`` exactly.
    """
    if set(a) != set(b):
        raise KeyError(f"the two copies have different parameters: {sorted(set(a) ^ set(b))[:5]}")
    return {name: (1.0 - alpha) * a[name] + alpha * b[name] for name in a}


def interpolate_array(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) * a + alpha * b`` for NumPy arrays (normalisation statistics).

    :param a: the first copy's array.
    :param b: the second copy's.
    :param alpha: the weight of ``b``.
    """
    return (1.0 - alpha) * np.asarray(a) + alpha * np.asarray(b)


def interpolate_running_stats(a: Any, b: Any, alpha: float) -> Any:
    """A copy of ``a`` (an SB3 ``RunningMeanStd``, or a dict of them) with mean and variance interpolated.

    The observation normaliser is the network's fixed input layer at evaluation time, so it moves along
    the path with the weights: each end is evaluated with its own copy's statistics, exactly.

    :param a: the first copy's statistics.
    :param b: the second copy's.
    :param alpha: the weight of ``b``.
    """
    if isinstance(a, dict):
        return {key: interpolate_running_stats(a[key], b[key], alpha) for key in a}
    out = type(a)(shape=np.shape(a.mean))
    out.mean = interpolate_array(a.mean, b.mean, alpha)
    out.var = interpolate_array(a.var, b.var, alpha)
    out.count = (1.0 - alpha) * a.count + alpha * b.count
    return out


def instability(values: list[float], higher_is_better: bool) -> tuple[float, int]:
    """Frankle et al. 2020's instability of a path and the index of its worst point.

    Returns: the mean of the two ends minus the worst point (error: the worst point minus the mean of
    the ends). Never negative, since the worst point is at most as good as either end.

    :param values: the metric at each alpha, ends first and last.
    :param higher_is_better: returns (True) or an error (False).
    """
    ends = (values[0] + values[-1]) / 2.0
    if higher_is_better:
        worst = int(np.argmin(values))
        return ends - values[worst], worst
    worst = int(np.argmax(values))
    return values[worst] - ends, worst


def barrier(values: list[float], alphas: list[float], higher_is_better: bool) -> float:
    """The largest dip of the path below the straight line joining its two ends (never negative).

    Not Frankle et al.'s instability, which measures the worst point against the *mean* of the ends:
    when the two copies end far apart (common in RL, where seeds of one agent can end at 60 and at 430)
    the worse end alone makes the instability half their gap, on a path without any dip. The barrier
    (the "loss barrier" of later work on mode connectivity) is 0 for any path at or above that line.

    :param values: the metric at each alpha, ends first and last.
    :param alphas: the interpolation weights (0 first, 1 last).
    :param higher_is_better: returns (True) or an error (False).
    """
    sign = 1.0 if higher_is_better else -1.0
    line = [(1.0 - a) * values[0] + a * values[-1] for a in alphas]
    return max(0.0, *(sign * (expected - value) for expected, value in zip(line, values, strict=True)))
