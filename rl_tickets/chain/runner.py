"""The IMP loop: a dense level 0, then prune -> restart -> retrain, level after level, with controls.

Results layout (see README)::

    ROOT/dense/<dense_hash>/seed_<s>/            level 0, shared by chains that differ only in
        identity.json                            pruning or retraining settings
        level_00/ticket/{init.zip,[rewind.zip],model.zip,mask.pt,metrics.json,eval_curve.csv,COMPLETE}
    ROOT/chains/<chain_hash>/seed_<s>/
        identity.json  meta.json  levels.csv  layers.csv
        level_NN/<variant>/{model.zip,mask.pt,metrics.json,eval_curve.csv,progress.csv,COMPLETE}

Every level is written into ``<dir>.partial`` and renamed when complete (COMPLETE written last: a
manifest of the level's files that a rerun verifies, :mod:`rl_tickets.chain.manifest`), so a
killed run loses at most the level in progress and a rerun only finishes missing work. Every level
loads its start from disk, so a resumed chain equals an uninterrupted one, and any variant whose
inputs are on disk can train in another process: with ``workers=N`` the variants of a level train in
parallel once the ticket's mask is known, overlapping the ticket's next level (:mod:`rl_tickets.chain.workers`).

Each level's metrics.json records where its time went (``time``: train, eval, save, prune, total
seconds) and ``steps_per_s`` (training alone); levels.csv carries ``train_s``.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from rl_tickets.chain.identity import chain_identity, dense_identity, digest
from rl_tickets.chain.manifest import MARKER, Verifier, marker_digest, upstream_key, write_complete
from rl_tickets.chain.workers import Key, Task, WorkerPool, threads_per_worker
from rl_tickets.config import CHOICES, Config, ConfigError, display_name
from rl_tickets.level import LevelOutcome, LevelPlan, Trainer, bisect_scale
from rl_tickets.rl.trainer import seed_for
from rl_tickets.sparsity.controls import ARCHITECTURE_CONTROLS, ControlInputs, build_control, random_mask_like
from rl_tickets.sparsity.masks import Mask, dense_mask, layer_densities, load_mask, save_mask
from rl_tickets.sparsity.pruning import PruneSpec, next_mask, prunable
from rl_tickets.sparsity.supermask import SUPERMASK_CONTROLS, DrawSpec, draw_params, draw_summary
from rl_tickets.timing import TIME_KEYS, Stopwatch, steps_per_second

# Suffix of a level directory being written (renamed to the level when complete).
PARTIAL = ".partial"

COMPLETE = MARKER  # a finished level's marker: the manifest of its files (rl_tickets.chain.manifest)
TICKET = "ticket"
TRANSFER = "transfer"
VARIANT_ORDER = (TICKET, *CHOICES["controls"], TRANSFER, "gradual")
# levels.csv's time column (the rest of the breakdown is in metrics.json and goes to W&B).
TIME_COLUMNS = ("train_s",)
# Builds a trainer for a config in a worker process (a module-level function, so it pickles).
TrainerFactory = Callable[[Config], Trainer]


class Mirror:
    """What the runner reports to while it works (W&B, progress); all methods optional no-ops."""

    def level(self, variant: str, row: dict[str, Any]) -> None:
        """A finished level's row."""

    def curve(self, variant: str, offset: int, start_step: int, row: dict[str, Any]) -> None:
        """A training or evaluation curve point."""


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


def claim(directory: Path, identity: dict[str, Any]) -> None:
    """Record ``identity`` in ``directory``, or refuse if a different one is recorded there.

    :param directory: a dense or chain directory.
    :param identity: its identity dict.
    """
    record = directory / "identity.json"
    canonical = json.loads(json.dumps(identity, default=str))
    if record.exists():
        existing = json.loads(record.read_text())
        if existing != canonical:
            raise ConfigError(
                f"{directory} holds results of a different config ({record}: {identity_changes(existing, canonical)}); "
                "refusing to overwrite it"
            )
        return
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomic(record, json.dumps(canonical, indent=2, sort_keys=True))


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


def _temporary(path: Path) -> Path:
    """A temporary sibling of ``path`` unique to this process and thread (parallel jobs never share it)."""
    return path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _write_atomic(path: Path, text: str) -> None:
    """Write a text file via a temporary name so readers never see half of it."""
    tmp = _temporary(path)
    tmp.write_text(text)
    tmp.replace(path)


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (two jobs never train the same chain at once).

    :param directory: the directory to lock (created if missing).
    """
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write rows as CSV atomically."""
    tmp = _temporary(path)
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


class Runner:
    """Runs one chain (one seed) of one config with one trainer."""

    def __init__(
        self,
        cfg: Config,
        trainer: Trainer,
        mirrors: Sequence[Mirror] = (),
        on_level: Callable[[int, str, dict[str, Any]], None] | None = None,
        trainer_factory: TrainerFactory | None = None,
    ) -> None:
        """Prepare a chain; nothing is written until :meth:`run`.

        :param cfg: the validated job config.
        :param trainer: the RL or supervised trainer.
        :param mirrors: W&B mirror, progress display (any :class:`Mirror`).
        :param on_level: called after each level finishes or is found complete (progress display).
        :param trainer_factory: builds the trainer in worker processes (``workers`` > 1); default:
            the job's trainer for ``cfg.task``.
        """
        self.cfg, self.trainer, self.mirrors = cfg, trainer, tuple(mirrors)
        self.trainer_factory = trainer_factory
        self.on_level = on_level or (lambda level, variant, row: None)
        self.paths = ChainPaths.of(cfg)
        self.spec = PruneSpec(
            rate=cfg.prune.rate,
            scope=cfg.prune.scope,
            overrides=dict(cfg.prune.overrides),
            exclude=tuple(cfg.prune.exclude),
            criterion=cfg.prune.criterion,
            distribution=cfg.prune.distribution,
        )
        self._names: list[str] | None = None
        self._dense_masks: dict[float, Mask] = {}
        self.verifier = Verifier()

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> Path:
        """Train every missing level and variant, then rewrite levels.csv and layers.csv.

        :return: the chain directory.
        """
        cfg = self.cfg
        if cfg.transfer_from:
            self._transfer_mask(1)  # refuse mismatched shapes before anything is written
        if any(c in ARCHITECTURE_CONTROLS for c in cfg.controls):
            self.trainer.fresh_params(cfg.seed, 0.5)  # refuse a network small_dense cannot shrink, now
        claim(self.paths.dense, dense_identity(cfg))
        claim(self.paths.chain, chain_identity(cfg))
        self._write_meta()
        with locked(self.paths.chain):  # under the lock: never judge a level another job is replacing
            self.verify_chain()
        tasks = self.tasks()
        parallel = cfg.workers > 1 and any(self.needs_training(*t.key) for t in tasks)
        with self._pool() if parallel else nullcontext() as pool:
            with locked(self.paths.dense):
                self._report(0, TICKET, self.train_variant(0, TICKET))
            with locked(self.paths.chain):
                if pool is None:
                    for task in tasks:
                        self._report(*task.key, self.train_variant(*task.key))
                else:
                    self._run_parallel(pool, tasks)
                self.write_tables()
        return self.paths.chain

    def tasks(self) -> list[Task]:
        """Every (level, variant) after the dense level, in serial order, with what each needs first.

        The ticket at L needs the ticket at L-1. Every other variant at L needs only the ticket's *mask*
        at L, which the trained ticket at L-1 decides (:meth:`_mask_of_ticket`), so it can train beside
        the ticket at L; and, so that its curves and W&B steps stay in order, its own level L-1.
        """
        cfg = self.cfg
        if cfg.prune.schedule == "gradual":  # one run (level 1); prune.levels=0 trains only the dense net
            return [Task((1, "gradual"))] if cfg.prune.levels else []
        tasks = []
        for level in range(1, cfg.prune.levels + 1):
            ticket = (level, TICKET)
            tasks.append(Task(ticket, after=((level - 1, TICKET),)))
            transfer = [TRANSFER] if cfg.transfer_from and self._transfer_mask_path(level).exists() else []
            for variant in [*cfg.controls, *transfer]:
                tasks.append(Task((level, variant), after=((level - 1, TICKET), (level - 1, variant))))
        return tasks

    def needs_training(self, level: int, variant: str) -> bool:
        """Whether (level, variant) is missing, or is an untrained level drawn with other settings.

        :param level: level number.
        :param variant: ticket or a control name.
        """
        if not self._trusted(level, variant):
            return True
        drawn = self._metrics(level, variant)["extra"].get("supermask")
        return variant in SUPERMASK_CONTROLS and drawn != asdict(self.cfg.supermask)

    def _upstream(self, level: int, variant: str) -> Path | None:
        """The level directory (level, variant) is built from (:func:`rl_tickets.chain.manifest.upstream_key`)."""
        key = upstream_key(level, variant)
        return self.paths.level(*key) if key is not None else None

    def _trusted(self, level: int, variant: str) -> bool:
        """Whether (level, variant) is finished and passes verification (else it is moved aside)."""
        label = f"level {level} {variant}"
        return self.verifier.trusted(self.paths.level(level, variant), self._upstream(level, variant), label)

    def verify_chain(self) -> None:
        """Verify every finished level of the chain, upstream before downstream, before anything trains:
        a damaged or stale one is moved aside, so the tables never read it and it is trained again."""
        found = [
            (int(d.parent.name.removeprefix("level_")), d.name)
            for d in self.paths.chain.glob("level_*/*")
            if d.is_dir() and "." not in d.name and is_complete(d)
        ]
        for level, variant in sorted(found, key=lambda lv: (lv[0], lv[1] != TICKET, lv[1])):
            self._trusted(level, variant)

    def train_variant(self, level: int, variant: str) -> bool:
        """Train (or, for supermask controls, evaluate) one level of one variant unless it is done.

        Everything it needs is read from disk, so it runs in any process (see :func:`train_in_worker`).

        :param level: level number.
        :param variant: ticket, a control name, ``transfer`` or ``gradual``.
        :return: whether anything was trained.
        """
        if not self.needs_training(level, variant):
            return False
        if variant in SUPERMASK_CONTROLS:
            self._untrained_level(level, variant)
        else:
            self._level(level, variant, self._plan_maker(level, variant))
        return True

    def _plan_maker(self, level: int, variant: str) -> Callable[[int], LevelPlan]:
        """The plan builder of a trained variant."""
        if level == 0:
            return self._dense_plan
        makers = {TICKET: self._ticket_plan, "gradual": self._gradual_plan, TRANSFER: self._transfer_plan}
        return makers.get(variant) or partial(self._control_plan, control=variant)

    def _report(self, level: int, variant: str, trained: bool) -> None:
        """Send a level's row to the mirrors (when just trained) and to the progress callback."""
        for other in self._variants_at(level) if variant == TICKET else [variant]:
            self._link_upstream(level, other)
        row = self._row(level, variant)
        if trained:
            self.write_tables()  # current after every level: an interrupted chain keeps its tables
            for mirror in self.mirrors:
                mirror.level(variant, row)
        self.on_level(level, variant, row)

    def _pool(self) -> WorkerPool:
        """``workers`` processes, each with its share of this process's torch threads."""
        threads = threads_per_worker(self.cfg.threads, torch.get_num_threads(), self.cfg.workers)
        # Workers import these as they start, during the dense level; a trainer defined elsewhere
        # (a test's spy) is not importable there.
        modules = [__name__, *(m for m in [type(self.trainer).__module__] if m.startswith("rl_tickets."))]
        return WorkerPool(self.cfg.workers, threads, modules)

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

        job = partial(train_in_worker, self.cfg, self.trainer_factory)
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
        directory, upstream = self.paths.level(level, variant), self._upstream(level, variant)
        if upstream is None or not is_complete(directory) or not is_complete(upstream):
            return
        record = json.loads((directory / MARKER).read_text() or "{}")
        if record.get("version") is None or record.get("upstream") is not None:
            return  # a legacy empty marker, or already linked
        record["upstream"] = marker_digest(upstream)
        _write_atomic(directory / MARKER, json.dumps(record, indent=1, sort_keys=True))

    def _level(self, level: int, variant: str, make_plan: Callable[[int], LevelPlan]) -> None:
        """Train one level of one variant; write it atomically."""
        final = self.paths.level(level, variant)
        partial_dir = fresh_partial(final)
        watch = Stopwatch()
        started = watch.clock()
        with watch.section("prune"):
            plan = make_plan(level)
        offset = self._offset(level, variant)
        start_step = plan.start_step if plan.start_step is not None else self._checkpoint_step(plan)

        def sink(row: dict[str, Any]) -> None:
            for mirror in self.mirrors:
                mirror.curve(variant, offset, start_step, row)

        outcome = self.trainer.train(plan, partial_dir, sink)
        mask = outcome.mask if outcome.mask is not None else (plan.mask or self._dense_mask(plan.width_scale))
        with watch.section("save"):
            save_mask(mask, partial_dir / "mask.pt")
        self._finish(partial_dir, final, level, variant, plan, outcome, mask, watch, watch.clock() - started)

    def _finish(
        self,
        partial: Path,
        final: Path,
        level: int,
        variant: str,
        plan: LevelPlan,
        outcome: LevelOutcome,
        mask: Mask,
        watch: Stopwatch,
        total_s: float,
    ) -> None:
        """Write metrics and curve (mask.pt is written), then COMPLETE, then move the level into place.

        :param watch: the runner's own sections of this level (``prune``; ``save`` of the mask).
        :param total_s: seconds from the start of the level's preparation to its mask on disk.
        """
        spent = {
            key: round(outcome.time.get(key, 0.0) + watch.seconds(key.removesuffix("_s")), 4)
            for key in TIME_KEYS
        }
        spent["total_s"] = round(total_s, 4)
        steps = int(outcome.metrics.get(self.trainer.unit, 0) or 0)
        record = {
            "level": level,
            "variant": variant,
            "density": self._density(mask),
            **outcome.metrics,
            "time": spent,
            "steps_per_s": steps_per_second(steps, spent["train_s"]),
            "extra": outcome.extra,
            "plan": _describe(plan),
        }
        (partial / "metrics.json").write_text(json.dumps(record, indent=2, default=str))
        if outcome.curve:
            columns = sorted({k for row in outcome.curve for k in row}, key=lambda k: (k != "step", k))
            _write_csv(partial / "eval_curve.csv", outcome.curve, columns)
        write_complete(partial, self._upstream(level, variant))
        shutil.rmtree(final, ignore_errors=True)
        partial.replace(final)

    # ---- plans ----------------------------------------------------------------------------
    def _dense_plan(self, level: int) -> LevelPlan:
        """Level 0: a fresh network from the chain seed, snapshots at 0 and at rewind.step."""
        return LevelPlan(
            start=None,
            steps=self.trainer.budget,
            mask=None,
            seed=self.cfg.seed,
            snapshot_step=self.cfg.rewind.step,
            restore_replay_buffer=self.cfg.rewind.replay_buffer == "restore",
        )

    def _rewind_point(self) -> tuple[Path, int]:
        """The saved state at rewind.step and the step it was actually taken at."""
        k = self.cfg.rewind.step
        taken = self._metrics(0, TICKET)["extra"].get("snapshot_step", k) if k else 0
        return self.trainer.snapshot_path(self._dense_dir, k), int(taken)

    def _ticket_start(self, level: int) -> tuple[Path, int | None, float | None]:
        """(checkpoint, start_step, constant_lr) of the ticket per retrain.mode."""
        snapshot, k = self._rewind_point()
        previous = self.paths.level(level - 1, TICKET) / self.trainer.checkpoint_name
        mode = self.cfg.retrain.mode
        if mode == "rewind":
            return snapshot, None, None
        if mode == "lr_rewind":
            return previous, k, None
        return previous, None, self.cfg.retrain.finetune_lr

    def _ticket_mask(self, level: int) -> Mask:
        """Prune the previous ticket (iterative) or the dense net ``level`` times at once (oneshot)."""
        oneshot = self.cfg.prune.schedule == "oneshot"
        source = 0 if oneshot else level - 1
        source_dir = self.paths.level(source, TICKET)
        final = self.trainer.load_params(source_dir / self.trainer.checkpoint_name)
        reference = self.trainer.load_params(self._criterion_reference(source))
        current = load_mask(source_dir / "mask.pt") if source else self._dense_mask()
        generator = torch.Generator().manual_seed(seed_for(self.cfg.seed, level, "prune"))
        return next_mask(
            self.spec, final, reference, current, times=level if oneshot else 1, generator=generator
        )

    def _criterion_reference(self, source: int) -> Path:
        """The weights the pruned level started from: what magnitude_increase and movement compare with.

        Zhou et al. 2019 score a weight by how it changed from the weights its training started from:
        under ``rewind`` the rewind point k (every level restarts there; for the dense level too, since
        its mask decides what restarts from k); under ``finetune`` and ``lr_rewind`` the level's own
        start, the previous level's trained weights (the initialisation for the dense level). Gradual
        pruning compares with the weights at its previous mask update (:class:`GradualSchedule`).

        :param source: the level whose trained weights are ranked.
        """
        if source > 0:
            return self._ticket_start(source)[0]
        if self.cfg.retrain.mode == "rewind":
            return self._rewind_point()[0]
        return self.trainer.snapshot_path(self._dense_dir, 0)

    def _ticket_base(self, level: int) -> LevelPlan:
        """The ticket's start at this level per retrain.mode, without its mask."""
        start, start_step, lr = self._ticket_start(level)
        _, k = self._rewind_point()
        return LevelPlan(
            start=start,
            start_step=start_step,
            steps=self.trainer.budget - k,
            mask=None,
            seed=seed_for(self.cfg.seed, level),
            constant_lr=lr,
            hold_step=k if lr is not None else 0,
            restore_optimizer=self.cfg.rewind.optimizer == "restore",
            restore_replay_buffer=self.cfg.rewind.replay_buffer == "restore",
        )

    def _ticket_plan(self, level: int) -> LevelPlan:
        """The ticket: a new mask, then restart per retrain.mode and train to the end of the budget."""
        plan = self._ticket_base(level)
        plan.mask = self._ticket_mask(level)
        return plan

    def _mask_of_ticket(self, level: int) -> Mask:
        """The ticket's mask at ``level``: read back from the finished ticket, or, while the ticket at
        ``level`` is still training (``workers``), computed as it computes it (from the ticket at
        ``level - 1``, deterministically), so the controls need not wait for its training."""
        finished = self.paths.level(level, TICKET)
        return load_mask(finished / "mask.pt") if is_complete(finished) else self._ticket_mask(level)

    def _control_plan(self, level: int, control: str) -> LevelPlan:
        """A control against the ticket's own mask at this level."""
        ticket_mask = self._mask_of_ticket(level)
        control_seed = seed_for(self.cfg.seed, level, control)
        if control in ARCHITECTURE_CONTROLS:
            kept = sum(int(m.sum()) for m in self._counted(ticket_mask).values())
            return LevelPlan(
                start=None,
                steps=self.trainer.budget,
                mask=None,
                seed=control_seed,
                width_scale=self.small_dense_scale(kept),
                record={"control_seed": control_seed, "ticket_weights": kept},
            )
        plan = self._ticket_base(level)
        assert plan.start is not None
        # random_reinit draws the very same random mask as random_mask; only its weights are fresh.
        generator_seed = (
            seed_for(self.cfg.seed, level, "random_mask") if control == "random_reinit" else control_seed
        )
        inputs = ControlInputs(
            mask=ticket_mask,
            start=self.trainer.load_params(plan.start),
            fresh=self.trainer.fresh_params(control_seed),
            generator=torch.Generator().manual_seed(generator_seed),
        )
        built = build_control(control, inputs)
        plan.mask, plan.params = built.mask, built.params
        plan.record = {"control_seed": control_seed, "generator_seed": generator_seed}
        return plan

    def _untrained_level(self, level: int, variant: str) -> None:
        """A supermask control: ``supermask.samples`` weight draws under a mask, evaluated, never trained.

        The draw settings are recorded in metrics.json; a finished level drawn with other settings is
        evaluated again (:meth:`needs_training`; nothing trained is lost, and it costs only evaluation).
        """
        final = self.paths.level(level, variant)
        watch = Stopwatch()
        started = watch.clock()
        with watch.section("prune"):
            ticket_mask = self._mask_of_ticket(level)
            start_checkpoint = self._ticket_base(level).start
            assert start_checkpoint is not None
            start = self.trainer.load_params(start_checkpoint)
            mask = ticket_mask
            if variant == "random_supermask":
                generator = torch.Generator().manual_seed(seed_for(self.cfg.seed, level, variant))
                mask = random_mask_like(ticket_mask, generator)
            spec = DrawSpec(self.cfg.supermask.weights, self.cfg.supermask.signs)
            draws = []
            # Draw d has one seed for both variants, so supermask and random_supermask are paired draw by draw.
            for draw in range(self.cfg.supermask.samples):
                draw_seed = seed_for(self.cfg.seed, level, "supermask", draw)
                params = draw_params(spec, draw, mask, start, self.trainer.fresh_params(draw_seed))
                with watch.section("eval"):
                    value = self.trainer.evaluate_params(params, mask, start_checkpoint)
                draws.append({"draw": draw, "seed": draw_seed, self.trainer.metric: value})
        summary = draw_summary([d[self.trainer.metric] for d in draws])
        outcome = LevelOutcome(
            metrics=self.trainer.untrained_row(summary["mean"], summary["std"], summary["max"]),
            extra={"supermask": asdict(self.cfg.supermask), "draws": draws},
        )
        plan = LevelPlan(
            start=start_checkpoint, steps=0, mask=mask, seed=seed_for(self.cfg.seed, level, variant)
        )
        partial_dir = fresh_partial(final)
        with watch.section("save"):
            save_mask(mask, partial_dir / "mask.pt")
        self._finish(partial_dir, final, level, variant, plan, outcome, mask, watch, watch.clock() - started)

    def _transfer_mask_path(self, level: int) -> Path:
        """The source chain's ticket mask at ``level``."""
        return Path(self.cfg.transfer_from or "") / f"level_{level:02d}" / TICKET / "mask.pt"

    def _transfer_mask(self, level: int) -> Mask:
        """Another chain's ticket mask at ``level``; its layers and shapes must equal this network's."""
        mask = load_mask(self._transfer_mask_path(level))
        own = self._dense_mask()
        if set(mask) != set(own) or any(mask[n].shape != own[n].shape for n in own):
            raise ConfigError(
                f"transfer_from={self.cfg.transfer_from}: its masks cover other layers or shapes than this "
                "network's; transfer needs the same architecture, prune.biases and observation/action sizes"
            )
        return mask

    def _transfer_plan(self, level: int) -> LevelPlan:
        """Another chain's ticket mask on this chain's start state."""
        plan = self._ticket_base(level)
        plan.mask = self._transfer_mask(level)
        return plan

    def _gradual_plan(self, level: int) -> LevelPlan:
        """Gradual magnitude pruning: one run from the initialisation with a growing mask."""
        from rl_tickets.sparsity.gradual import GradualSchedule

        p = self.cfg.prune
        schedule = GradualSchedule(
            spec=self.spec,
            names=self._prunable_names(),
            final_density=p.final_density,
            begin=round(p.start_fraction * self.trainer.budget),
            end=round(p.end_fraction * self.trainer.budget),
            every=p.update_every,
        )
        return LevelPlan(
            start=self.trainer.snapshot_path(self._dense_dir, 0),
            steps=self.trainer.budget,
            mask=self._dense_mask(),
            seed=seed_for(self.cfg.seed, level),
            start_step=0,
            mask_schedule=schedule,
            mask_schedule_every=p.update_every,
        )

    # ---- helpers --------------------------------------------------------------------------
    @property
    def _dense_dir(self) -> Path:
        """The finished dense level, which also holds its snapshots (init, rewind)."""
        return self.paths.level(0, TICKET)

    def _prunable_names(self) -> list[str]:
        """Names the masks cover (weights; biases too with prune.biases)."""
        if self._names is None:
            params = self.trainer.fresh_params(self.cfg.seed)
            self._names = self.trainer.prunable(params, self.cfg.prune.biases)
        return self._names

    def _dense_mask(self, width_scale: float = 1.0) -> Mask:
        """All-kept mask over the prunable names (of a width-scaled network for small_dense)."""
        if width_scale not in self._dense_masks:
            params = self.trainer.fresh_params(self.cfg.seed, width_scale)
            self._dense_masks[width_scale] = dense_mask({n: params[n] for n in self._prunable_names()})
        return {n: m.clone() for n, m in self._dense_masks[width_scale].items()}

    def _density(self, mask: Mask) -> float:
        """Kept counted weights over the *full* network's counted weights (so a shrunk small_dense
        network sits at the density of the ticket it is matched to)."""
        kept = sum(int(m.sum()) for m in self._counted(mask).values())
        total = sum(m.numel() for m in self._counted(self._dense_mask()).values())
        return kept / total

    def small_dense_scale(self, n_weights: int) -> float:
        """The small_dense control's width factor: its dense network has about ``n_weights`` weights
        counted exactly as density counts them (biases with prune.biases, excluded layers left out;
        hidden widths and CNN channels shrink together).

        :param n_weights: the ticket's kept count.
        """
        counted = prunable(self._prunable_names(), self.spec.exclude)

        def count(scale: float) -> int:
            params = self.trainer.fresh_params(self.cfg.seed, scale)
            return sum(params[n].numel() for n in counted)

        return bisect_scale(count, n_weights)

    def _counted(self, mask: Mask) -> Mask:
        """The part of a mask that counts towards density (excluded layers are not prunable)."""
        return {n: mask[n] for n in prunable(list(mask), self.spec.exclude)}

    def _metrics(self, level: int, variant: str) -> dict[str, Any]:
        """A finished level's metrics.json."""
        return json.loads((self.paths.level(level, variant) / "metrics.json").read_text())

    def _row(self, level: int, variant: str) -> dict[str, Any]:
        """A finished level's row: its levels.csv columns plus the whole time breakdown and steps/s
        (levels.csv keeps only ``train_s`` of those; the mirrors and the progress line get all)."""
        record = self._metrics(level, variant)
        row = {k: record[k] for k in ("level", "variant", "density", *self.trainer.columns) if k in record}
        row.update(record.get("time", {}))
        if record.get("steps_per_s") is not None:
            row["steps_per_s"] = record["steps_per_s"]
        return row

    def _checkpoint_step(self, plan: LevelPlan) -> int:
        """The step counter a plan starts at when it keeps its checkpoint's counter."""
        if plan.start is None:
            return 0
        if plan.start == self.trainer.snapshot_path(self._dense_dir, self.cfg.rewind.step):
            return self._rewind_point()[1]
        level_dir = plan.start.parent
        return int(json.loads((level_dir / "metrics.json").read_text())["extra"].get("end_step", 0))

    def _offset(self, level: int, variant: str) -> int:
        """Steps this variant trained in earlier levels (the cumulative x-axis of its curves)."""
        total = 0
        for earlier in range(level):
            path = self.paths.level(earlier, TICKET if earlier == 0 else variant)
            if is_complete(path):
                record = self._metrics(earlier, TICKET if earlier == 0 else variant)
                total += int(record.get(self.trainer.unit, record.get("timesteps", 0)))
        return total

    def _write_meta(self) -> None:
        """meta.json: what the report needs to group and label this chain."""
        cfg = self.cfg
        meta = {
            "name": display_name(cfg),
            "task": cfg.task,
            "seed": cfg.seed,
            "metric": self.trainer.metric,
            "unit": self.trainer.unit,
            "algo": cfg.algo.name if cfg.task == "rl" else None,
            "env": cfg.env.name if cfg.task == "rl" else cfg.data.name,
            "model": cfg.model.name if cfg.task == "supervised" else None,
            "dense_dir": str(self.paths.dense),
            "config": asdict(cfg),
            **self.trainer.describe(),
        }
        _write_atomic(self.paths.chain / "meta.json", json.dumps(meta, indent=2, default=str))

    def write_tables(self) -> None:
        """Rebuild levels.csv and layers.csv from the finished levels on disk."""
        rows, layer_rows = [], []
        found = [(0, TICKET)] + [
            (int(d.parent.name.split("_")[1]), d.name)
            for d in sorted(self.paths.chain.glob("level_*/*"))
            if d.is_dir() and "." not in d.name and is_complete(d)  # not .partial, .corrupt-*
        ]
        found.sort(
            key=lambda lv: (lv[0], VARIANT_ORDER.index(lv[1]) if lv[1] in VARIANT_ORDER else 99, lv[1])
        )
        for level, variant in found:
            directory = self.paths.level(level, variant)
            if not is_complete(directory):
                continue
            rows.append(self._row(level, variant))
            for layer, numel, layer_density in layer_densities(load_mask(directory / "mask.pt")):
                layer_rows.append(
                    {
                        "level": level,
                        "variant": variant,
                        "layer": layer,
                        "numel": numel,
                        "density": layer_density,
                    }
                )
        _write_csv(
            self.paths.chain / "levels.csv",
            rows,
            ["level", "variant", "density", *self.trainer.columns, *TIME_COLUMNS],
        )
        _write_csv(
            self.paths.chain / "layers.csv", layer_rows, ["level", "variant", "layer", "numel", "density"]
        )


class _Outbox(Mirror):
    """A worker's mirror: sends curve points to the parent process, which owns the real mirrors."""

    def __init__(self, outbox: Any) -> None:
        self.outbox = outbox

    def curve(self, variant: str, offset: int, start_step: int, row: dict[str, Any]) -> None:
        """Queue the point for the parent."""
        self.outbox.put((variant, offset, start_step, row))


def default_trainer(cfg: Config) -> Trainer:
    """The trainer a job builds for ``cfg.task`` (what worker processes use unless told otherwise).

    :param cfg: the job config.
    """
    from rl_tickets.cli.job import TRAINERS  # job imports this module: import it only when called

    return TRAINERS[cfg.task](cfg)


def train_in_worker(cfg: Config, factory: TrainerFactory | None, key: Key, outbox: Any) -> bool:
    """Train one (level, variant) of ``cfg``'s chain in a worker process; its curve points go to ``outbox``.

    The parent holds the chain's lock; this writes only the level's own directory (atomically).

    :param cfg: the job config.
    :param factory: builds the trainer (None: :func:`default_trainer`).
    :param key: (level, variant).
    :param outbox: a queue shared with the parent.
    :return: whether anything was trained.
    """
    trainer = (factory or default_trainer)(cfg)
    return Runner(cfg, trainer, mirrors=[_Outbox(outbox)]).train_variant(*key)


def _describe(plan: LevelPlan) -> dict[str, Any]:
    """A plan as JSON-friendly facts (what a level started from), recorded in metrics.json."""
    return {
        "start": str(plan.start) if plan.start else None,
        "start_step": plan.start_step,
        "steps": plan.steps,
        "seed": plan.seed,
        "constant_lr": plan.constant_lr,
        "hold_step": plan.hold_step,
        "restore_optimizer": plan.restore_optimizer,
        "restore_replay_buffer": plan.restore_replay_buffer,
        "width_scale": plan.width_scale,
        "params_overridden": plan.params is not None,
        **plan.record,
    }
