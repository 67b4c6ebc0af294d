"""Settings that do not apply to the chosen task, algorithm or schedule: refused, naming what they apply to.

A setting given for a task that ignores it (``algo=dqn`` with ``task=supervised``, ``train.lr`` for an
RL agent, ``prune.final_density`` with iterative pruning) changes nothing, or, worse, changes a hash
without changing what trains. Which keys the user gave is read from Hydra's overrides: the defaults
list always composes an algorithm, an environment, a model and a dataset, so their values alone
cannot say what was asked for. A few combinations are refused whatever set them
(``rewind.replay_buffer=restore`` for an algorithm without a replay buffer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from rl_tickets.config import ONE_RUN_SCHEDULES, Config, ConfigError, learner_task

ON_POLICY = ("ppo", "a2c")
SUPERMASKS = ("supermask", "random_supermask")


@dataclass(frozen=True)
class Rule:
    """Keys (dotted prefixes; a group's name covers its section) that apply only when ``applies`` holds.

    :param keys: the keys.
    :param applies: whether they apply to a config.
    :param to: what they apply to, as the message says it.
    """

    keys: tuple[str, ...]
    applies: Callable[[Config], bool]
    to: str


RULES = (
    Rule(
        ("model", "data", "train.iterations", "train.batch_size", "train.lr", "train.optimizer"),
        lambda cfg: learner_task(cfg) == "supervised",
        "task=supervised",
    ),
    Rule(
        ("algo", "env", "train.timesteps", "rewind.replay_buffer", "eval.episodes", "trust_pickles"),
        lambda cfg: learner_task(cfg) == "rl",
        "task=rl",
    ),
    Rule(
        ("prune.final_density", "prune.start_fraction", "prune.end_fraction", "prune.update_every"),
        lambda cfg: cfg.prune.schedule in ONE_RUN_SCHEDULES,
        f"prune.schedule={', '.join(ONE_RUN_SCHEDULES)}",
    ),
    Rule(
        ("prune.drop_fraction",),
        lambda cfg: cfg.prune.schedule in ("set", "rigl"),
        "prune.schedule=set, rigl",
    ),
    Rule(
        ("supermask",),
        lambda cfg: any(c in SUPERMASKS for c in cfg.controls),
        f"controls that include {' or '.join(SUPERMASKS)}",
    ),
    # rewind.auto reads the analysis of the same stability.* settings (rl_tickets.stability.choose).
    Rule(
        ("stability",),
        lambda cfg: cfg.task == "stability" or cfg.rewind.auto,
        "task=stability, rewind.auto=true",
    ),
    Rule(("retrain.finetune_lr",), lambda cfg: cfg.retrain.mode == "finetune", "retrain.mode=finetune"),
    Rule(("env.normalize_kwargs",), lambda cfg: cfg.env.normalize, "env.normalize=true"),
)


def given_keys(overrides: Iterable[str]) -> list[str]:
    """The keys (or groups) of Hydra overrides, without ``+``/``++``; deletions (``~key``) left out.

    :param overrides: e.g. ``["algo=dqn", "+algo.policy_kwargs.net_arch=[0]"]``.
    """
    keys = []
    for override in overrides:
        key = override.partition("=")[0]
        if key.startswith("~") or not key:
            continue
        keys.append(key.lstrip("+"))
    return keys


def _covers(rule_key: str, key: str) -> bool:
    return key == rule_key or key.startswith(rule_key + ".")


def check_applicable(cfg: Config, given: Sequence[str]) -> None:
    """Refuse given settings that do not apply, and combinations that mean nothing, in one line.

    :param cfg: the composed config.
    :param given: the keys the user set (:func:`given_keys` of Hydra's overrides); empty outside the CLI.
    """
    for rule in RULES:
        for key in given:
            if any(_covers(r, key) for r in rule.keys) and not rule.applies(cfg):
                raise ConfigError(f"{key} applies only to {rule.to}; leave it out here")
    if learner_task(cfg) == "rl" and cfg.rewind.replay_buffer == "restore" and cfg.algo.name in ON_POLICY:
        raise ConfigError(
            f"rewind.replay_buffer=restore applies to algo=dqn, sac or td3 only (algo={cfg.algo.name} keeps "
            "no replay buffer); leave it out"
        )
    if cfg.prune.schedule in ONE_RUN_SCHEDULES and cfg.prune.levels > 1 and "prune.levels" in given:
        raise ConfigError(
            f"prune.levels={cfg.prune.levels} does not apply to prune.schedule={cfg.prune.schedule}, one run "
            "to prune.final_density: use prune.levels=1 (0 trains only the dense network)"
        )


def notes(cfg: Config) -> list[str]:
    """Lines that say what a setting means where it could be misread (printed when the job starts).

    :param cfg: the composed config.
    """
    lines = []
    if learner_task(cfg) == "rl" and cfg.rewind.replay_buffer == "restore":
        lines.append(
            "note: rewind.replay_buffer=restore loads replay buffers, which are pickles (SB3's format): "
            "use it only on results folders you trust"
        )
    if cfg.retrain.mode == "finetune" and cfg.rewind.step > 0:
        lines.append(
            f"note: under retrain.mode=finetune no weights are rewound; rewind.step={cfg.rewind.step} sets each "
            f"level's budget (train budget - {cfg.rewind.step}) and the point whose schedule values are held"
        )
    return lines


def deduplicated(controls: Sequence[str]) -> tuple[list[str], str | None]:
    """``controls`` with repeats dropped (first occurrence kept), and a line naming them, if any.

    :param controls: the ``controls`` setting.
    """
    unique = list(dict.fromkeys(controls))
    if len(unique) == len(controls):
        return unique, None
    repeated = sorted({c for c in controls if controls.count(c) > 1})
    return unique, f"controls: {', '.join(repeated)} given more than once; each is trained once: {unique}"
