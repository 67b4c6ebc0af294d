"""Statistics on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rl_tickets import stats


def test_iqm_known_values() -> None:
    # 8 values: the middle 50% are 3, 4, 5, 6.
    assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)
    # The outlier is trimmed away: mean of 2 and 3.
    assert stats.iqm([1, 2, 3, 100]) == pytest.approx(2.5)
    # Fewer than 4 values: nothing is trimmed (rliable / scipy trim_mean behaviour).
    assert stats.iqm([1, 2, 6]) == pytest.approx(3.0)
    assert math.isnan(stats.iqm([]))


def test_iqm_along_axis() -> None:
    x = np.array([np.arange(1, 9), np.arange(11, 19)])
    np.testing.assert_allclose(stats.iqm(x, axis=1), [4.5, 14.5])


def test_bootstrap_ci_covers_true_mean_and_is_tight() -> None:
    x = np.random.default_rng(123).normal(10.0, 1.0, size=2000)
    low, high = stats.bootstrap_ci(x)
    assert low < 10.0 < high
    # Normal theory: width ~ 2 * 1.96 / sqrt(2000) = 0.088.
    assert 0.05 < high - low < 0.12


def test_bootstrap_ci_of_iqm() -> None:
    x = np.random.default_rng(0).normal(5.0, 1.0, size=500)
    low, high = stats.bootstrap_ci(x, stats.iqm, n_resamples=2000)
    assert low < 5.0 < high


def test_bootstrap_ci_is_reproducible() -> None:
    x = np.random.default_rng(1).normal(size=10)
    assert stats.bootstrap_ci(x, seed=7) == stats.bootstrap_ci(x, seed=7)


def test_bootstrap_ci_degenerate_inputs() -> None:
    assert all(math.isnan(v) for v in stats.bootstrap_ci([3.0]))
    assert all(math.isnan(v) for v in stats.bootstrap_ci([]))
    assert stats.bootstrap_ci([500.0] * 5) == (500.0, 500.0)
    # NaN entries count as missing seeds.
    assert stats.bootstrap_ci([2.0, np.nan, 2.0]) == (2.0, 2.0)


def test_summarise() -> None:
    s = stats.summarise([1.0, 2.0, 3.0, 4.0, np.nan])
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(2.5)
    assert s["iqm"] == pytest.approx(2.5)
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert 1.0 <= s["ci_low"] < 2.5 < s["ci_high"] <= 4.0
    one = stats.summarise([7.0])
    assert one["n"] == 1 and one["mean"] == 7.0 and math.isnan(one["std"]) and math.isnan(one["ci_low"])


def test_paired_plus_one_is_better() -> None:
    b = np.array([10.0, 50.0, 3.0, 7.0, 100.0])
    r = stats.paired_verdict(b + 1.0, b, min_seeds=3)
    assert r.verdict == stats.BETTER
    assert r.n == 5
    assert r.diff_mean == pytest.approx(1.0)
    assert r.ci_low == pytest.approx(1.0) and r.ci_high == pytest.approx(1.0)


def test_paired_minus_is_worse() -> None:
    b = np.arange(6.0)
    r = stats.paired_verdict(b - np.array([1.0, 2.0, 1.5, 1.0, 2.0, 1.2]), b, min_seeds=3)
    assert r.verdict == stats.WORSE
    assert r.ci_high < 0


def test_paired_symmetric_noise_is_no_difference() -> None:
    b = np.full(6, 100.0)
    r = stats.paired_verdict(b + np.array([-1.0, 1.0, -2.0, 2.0, -0.5, 0.5]), b, min_seeds=3)
    assert r.verdict == stats.NO_DIFFERENCE
    assert r.diff_mean == pytest.approx(0.0)
    assert r.ci_low < 0 < r.ci_high


def test_paired_not_enough_seeds() -> None:
    r = stats.paired_verdict([2.0, 3.0], [1.0, 2.0], min_seeds=3)
    assert r.verdict == stats.NOT_ENOUGH_SEEDS
    assert r.n == 2 and r.diff_mean == pytest.approx(1.0)
    # A seed missing on either side does not count.
    r = stats.paired_verdict([2.0, 3.0, np.nan, 4.0], [1.0, 2.0, 5.0, np.nan], min_seeds=3)
    assert r.verdict == stats.NOT_ENOUGH_SEEDS and r.n == 2
    # One seed never gives a verdict, whatever min_seeds says.
    assert stats.paired_verdict([2.0], [1.0], min_seeds=1).verdict == stats.NOT_ENOUGH_SEEDS


def test_paired_matches_dense() -> None:
    dense = np.array([500.0, 480.0, 490.0, 500.0])
    assert stats.paired_verdict(dense, dense, question="matches").verdict == stats.MATCHES
    assert stats.paired_verdict(dense + 5, dense, question="matches").verdict == stats.MATCHES
    below = stats.paired_verdict(dense - np.array([30.0, 40.0, 35.0, 50.0]), dense, question="matches")
    assert below.verdict == stats.BELOW_DENSE
    noisy = stats.paired_verdict(dense + np.array([-3.0, 3.0, -2.0, 2.0]), dense, question="matches")
    assert noisy.verdict == stats.INCONCLUSIVE


def test_paired_matches_dense_with_tolerance() -> None:
    dense = np.array([100.0, 100.0, 100.0, 100.0])
    ticket = dense - np.array([1.0, 2.0, 3.0, 4.0])
    assert stats.paired_verdict(ticket, dense, question="matches").verdict == stats.BELOW_DENSE
    # 5% of a dense mean of 100 accepts a loss of up to 5.
    assert stats.paired_verdict(ticket, dense, question="matches", tolerance=0.05).verdict == stats.MATCHES


def test_paired_rejects_misaligned_inputs() -> None:
    with pytest.raises(AssertionError, match="one entry per seed"):
        stats.paired_verdict([1.0, 2.0, 3.0], [1.0, 2.0])
