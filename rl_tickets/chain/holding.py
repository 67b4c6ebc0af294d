"""The locks one run holds on a chain's directories, and whether a level may still be published.

A level is moved into place only while the run that trains it (or, for a worker process, its parent)
still holds the lock on the level's directory (:func:`rl_tickets.chain.lock.is_held_by`): a worker whose
parent died, or a run whose lock was taken over as stale, never publishes into a chain another run now
owns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rl_tickets.chain.lock import Owner, is_held_by, locked
from rl_tickets.chain.store import ChainPaths


class Holdings:
    """The lock acquisitions of one run (a worker: its parent's on the chain), by directory.

    :param paths: the chain's directories.
    :param say: told when the run waits for a lock (at once, then every minute).
    """

    def __init__(self, paths: ChainPaths, say: Callable[[str], None]) -> None:
        self.paths, self.say = paths, say
        self.owners: dict[Path, Owner] = {}

    @contextmanager
    def locked(self, directory: Path) -> Iterator[None]:
        """Hold the lock on ``directory`` for the block (saying so while waiting for it).

        :param directory: the dense or chain directory.
        """
        with locked(directory, on_wait=self.say) as lock:
            self.owners[directory] = lock.owner
            try:
                yield
            finally:
                del self.owners[directory]

    def holds(self, final: Path) -> bool:
        """Whether the lock on a level's directory is still this run's (or this worker's parent's).

        :param final: the level's final directory.
        """
        directory = self.paths.dense if final.is_relative_to(self.paths.dense) else self.paths.chain
        owner = self.owners.get(directory)
        return owner is not None and is_held_by(directory, owner)
