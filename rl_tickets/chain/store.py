"""A chain on disk: where its levels live, how they are claimed and written atomically (locks:
:mod:`rl_tickets.chain.lock`).

Results layout (see README)::

    ROOT/dense/<dense_hash>/seed_<s>/            level 0, shared by chains that differ only in
        identity.json                            pruning or retraining settings
        level_00/ticket/{init.zip,[rewind.zip],model.zip,mask.pt,metrics.json,eval_curve.csv,COMPLETE}
    ROOT/chains/<chain_hash>/seed_<s>/
        identity.json  meta.json  levels.csv  layers.csv
        level_NN/<variant>/{model.zip,mask.pt,metrics.json,eval_curve.csv,progress.csv,COMPLETE}

Every level is written into ``<dir>.partial`` and renamed when complete (COMPLETE written last: a
manifest of the level's files that a rerun verifies, :mod:`rl_tickets.chain.manifest`), so a killed
run loses at most the level in progress and a rerun only finishes missing work.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl_tickets.chain.identity import chain_identity, dense_identity, digest
from rl_tickets.chain.manifest import MARKER
from rl_tickets.config import Config, ConfigError

# Suffix of a level directory being written (renamed to the level when complete).
PARTIAL = ".partial"
COMPLETE = MARKER  # a finished level's marker: the manifest of its files (rl_tickets.chain.manifest)
TICKET = "ticket"
TRANSFER = "transfer"
# Files of a chain or dense directory written only under its lock (their temporaries are left only by
# killed writers); identity.json is claimed before the lock is taken, so its temporaries are not here.
LOCKED_FILES = ("levels.csv", "layers.csv", "meta.json")


def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing ancestor (where it would be created)."""
    return next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())


def cannot_create_in(directory: Path) -> str | None:
    """Why nothing can be created in ``directory`` (the OS's words), or None if something can.

    ``os.access`` says yes to root everywhere, also on /proc or /sys: a real try decides (a probe
    directory, removed at once, so nothing is left behind).

    :param directory: an existing directory.
    """
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".rl-tickets-probe-", dir=directory))
    except OSError as error:
        return str(error.strerror or error)
    return None


@dataclass(frozen=True)
class ChainPaths:
    """Where a chain and its dense level 0 live under the results root."""

    dense: Path
    chain: Path

    @classmethod
    def of(cls, cfg: Config) -> ChainPaths:
        """Paths derived from the identity-relevant config only.

        :param cfg: the job config.
        """
        root, seed = Path(cfg.root), f"seed_{cfg.seed}"
        return cls(
            dense=root / "dense" / digest(dense_identity(cfg)) / seed,
            chain=root / "chains" / digest(chain_identity(cfg)) / seed,
        )

    def level(self, level: int, variant: str) -> Path:
        """A level's directory (level 0 lives in the dense directory).

        :param level: level number.
        :param variant: ticket or a control name.
        """
        base = self.dense if level == 0 else self.chain
        return base / f"level_{level:02d}" / variant


def is_complete(path: Path) -> bool:
    """Whether a level directory holds a finished level.

    :param path: a level directory.
    """
    return (path / COMPLETE).exists()


def finished_variants(chain: Path) -> list[tuple[int, str]]:
    """(level, variant) of every finished level directory under a chain (not .partial, .corrupt-*).

    :param chain: a chain's seed directory.
    """
    return [
        (int(d.parent.name.removeprefix("level_")), d.name)
        for d in sorted(chain.glob("level_*/*"))
        if d.is_dir() and "." not in d.name and is_complete(d)
    ]


def claim(directory: Path, identity: dict[str, Any]) -> None:
    """Record ``identity`` in ``directory``, or refuse if a different one is recorded there.

    :param directory: a dense or chain directory.
    :param identity: its identity dict.
    """
    record = directory / "identity.json"
    canonical = json.loads(json.dumps(identity, default=str))
    if record.exists():
        try:
            existing = json.loads(record.read_text())
        except (ValueError, UnicodeDecodeError) as error:  # truncated or edited: never guess what it held
            raise ConfigError(
                f"{record} is unreadable ({error}); it records which config {directory} holds: "
                "restore it, or move the directory away to start it again"
            ) from None
        if existing != canonical:
            raise ConfigError(
                f"{directory} holds results of a different config ({record}: {identity_changes(existing, canonical)}); "
                "refusing to overwrite it"
            )
        return
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(record, json.dumps(canonical, indent=2, sort_keys=True))


def identity_changes(recorded: dict[str, Any], wanted: dict[str, Any]) -> str:
    """The keys two identities disagree on, each with both values: ``prune.rate: recorded 0.2, now 0.3``.

    A key missing on one side had its schema default there (defaults are left out of identities).

    :param recorded: the identity.json found on disk.
    :param wanted: this job's identity.
    """
    keys = sorted(k for k in recorded.keys() | wanted.keys() if recorded.get(k) != wanted.get(k))
    shown = {
        k: [json.dumps(side[k]) if k in side else "the default" for side in (recorded, wanted)] for k in keys
    }
    return "; ".join(f"{k}: recorded {old}, now {new}" for k, (old, new) in shown.items())


def fresh_partial(final: Path) -> Path:
    """An empty ``<level>.partial`` directory beside ``final``, where a level is written before it is moved in.

    :param final: the level's final directory.
    """
    partial_dir = final.with_name(final.name + PARTIAL)
    shutil.rmtree(partial_dir, ignore_errors=True)
    partial_dir.mkdir(parents=True)
    return partial_dir


def temporary(path: Path) -> Path:
    """A temporary sibling of ``path`` unique to this process and thread (parallel jobs never share it).

    :param path: the file about to be written.
    """
    return path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def write_atomic(path: Path, text: str) -> None:
    """Write a text file via a temporary name so readers never see half of it.

    :param path: the file.
    :param text: its new content.
    """
    tmp = temporary(path)
    tmp.write_text(text)
    tmp.replace(path)


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write rows as CSV atomically.

    :param path: the CSV file.
    :param rows: one dict per row (keys outside ``columns`` are ignored).
    :param columns: the header.
    """
    tmp = temporary(path)
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


class PublishRefused(RuntimeError):
    """A finished level was not moved into place: this run no longer holds the lock on its directory."""


def clear_temporaries(directory: Path) -> list[Path]:
    """Remove the temporary files that killed writers left in a chain or dense directory; return them.

    Tables, meta.json and markers are written under the directory's lock through :func:`temporary`
    names; a writer killed between writing and renaming leaves one behind. Call only while holding
    the lock, so no live writer's file is removed.

    :param directory: a chain's or dense run's seed directory.
    """
    found = [
        *(p for name in LOCKED_FILES for p in directory.glob(f"{name}.*.tmp")),
        *directory.glob(f"level_*/*/{COMPLETE}.*.tmp"),
    ]
    for path in found:
        path.unlink(missing_ok=True)
    return found
