"""Reading a results root: chains (one seed each) grouped into experiments by name.

The runner's layout: ``ROOT/chains/<chain_hash>/seed_<s>/{meta.json, levels.csv, layers.csv,
level_NN/<variant>/mask.pt}``. Anything incomplete is skipped with a note, never an error.
"""

from __future__ import annotations

import json
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


def _seed_of(seed_dir: Path, meta: dict[str, Any]) -> int | None:
    """The chain's seed from ``meta.json``, else from the ``seed_<s>`` directory name."""
    if isinstance(meta.get("seed"), int):
        return int(meta["seed"])
    match = re.fullmatch(r"seed_(-?\d+)", seed_dir.name)
    return int(match.group(1)) if match else None


def load_chain(seed_dir: Path) -> Chain | None:
    """Load one ``seed_<s>`` directory, or return ``None`` (with a note) if it has no usable meta.json.

    :param seed_dir: ``ROOT/chains/<hash>/seed_<s>``.
    :return: the chain, with empty frames for missing CSVs.
    """
    meta_path = seed_dir / "meta.json"
    if not meta_path.is_file():
        warn(f"skipping {seed_dir}: no meta.json yet")
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        warn(f"skipping {seed_dir}: unreadable meta.json ({err})")
        return None
    seed = _seed_of(seed_dir, meta)
    if seed is None:
        warn(f"skipping {seed_dir}: no seed in meta.json or directory name")
        return None
    chain = Chain(
        path=seed_dir,
        chain_hash=seed_dir.parent.name,
        seed=seed,
        meta=meta,
        levels=read_csv(seed_dir / "levels.csv"),
        layers=read_csv(seed_dir / "layers.csv"),
    )
    from rl_tickets.report.integrity import checked  # imported here: it builds on curves, which imports this

    return checked(chain)


def discover(root: Path) -> list[Experiment]:
    """Find every chain under ``root/chains`` and group them into experiments.

    Seeds of one experiment share ``meta["name"]`` and chain hash. A name used by several
    chain hashes (the same name given to different configs) yields one experiment per hash,
    labelled ``name-<hash[:6]>``.

    :param root: the results root.
    :return: experiments sorted by label, each with its chains sorted by seed.
    """
    seed_dirs = [d for d in sorted((root / "chains").glob("*/seed_*")) if d.is_dir()]
    return group_chains(chain for d in seed_dirs if (chain := load_chain(d)) is not None)


def group_chains(chains: Iterable[Chain]) -> list[Experiment]:
    """Group chains into experiments by ``meta["name"]`` and chain hash (see :func:`discover`).

    :param chains: loaded chains, e.g. those of one sweep.
    :return: experiments sorted by label, each with its chains sorted by seed.
    """
    groups: dict[tuple[str, str], list[Chain]] = {}
    for chain in chains:
        name = str(chain.meta.get("name") or chain.chain_hash)
        groups.setdefault((name, chain.chain_hash), []).append(chain)
    name_counts: dict[str, int] = {}
    for name, _ in groups:
        name_counts[name] = name_counts.get(name, 0) + 1
    experiments = [
        Experiment(
            label=name if name_counts[name] == 1 else f"{name}-{chain_hash[:6]}",
            name=name,
            chain_hash=chain_hash,
            chains=sorted(chains, key=lambda c: c.seed),
        )
        for (name, chain_hash), chains in groups.items()
    ]
    return sorted(experiments, key=lambda e: e.label)


def variant_order(variants: Iterable[str]) -> list[str]:
    """Ticket first, then the controls alphabetically (a stable column and colour order)."""
    unique = sorted(set(variants))
    return ([TICKET] if TICKET in unique else []) + [v for v in unique if v != TICKET]
