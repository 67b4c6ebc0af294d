"""Cross-environment aggregates: one protocol run on several environments, compared as RL papers do.

Experiments share a *protocol* when they differ only in the environment (or dataset) and what comes
with it (tuned hyperparameters, budget): same task, algorithm (or model), pruning (all but the number of
levels), retraining, and rewinding to initialisation or to a later step. A protocol on two or more
environments gets, per level (the same nominal density everywhere):

- **normalised scores** per run: ``minmax`` maps each environment's worst and best run (any variant,
  any level, any seed) to 0 and 1; ``dense`` maps the worst run to 0 and the dense network's mean
  (level 0) to 1. Both are sign-safe (Acrobot's and Pendulum's returns are negative);
- the **IQM** of the normalised scores over every run of every environment, with a stratified-bootstrap
  95% CI (seeds resampled within each environment);
- the **probability of improvement** of the ticket over each control, P(ticket > control), with its CI;
- the **performance profile**: the fraction of runs above each normalised score tau, with CIs.

The statistics are :mod:`rl_tickets.report.aggregates` (rliable's definitions, tested against rliable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rl_tickets.report import aggregates
from rl_tickets.report.metrics import DEFAULT_METRIC
from rl_tickets.report.records import TICKET, Experiment, variant_order
from rl_tickets.report.tables import per_seed_table

NORMALISATIONS = ("minmax", "dense")
PROFILE_POINTS = 51
IQM_COLUMNS = ["level", "density", "variant", "n_envs", "n_runs", "iqm", "ci_low", "ci_high"]
POI_COLUMNS = ["level", "density", "control", "n_envs", "probability", "ci_low", "ci_high"]
PROFILE_COLUMNS = ["level", "density", "variant", "tau", "fraction", "ci_low", "ci_high"]


@dataclass
class Aggregate:
    """One protocol over several environments and its tables.

    :param label: e.g. ``ppo: acrobot+cartpole`` (also the output folder, made safe).
    :param experiments: one per environment, sorted by environment.
    :param normalisation: ``minmax`` or ``dense``.
    :param iqm: :data:`IQM_COLUMNS`.
    :param improvement: :data:`POI_COLUMNS`.
    :param profiles: :data:`PROFILE_COLUMNS`.
    :param metric: the per-level metric scored (``final``, ``best`` or ``auc``).
    """

    label: str
    experiments: list[Experiment]
    normalisation: str = "minmax"
    metric: str = DEFAULT_METRIC
    iqm: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=IQM_COLUMNS))
    improvement: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=POI_COLUMNS))
    profiles: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PROFILE_COLUMNS))

    @property
    def envs(self) -> list[str]:
        """The environments (or datasets), in order."""
        return [environment(e) for e in self.experiments]


def environment(exp: Experiment) -> str:
    """The experiment's environment (RL) or dataset (supervised) name."""
    return str(exp.meta.get("env") or exp.label)


def protocol_key(exp: Experiment) -> str:
    """What an experiment did, apart from where: equal keys are one protocol on different environments.

    :param exp: the experiment.
    """
    meta = exp.meta
    config: dict[str, Any] = meta.get("config") or {}
    prune = {k: v for k, v in (config.get("prune") or {}).items() if k != "levels"}
    rewind = dict(config.get("rewind") or {})
    # The step k itself scales with each environment's budget; whether a level rewinds to 0 or later does not.
    rewind["step"] = bool(rewind.get("step"))
    learner = meta.get("model") if meta.get("task") == "supervised" else meta.get("algo")
    return repr(
        (
            meta.get("task"),
            learner,
            sorted(prune.items()),
            sorted(rewind.items()),
            sorted((config.get("retrain") or {}).items()),
        )
    )


def find_aggregates(experiments: Sequence[Experiment]) -> list[Aggregate]:
    """Protocols that ran on at least two environments.

    :param experiments: every experiment of a results root.
    :return: aggregates sorted by label (tables not yet computed).
    """
    groups: dict[str, list[Experiment]] = {}
    for exp in experiments:
        groups.setdefault(protocol_key(exp), []).append(exp)
    found = []
    for members in groups.values():
        members = sorted(members, key=lambda e: (environment(e), e.label))
        envs = [environment(e) for e in members]
        if len(set(envs)) < 2:
            continue
        meta = members[0].meta
        learner = meta.get("model") if meta.get("task") == "supervised" else meta.get("algo")
        label = f"{learner or members[0].name}: {'+'.join(envs)}"
        found.append(Aggregate(label, members))
    return sorted(found, key=lambda a: a.label)


def normalise(per_seed: pd.DataFrame, how: str) -> pd.Series:
    """Normalised scores of one experiment's runs (see the module docstring).

    :param per_seed: :func:`rl_tickets.report.tables.per_seed_table` output.
    :param how: ``minmax`` or ``dense``.
    :return: one score per row of ``per_seed``.
    """
    assert how in NORMALISATIONS, f"normalisation must be one of {NORMALISATIONS}, got {how!r}"
    values = per_seed["value"].astype(float)
    low, high = values.min(), values.max()
    if how == "dense":
        dense = values[(per_seed["level"] == 0) & (per_seed["variant"] == TICKET)]
        high = dense.mean() if dense.notna().any() and dense.mean() > low else high
    # Every run equal (e.g. CartPole's cap of 500 everywhere): all runs are the best there is.
    return (values - low) / (high - low) if high > low else pd.Series(1.0, index=per_seed.index)


def _runs(scored: list[pd.DataFrame], level: int, variant: str) -> list[np.ndarray] | None:
    """Per environment the normalised scores of ``variant`` at ``level``; ``None`` if one lacks them."""
    tasks = []
    for frame in scored:
        rows = frame[(frame["level"] == level) & (frame["variant"] == variant)]["score"].dropna()
        if rows.empty:
            return None
        tasks.append(rows.to_numpy(float))
    return tasks


def compute(
    aggregate: Aggregate, normalisation: str = "minmax", n_resamples: int = 2000, metric: str = DEFAULT_METRIC
) -> Aggregate:
    """Fill an aggregate's IQM, probability-of-improvement and performance-profile tables.

    Only (level, variant) pairs present on every environment are compared, so every number is over the
    same tasks.

    :param aggregate: from :func:`find_aggregates`.
    :param normalisation: ``minmax`` or ``dense``.
    :param n_resamples: stratified-bootstrap resamples.
    :param metric: the per-level metric (:mod:`rl_tickets.report.metrics`); runs where it is undefined
        (an auc with one evaluation) are left out.
    :return: the same aggregate, filled in.
    """
    scored = []
    aggregate.metric = metric
    for exp in aggregate.experiments:
        per_seed = per_seed_table(exp, metric).dropna(subset=["value"])
        scored.append(
            per_seed.assign(score=normalise(per_seed, normalisation)) if not per_seed.empty else per_seed
        )
    if any(frame.empty for frame in scored):
        aggregate.normalisation = normalisation
        return aggregate
    top = max(1.0, max(float(f["score"].max()) for f in scored))
    taus = np.linspace(0.0, top, PROFILE_POINTS)
    levels = sorted(set.intersection(*(set(f["level"]) for f in scored)))
    iqm_rows, poi_rows, profile_rows = [], [], []
    for level in levels:
        density = float(
            np.mean([f[(f["level"] == level) & (f["variant"] == TICKET)]["density"].mean() for f in scored])
        )
        variants = variant_order(set.intersection(*(set(f[f["level"] == level]["variant"]) for f in scored)))
        runs = {v: r for v in variants if (r := _runs(scored, level, v)) is not None}
        for variant, tasks in runs.items():
            low, high = aggregates.iqm_interval(tasks, n_resamples)
            iqm_rows.append(
                [
                    level,
                    density,
                    variant,
                    len(tasks),
                    sum(t.size for t in tasks),
                    aggregates.iqm(tasks),
                    low,
                    high,
                ]
            )
            fraction = aggregates.performance_profile(tasks, taus)
            p_low, p_high = aggregates.profile_interval(tasks, taus, n_resamples)
            profile_rows += [
                [level, density, variant, *cells] for cells in zip(taus, fraction, p_low, p_high)
            ]
        if TICKET not in runs:
            continue
        for control in [v for v in runs if v != TICKET]:
            low, high = aggregates.improvement_interval(runs[TICKET], runs[control], n_resamples)
            probability = aggregates.probability_of_improvement(runs[TICKET], runs[control])
            poi_rows.append([level, density, control, len(runs[TICKET]), probability, low, high])
    aggregate.normalisation = normalisation
    aggregate.iqm = pd.DataFrame(iqm_rows, columns=IQM_COLUMNS)
    aggregate.improvement = pd.DataFrame(poi_rows, columns=POI_COLUMNS)
    aggregate.profiles = pd.DataFrame(profile_rows, columns=PROFILE_COLUMNS)
    return aggregate
