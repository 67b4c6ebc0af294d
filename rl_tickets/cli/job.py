"""One job: validate the config, pick the trainer, run the chain, show progress and the result table.

Progress lines, the table and the results path go to the console *and* to Python logging (logger
``rl_tickets.cli.job``), so the Hydra log file of a run (``<run dir>/rl-tickets.log``) holds them too.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from rl_tickets.chain.runner import Mirror, Runner
from rl_tickets.chain.store import ChainPaths
from rl_tickets.chain.workers import available_cores
from rl_tickets.cli.applicability import check_applicable, deduplicated, notes
from rl_tickets.cli.console import fmt_value, say, text_table
from rl_tickets.cli.limits import lower_to_cores
from rl_tickets.cli.preflight import build_checked, check_network, check_paths, check_values
from rl_tickets.cli.resume import resuming_line
from rl_tickets.cli.stops import exit_code
from rl_tickets.config import ONE_RUN_SCHEDULES, Config, ConfigError, display_name, validate
from rl_tickets.stability.analysis import Analysis
from rl_tickets.stability.choose import resolve_auto, write_choice
from rl_tickets.stability.figures import write_figures
from rl_tickets.stability.settings import check_settings, learner_config
from rl_tickets.stability.tables import console_rows
from rl_tickets.trainers import UserError, build_trainer

log = logging.getLogger(__name__)


class Progress(Mirror):
    """Progress: one log-friendly line per level (level i/N, density, metric, elapsed, ETA) and, on an
    interactive terminal, a rich progress bar of the level in training (steps, last eval)."""

    def __init__(self, cfg: Config, metric: str, budget: int, live: bool) -> None:
        self.cfg, self.metric, self.budget = cfg, metric, budget
        self.started = time.monotonic()
        self.done = self.trained = 0
        # A one-run schedule (gradual, static, SET, RigL) ends at level 1, whatever prune.levels says.
        levels = min(cfg.prune.levels, 1) if cfg.prune.schedule in ONE_RUN_SCHEDULES else cfg.prune.levels
        self.last_level = levels
        self.total = levels * (1 + len(cfg.controls) + bool(cfg.transfer_from)) + 1
        self.bar = None
        if live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[last]}"),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("starting", total=budget, last="")

    def curve(self, variant: str, offset: int, start_step: int, row: dict[str, Any]) -> None:
        """Advance the live bar (steps of the current level, last evaluation)."""
        if self.bar is None:
            return
        fields = {}
        evaluated = [k for k in row if k.startswith(("eval/return_mean", "val/accuracy"))]
        if evaluated:
            fields["last"] = f"{evaluated[0]}={row[evaluated[0]]:.4g}"
        self.bar.update(self.task, completed=int(row.get("step", start_step)), description=variant, **fields)

    def __call__(self, level: int, variant: str, row: dict[str, Any], trained: bool = True) -> None:
        """Report a level just trained, or one found finished on disk (said as such, without timing).

        :param level: level number.
        :param variant: the variant.
        :param row: its levels.csv row.
        :param trained: whether this run trained it.
        """
        self.done += 1
        self.trained += trained
        value = row.get(self.metric, float("nan"))
        head = (
            f"[{display_name(self.cfg)} seed={self.cfg.seed}] level {level}/{self.last_level} {variant:<13}"
        )
        line = f"{head} {'' if trained else 'found: '}density={row['density']:.4f} {self.metric}={value:.4g}"
        if trained:
            # The rate of levels trained by this run (found ones cost nothing) predicts the rest.
            elapsed = time.monotonic() - self.started
            eta = elapsed / self.trained * (self.total - self.done)
            line += f"  elapsed {elapsed:.0f}s eta {eta:.0f}s"
        if trained and row.get("steps_per_s"):  # training throughput (evaluation and saving excluded)
            line += f"  {row['steps_per_s']:.0f} steps/s"
        if self.bar is not None:
            self.bar.console.print(line, soft_wrap=True)  # soft wrap: never break a line (or path) in two
            log.info(line)
        else:
            say(line, log)

    def close(self) -> None:
        """Stop the live bar."""
        if self.bar is not None:
            self.bar.stop()


def sd_column(metric: str, columns: Sequence[str]) -> str | None:
    """The column holding the spread of ``metric`` (``eval_return_mean`` -> ``eval_return_std``), if any."""
    if metric.endswith("_mean") and (std := metric[: -len("_mean")] + "_std") in columns:
        return std
    return None


def levels_table(levels_csv: Path, metric: str) -> str:
    """levels.csv as a plain-text table: density, the metric with 4 significant digits and its sd.

    :param levels_csv: the chain's levels.csv.
    :param metric: the headline metric column.
    :return: the path on a line of its own (never wrapped), then the table.
    """
    with open(levels_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        sd = sd_column(metric, reader.fieldnames or [])
    headers = ["level", "variant", "density", metric] + (["sd"] if sd else [])
    cells = [
        [row["level"], row["variant"], f"{float(row['density']):.4f}", fmt_value(row.get(metric))]
        + ([fmt_value(row.get(sd))] if sd else [])
        for row in rows
    ]
    return f"{levels_csv}\n{text_table(headers, cells)}"


def threads_for(cfg: Config, multirun: bool) -> int:
    """Torch intra-op threads: ``threads`` if set; else 1 for MLPs and for sweep jobs, all cores for CNNs.

    Small MLP agents run fastest on one thread: a second one only adds synchronisation, and on a busy
    machine (parallel sweep jobs, other processes) spinning threads slow training several-fold.

    :param cfg: the job config.
    :param multirun: part of a Hydra sweep.
    """
    if cfg.threads > 0:
        return cfg.threads
    cnn = (
        cfg.model.name.startswith("conv")
        if cfg.task == "supervised"
        else "features_extractor_class" in cfg.algo.policy_kwargs
    )
    return min(torch.get_num_threads(), available_cores()) if cnn and not multirun else 1


def run_job(cfg: Config, multirun: bool = False, live: bool = False, given: Sequence[str] = ()) -> Path:
    """Validate, build the trainer, run (or resume) the chain and print its table.

    :param cfg: the composed config.
    :param live: show a live progress bar (an interactive terminal outside sweeps); one line per level always.
    :param multirun: part of a sweep (one torch thread per job unless ``threads`` says otherwise; no final table).
    :param given: the keys set on the command line (settings that do not apply to the task are refused).
    :return: the chain directory.
    """
    if cfg.task == "stability":
        return run_stability(cfg, multirun, given)
    check_paths(cfg)  # before anything looks at the file system through them
    validate(cfg)
    check_values(cfg)
    # Before rewind.auto is resolved: the stability.* keys that find its analysis apply to it.
    check_applicable(cfg, given)
    choice = None
    if cfg.rewind.auto:  # resolved before anything is hashed: the chain with that step written out
        cfg, choice = resolve_auto(cfg)
        say(f"rewind.auto: rewind.step={cfg.rewind.step} for seed {cfg.seed}, from {choice['analysis']}", log)
    controls, repeated = deduplicated(cfg.controls)
    cfg, lowered = lower_to_cores(replace(cfg, controls=controls), available_cores())
    for line in [*([repeated] if repeated else []), *lowered, *notes(cfg)]:
        say(line, log)
    torch.set_num_threads(threads_for(cfg, multirun))
    trainer = build_checked(cfg)
    check_network(cfg, trainer)  # builds the network once: every refusal comes before level 0 trains
    log.info(f"device: {getattr(trainer, 'device', cfg.device)} (device={cfg.device})")
    if choice is not None:
        write_choice(ChainPaths.of(cfg).chain, choice)
    mirror = None
    if cfg.logger.mode != "disabled":
        from rl_tickets.tracking.mirror import WandbMirror, run_info

        mirror = WandbMirror(cfg.logger, run_info(cfg, ChainPaths.of(cfg)), directory=Path(cfg.root))
    progress = Progress(cfg, trainer.metric, trainer.budget, live=live)
    mirrors: list[Mirror] = [progress] + ([mirror] if mirror is not None else [])

    def verified() -> None:  # said only once damaged levels were moved aside: what is really done
        if (line := resuming_line(cfg)) is not None:
            say(line, log)

    status = 0
    try:
        runner = Runner(
            cfg, trainer, mirrors, on_level=progress, say=lambda line: say(line, log), on_verified=verified
        )
        chain = runner.run()
    except BaseException as error:
        status = exit_code(error)  # W&B records an interrupted or failed run as such
        raise
    finally:
        progress.close()
        if mirror is not None:
            mirror.close(status)
    if not multirun:
        say(levels_table(chain / "levels.csv", trainer.metric), log)
    say(f"results: {chain}", log)
    return chain


def run_stability(cfg: Config, multirun: bool = False, given: Sequence[str] = ()) -> Path:
    """``task=stability``: check, build the analysed task's trainer, run (or resume) this seed's analysis.

    :param cfg: the composed config.
    :param multirun: part of a sweep (one torch thread per job unless ``threads`` says otherwise; no table).
    :param given: the keys set on the command line (settings that do not apply to the task are refused).
    :return: the analysis's seed directory.
    """
    check_paths(cfg)
    validate(cfg)
    check_settings(cfg)
    check_applicable(cfg, given)
    learner = learner_config(cfg)
    check_values(learner)
    torch.set_num_threads(threads_for(learner, multirun))
    trainer = build_trainer(learner)
    check_network(learner, trainer)
    mirror = None
    if cfg.logger.mode != "disabled":
        from rl_tickets.stability.tracking import stability_mirror

        mirror = stability_mirror(cfg)
    status = 0
    try:
        # The copies evaluate only at their end (the path's ends): nothing reads their curves.
        pairs = build_trainer(replace(learner, eval=replace(learner.eval, every=0)))
        mirrors = (mirror,) if mirror is not None else ()
        analysis = Analysis(cfg, trainer, lambda line: say(line, log), mirrors, pair_trainer=pairs)
        seed_dir = analysis.run()
        write_figures(seed_dir.parent)  # across every seed finished so far
    except BaseException as error:
        status = exit_code(error)
        raise
    finally:
        if mirror is not None:
            mirror.close(status)
    if not multirun:
        say(f"{seed_dir / 'instability.csv'}\n{text_table(*console_rows(seed_dir))}", log)
    say(f"results: {seed_dir}", log)
    return seed_dir


__all__ = ["ConfigError", "UserError", "run_job", "run_stability"]
