"""Write tests/fixtures/rliable_reference.json: rliable's own IQM, probability of improvement and
performance profile (with stratified-bootstrap CIs) on fixed scores, for tests/test_aggregates.py.

Needs rliable, which imports only beside pandas<3, so run it in a scratch environment, never the
project's: ``python -m venv /tmp/rliable_venv && /tmp/rliable_venv/bin/pip install rliable "pandas<3"``,
then ``/tmp/rliable_venv/bin/python scripts/make_rliable_fixture.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rliable
from rliable import library, metrics

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "rliable_reference.json"
REPS = 50_000
TAUS = np.linspace(0.0, 1.0, 11)


def scores() -> dict[str, np.ndarray]:
    """Normalised scores, runs x tasks (5 seeds, 3 environments), with ties at the cap of 1.0."""
    rng = np.random.default_rng(2021)
    ticket = np.clip(rng.normal([0.9, 0.6, 0.75], 0.12, size=(5, 3)), 0.0, 1.0).round(3)
    control = np.clip(rng.normal([0.8, 0.5, 0.8], 0.15, size=(5, 3)), 0.0, 1.0).round(3)
    ticket[0, 0] = control[1, 0] = 1.0  # a tie across variants
    return {"ticket": ticket, "control": control}


def main() -> None:
    """Compute with rliable and write the fixture."""
    data = scores()
    np.random.seed(0)  # rliable's bootstrap draws from numpy's global generator
    iqm, iqm_ci = library.get_interval_estimates(
        data, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=REPS
    )
    np.random.seed(1)
    poi, poi_ci = library.get_interval_estimates(
        {"ticket,control": [data["ticket"], data["control"]]},
        metrics.probability_of_improvement,
        reps=REPS,
    )
    np.random.seed(2)
    profiles, profile_cis = library.create_performance_profile(data, TAUS, reps=REPS)
    reference = {
        "rliable_version": getattr(rliable, "__version__", "1.2.0"),
        "reps": REPS,
        "scores": {k: v.tolist() for k, v in data.items()},
        "iqm": {k: float(iqm[k][0]) for k in data},
        "iqm_ci": {k: [float(iqm_ci[k][0][0]), float(iqm_ci[k][1][0])] for k in data},
        "poi": float(poi["ticket,control"]),
        "poi_ci": np.ravel(poi_ci["ticket,control"]).astype(float).tolist(),
        "taus": TAUS.tolist(),
        "profile": {k: profiles[k].tolist() for k in data},
        "profile_ci": {k: profile_cis[k].tolist() for k in data},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
