"""One job: validate the config, pick the trainer, run the chain, show progress and the result table."""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from rl_tickets.config import Config, ConfigError, display_name, validate
from rl_tickets.runner import ChainPaths, Runner
from rl_tickets.trainers import Trainer
from rl_tickets.trainers.sb3 import seed_for


class UserError(Exception):
    """An error the user can fix (missing data, ...); printed as one line."""


def _rl_trainer(cfg: Config) -> Trainer:
    """The SB3 trainer for ``task=rl``."""
    from rl_tickets.trainers.sb3 import SB3Trainer

    return SB3Trainer(
        cfg.algo, cfg.env, cfg.train.timesteps, cfg.eval, cfg.device, seed_for(cfg.seed, "eval")
    )


def _supervised_trainer(cfg: Config) -> Trainer:
    """The supervised trainer for ``task=supervised`` (loads the data now, so missing data fails early)."""
    from rl_tickets.data import MissingDataError
    from rl_tickets.trainers.supervised import SupervisedTrainer

    try:
        return SupervisedTrainer(cfg.model, cfg.data, cfg.train, cfg.eval, cfg.device, cfg.seed)
    except MissingDataError as error:
        raise UserError(str(error)) from None


TRAINERS: dict[str, Callable[[Config], Trainer]] = {"rl": _rl_trainer, "supervised": _supervised_trainer}


class Progress:
    """Log-friendly progress: one line per level with density, metric, elapsed time and ETA."""

    def __init__(self, cfg: Config, metric: str, quiet: bool) -> None:
        self.cfg, self.metric, self.quiet = cfg, metric, quiet
        self.started = time.monotonic()
        self.trained = 0
        self.total = (1 if cfg.prune.schedule == "gradual" else cfg.prune.levels) * (
            1 + len(cfg.controls)
        ) + 1

    def __call__(self, level: int, variant: str, row: dict[str, Any]) -> None:
        """Report a finished (or found complete) level."""
        self.trained += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.trained * (self.total - self.trained)
        value = row.get(self.metric, float("nan"))
        print(
            f"[{display_name(self.cfg)} seed={self.cfg.seed}] level {level}/{self.cfg.prune.levels} {variant:<13} "
            f"density={row['density']:.4f} {self.metric}={value:.4g}  elapsed {elapsed:.0f}s eta {eta:.0f}s",
            flush=True,
        )


def print_table(levels_csv: Path, metric: str) -> None:
    """Print levels.csv as a small table (rich when available, plain text otherwise).

    :param levels_csv: the chain's levels.csv.
    :param metric: the headline metric column.
    """
    rows = list(csv.DictReader(open(levels_csv)))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(levels_csv))
    for column in ("level", "variant", "density", metric):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["level"], row["variant"], f"{float(row['density']):.4f}", f"{float(row[metric]):.2f}"
        )
    Console(file=sys.stdout).print(table)


def run_job(cfg: Config, quiet: bool = False, multirun: bool = False) -> Path:
    """Validate, build the trainer, run (or resume) the chain and print its table.

    :param cfg: the composed config.
    :param quiet: no table at the end (multirun, non-terminal output still gets one line per level).
    :param multirun: part of a sweep (one torch thread per job unless ``threads`` says otherwise).
    :return: the chain directory.
    """
    validate(cfg)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    elif multirun:
        # Parallel sweep jobs would otherwise each grab every core.
        torch.set_num_threads(1)
    trainer = TRAINERS[cfg.task](cfg)
    mirror = None
    if cfg.logger.mode != "disabled":
        from rl_tickets.tracking import WandbMirror

        paths = ChainPaths.of(cfg)
        mirror = WandbMirror(
            cfg.logger,
            group=display_name(cfg),
            name=f"{paths.chain.parent.name}-s{cfg.seed}",
            config=asdict(cfg),
            directory=Path(cfg.root),
        )
    try:
        chain = Runner(cfg, trainer, mirror, on_level=Progress(cfg, trainer.metric, quiet)).run()
    finally:
        if mirror is not None:
            mirror.close()
    if not quiet:
        print_table(chain / "levels.csv", trainer.metric)
    print(f"results: {chain}")
    return chain


__all__ = ["ConfigError", "UserError", "run_job"]
