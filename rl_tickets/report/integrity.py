"""What the report checks before it trusts a chain's numbers: identity and finished levels.

A chain whose ``identity.json`` no longer hashes to its directory's name (edited, or copied under
another hash) gets a warning; its numbers are still reported. A finished level that fails its
manifest (:mod:`rl_tickets.chain.manifest`: a file missing, truncated or edited, or built from a level
that was since retrained) gets a warning and is left out: its rows of levels.csv and layers.csv and
its mask. Everything else of the chain is reported as usual.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd

from rl_tickets.chain.contents import damaged_levels_of
from rl_tickets.chain.identity import digest
from rl_tickets.report.records import Chain, dense_dir, level_dirs, warn


def identity_mismatch(directory: Path) -> str | None:
    """Why ``directory``'s identity.json does not match the hash it is filed under, or None.

    :param directory: a ``.../<hash>/seed_<s>`` directory (chain or dense).
    """
    record = directory / "identity.json"
    if not record.is_file():
        return None
    try:
        identity = json.loads(record.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        return f"unreadable identity.json ({error})"
    found = digest(identity)
    if found != directory.parent.name:
        return f"identity.json hashes to {found}, not {directory.parent.name} (edited, or moved under another hash)"
    return None


def damaged_levels(chain: Chain) -> dict[tuple[int, str], str]:
    """(level, variant) -> why, for each finished level of the chain (the dense level 0 too) that fails
    the runner's verification (manifest and contents) or was built on a level retrained since
    (:func:`rl_tickets.chain.contents.damaged_levels_of`).

    :param chain: a loaded chain.
    """
    dirs = level_dirs(chain)
    return damaged_levels_of(dirs, lambda key: dirs.get(key, chain.path / f"level_{key[0]:02d}" / key[1]))


def _without(frame: pd.DataFrame, keys: set[tuple[int, str]]) -> pd.DataFrame:
    """``frame`` without the rows of these (level, variant) pairs."""
    if frame.empty or not {"level", "variant"} <= set(frame.columns):
        return frame
    drop = [(int(level), str(variant)) in keys for level, variant in zip(frame["level"], frame["variant"])]
    return frame[[not d for d in drop]].reset_index(drop=True)


def checked(chain: Chain) -> Chain:
    """The chain with its damaged levels left out, after one warning for each and for a mismatched identity.

    :param chain: a loaded chain.
    """
    dense = dense_dir(chain)
    for directory in [chain.path] + ([dense] if dense is not None else []):
        if (reason := identity_mismatch(directory)) is not None:
            warn(f"{directory}: {reason}; its results are reported as they are")
    damaged = damaged_levels(chain)
    for (level, variant), reason in sorted(damaged.items()):
        warn(f"skipping level {level} {variant} of {chain.path}: {reason}")
    if not damaged:
        return chain
    keys = set(damaged)
    return replace(
        chain,
        levels=_without(chain.levels, keys),
        layers=_without(chain.layers, keys),
        damaged=frozenset(keys),
    )
