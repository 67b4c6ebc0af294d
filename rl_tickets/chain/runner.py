"""The loop that composes the engine: a dense level 0, then prune -> restart -> retrain, level after
level, with controls.

Storage lives in :mod:`rl_tickets.chain.store`, what each kind of level starts from in
:mod:`rl_tickets.chain.plans` (and :mod:`rl_tickets.chain.untrained`), the task graph in
:mod:`rl_tickets.chain.schedule`, writing one level in :mod:`rl_tickets.chain.levels`, the tables in
:mod:`rl_tickets.chain.tables`. Every level loads its start from disk, so a resumed chain equals an
uninterrupted one, and any variant whose inputs are on disk can train in another process: with
``workers=N`` the variants of a level train in parallel once the ticket's mask is known, overlapping
the ticket's next level (:mod:`rl_tickets.chain.workers`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch

from rl_tickets.chain.contents import LevelChecker, check_transfer
from rl_tickets.chain.context import ChainContext
from rl_tickets.chain.holding import Holdings
from rl_tickets.chain.identity import chain_identity, dense_identity
from rl_tickets.chain.levels import train_level
from rl_tickets.chain.lock import Owner
from rl_tickets.chain.manifest import MARKER, Verifier, marker_digest
from rl_tickets.chain.plans import plan_of
from rl_tickets.chain.schedule import chain_tasks
from rl_tickets.chain.store import (
    TICKET,
    claim,
    clear_temporaries,
    finished_variants,
    is_complete,
    write_atomic,
)
from rl_tickets.chain.tables import level_row, write_meta, write_tables
from rl_tickets.chain.untrained import UNTRAINED, is_stale
from rl_tickets.chain.workers import Key, Task, WorkerPool, available_cores, threads_per_worker
from rl_tickets.config import Config
from rl_tickets.level import CurveSink, Trainer
from rl_tickets.rl.safe_load import UnreadableCheckpoint
from rl_tickets.sparsity.controls import ARCHITECTURE_CONTROLS
from rl_tickets.trainers import build_trainer

# Builds a trainer for a config in a worker process (a module-level function, so it pickles).
TrainerFactory = Callable[[Config], Trainer]
log = logging.getLogger(__name__)


class Mirror:
    """What the runner reports to while it works (W&B, progress); all methods optional no-ops."""

    def level(self, variant: str, row: dict[str, Any]) -> None:
        """A finished level's row."""

    def curve(self, variant: str, offset: int, start_step: int, row: dict[str, Any]) -> None:
        """A training or evaluation curve point."""


class Runner:
    """Runs one chain (one seed) of one config with one trainer."""

    def __init__(
        self,
        cfg: Config,
        trainer: Trainer,
        mirrors: Sequence[Mirror] = (),
        on_level: Callable[[int, str, dict[str, Any], bool], None] | None = None,
        trainer_factory: TrainerFactory | None = None,
        say: Callable[[str], None] | None = None,
        on_verified: Callable[[], None] | None = None,
    ) -> None:
        """Prepare a chain; nothing is written until :meth:`run`.

        :param cfg: the validated job config.
        :param trainer: the RL or supervised trainer.
        :param mirrors: W&B mirror, progress display (any :class:`Mirror`).
        :param on_level: called with (level, variant, row, trained) after each level finishes (trained)
            or is found complete (progress display).
        :param trainer_factory: builds the trainer in worker processes (``workers`` > 1); default:
            the trainer for ``cfg.task`` (:func:`rl_tickets.trainers.build_trainer`).
        :param say: told one line when the run waits for a lock (at once, then every minute) or a
            worker died (default: logged as a warning).
        :param on_verified: called once the finished levels are verified, before anything trains.
        """
        self.cfg, self.trainer, self.mirrors = cfg, trainer, tuple(mirrors)
        self.trainer_factory = trainer_factory
        self.on_level = on_level or (lambda level, variant, row, trained: None)
        self.say = say or (lambda line: log.warning("%s", line))
        self.on_verified = on_verified or (lambda: None)
        self.chain = ChainContext(cfg, trainer)
        self.paths, self.spec = self.chain.paths, self.chain.spec
        # Beyond manifests: readable files of this config's network (older levels' pickled statistics
        # converted only with trust_pickles=true, else refused in one line).
        self.verifier = Verifier(contents=LevelChecker(self.chain).check)
        self.holdings = Holdings(self.paths, self.say)
        self.chain.may_publish = self.holdings.holds

    def small_dense_scale(self, n_weights: int) -> float:
        """The small_dense control's width factor (:meth:`ChainContext.small_dense_scale`).

        :param n_weights: the ticket's kept count.
        """
        return self.chain.small_dense_scale(n_weights)

    def run(self) -> Path:
        """Train every missing level and variant, then rewrite levels.csv and layers.csv.

        :return: the chain directory.
        """
        cfg = self.cfg
        if cfg.transfer_from:
            check_transfer(self.chain)  # refuse masks of other shapes or dtypes before anything is written
        if any(c in ARCHITECTURE_CONTROLS for c in cfg.controls):
            self.trainer.fresh_params(cfg.seed, 0.5)  # refuse a network small_dense cannot shrink, now
        claim(self.paths.dense, dense_identity(cfg))
        claim(self.paths.chain, chain_identity(cfg))
        # Under the locks: never judge a level another job is replacing.
        with self.holdings.locked(self.paths.dense):
            self._trusted(0, TICKET)
        with self.holdings.locked(self.paths.chain):
            clear_temporaries(self.paths.chain)  # what a killed run left half-written
            write_meta(self.chain)
            self.verify_chain()
        self.on_verified()
        tasks = chain_tasks(self.chain)
        parallel = cfg.workers > 1 and any(self.needs_training(*t.key) for t in tasks)
        with self._pool() if parallel else nullcontext() as pool:
            # A level that passed verification and still fails to load (a legacy level edited by hand)
            # is moved aside, and what depends on it is found stale and trained again: never a stuck chain.
            for repair in range(len(tasks) + 2):
                try:
                    self._train_all(pool, tasks)
                    break
                except UnreadableCheckpoint as error:
                    directory = error.path.parent
                    if repair > len(tasks) or not directory.parent.name.startswith("level_"):
                        raise
                    with self.holdings.locked(directory.parent.parent):
                        self.verifier.reject(
                            directory, f"{directory.parent.name} {directory.name}", error.reason
                        )
        return self.paths.chain

    def _train_all(self, pool: WorkerPool | None, tasks: list[Task]) -> None:
        """Train the dense level, then every task (in the pool when there is one); rewrite the tables."""
        with self.holdings.locked(self.paths.dense):
            self._report(0, TICKET, self.train_variant(0, TICKET))
        with self.holdings.locked(self.paths.chain):
            self.verify_chain()  # after a repair: what depended on a rejected level is stale now
            if pool is None:
                for task in tasks:
                    self._report(*task.key, self.train_variant(*task.key))
            else:
                self._run_parallel(pool, tasks)
            write_tables(self.chain)

    def needs_training(self, level: int, variant: str) -> bool:
        """Whether (level, variant) is missing, or is an untrained level drawn with other settings.

        :param level: level number.
        :param variant: ticket or a control name.
        """
        if not self._trusted(level, variant):
            return True
        return variant in UNTRAINED and is_stale(self.chain, level, variant)

    def _trusted(self, level: int, variant: str) -> bool:
        """Whether (level, variant) is finished and passes verification (else it is moved aside)."""
        label = f"level {level} {variant}"
        upstream = self.chain.upstream(level, variant)
        return self.verifier.trusted(self.paths.level(level, variant), upstream, label)

    def verify_chain(self) -> None:
        """Verify every finished level of the chain, upstream before downstream, before anything trains:
        a damaged or stale one is moved aside, so the tables never read it and it is trained again."""
        found = finished_variants(self.paths.chain)
        for level, variant in sorted(found, key=lambda lv: (lv[0], lv[1] != TICKET, lv[1])):
            self._trusted(level, variant)

    def train_variant(self, level: int, variant: str) -> bool:
        """Train (or, for untrained kinds, evaluate) one level of one variant unless it is done.

        Everything it needs is read from disk, so it runs in any process (see :func:`train_in_worker`).

        :param level: level number.
        :param variant: ticket, a control name, ``transfer`` or ``gradual``.
        :return: whether anything was trained.
        """
        if not self.needs_training(level, variant):
            return False
        if variant in UNTRAINED:
            UNTRAINED[variant](self.chain, level, variant)
        else:
            plan = plan_of(level, variant)
            train_level(
                self.chain,
                level,
                variant,
                lambda: plan(self.chain, level, variant),
                self._sink(level, variant),
            )
        return True

    def _sink(self, level: int, variant: str) -> Callable[[int, int], CurveSink]:
        """The curve sink maker of a variant's level: points go to every mirror, tagged with the level
        (so W&B can overlay levels; the trainer's own eval_curve.csv rows are not touched)."""

        def make(offset: int, start_step: int) -> CurveSink:
            def sink(row: dict[str, Any]) -> None:
                for mirror in self.mirrors:
                    mirror.curve(variant, offset, start_step, {**row, "level": level})

            return sink

        return make

    def _report(self, level: int, variant: str, trained: bool) -> None:
        """Send a level's row to the mirrors (when just trained) and to the progress callback."""
        for other in self._variants_at(level) if variant == TICKET else [variant]:
            self._link_upstream(level, other)
        row = level_row(self.chain, level, variant)
        if trained:
            write_tables(self.chain)  # current after every level: an interrupted chain keeps its tables
            for mirror in self.mirrors:
                mirror.level(variant, row)
        self.on_level(level, variant, row, trained)

    def _pool(self) -> WorkerPool:
        """``workers`` processes, each with its share of this process's torch threads."""
        cores = min(torch.get_num_threads(), available_cores())
        threads = threads_per_worker(self.cfg.threads, cores, self.cfg.workers)
        # Workers import these as they start, during the dense level; a trainer defined elsewhere
        # (a test's spy) is not importable there.
        modules = [__name__, *(m for m in [type(self.trainer).__module__] if m.startswith("rl_tickets."))]
        return WorkerPool(self.cfg.workers, threads, modules, say=self.say)

    def _run_parallel(self, pool: WorkerPool, tasks: list[Task]) -> None:
        """Report finished levels now; train the rest in the pool, tickets first (the critical path)."""
        todo = []
        for task in tasks:
            if self.needs_training(*task.key):
                todo.append(task)
            else:
                self._report(*task.key, trained=False)
        todo.sort(key=lambda task: task.key[1] != TICKET)  # stable: levels stay in order

        def forward(message: tuple[str, int, int, dict[str, Any]]) -> None:
            for mirror in self.mirrors:
                mirror.curve(*message)

        job = partial(train_in_worker, self.cfg, self.trainer_factory, self.holdings.owners[self.paths.chain])
        pool.run(todo, job, on_message=forward, on_done=lambda key, trained: self._report(*key, trained))

    def _variants_at(self, level: int) -> list[str]:
        """The finished non-ticket variants of a level (directories with a marker)."""
        base = self.paths.level(level, TICKET).parent
        return [d.name for d in base.glob("*") if d.name != TICKET and "." not in d.name and is_complete(d)]

    def _link_upstream(self, level: int, variant: str) -> None:
        """Record the ticket's marker in a control that finished before its ticket did.

        A control at L trains from the ticket's mask at L, known once the ticket at L-1 is done, so with
        ``workers`` it may finish first; its manifest then names no upstream (the ticket had no marker
        yet). Once both are finished, the ticket's marker digest is written in (atomically), so a
        later retrained ticket makes the control stale exactly as in a serial run.
        """
        directory, upstream = self.paths.level(level, variant), self.chain.upstream(level, variant)
        if upstream is None or not is_complete(directory) or not is_complete(upstream):
            return
        record = json.loads((directory / MARKER).read_text() or "{}")
        if record.get("version") is None or record.get("upstream") is not None:
            return  # a legacy empty marker, or already linked
        record["upstream"] = marker_digest(upstream)
        write_atomic(directory / MARKER, json.dumps(record, indent=1, sort_keys=True))


class _Outbox(Mirror):
    """A worker's mirror: sends curve points to the parent process, which owns the real mirrors."""

    def __init__(self, outbox: Any) -> None:
        self.outbox = outbox

    def curve(self, variant: str, offset: int, start_step: int, row: dict[str, Any]) -> None:
        """Queue the point for the parent."""
        self.outbox.put((variant, offset, start_step, row))


def train_in_worker(cfg: Config, factory: TrainerFactory | None, owner: Owner, key: Key, outbox: Any) -> bool:
    """Train one (level, variant) of ``cfg``'s chain in a worker process; its curve points go to ``outbox``.

    The parent holds the chain's lock; this writes only the level's own directory (atomically), and
    moves it into place only while that very lock is still the parent's.

    :param cfg: the job config.
    :param factory: builds the trainer (None: :func:`rl_tickets.trainers.build_trainer`).
    :param owner: the parent's acquisition of the chain's lock.
    :param key: (level, variant).
    :param outbox: sends messages to the parent.
    :return: whether anything was trained.
    """
    trainer = (factory or build_trainer)(cfg)
    runner = Runner(cfg, trainer, mirrors=[_Outbox(outbox)])
    runner.holdings.owners[runner.paths.chain] = owner
    return runner.train_variant(*key)
