"""One builder for the tiny, validated CartPole configs the RL tests train (W&B off, CPU, no eval curve),
the command-line overrides of a tiny PPO chain for the tests that run ``rl-tickets`` itself, a reader of levels.csv without its time columns (which differ between identical runs), and the SB3
classes and environments the per-algorithm tests share."""

from __future__ import annotations

import copy
import csv
from dataclasses import replace
from pathlib import Path
from typing import Any

from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

from rl_tickets.chain.tables import TIME_COLUMNS
from rl_tickets.config import (
    AlgoConfig,
    Config,
    EnvConfig,
    EvalConfig,
    LoggerConfig,
    PruneConfig,
    RewindConfig,
    TrainConfig,
    validate,
)

# The five algorithms, their SB3 classes and the smallest environment each acts in.
ALGOS = ("ppo", "a2c", "dqn", "sac", "td3")
CLASSES: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC, "td3": TD3}
ENVS = {
    "ppo": "CartPole-v1",
    "a2c": "CartPole-v1",
    "dqn": "CartPole-v1",
    "sac": "Pendulum-v1",
    "td3": "Pendulum-v1",
}


def tiny_config(
    root: Path,
    algo: str,
    hyperparams: dict[str, Any],
    timesteps: int,
    rewind: RewindConfig,
    prune: PruneConfig,
    net_arch: list[int] | None = None,
    n_envs: int = 1,
    normalize: bool = False,
    **changes: Any,
) -> Config:
    """A validated CartPole config small enough to train in seconds.

    :param root: results root.
    :param algo: ppo, a2c or dqn.
    :param hyperparams: algorithm hyperparameters (copied).
    :param timesteps: the dense budget.
    :param rewind: rewind settings.
    :param prune: pruning settings.
    :param net_arch: hidden widths (default ``[16]``).
    :param n_envs: parallel envs.
    :param normalize: wrap the env in VecNormalize.
    :param changes: other top-level Config fields to replace (retrain, controls, seed, ...).
    """
    cfg = Config(
        algo=AlgoConfig(
            name=algo, hyperparams=copy.deepcopy(hyperparams), policy_kwargs={"net_arch": net_arch or [16]}
        ),
        env=EnvConfig(name="cartpole", id="CartPole-v1", n_envs=n_envs, normalize=normalize),
        train=TrainConfig(timesteps=timesteps),
        rewind=rewind,
        prune=prune,
        eval=EvalConfig(episodes=1, every=0),
        logger=LoggerConfig(mode="disabled"),
        root=str(root),
        device="cpu",
        progress=False,
    )
    cfg = replace(cfg, **changes)
    validate(cfg)
    return cfg


def tiny_ppo_args(
    timesteps: int, levels: int, *, n_epochs: int = 1, episodes: int = 1, every: int | None = 0
) -> list[str]:
    """Overrides of a tiny PPO CartPole chain: 2 envs, 64-step rollouts and minibatches, so every level
    makes real gradient updates within ``timesteps``.

    :param timesteps: steps per level.
    :param levels: ``prune.levels``.
    :param n_epochs: PPO epochs per rollout.
    :param episodes: evaluation episodes.
    :param every: ``eval.every``, or None to keep the config's.
    """
    args = [
        f"train.timesteps={timesteps}",
        "env.n_envs=2",
        "algo.hyperparams.n_steps=64",
        "algo.hyperparams.batch_size=64",
        f"algo.hyperparams.n_epochs={n_epochs}",
        f"eval.episodes={episodes}",
    ]
    if every is not None:
        args.append(f"eval.every={every}")
    return [*args, f"prune.levels={levels}"]


def levels_without_time(levels_csv: Path) -> list[dict[str, str]]:
    """levels.csv's rows without the time columns: what must be equal between runs of the same chain.

    :param levels_csv: a chain's levels.csv.
    """
    with open(levels_csv, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in csv.DictReader(handle)]
