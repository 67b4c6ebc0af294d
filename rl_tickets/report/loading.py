"""Reading a results root: chains (one seed each) grouped into experiments by name.

The runner's layout: ``ROOT/chains/<chain_hash>/seed_<s>/{meta.json, levels.csv, layers.csv,
level_NN/<variant>/mask.pt}``. Anything incomplete is skipped with a note, never an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rl_tickets.report.integrity import checked
from rl_tickets.report.records import Chain, Experiment, read_csv, warn


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
