"""The report's records of a results root: chains and experiments as found on disk, and where their
levels live. Read by everything else in the report (loading, integrity, curves, tables)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

SUPERVISED_METRIC = "test_accuracy_at_early_stop"

TICKET = "ticket"
DENSE = "dense"


@dataclass(frozen=True)
class Chain:
    """One chain (one seed) as found on disk.

    :param path: the ``seed_<s>`` directory.
    :param chain_hash: name of its parent directory, shared by chains differing only in seed.
    :param seed: the seed.
    :param meta: the parsed ``meta.json``.
    :param levels: ``levels.csv`` (empty if absent).
    :param layers: ``layers.csv`` (empty if absent).
    :param damaged: (level, variant) pairs left out because they failed verification
        (:mod:`rl_tickets.report.integrity`).
    """

    path: Path
    chain_hash: str
    seed: int
    meta: dict[str, Any]
    levels: pd.DataFrame
    layers: pd.DataFrame
    damaged: frozenset[tuple[int, str]] = frozenset()


@dataclass
class Experiment:
    """Chains grouped by (name, chain hash); ``label`` names the output directory.

    :param label: the experiment's name, or ``name-<hash[:6]>`` if the name is ambiguous.
    :param name: ``meta["name"]``.
    :param chain_hash: the shared chain hash.
    :param chains: one chain per seed, sorted by seed.
    """

    label: str
    name: str
    chain_hash: str
    chains: list[Chain] = field(default_factory=list)

    @property
    def meta(self) -> dict[str, Any]:
        """Metadata of the first seed (seeds of one experiment share everything but the seed)."""
        return self.chains[0].meta

    @property
    def metric(self) -> str:
        """Name of the headline metric column in ``levels.csv``.

        Supervised experiments report test accuracy at the early-stopping iteration (minimum
        validation loss), Frankle & Carbin 2019's measure, also for chains written before meta.json
        named it (their levels.csv has the column; the final accuracy stays in :attr:`secondary`).
        """
        if self.meta.get("task") == "supervised":
            return SUPERVISED_METRIC
        return str(self.meta.get("metric") or "eval_return_mean")

    @property
    def secondary(self) -> str | None:
        """A second metric shown beside the headline (supervised: the final test accuracy)."""
        return "test_accuracy" if self.meta.get("task") == "supervised" else None

    @property
    def is_supervised(self) -> bool:
        """Whether the experiment is a supervised baseline (accuracy, not return)."""
        return self.meta.get("task") == "supervised" or "accuracy" in self.metric


def warn(message: str) -> None:
    """Print a one-line note on stderr (incomplete data is normal while a sweep runs)."""
    print(f"rl-tickets-report: {message}", file=sys.stderr)


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV, returning an empty frame if it is missing or unreadable."""
    if not path.is_file():
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:  # created but not yet written: normal while a chain starts
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        warn(f"skipping unreadable {path}: {err}")
        return pd.DataFrame()


def variant_order(variants: Iterable[str]) -> list[str]:
    """Ticket first, then the controls alphabetically (a stable column and colour order)."""
    unique = sorted(set(variants))
    return ([TICKET] if TICKET in unique else []) + [v for v in unique if v != TICKET]


def dense_dir(chain: Chain) -> Path | None:
    """The chain's dense level-0 directory (``ROOT/dense/<hash>/seed_<s>``), or ``None``.

    The one under this chain's own root comes first: ``meta.json`` records the path as the run saw it
    (absolute, or relative to its working directory), so a copied or moved root would otherwise read
    the original's dense level while that still exists. The recorded path is the fallback (a copy of
    the chains alone).
    """
    recorded = chain.meta.get("dense_dir")
    if not recorded:
        return None
    path = Path(str(recorded))
    beside = chain.path.parents[2].joinpath(*path.parts[-3:])
    if beside.is_dir():
        return beside
    return path if path.is_dir() else None


def level_dirs(chain: Chain) -> dict[tuple[int, str], Path]:
    """Every finished-or-running ``(level, variant)`` directory of a chain (``.partial``, levels moved
    aside as ``.corrupt-*`` and damaged levels excluded)."""
    found: dict[tuple[int, str], Path] = {}
    dense = dense_dir(chain)
    if dense is not None and (dense / "level_00" / TICKET).is_dir():
        found[(0, TICKET)] = dense / "level_00" / TICKET
    for directory in sorted(chain.path.glob("level_*/*")):
        match = re.fullmatch(r"level_(\d+)", directory.parent.name)
        if match and directory.is_dir() and "." not in directory.name:  # not .partial, .corrupt-*
            found.setdefault((int(match.group(1)), directory.name), directory)
    return {key: path for key, path in found.items() if key not in chain.damaged}
