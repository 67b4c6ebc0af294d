"""A distribution-free test of a mean for bounded values: the evidence behind "matches dense".

The test. For i.i.d. values ``y_i >= y_low`` and the null "E[y] <= mu0" (with ``mu0 > y_low``), every
bet ``lam`` in ``[0, 1 / (mu0 - y_low)]`` makes ``prod_i (1 + lam * (y_i - mu0))`` a product of
non-negative factors, each of expectation at most 1 under the null, so the product's expectation is
at most 1. A weighted average of such products over a fixed grid of bets (Cover's universal
portfolio, 1991, on a grid) is still a non-negative variable of expectation at most 1 (an *e-value*),
and Markov's inequality makes ``min(1, 1 / e)`` a valid p-value: ``P(p <= a) <= a`` for every ``a``,
every sample size and every distribution on ``[y_low, inf)`` with mean at most ``mu0``. This is the
capital-process (betting) construction of Waudby-Smith & Ramdas, "Estimating means of bounded random
variables by betting", JRSS-B 86(1), 2024, with constant bets instead of predictable ones so that the
p-value does not depend on the order of the seeds.

Why the grid keeps half its weight on the largest bet ``lam = 1 / (mu0 - y_low)``: for values that
all sit at ``mu0 + d`` (e.g. ticket and dense both at CartPole's cap, ``d`` = the margin) it gives
``p = (1 - d / (mu0 + d - y_low))**n / w``, within the factor ``1 / w = 2`` of the smallest p-value
*any* valid test can give there. The least favourable null distribution puts mass ``d / range`` at
``y_low`` and the rest at the observed value; under it all ``n`` values tie with probability
``(1 - d / range)**n`` (see :func:`min_seeds_exact`). The other half of the weight, spread over
smaller bets, keeps power when some values fall short (a single value at ``y_low`` zeroes the
largest bet).

The test needs a lower bound ``y_low`` that holds for every seed, i.e. the metric's range; it is the
price of validity: no test of a mean is valid over all distributions with unbounded support
(Bahadur & Savage, Ann. Math. Statist. 27(4), 1956).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

# Bets as fractions of the largest admissible one, and their weights: half on the largest bet (close
# to the exact bound on tied samples), half spread evenly over 1/20, ..., 19/20 of it.
BET_FRACTIONS = np.arange(1, 21) / 20.0
BET_WEIGHTS = np.r_[np.full(19, 0.5 / 19), 0.5]


def bounded_p_greater(y: np.ndarray, mu0: np.ndarray | float, y_low: np.ndarray | float) -> np.ndarray:
    """Valid one-sided p-value of "E[y] <= mu0" for values bounded below by ``y_low``.

    Vectorised over rows: ``y`` has shape ``(k, n)`` (``k`` samples of ``n`` values, or ``(n,)`` for one
    sample); ``mu0`` and ``y_low`` broadcast against ``k``. When ``mu0 <= y_low`` the null is
    impossible inside the bounds and the p-value is 0.

    :param y: values, every entry at least ``y_low``.
    :param mu0: the null boundary of the mean.
    :param y_low: a lower bound of every value (the metric's range, not the sample's).
    :return: p-values, shape ``(k,)`` (a float array of shape ``()`` for a 1-D ``y``).
    """
    y2 = np.atleast_2d(np.asarray(y, dtype=float))
    mu0 = np.broadcast_to(np.asarray(mu0, dtype=float), y2.shape[:1])
    y_low = np.broadcast_to(np.asarray(y_low, dtype=float), y2.shape[:1])
    span = mu0 - y_low
    possible = span > 0
    safe_span = np.where(possible, span, 1.0)
    # x >= -1 by the bound; clip rounding errors so that log1p never sees less than -1.
    x = np.maximum((y2 - mu0[:, None]) / safe_span[:, None], -1.0)
    with np.errstate(divide="ignore"):
        log_wealth = np.log1p(x[:, :, None] * BET_FRACTIONS).sum(axis=1)
    log_e = logsumexp(log_wealth, b=BET_WEIGHTS, axis=1)
    p = np.where(possible, np.minimum(1.0, np.exp(-log_e)), 0.0)
    return p if np.ndim(y) == 2 else p.reshape(())


def metric_range(
    a: np.ndarray, b: np.ndarray, bounds: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest value per row: the stated ``bounds`` widened to the observed values.

    Without ``bounds`` the range is the hull of 0 and the values of both arms. The non-inferiority
    margin is a fraction of ``|dense mean|``, which already takes 0 as the metric's origin (returns,
    accuracies); a metric that can fall below 0 without it being observed needs ``bounds``.

    :param a: ticket values, shape ``(k, n)``.
    :param b: comparison values, shape ``(k, n)``.
    :param bounds: ``(low, high)`` of the metric, or ``None``.
    :return: ``(low, high)``, each of shape ``(k,)``.
    """
    low = np.minimum(a.min(axis=1), b.min(axis=1))
    high = np.maximum(a.max(axis=1), b.max(axis=1))
    if bounds is None:
        return np.minimum(low, 0.0), np.maximum(high, 0.0)
    assert bounds[0] < bounds[1], f"bounds must be (low, high) with low < high, got {bounds}"
    return np.minimum(low, bounds[0]), np.maximum(high, bounds[1])


def min_seeds_exact(margin: float, low: float, high: float, alpha_one_sided: float = 0.025) -> int:
    """Fewest seeds at which *any* valid test may say "matches" when every seed ties.

    A ticket whose mean is one margin below dense can put mass ``margin / (high - low)`` at ``low``
    and the rest on dense's value; all ``n`` seeds then tie with probability
    ``(1 - margin / (high - low))**n``, so a valid level-``alpha_one_sided`` test needs that below
    ``alpha_one_sided``: ``n >= ln(alpha_one_sided) / ln(1 - margin / (high - low))``.

    :param margin: the non-inferiority margin in the metric's units.
    :param low: the metric's lowest possible value.
    :param high: its highest possible value.
    :param alpha_one_sided: level of the one-sided "matches" test (alpha / 2).
    """
    share = margin / (high - low)
    if share >= 1.0:
        return 1
    return math.ceil(math.log(alpha_one_sided) / math.log1p(-share) - 1e-12)


def min_seeds_tied(margin: float, low: float, high: float, alpha_one_sided: float = 0.025) -> int:
    """Fewest seeds at which :func:`bounded_p_greater` says "matches" on tied seeds (this suite's test).

    :param margin: the non-inferiority margin in the metric's units.
    :param low: the metric's lowest possible value.
    :param high: its highest possible value.
    :param alpha_one_sided: level of the one-sided "matches" test.
    """
    n = min_seeds_exact(margin, low, high, alpha_one_sided)
    while bounded_p_greater(np.zeros(n), -margin, low - high) >= alpha_one_sided:
        n += 1
    return n
