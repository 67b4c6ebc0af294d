"""Statistics on inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from rl_tickets.report import stats


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
    r = stats.paired_verdict(b + 1.0, b)
    assert r.verdict == stats.BETTER
    assert r.n == 5
    assert r.diff_mean == pytest.approx(1.0)
    # Constant differences: a zero-width interval and p = 0, never NaN.
    assert r.ci_low == pytest.approx(1.0) and r.ci_high == pytest.approx(1.0)
    assert r.p_value == 0.0


def test_paired_minus_is_worse() -> None:
    b = np.arange(6.0)
    r = stats.paired_verdict(b - np.array([1.0, 2.0, 1.5, 1.0, 2.0, 1.2]), b)
    assert r.verdict == stats.WORSE
    assert r.ci_high < 0 and r.p_value < 0.05


def test_paired_symmetric_noise_is_no_difference() -> None:
    b = np.full(6, 100.0)
    r = stats.paired_verdict(b + np.array([-1.0, 1.0, -2.0, 2.0, -0.5, 0.5]), b)
    assert r.verdict == stats.NO_DIFFERENCE
    assert r.diff_mean == pytest.approx(0.0)
    assert r.ci_low < 0 < r.ci_high and r.p_value == pytest.approx(1.0)


def test_paired_t_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1.0, 8), rng.normal(0.0, 1.0, 8)
    r = stats.paired_verdict(a, b)
    assert r.p_value == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue)
    low, high = scipy.stats.t.interval(0.95, 7, loc=np.mean(a - b), scale=scipy.stats.sem(a - b))
    assert (r.ci_low, r.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_signflip_p_values_are_exact() -> None:
    # All 5 differences positive: only the observed pattern is as extreme, two-sided p = 2 / 2**5.
    assert stats.p_two_sided(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), "signflip") == pytest.approx(2 / 32)
    assert stats.p_greater(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 0.0, "signflip") == pytest.approx(1 / 32)
    assert stats.min_seeds_for("signflip") == 6 and stats.min_seeds_for("t") == 2
    # Below its minimum the sign-flip test cannot reject, so the verdict waits for more seeds.
    r = stats.paired_verdict(np.arange(5.0) + 10, np.arange(5.0), test="signflip")
    assert r.verdict == stats.NOT_ENOUGH_SEEDS
    r = stats.paired_verdict(np.arange(6.0) + 10, np.arange(6.0), test="signflip")
    assert r.verdict == stats.BETTER and r.p_value == pytest.approx(2 / 64)


def test_paired_not_enough_seeds() -> None:
    # The default minimum is 5 paired seeds: 3 or 4 seeds never give a verdict, however large the effect.
    for n in (3, 4):
        r = stats.paired_verdict(np.arange(n) + 100.0, np.arange(n, dtype=float))
        assert r.verdict == stats.NOT_ENOUGH_SEEDS and r.n == n and math.isnan(r.p_value)
    r = stats.paired_verdict([2.0, 3.0], [1.0, 2.0], min_seeds=3)
    assert r.verdict == stats.NOT_ENOUGH_SEEDS
    assert r.n == 2 and r.diff_mean == pytest.approx(1.0)
    # A seed missing on either side does not count.
    r = stats.paired_verdict([2.0, 3.0, np.nan, 4.0], [1.0, 2.0, 5.0, np.nan], min_seeds=2)
    assert r.n == 2
    # One seed never gives a verdict, whatever min_seeds says.
    assert stats.paired_verdict([2.0], [1.0], min_seeds=1).verdict == stats.NOT_ENOUGH_SEEDS


def test_degenerate_differences_give_defined_verdicts() -> None:
    capped = np.full(5, 500.0)
    # Every seed at the cap in both variants: no difference, and the ticket matches dense.
    beats = stats.paired_verdict(capped, capped)
    assert beats.verdict == stats.NO_DIFFERENCE and beats.p_value == 1.0
    assert (beats.ci_low, beats.ci_high) == (0.0, 0.0)
    matches = stats.paired_verdict(capped, capped, question="matches")
    assert matches.verdict == stats.MATCHES and matches.margin == pytest.approx(25.0)
    # A constant loss larger than the margin is below dense; smaller is a match.
    assert stats.paired_verdict(capped - 30, capped, question="matches").verdict == stats.BELOW_DENSE
    assert stats.paired_verdict(capped - 20, capped, question="matches").verdict == stats.MATCHES
    for test in stats.TESTS:
        r = stats.paired_verdict(np.full(6, 500.0), np.full(6, 500.0), test=test)
        assert r.verdict == stats.NO_DIFFERENCE and np.isfinite(r.p_value)


def test_paired_matches_dense_non_inferiority_margin() -> None:
    dense = np.array([500.0, 480.0, 490.0, 500.0, 495.0])
    # Default margin: 5% of the dense mean (24.65 here).
    r = stats.paired_verdict(dense, dense, question="matches")
    assert r.verdict == stats.MATCHES and r.margin == pytest.approx(0.05 * dense.mean())
    # A ticket that clearly beats dense also matches.
    assert stats.paired_verdict(dense + 50, dense, question="matches").verdict == stats.MATCHES
    below = stats.paired_verdict(dense - np.array([60.0, 70.0, 65.0, 80.0, 75.0]), dense, question="matches")
    assert below.verdict == stats.BELOW_DENSE
    # Losses straddling the margin: the data cannot tell.
    noisy = dense - np.array([0.0, 50.0, 10.0, 40.0, 25.0])
    assert stats.paired_verdict(noisy, dense, question="matches").verdict == stats.INCONCLUSIVE
    # Zero tolerance is the strict reading: a small consistent loss is below dense.
    small = dense - np.array([1.0, 2.0, 3.0, 4.0, 2.5])
    assert stats.paired_verdict(small, dense, question="matches", tolerance=0.0).verdict == stats.BELOW_DENSE
    assert stats.paired_verdict(small, dense, question="matches").verdict == stats.MATCHES


def test_paired_rejects_misaligned_inputs() -> None:
    with pytest.raises(AssertionError, match="one entry per seed"):
        stats.paired_verdict([1.0, 2.0, 3.0], [1.0, 2.0])


def _verdict_rates(n: int, shift: float, test: str, draws: int, seed: int) -> dict[str, float]:
    """Fractions of "better" and "worse" over ``draws`` simulated pairs with N(shift, 1) differences."""
    rng = np.random.default_rng(seed)
    counts = {stats.BETTER: 0, stats.WORSE: 0}
    for _ in range(draws):
        a, b = rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, n)
        verdict = stats.paired_verdict(a, b, test=test).verdict
        if verdict in counts:
            counts[verdict] += 1
    return {k: v / draws for k, v in counts.items()}


@pytest.mark.parametrize(("test", "n"), [("t", 5), ("t", 10), ("t", 20), ("signflip", 6), ("signflip", 12)])
def test_null_verdict_rate_is_at_most_alpha(test: str, n: int) -> None:
    """Both variants from one distribution: "better" or "worse" at most alpha = 5%, each side ~2.5%."""
    rates = _verdict_rates(n, 0.0, test, draws=2000, seed=1000 + n)
    assert rates[stats.BETTER] + rates[stats.WORSE] <= 0.06
    assert rates[stats.BETTER] <= 0.035 and rates[stats.WORSE] <= 0.035


@pytest.mark.parametrize("test", stats.TESTS)
def test_real_effect_is_found(test: str) -> None:
    """A shift of 1.5 standard deviations at 10 seeds: "better" at least 80% of the time."""
    # The sd of a difference of two N(., 1) draws is sqrt(2): shift by 1.5 * sqrt(2).
    rates = _verdict_rates(10, 1.5 * math.sqrt(2), test, draws=1000, seed=7)
    assert rates[stats.BETTER] >= 0.8 and rates[stats.WORSE] == 0.0


def test_null_non_inferiority_rate_is_at_most_alpha_half() -> None:
    """A ticket exactly at the margin (true loss = m) is called "matches" at most alpha/2 of the time."""
    rng = np.random.default_rng(11)
    dense_mean, tolerance, n, draws = 100.0, 0.05, 10, 2000
    matches = 0
    for _ in range(draws):
        dense = rng.normal(dense_mean, 0.5, n)
        ticket = dense - tolerance * dense_mean + rng.normal(0.0, 1.0, n)
        matches += stats.paired_verdict(ticket, dense, question="matches").verdict == stats.MATCHES
    assert matches / draws <= 0.035


def test_holm_adjustment() -> None:
    adjusted = stats.holm([0.01, 0.04, 0.03, np.nan, 0.005])
    # Sorted 0.005, 0.01, 0.03, 0.04 with m = 4: 0.02, 0.03, 0.06, max(0.06, 0.04) = 0.06.
    np.testing.assert_allclose(adjusted[[4, 0, 2, 1]], [0.02, 0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])
    # Under the null, Holm over 10 tests keeps the family-wise rate near alpha.
    rng = np.random.default_rng(5)
    family_errors = 0
    for _ in range(500):
        p = [stats.p_two_sided(rng.normal(0.0, 1.0, 10)) for _ in range(10)]
        family_errors += bool(np.any(stats.holm(p) < 0.05))
    assert family_errors / 500 <= 0.07
