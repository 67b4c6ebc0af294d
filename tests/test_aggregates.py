"""Cross-environment statistics against numbers rliable 1.2 produced (tests/fixtures/rliable_reference.json,
written by scripts/make_rliable_fixture.py in a scratch environment; no rliable or network here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rl_tickets.report import aggregates

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "rliable_reference.json").read_text())
# Bootstrap ends from two generators: 20,000 resamples here vs rliable's 50,000 agree to well under
# this (measured: 0.001 for IQM ends, one step of 1/75 for the probability of improvement).
CI_TOLERANCE = 0.02
RESAMPLES = 20_000


def tasks(variant: str) -> list[np.ndarray]:
    """The fixture's runs x tasks matrix as one array of runs per task."""
    matrix = np.asarray(REFERENCE["scores"][variant])
    return [matrix[:, j] for j in range(matrix.shape[1])]


@pytest.mark.parametrize("variant", ["ticket", "control"])
def test_iqm_and_its_stratified_bootstrap_ci_match_rliable(variant: str) -> None:
    assert aggregates.iqm(tasks(variant)) == pytest.approx(REFERENCE["iqm"][variant], abs=1e-12)
    low, high = aggregates.iqm_interval(tasks(variant), RESAMPLES)
    assert (low, high) == pytest.approx(REFERENCE["iqm_ci"][variant], abs=CI_TOLERANCE)


def test_probability_of_improvement_matches_rliable() -> None:
    x, y = tasks("ticket"), tasks("control")
    assert aggregates.probability_of_improvement(x, y) == pytest.approx(REFERENCE["poi"], abs=1e-12)
    assert aggregates.improvement_interval(x, y, RESAMPLES) == pytest.approx(
        REFERENCE["poi_ci"], abs=CI_TOLERANCE
    )
    # Identical scores: exactly one half, as rliable special-cases it.
    assert aggregates.probability_of_improvement(x, x) == 0.5


@pytest.mark.parametrize("variant", ["ticket", "control"])
def test_performance_profile_matches_rliable(variant: str) -> None:
    taus = np.asarray(REFERENCE["taus"])
    profile = aggregates.performance_profile(tasks(variant), taus)
    assert profile == pytest.approx(REFERENCE["profile"][variant], abs=1e-12)
    low, high = aggregates.profile_interval(tasks(variant), taus, RESAMPLES)
    ref_low, ref_high = REFERENCE["profile_ci"][variant]
    assert low == pytest.approx(ref_low, abs=CI_TOLERANCE) and high == pytest.approx(
        ref_high, abs=CI_TOLERANCE
    )


def test_stratified_bootstrap_never_mixes_tasks() -> None:
    """Two constant tasks of different sizes: every resample keeps each task's runs, so the mean is fixed."""
    low, high = aggregates.stratified_interval(
        [np.zeros(3), np.ones(5)], lambda batch: np.concatenate(batch, axis=1).mean(axis=1), 500
    )
    assert low == high == pytest.approx(5 / 8)


def test_mean_band_of_a_curve() -> None:
    """Pointwise CI of the mean over runs; NaN where fewer than two runs reach a point."""
    runs = np.array([[0.0, 1.0, 2.0, np.nan], [2.0, 1.0, 4.0, 5.0], [1.0, 1.0, 3.0, np.nan]])
    low, high = aggregates.mean_band(runs, 2000)
    assert low[1] == high[1] == 1.0  # constant over runs
    assert low[0] < 1.0 < high[0] and low[2] < 3.0 < high[2]
    assert np.isnan(low[3]) and np.isnan(high[3])
