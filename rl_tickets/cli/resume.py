"""What a chain already holds when a job starts or stops, and the lines that say so.

A job that finds finished levels says where it resumes; a job that is interrupted says which level
was in progress (its ``.partial`` directory, discarded by the next run), what is kept, and the
command that resumes. Both read the results on disk, so they hold for any launcher and for jobs
that share a chain.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence

from rl_tickets.chain.identity import chain_identity
from rl_tickets.chain.store import PARTIAL, TICKET, ChainPaths, is_complete
from rl_tickets.config import ONE_RUN_SCHEDULES, Config


def level_variants(cfg: Config, level: int) -> list[str]:
    """The variants a finished level holds under ``cfg`` (level 0: the dense ticket).

    :param cfg: the job config.
    :param level: level number.
    """
    if level == 0:
        return [TICKET]
    if cfg.prune.schedule in ONE_RUN_SCHEDULES:
        return [cfg.prune.schedule, *cfg.controls]
    return [TICKET, *cfg.controls]


def last_level(cfg: Config) -> int:
    """The chain's last level under ``cfg`` (gradual pruning and sparse training are one run, level 1).

    :param cfg: the job config.
    """
    return min(cfg.prune.levels, 1) if cfg.prune.schedule in ONE_RUN_SCHEDULES else cfg.prune.levels


def first_unfinished(cfg: Config, paths: ChainPaths) -> int:
    """The first level with a variant still to train (``last_level + 1`` when all are done).

    :param cfg: the job config.
    :param paths: the chain's directories.
    """
    for level in range(last_level(cfg) + 1):
        if not all(is_complete(paths.level(level, v)) for v in level_variants(cfg, level)):
            return level
    return last_level(cfg) + 1


def done(levels: int) -> str:
    """``levels 0..N-1`` (``level 0`` for one).

    :param levels: how many levels are done, from 0.
    """
    return "level 0" if levels == 1 else f"levels 0..{levels - 1}"


def resuming_line(cfg: Config) -> str | None:
    """``resuming at level N (levels 0..N-1 done)`` when the chain holds finished levels, else None.

    :param cfg: the job config.
    """
    paths = ChainPaths.of(cfg)
    record = paths.chain / "identity.json"
    try:
        if record.is_file() and json.loads(record.read_text()) != json.loads(
            json.dumps(chain_identity(cfg), default=str)
        ):
            return None  # another config's chain: the runner refuses it, nothing resumes
    except ValueError:
        return None  # unreadable: the runner refuses it in one line
    first = first_unfinished(cfg, paths)
    if first == 0:
        return None
    if first > last_level(cfg):
        return f"{done(first)} already done; nothing to train"
    return f"resuming at level {first} ({done(first)} done)"


def in_progress(paths: ChainPaths) -> list[str]:
    """``level N variant`` for each level directory being written (a ``.partial`` one).

    :param paths: the chain's directories.
    """
    found = [*paths.dense.glob(f"level_*/*{PARTIAL}"), *paths.chain.glob(f"level_*/*{PARTIAL}")]
    return [
        f"level {int(p.parent.name.removeprefix('level_'))} {p.name.removesuffix(PARTIAL)}"
        for p in sorted(found)
    ]


def resume_command(argv: Sequence[str]) -> str:
    """The command line that resumes: the same arguments (finished levels are skipped).

    :param argv: the arguments after the program name.
    """
    return shlex.join(["rl-tickets", *argv])


def kept(cfg: Config, paths: ChainPaths) -> str:
    """Every finished level on disk: ``levels 0..1, level 2 ticket, reinit kept in DIR``.

    Levels finished in every variant are a range; a level finished only in some variants (its ticket,
    say, while a control was cut short) names those.

    :param cfg: the job config.
    :param paths: the chain's directories.
    """
    first = first_unfinished(cfg, paths)
    parts = [done(first)] if first else []
    for level in range(first, last_level(cfg) + 1):
        finished = [v for v in level_variants(cfg, level) if is_complete(paths.level(level, v))]
        if finished:
            parts.append(f"level {level} {', '.join(finished)}")
    if not parts:
        return "nothing finished yet"
    return f"{'; '.join(parts)} kept in {paths.chain}"


def interrupted_line(cfg: Config, signal_name: str, argv: Sequence[str]) -> str:
    """One line: what was interrupted, what is kept, and how to resume.

    :param cfg: the job config.
    :param signal_name: SIGINT or SIGTERM.
    :param argv: the arguments after the program name.
    """
    paths = ChainPaths.of(cfg)
    running = in_progress(paths)
    where = f"during {', '.join(running)}" if running else f"before level {first_unfinished(cfg, paths)}"
    restart = " (the level in progress restarts)" if running else ""
    return (
        f"rl-tickets: interrupted ({signal_name}) {where}; {kept(cfg, paths)}{restart}; "
        f"resume with: {resume_command(argv)}"
    )


def stopped_line(cfg: Config, reason: str, argv: Sequence[str]) -> str:
    """One line for a run that stopped on its own (a worker died twice, the chain's lock was lost):
    why, what is kept, and how to resume.

    :param cfg: the job config.
    :param reason: what happened, e.g. ``a worker process died (killed by SIGKILL) while training ...``.
    :param argv: the arguments after the program name.
    """
    paths = ChainPaths.of(cfg)
    return f"rl-tickets: error: {reason}; {kept(cfg, paths)}; resume with: {resume_command(argv)}"
