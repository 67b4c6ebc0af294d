"""The rewind step chosen from evidence: ``rewind.auto=true`` on an rl or supervised run.

The job resolves it *before* anything is hashed: it reads this seed's finished instability analysis
of the same settings (the same ``stability.*`` keys find the same ``ROOT/stability/<hash>``), takes
the smallest k of the grid at which every analysed level is stable (instability at most
``stability.threshold`` of the dense metric's magnitude) and sets ``rewind.step`` to that k with
``rewind.auto`` off. The chain is then exactly the chain with that step written out (same hash, same
directory); what the step came from is written beside it in ``rewind_choice.json``.

Why this rule: Frankle et al. 2020 rewind IMP subnetworks to the earliest iteration at which they are
stable; "every analysed level" asks that of the dense network and every ticket density analysed, so
the chosen k serves the whole chain. The default threshold (5% of the dense metric) is the report's
non-inferiority margin: a path that dips by less than the margin by which a ticket may trail the dense
network and still "match" it is, for the report's purposes, flat (Frankle et al. use 2 points of test
error on image classifiers; 5% of a 0.94 accuracy is 4.7 points, so pass ``stability.threshold=0.021``
for their rule on LeNet).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rl_tickets.chain.store import write_atomic
from rl_tickets.config import Config, ConfigError, learner_task
from rl_tickets.stability.settings import budget_of, check_settings
from rl_tickets.stability.store import StabilityPaths, dense_reference, read_json
from rl_tickets.stability.tables import collect, threshold_of

CHOICE_FILE = "rewind_choice.json"


def choose_step(summaries: Sequence[dict[str, Any]], levels: Sequence[int], fraction: float) -> int | None:
    """The smallest k at which every level in ``levels`` has an instability within the threshold.

    :param summaries: instability.csv rows of one seed (``k``, ``level``, ``instability``, ``dense_metric``).
    :param levels: the levels that must all be stable.
    :param fraction: ``stability.threshold`` (a fraction of the dense metric's magnitude).
    :return: that k, or None if no k of the grid qualifies.
    """
    by_k: dict[int, dict[int, dict[str, Any]]] = {}
    for row in summaries:
        by_k.setdefault(int(row["k"]), {})[int(row["level"])] = row
    for k in sorted(by_k):
        rows = by_k[k]
        if all(
            level in rows
            and float(rows[level]["instability"])
            <= threshold_of(fraction, float(rows[level]["dense_metric"]))
            for level in levels
        ):
            return k
    return None


def resolve_auto(cfg: Config) -> tuple[Config, dict[str, Any]]:
    """``cfg`` with ``rewind.step`` chosen from its seed's analysis, and the record of the choice.

    :param cfg: an rl or supervised config with ``rewind.auto=true``.
    :raises ConfigError: the analysis is missing or unfinished, or no k of its grid is stable.
    """
    check_settings(cfg)
    paths, s = StabilityPaths.of(cfg), cfg.stability
    rerun = (
        f"run `rl-tickets task=stability stability.of={learner_task(cfg)} seed={cfg.seed}` with the same "
        "other settings first"
    )
    dense = read_json(paths.dense / "metrics.json")
    if dense is None:
        raise ConfigError(
            f"rewind.auto=true: no instability analysis of these settings at {paths.seed_dir}; {rerun}"
        )
    taken = sorted({int(k) for k in dense["extra"]["snapshots"].values()})
    dense_metric = dense_reference(paths.dense, dense, s.reference)
    _, summaries = collect(paths.seed_dir, paths.pairs(), cfg.seed, budget_of(cfg), dense_metric, s.threshold)
    found = {(int(r["k"]), int(r["level"])) for r in summaries}
    missing = [(k, level) for k in taken for level in s.levels if (k, level) not in found]
    if missing:
        raise ConfigError(
            f"rewind.auto=true: the instability analysis at {paths.seed_dir} lacks {len(missing)} of "
            f"{len(taken) * len(s.levels)} (k, level) pairs, e.g. k={missing[0][0]} level {missing[0][1]}; {rerun}"
        )
    step = choose_step(summaries, s.levels, s.threshold)
    instabilities: dict[str, dict[str, float]] = {f"k={r['k']}": {} for r in summaries}
    for r in summaries:
        instabilities[f"k={r['k']}"][f"level {r['level']}"] = r["instability"]
    if step is None:
        raise ConfigError(
            f"rewind.auto=true: no k of {taken} is stable for every level of stability.levels={list(s.levels)} at "
            f"seed {cfg.seed} (threshold {s.threshold} x |{dense_metric:.4g}|, the dense {s.reference} metric); raise stability.threshold or "
            f"add later steps; instabilities: {json.dumps(instabilities)}"
        )
    record = {
        "rewind.step": step,
        "analysis": str(paths.seed_dir),
        "levels": list(s.levels),
        "threshold_fraction": s.threshold,
        "reference": s.reference,
        "threshold": threshold_of(s.threshold, dense_metric),
        "dense_metric": dense_metric,
        "instability": instabilities,
    }
    return replace(cfg, rewind=replace(cfg.rewind, step=step, auto=False)), record


def write_choice(chain: Path, record: dict[str, Any]) -> None:
    """Write ``rewind_choice.json`` (where ``rewind.step`` came from) into the chain's seed directory.

    :param chain: the chain's seed directory (created if missing).
    :param record: from :func:`resolve_auto`.
    """
    chain.mkdir(parents=True, exist_ok=True)
    write_atomic(chain / CHOICE_FILE, json.dumps(record, indent=2))
