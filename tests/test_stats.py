"""Statistics on inputs with known answers."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

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
    b = np.array([10.0, 50.0, 3.0, 7.0, 100.0, 20.0])
    r = stats.paired_verdict(b + 1.0, b)
    assert r.verdict == stats.BETTER
    assert r.n == 6
    assert r.diff_mean == pytest.approx(1.0)
    # Constant differences: a zero-width interval, never NaN; no t statistic, so the p-value is the
    # exact sign-flip one, 2 / 2**n (never 0).
    assert r.ci_low == pytest.approx(1.0) and r.ci_high == pytest.approx(1.0)
    assert r.p_value == pytest.approx(2 / 2**6)
    # At 5 seeds that is 1/16 > alpha: identical differences alone cannot show "better".
    five = stats.paired_verdict(b[:5] + 1.0, b[:5])
    assert five.verdict == stats.NO_DIFFERENCE and five.p_value == pytest.approx(2 / 2**5)


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
    # Every seed at the cap in both variants: no difference; "matches" is not shown (see below).
    beats = stats.paired_verdict(capped, capped)
    assert beats.verdict == stats.NO_DIFFERENCE and beats.p_value == 1.0
    assert (beats.ci_low, beats.ci_high) == (0.0, 0.0)
    for test in stats.TESTS:
        r = stats.paired_verdict(np.full(6, 500.0), np.full(6, 500.0), test=test)
        assert r.verdict == stats.NO_DIFFERENCE and np.isfinite(r.p_value)
    # Constant differences never give p = 0, whatever the question, test, bounds and n.
    for n in range(2, 9):
        for shift in (-100.0, -30.0, -20.0, 0.0, 1.0, 30.0):
            for test in [t for t in stats.TESTS if n >= stats.min_seeds_for(t)]:
                b = np.full(n, 500.0)
                beats = stats.paired_verdict(b + shift, b, 2, test=test)
                assert beats.p_value > 0
                for bounds in (None, (0.0, 600.0)):
                    r = stats.paired_verdict(b + shift, b, 2, question="matches", test=test, bounds=bounds)
                    assert r.p_value > 0 and r.p_below > 0, (n, shift, test, bounds)


def test_all_ties_at_the_cap_do_not_match() -> None:
    """The issue's case: 5 seeds at 500 in both arms is what a ticket failing on 5.1% of seeds gives
    with probability 0.949**5 = 0.77."""
    r = stats.paired_verdict([500.0] * 5, [500.0] * 5, 5, question="matches")
    assert r.verdict != stats.MATCHES and r.p_value > 0
    # Without bounds there is no verdict from ties at any n; with them, the exact bound applies.
    assert r.verdict == stats.INCONCLUSIVE and r.p_value == 1.0
    assert (
        stats.paired_verdict([500.0] * 200, [500.0] * 200, question="matches").verdict == stats.INCONCLUSIVE
    )
    bounded = stats.paired_verdict([500.0] * 5, [500.0] * 5, 5, question="matches", bounds=(10, 500))
    assert bounded.verdict == stats.INCONCLUSIVE
    assert bounded.p_value >= (1 - 25 / 490) ** 5 and (bounded.low, bounded.high) == (10.0, 500.0)
    # No valid test may say "matches" on tied seeds below n >= ln(0.025) / ln(1 - margin / range).
    assert stats.min_seeds_exact(25.0, 10.0, 500.0) == 71
    assert stats.min_seeds_exact(100.0, 10.0, 500.0) == 17
    for margin in (5.0, 25.0, 100.0, 150.0):
        n_ok = stats.min_seeds_tied(margin, 10.0, 500.0)
        assert (
            stats.min_seeds_exact(margin, 10.0, 500.0)
            <= n_ok
            <= 1.2 * stats.min_seeds_exact(margin, 10.0, 500.0)
        )
        tolerance = margin / 500.0
        ties = [np.full(k, 500.0) for k in (n_ok - 1, n_ok)]
        verdicts = [
            stats.paired_verdict(t, t, question="matches", tolerance=tolerance, bounds=(10, 500)).verdict
            for t in ties
        ]
        assert verdicts == [stats.INCONCLUSIVE, stats.MATCHES], margin


@pytest.mark.parametrize("fail_to", [10.0, 250.0])
@pytest.mark.parametrize("bounds", [(10.0, 500.0), None])
def test_capped_false_matches_is_exactly_zero(fail_to: float, bounds: tuple[float, float] | None) -> None:
    """Dense at 500 on every seed, the ticket failing to ``fail_to`` on k of n seeds: every k is
    enumerated, so the false-"matches" rate is exactly 0, not just in a sample."""
    for n in (5, 10, 20):
        for k in range(n + 1):
            ticket = np.r_[np.full(k, fail_to), np.full(n - k, 500.0)]
            r = stats.paired_verdict(ticket, np.full(n, 500.0), question="matches", bounds=bounds)
            assert r.verdict != stats.MATCHES and r.p_value > 0.025, (n, k)


def test_paired_matches_dense_non_inferiority_margin() -> None:
    rng = np.random.default_rng(4)
    dense = rng.choice([480.0, 490.0, 495.0, 500.0], size=60)
    bounds = (0.0, 600.0)
    # Default margin: 5% of the dense mean.
    r = stats.paired_verdict(dense + 40 + rng.normal(0, 5, 60), dense, question="matches", bounds=bounds)
    assert r.margin == pytest.approx(0.05 * dense.mean())
    # A ticket that clearly beats dense also matches, given the seeds.
    assert r.verdict == stats.MATCHES
    # The same ticket at 5 seeds: no valid test can tell it from one that fails now and then.
    five = stats.paired_verdict(dense[:5] + 40, dense[:5], question="matches", bounds=bounds)
    assert five.verdict == stats.INCONCLUSIVE
    below = stats.paired_verdict(
        dense[:20] - 300 + rng.normal(0, 5, 20), dense[:20], question="matches", bounds=bounds
    )
    assert below.verdict == stats.BELOW_DENSE
    # Losses straddling the margin: the data cannot tell.
    noisy = dense - np.tile([0.0, 50.0, 10.0, 40.0, 25.0], 12)
    assert stats.paired_verdict(noisy, dense, question="matches", bounds=bounds).verdict == stats.INCONCLUSIVE
    # Zero tolerance is the strict reading: a consistent loss is below dense.
    small = dense[:20] - 150 + rng.normal(0, 5, 20)
    assert stats.paired_verdict(
        small, dense[:20], question="matches", tolerance=0.0, bounds=bounds
    ).verdict == (stats.BELOW_DENSE)


def test_bounds_widen_to_the_data() -> None:
    a, b = np.array([[5.0, 50.0]]), np.array([[20.0, 700.0]])
    low, high = stats.metric_range(a, b, (10.0, 500.0))
    assert (low[0], high[0]) == (5.0, 700.0)
    # Without bounds: the hull of 0 and the data.
    low, high = stats.metric_range(a + 100, b, None)
    assert (low[0], high[0]) == (0.0, 700.0)
    with pytest.raises(AssertionError, match="low < high"):
        stats.metric_range(a, b, (500.0, 10.0))


def test_bounded_test_is_valid_at_its_worst_case() -> None:
    """The least favourable null: values at y_low with probability d / range, else at mu0 + d."""
    rng = np.random.default_rng(8)
    for n, share in ((5, 0.3), (10, 0.1), (20, 0.051), (40, 0.02)):
        y = np.where(rng.random((4000, n)) < share, -1.0, share / (1 - share))  # mean exactly 0
        p = stats.bounded_p_greater(y, 0.0, -1.0)
        assert np.mean(p < 0.025) <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / 4000)
        assert np.all(p > 0)
    # Vectorised rows give the 1-D answer, and the batch verdicts equal paired_verdict row by row.
    assert stats.bounded_p_greater(y[0], 0.0, -1.0) == pytest.approx(
        stats.bounded_p_greater(y[:1], 0.0, -1.0)[0]
    )
    a, b = rng.choice([10.0, 500.0], (50, 8), p=[0.2, 0.8]), rng.normal(450.0, 40.0, (50, 8))
    for question in ("beats", "matches"):
        batch = stats.paired_verdicts(a, b, question=question, bounds=(0, 700))
        for i in range(50):
            one = stats.paired_verdict(a[i], b[i], question=question, bounds=(0, 700))
            assert (one.verdict, one.p_value) == (batch.verdict[i], pytest.approx(batch.p_value[i]))


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


def _load_error_rate_script() -> ModuleType:
    """scripts/verdict_error_rates.py, whose families and cells the tests below re-run."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "verdict_error_rates.py"
    spec = importlib.util.spec_from_file_location("verdict_error_rates", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


RATES = _load_error_rate_script()
CELLS = list(enumerate(RATES.cells()))


def _cell_id(item: tuple[int, object]) -> str:
    index, cell = item
    bounds = "bounds" if cell.bounds else "nobounds"
    return f"{index}-{cell.question}-{'+'.join(cell.counted)}-{cell.family}-{bounds}".replace(" ", "_")


@pytest.mark.parametrize("item", [c for c in CELLS if c[1].limit is not None], ids=_cell_id)
def test_error_rates_of_the_families(item: tuple[int, object]) -> None:
    """Every error cell of the table at 2,000 draws: at most its limit + 3 binomial SE; on capped data
    (dense at the cap, the ticket failing one margin's worth) no "matches" at all."""
    index, cell = item
    for n in cell.ns:
        rate = RATES.rate(cell, n, 2000, 2026, index)
        assert not RATES.over_limit(cell, rate, 2000), (cell.family, n, rate)
        capped = "ticket fails to" in cell.family and cell.counted == (stats.MATCHES,)
        if capped and n < stats.min_seeds_exact(cell.tolerance * 500.0, 10.0, 500.0):
            assert rate == 0.0, (cell.family, n, rate)


def test_power_of_the_families() -> None:
    """The power rows: a real effect is found; matching dense takes the seeds the bound says."""
    power = {(c.question, c.family, c.tolerance): (i, c) for i, c in CELLS if c.limit is None}
    index, cell = power[("beats", "500 vs 500/10 p=0.5", 0.05)]
    assert RATES.rate(cell, 10, 2000, 2026, index) >= 0.75
    assert RATES.rate(cell, 20, 2000, 2026, index) >= 0.95
    index, cell = power[("matches", "both 500 on every seed", 0.05)]
    assert [RATES.rate(cell, n, 200, 2026, index) for n in (20, 100)] == [0.0, 1.0]
    index, cell = power[("matches", "both 500 on every seed", 0.2)]
    assert [RATES.rate(cell, n, 200, 2026, index) for n in (10, 20)] == [0.0, 1.0]
    index, cell = power[("matches", "500/10 p=0.5 vs 500", 0.05)]
    assert RATES.rate(cell, 20, 2000, 2026, index) >= 0.75


def test_error_rate_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert RATES.main(["--draws", "200"]) == 0
    out = capsys.readouterr().out
    assert (
        "| 5% | 25 | 71 | 80 |" in out
        and "| 20% | 100 | 17 | 19 |" in out
        and "0 error rate(s) over limit" in out
    )


@pytest.mark.parametrize(("n", "verdict"), [(5, "inconclusive"), (6, "inconclusive"), (7, "below dense")])
def test_a_verdict_against_dense_needs_seven_seeds_even_without_overlap(n: int, verdict: str) -> None:
    # Every seed 0 against dense's 500 on CartPole's [0, 500]: the bounded test's one-sided p-value is
    # 0.060, 0.033 and 0.018 at 5, 6 and 7 seeds, above alpha/2 = 0.025 until 7 (README, docs/verdicts.md).
    result = stats.paired_verdict([0.0] * n, [500.0] * n, 5, question="matches", bounds=(0.0, 500.0))
    assert result.verdict == verdict
    mirror = stats.paired_verdict([500.0] * n, [500.0] * n, 5, question="matches", bounds=(0.0, 500.0))
    assert mirror.verdict == "inconclusive"  # ties at the cap: "matches" needs 80 seeds (see above)
