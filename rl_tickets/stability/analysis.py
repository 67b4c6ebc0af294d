"""The instability analysis of one seed: the loop over rewind steps k and levels.

1. The analysis's own dense run trains once with a snapshot at every k of the grid (:mod:`.store`
   says why it is not the chain's level 0).
2. The masks come from the analysed chain rewound to k=0 (``stability.masks=k0``), or from one chain
   per k (``per_k``); those chains are ordinary chains under ``ROOT/chains/``, run (or resumed) here by
   the engine's :class:`~rl_tickets.chain.runner.Runner` up to the deepest analysed level.
3. For every (k, level) a pair of copies trains from the snapshot at k with the level's mask
   (:mod:`.pairs`) and its path is evaluated; the tables are rewritten after every pair.

Everything is read from disk and checked as chains are: a finished pair whose files changed, whose
dense run was retrained, or whose mask differs from the chain's current mask is moved aside and trained
again; a rerun skips finished pairs, so a killed analysis loses at most the pair in progress.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from rl_tickets.chain.context import ChainContext
from rl_tickets.chain.lock import locked
from rl_tickets.chain.manifest import Verifier, file_digest, move_aside, write_complete
from rl_tickets.chain.runner import Runner
from rl_tickets.chain.store import TICKET, claim, fresh_partial
from rl_tickets.config import Config, display_name
from rl_tickets.level import LevelPlan, Trainer, snapshot_file
from rl_tickets.sparsity.masks import Mask, load_mask
from rl_tickets.stability.pairs import PairSpec, evaluate_path, path_is_current, train_pair
from rl_tickets.stability.points import PathEvaluator
from rl_tickets.stability.settings import COPIES, alphas, grid, learner_config, mask_config, noise_seed
from rl_tickets.stability.store import (
    PAIR_RECORD,
    StabilityPaths,
    analysis_identity,
    dense_reference,
    read_json,
)
from rl_tickets.stability.tables import collect, write_tables

Announce = Callable[[str], None]


class CurveMirror(Protocol):
    """Receives one row per finished pair (the W&B mirror of :mod:`rl_tickets.stability.tracking`)."""

    def curve(self, variant: str, offset: int, start_step: int, row: dict[str, Any]) -> None:
        """Log ``row`` against ``global_step`` = ``offset + row["step"] - start_step``."""
        ...


def _rl_evaluator(trainer: Trainer) -> PathEvaluator:
    """Deterministic returns along the line (imports SB3 only when an RL analysis runs)."""
    from rl_tickets.stability.rl_path import RLPath

    return RLPath(trainer)  # type: ignore[arg-type]


def _supervised_evaluator(trainer: Trainer) -> PathEvaluator:
    """Test error and loss along the line."""
    from rl_tickets.stability.supervised_path import SupervisedPath

    return SupervisedPath(trainer)  # type: ignore[arg-type]


EVALUATORS: dict[str, Callable[[Trainer], PathEvaluator]] = {
    "rl": _rl_evaluator,
    "supervised": _supervised_evaluator,
}


class Analysis:
    """One seed of one instability analysis with one trainer."""

    def __init__(
        self,
        cfg: Config,
        trainer: Trainer,
        announce: Announce | None = None,
        mirrors: tuple[CurveMirror, ...] = (),
        evaluator: PathEvaluator | None = None,
        pair_trainer: Trainer | None = None,
    ) -> None:
        """Prepare the analysis; nothing is written until :meth:`run`.

        :param cfg: the validated ``task=stability`` config.
        :param trainer: the analysed task's trainer.
        :param announce: receives one progress line per finished pair and mask-chain level.
        :param mirrors: receive one W&B-style row per pair (``stability/*`` against ``global_step`` = k).
        :param evaluator: evaluates paths (default: the analysed task's).
        :param pair_trainer: trains the copies (default: ``trainer``); the job gives one that evaluates only
            at the end (``eval.every=0``): nothing reads a copy's curve, its final evaluation is the path's end.
        """
        self.cfg, self.trainer, self.learner = cfg, trainer, learner_config(cfg)
        self.pair_trainer = pair_trainer or trainer
        self.paths = StabilityPaths.of(cfg)
        self.alphas = alphas(cfg.stability.alphas)
        self.announce = announce or (lambda line: None)
        self.mirrors = mirrors
        self.evaluator = evaluator or EVALUATORS[self.learner.task](self.pair_trainer)
        self.verifier = Verifier()
        self.suffix = Path(trainer.checkpoint_name).suffix
        self.started = time.monotonic()
        self.label = f"[{display_name(cfg)} seed={cfg.seed}] stability"

    def run(self) -> Path:
        """Train and evaluate every missing pair, then rewrite the seed's tables.

        :return: the seed's directory (``ROOT/stability/<hash>/seed_<s>``).
        """
        claim(self.paths.seed_dir, analysis_identity(self.cfg))
        with locked(self.paths.seed_dir):
            taken = self.dense_run()
            requested: dict[int, int] = {}  # step taken -> the first grid step that asked for it
            for step in sorted(taken, key=int):
                requested.setdefault(taken[step], int(step))
            if max(self.cfg.stability.levels) > 0:
                for step in sorted({mask_config(self.cfg, k).rewind.step for k in requested}):
                    self.mask_chain(step)
            for k in sorted(requested):
                for level in sorted(self.cfg.stability.levels):
                    self.pair(k, requested[k], level)
            self.write_tables()
        return self.paths.seed_dir

    def dense_run(self) -> dict[str, int]:
        """Train the analysis's dense run unless it is finished.

        :return: ``{requested step: step taken}`` of its snapshots.
        """
        final = self.paths.dense
        if not self.verifier.trusted(final, None, "stability dense run"):
            partial = fresh_partial(final)
            plan = LevelPlan(
                start=None,
                steps=self.trainer.budget,
                mask=None,
                seed=self.cfg.seed,
                snapshot_steps=tuple(grid(self.cfg)),
                restore_replay_buffer=self.cfg.rewind.replay_buffer == "restore",
            )
            outcome = self.trainer.train(plan, partial)
            facts = {
                "metric": self.trainer.metric,
                "metrics": outcome.metrics,
                "extra": outcome.extra,
                "time": outcome.time,
            }
            (partial / "metrics.json").write_text(json.dumps(facts, indent=2, default=str))
            write_complete(partial)
            partial.replace(final)
            self.announce(
                f"{self.label} dense run {self.trainer.metric}={outcome.metrics[self.trainer.metric]:.4g}"
            )
        return {str(r): int(k) for r, k in self.dense_record()["extra"]["snapshots"].items()}

    def dense_record(self) -> dict[str, Any]:
        """The dense run's metrics.json (``metrics``, ``extra``, ``time``)."""
        return json.loads((self.paths.dense / "metrics.json").read_text())

    def mask_chain(self, k: int) -> None:
        """Run (or resume) the chain whose ticket masks pairs at rewind step ``k`` use.

        :param k: a rewind step actually taken.
        """
        config = mask_config(self.cfg, k)

        def progress(level: int, variant: str, row: dict[str, Any], *_: Any) -> None:
            step = config.rewind.step
            self.announce(
                f"{self.label} mask chain (rewind.step={step}) level {level} {variant} density={row['density']:.4f}"
            )

        Runner(config, self.trainer, on_level=progress).run()

    def mask_of(self, k: int, level: int) -> tuple[Mask | None, str | None, float]:
        """A level's ticket mask for pairs at ``k``, its file digest and the chain's density for it.

        :param k: a rewind step actually taken.
        :param level: chain level (0: dense, no mask).
        """
        if level == 0:
            return None, None, 1.0
        chain = ChainContext(mask_config(self.cfg, k), self.trainer)
        directory = chain.paths.level(level, TICKET)
        density = float(chain.metrics(level, TICKET)["density"])
        return load_mask(directory / "mask.pt"), file_digest(directory / "mask.pt"), density

    def pair(self, k: int, requested: int, level: int) -> None:
        """Train (unless finished and current) and evaluate (unless current) the pair at (k, level).

        :param k: the rewind step taken.
        :param requested: the grid step it was taken for (names the dense run's snapshot file).
        :param level: chain level.
        """
        final = self.paths.pair(k, level)
        mask, digest, density = self.mask_of(k, level)
        label = f"stability pair k={k} level {level}"
        trained = self.verifier.trusted(final, self.paths.dense, label)
        if trained and (read_json(final / PAIR_RECORD) or {}).get("mask_sha256") != digest:
            self.announce(
                f"{self.label} k={k} level {level}: its chain's mask changed; training the pair again"
            )
            move_aside(final)
            trained = False
        if not trained:
            spec = PairSpec(
                k=k,
                level=level,
                start=snapshot_file(self.paths.dense, requested, self.suffix),
                mask=mask,
                mask_sha256=digest,
                density=density,
                seeds=(noise_seed(self.cfg.seed, COPIES[0]), noise_seed(self.cfg.seed, COPIES[1])),
                restore_optimizer=self.cfg.rewind.optimizer == "restore",
                restore_replay_buffer=self.cfg.rewind.replay_buffer == "restore",
            )
            train_pair(self.pair_trainer, spec, final, self.paths.dense)
        if trained and path_is_current(final, self.evaluator, self.alphas):
            return
        record = evaluate_path(final, self.evaluator, self.trainer.checkpoint_name, mask, self.alphas)
        self.write_tables()
        self.report(k, level, density, record)

    def report(self, k: int, level: int, density: float, record: dict[str, Any]) -> None:
        """One progress line and one mirror row for a finished pair."""
        values = [p["value"] for p in record["points"]]
        ends = (values[0] + values[-1]) / 2
        worst = ends - record["instability"] if record["higher_is_better"] else ends + record["instability"]
        elapsed = time.monotonic() - self.started
        self.announce(
            f"{self.label} k={k} ({k / self.trainer.budget:.1%}) level {level} density={density:.4f} "
            f"{record['metric']} ends {values[0]:.4g}/{values[-1]:.4g}, worst {worst:.4g} at alpha "
            f"{record['worst_alpha']:.2f}: instability={record['instability']:.4g}  elapsed {elapsed:.0f}s"
        )
        row = {
            "step": k,
            "level": level,
            "stability/instability": record["instability"],
            "stability/barrier": record["barrier"],
            "stability/ends_mean": ends,
            "stability/worst": worst,
            "stability/k_fraction": k / self.trainer.budget,
            "stability/density": density,
        }
        for mirror in self.mirrors:
            mirror.curve(f"stability-L{level:02d}", 0, 0, row)

    def write_tables(self) -> None:
        """Rebuild stability.csv and instability.csv from the finished, evaluated pairs."""
        reference = self.cfg.stability.reference
        dense_metric = dense_reference(self.paths.dense, self.dense_record(), reference)
        rows, summaries = collect(
            self.paths.seed_dir,
            self.paths.pairs(),
            self.cfg.seed,
            self.trainer.budget,
            dense_metric,
            self.cfg.stability.threshold,
        )
        write_tables(self.paths.seed_dir, rows, summaries)
