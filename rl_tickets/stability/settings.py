"""What one instability analysis is: the learner's config, the grid of rewind steps, the interpolation
points, the two copies' noise seeds, the configs its masks come from, and the checks on its settings.

``task=stability`` analyses the chain of ``stability.of`` (rl or supervised); every other key means what
it means for that chain. The analysed chain is the one rewound to k=0 (its masks, ``stability.masks=k0``)
or, with ``stability.masks=per_k``, one chain per rewind step k (Frankle et al. 2020 find a separate IMP
mask for each k; k0 departs from that to cost one chain instead of one per k).
"""

from __future__ import annotations

from dataclasses import replace

from rl_tickets.config import Config, ConfigError, learner_task
from rl_tickets.seeds import seed_for

COPIES = ("a", "b")
# Schedules that make a chain of levels with masks to analyse (the others train one run).
CHAIN_SCHEDULES = ("iterative", "oneshot")


def learner_config(cfg: Config) -> Config:
    """The analysed task's config: ``task`` = rl or supervised, rewound to k=0, nothing chosen.

    :param cfg: a ``task=stability`` config, or a chain config with ``rewind.auto``.
    """
    rewind = replace(cfg.rewind, step=0, auto=False)
    return replace(cfg, task=learner_task(cfg), rewind=rewind)


def budget_of(cfg: Config) -> int:
    """Steps of a full training run of the analysed task (environment steps or iterations).

    :param cfg: the job config.
    """
    return cfg.train.iterations if learner_task(cfg) == "supervised" else cfg.train.timesteps


def grid(cfg: Config) -> list[int]:
    """The requested rewind steps as whole steps, sorted and without repeats.

    A fraction of the budget is rounded to the nearest step; an RL snapshot is then taken at the first
    rollout start at or after it (recorded per step in the dense run's ``metrics.json``).

    :param cfg: the job config.
    """
    budget = budget_of(cfg)
    return sorted({round(k * budget) if k < 1 else int(k) for k in cfg.stability.steps})


def alphas(points: int) -> list[float]:
    """``points`` evenly spaced interpolation weights from 0 to 1, both ends exact.

    :param points: ``stability.alphas`` (>= 2).
    """
    return [i / (points - 1) for i in range(points)]


def noise_seed(seed: int, copy: str) -> int:
    """A copy's noise seed (environment seeds, action sampling, minibatch order).

    The same for every (k, level) of a seed: all pairs of a seed share their two noise draws, so
    differences between rewind steps and levels are not differences between noise draws.

    :param seed: the chain seed.
    :param copy: ``a`` or ``b``.
    """
    return seed_for(seed, "stability", copy)


def mask_config(cfg: Config, k: int) -> Config:
    """The chain whose ticket masks a pair at rewind step ``k`` uses (k=0 unless ``masks=per_k``),
    run up to the deepest analysed level.

    :param cfg: the job config.
    :param k: the rewind step actually taken (a rollout start for RL).
    """
    learner = learner_config(cfg)
    step = k if cfg.stability.masks == "per_k" else 0
    prune = replace(learner.prune, levels=max(cfg.stability.levels))
    return replace(learner, rewind=replace(learner.rewind, step=step), prune=prune)


def check_settings(cfg: Config) -> None:
    """Refuse, in one line each, settings an analysis (or ``rewind.auto``) cannot use.

    :param cfg: a ``task=stability`` config, or a chain config with ``rewind.auto``.
    """
    s, budget = cfg.stability, budget_of(cfg)
    budget_key = "train.iterations" if learner_task(cfg) == "supervised" else "train.timesteps"
    if cfg.rewind.auto and (cfg.task == "stability" or cfg.rewind.step != 0):
        raise ConfigError(
            "rewind.auto=true chooses rewind.step from a finished task=stability analysis: use it on a "
            "task=rl or task=supervised run and leave rewind.step at 0"
        )
    if not s.steps:
        raise ConfigError("stability.steps is empty; give rewind steps k, e.g. '[0,0.01,0.05]'")
    for k in s.steps:
        if k < 0 or (k >= 1 and (k != int(k) or k >= budget)):
            raise ConfigError(
                f"stability.steps has {k}: give fractions of the budget in [0, 1) or whole steps in "
                f"[1, {budget_key}={budget})"
            )
    if not s.levels or min(s.levels) < 0 or len(set(s.levels)) != len(s.levels):
        raise ConfigError(f"stability.levels={list(s.levels)} must be distinct chain levels >= 0 (0 = dense)")
    if s.alphas < 2:
        raise ConfigError(f"stability.alphas={s.alphas} must be >= 2 (points from 0 to 1, ends included)")
    if s.threshold < 0:
        raise ConfigError(f"stability.threshold={s.threshold} must be >= 0 (a fraction of |dense metric|)")
    if s.reference == "best" and learner_task(cfg) == "supervised":
        raise ConfigError(
            "stability.reference=best reads the RL dense run's evaluations; a supervised run's metric is "
            "already taken at its early-stopping iteration: use stability.reference=final"
        )
    if cfg.prune.schedule not in CHAIN_SCHEDULES:
        raise ConfigError(
            f"prune.schedule={cfg.prune.schedule} trains one run, not a chain of levels with masks to "
            "analyse; the instability analysis takes prune.schedule=iterative or oneshot"
        )
    if cfg.retrain.mode != "rewind" and max(s.levels) > 0:
        raise ConfigError(
            f"retrain.mode={cfg.retrain.mode}: the analysis rewinds copies to step k, so its tickets come "
            "from a chain with retrain.mode=rewind"
        )
