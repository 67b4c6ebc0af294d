"""An instability analysis on disk: its identity, its directories and the records of its pairs.

Layout::

    ROOT/stability/<hash>/                       figures and the summary across seeds
        seed_<s>/  identity.json  stability.csv  instability.csv
            dense/                               the analysis's own dense run: a snapshot at every k
                {model, snapshot_<k>, metrics.json, COMPLETE}
            k_<k>/level_<L>/                     one pair: two copies trained from the state at k
                a/ b/  pair.json  COMPLETE       (written into .partial, renamed when complete)
                path.json                        the metric along the line (re-evaluated if settings change)

The hash is the analysed chain's identity at k=0 (:func:`rl_tickets.chain.identity.chain_identity`) plus
``stability.masks`` and the grid of rewind steps as whole steps. Why its own dense run rather than the
chain's level 0: the chain's dense identity includes ``rewind.step`` and its level 0 is finished and
sealed by its manifest once trained, so adding snapshots to it would mean mutating a finished level
(or retraining it and orphaning every level built on it). The analysis's dense run is trained from the
same seed with the same settings (on one machine it is the same trajectory: a test checks this), for
one extra training per seed. The grid is identity because the dense run's snapshots are; levels, alphas
and the threshold are not (a new level adds pairs; new alphas re-evaluate paths; the threshold only reads).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rl_tickets.chain.identity import chain_identity, digest
from rl_tickets.config import Config
from rl_tickets.rl.evaluation import EVALUATIONS_FILE
from rl_tickets.stability.settings import grid, learner_config

DIRECTORY = "stability"
PAIR_RECORD = "pair.json"
PATH_RECORD = "path.json"
STABILITY_CSV = "stability.csv"
INSTABILITY_CSV = "instability.csv"


def analysis_identity(cfg: Config) -> dict[str, Any]:
    """The settings that decide an analysis's results, seed included.

    :param cfg: a ``task=stability`` config, or a chain config with ``rewind.auto`` (same result).
    """
    return {
        **chain_identity(learner_config(cfg)),
        "stability.masks": cfg.stability.masks,
        "stability.steps": grid(cfg),
    }


@dataclass(frozen=True)
class StabilityPaths:
    """Where one seed of an analysis lives under the results root."""

    analysis: Path
    seed_dir: Path

    @classmethod
    def of(cls, cfg: Config) -> StabilityPaths:
        """Paths derived from the analysis's identity only.

        :param cfg: a ``task=stability`` config, or a chain config with ``rewind.auto``.
        """
        analysis = Path(cfg.root) / DIRECTORY / digest(analysis_identity(cfg))
        return cls(analysis=analysis, seed_dir=analysis / f"seed_{cfg.seed}")

    @property
    def dense(self) -> Path:
        """The analysis's dense run (its snapshots at every rewind step of the grid)."""
        return self.seed_dir / "dense"

    def pair(self, k: int, level: int) -> Path:
        """A pair's directory.

        :param k: the rewind step actually taken.
        :param level: the chain level whose mask the copies carry (0 = dense).
        """
        return self.seed_dir / f"k_{k:09d}" / f"level_{level:02d}"

    def pairs(self) -> list[Path]:
        """Every finished pair directory of this seed (not ``.partial`` or ``.corrupt-*``)."""
        return [
            d
            for d in sorted(self.seed_dir.glob("k_*/level_*"))
            if "." not in d.name and (d / PAIR_RECORD).is_file()
        ]


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON record, or None if it is missing or unreadable (a rerun then rewrites it).

    :param path: the file.
    """
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def dense_reference(dense: Path, record: dict[str, Any], reference: str) -> float:
    """The dense metric the stability threshold is a fraction of (``stability.reference``).

    ``final``: the dense run's headline metric (its last evaluation). ``best``: the largest mean return
    over the RL dense run's evaluations (``evaluations.npz``, read without pickles), its final one included.

    :param dense: the analysis's dense run directory.
    :param record: that run's ``metrics.json``.
    :param reference: ``final`` or ``best``.
    """
    final = float(record["metrics"][record["metric"]])
    if reference == "final":
        return final
    with np.load(dense / EVALUATIONS_FILE, allow_pickle=False) as evaluations:
        means = np.asarray(evaluations["results"], dtype=float).mean(axis=1)
    return max(final, float(means.max())) if means.size else final


def seed_dirs(analysis: Path) -> list[Path]:
    """The seed directories of an analysis, in seed order.

    :param analysis: ``ROOT/stability/<hash>``.
    """
    found = [d for d in analysis.glob("seed_*") if d.is_dir() and d.name[5:].isdigit()]
    return sorted(found, key=lambda d: int(d.name[5:]))
