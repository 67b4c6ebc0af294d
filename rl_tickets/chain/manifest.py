"""A finished level's COMPLETE marker as a manifest: what it records, how a rerun checks it.

The runner writes a level into ``<dir>.partial``, then COMPLETE last, then renames the directory.
COMPLETE holds the level's file names, sizes and sha256 digests, and the digest of the COMPLETE of
the level it was built from (its *upstream*: the previous ticket level for a ticket, the ticket of
the same level for a control). A rerun trusts a level only if every listed file is there with its
size and digest, and its upstream is still the one it was built from: a level whose upstream was
retrained (because it was damaged, or deleted) is stale and is retrained too, also in another chain
that shares the dense level 0.

An empty COMPLETE was written before manifests existed: such a level is trusted as it is, so
results roots written by earlier versions keep working.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
# What a level moved aside keeps of its marker (so nothing reads it as a finished level any more).
REJECTED = "COMPLETE.rejected"
VERSION = 1
CHUNK = 1 << 20
# Variants built from the previous level's ticket (its mask, or its weights under finetune); every
# other variant of a level (the controls) is built from that level's ticket.
FROM_PREVIOUS_TICKET = ("ticket", "transfer", "gradual", "static", "set", "rigl")


def upstream_key(level: int, variant: str) -> tuple[int, str] | None:
    """The (level, variant) a level is built from, or None for the dense level 0.

    :param level: level number.
    :param variant: ticket, a control name, ``transfer`` or ``gradual``.
    """
    if level == 0:
        return None
    return (level - 1, "ticket") if variant in FROM_PREVIOUS_TICKET else (level, "ticket")


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (read in chunks: replay buffers can be large).

    :param path: a file.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def marker_digest(directory: Path) -> str | None:
    """sha256 of a level's COMPLETE marker (its identity as an upstream), or None if it has none.

    :param directory: a level directory.
    """
    marker = directory / MARKER
    return file_digest(marker) if marker.is_file() else None


def _files(directory: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under ``directory`` except the marker, by relative path."""
    return {
        str(path.relative_to(directory)): {"size": path.stat().st_size, "sha256": file_digest(path)}
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MARKER
    }


def write_complete(directory: Path, upstream: Path | None = None) -> None:
    """Write COMPLETE into a fully written level directory: the manifest of its files, written last.

    :param directory: the level's (temporary) directory, every other file already written.
    :param upstream: the finished level this one was built from (None for the dense level 0).
    """
    record = {
        "version": VERSION,
        "files": _files(directory),
        "upstream": marker_digest(upstream) if upstream is not None else None,
    }
    (directory / MARKER).write_text(json.dumps(record, indent=1, sort_keys=True))


def problem(directory: Path, upstream: Path | None = None) -> str | None:
    """Why a finished level cannot be trusted, in a few words, or None if it can.

    :param directory: a level directory with a COMPLETE marker.
    :param upstream: the level it was built from; its current marker must be the one recorded.
    """
    try:
        text = (directory / MARKER).read_text()
    except (OSError, UnicodeDecodeError) as error:
        return f"unreadable {MARKER} ({error})"
    if not text.strip():
        return None  # written before manifests: trusted as it is
    try:
        record = json.loads(text)
        files = record["files"]
    except (ValueError, KeyError, TypeError):
        return f"unreadable {MARKER} manifest"
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} has {path.stat().st_size} bytes, {expected['size']} were written"
        if file_digest(path) != expected["sha256"]:
            return f"{name} changed since it was written (sha256 differs)"
    recorded = record.get("upstream")
    if upstream is not None and recorded is not None and marker_digest(upstream) != recorded:
        return f"it was built from a {upstream.parent.name}/{upstream.name} that is gone or was retrained"
    return None


def move_aside(directory: Path) -> Path:
    """Rename a level that failed verification to ``<variant>.corrupt-<UTC time>`` beside it.

    Its marker becomes ``COMPLETE.rejected``, so no reader takes it for a finished level; the files
    stay for inspection.

    :param directory: the level directory.
    :return: where it went.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = directory.with_name(f"{directory.name}.corrupt-{stamp}")
    suffix = 1
    while target.exists():
        suffix += 1
        target = directory.with_name(f"{directory.name}.corrupt-{stamp}-{suffix}")
    marker = directory / MARKER
    if marker.exists():
        marker.replace(directory / REJECTED)
    directory.replace(target)
    return target


class Verifier:
    """Checks finished levels for one run: each (level, upstream) pair is hashed once; a level that
    fails is moved aside with one warning line and reported as not finished, so it is trained again.

    :param contents: a further check of a level whose manifest passed (readable files of this
        config's network, :mod:`rl_tickets.chain.contents`): why it cannot be used, or None.
    """

    def __init__(self, contents: Callable[[Path], str | None] | None = None) -> None:
        # directory -> (its marker digest, its upstream's marker digest) when it last passed
        self._passed: dict[Path, tuple[str | None, str | None]] = {}
        self.contents = contents or (lambda directory: None)

    def trusted(self, directory: Path, upstream: Path | None, label: str) -> bool:
        """Whether ``directory`` holds a finished level that passes :func:`problem`.

        :param directory: a level directory.
        :param upstream: the level it was built from (None for the dense level 0).
        :param label: how the warning names the level, e.g. ``level 3 ticket``.
        """
        own = marker_digest(directory)
        if own is None:
            return False
        key = (own, marker_digest(upstream) if upstream is not None else None)
        if self._passed.get(directory) == key:
            return True
        reason = problem(directory, upstream) or self.contents(directory)
        if reason is None:
            self._passed[directory] = key
            return True
        self.reject(directory, label, reason)
        return False

    def reject(self, directory: Path, label: str, reason: str) -> None:
        """Move a level that cannot be used aside, with one warning line (it is trained again).

        :param directory: the level directory.
        :param label: how the warning names the level, e.g. ``level 3 ticket``.
        :param reason: why, in a few words.
        """
        self._passed.pop(directory, None)
        try:
            moved = move_aside(directory)
        except FileNotFoundError:  # another process moved it first: train it (again) all the same
            return
        log.warning(f"rl-tickets: {label} failed verification: {reason}; moved to {moved}; training it again")
