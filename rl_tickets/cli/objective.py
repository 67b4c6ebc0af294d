"""The float a job returns to Hydra, so sweepers (Optuna, Nevergrad, Ax) can tune a knob.

``objective=deepest`` (default) is the ticket's headline metric (meta.json's ``metric``: the mean
evaluation return, or the supervised test accuracy at early stopping) at the deepest level this job
asked for (``prune.levels``); ``objective=mean`` is its mean over the pruned levels 1..``prune.levels``
(level 0 alone when ``prune.levels=0``). Under ``prune.schedule=gradual`` the one gradual run is the
ticket. Higher is better for every metric the trainers report, so sweepers should maximise it.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

# The variants that are "the ticket" of a chain: IMP's ticket, or gradual pruning's single run.
TICKET_VARIANTS = ("ticket", "gradual")


def ticket_metric(chain: Path, levels: int) -> dict[int, float]:
    """The ticket's headline metric per level, for levels 0..``levels`` found in levels.csv.

    :param chain: a chain directory (``ROOT/chains/<hash>/seed_<s>``).
    :param levels: the deepest level wanted (a chain extended earlier may hold deeper ones).
    """
    metric = json.loads((chain / "meta.json").read_text())["metric"]
    with open(chain / "levels.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["variant"] in TICKET_VARIANTS]
    values = {int(row["level"]): float(row[metric] or "nan") for row in rows}
    return {level: value for level, value in values.items() if level <= levels}


def objective(chain: Path, kind: str, levels: int) -> float:
    """The job's objective (see the module doc); NaN when the chain holds no ticket row.

    :param chain: a chain directory.
    :param kind: ``deepest`` or ``mean``.
    :param levels: ``prune.levels`` of the job.
    """
    if not (chain / "meta.json").is_file():  # task=stability returns its analysis's directory: no ticket
        return math.nan
    values = ticket_metric(chain, levels)
    if not values:
        return math.nan
    if kind == "deepest":
        return values[max(values)]
    pruned = [value for level, value in values.items() if level > 0] or [values[min(values)]]
    return sum(pruned) / len(pruned)
