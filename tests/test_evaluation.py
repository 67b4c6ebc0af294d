"""Vectorised evaluation: exactly ``eval.episodes`` episodes, each sub-env seeded as recorded, SB3's
``evaluations.npz`` beside the eval curve, and no duplicate final evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from tiny import tiny_config

from rl_tickets.chain.runner import Runner
from rl_tickets.chain.store import ChainPaths
from rl_tickets.config import Config, EnvConfig, EvalConfig, PruneConfig, RewindConfig
from rl_tickets.rl.envs import make_env
from rl_tickets.rl.evaluation import EVALUATIONS_FILE, run_episodes
from rl_tickets.trainers import build_trainer

HYPERPARAMS = {"n_steps": 64, "batch_size": 32, "n_epochs": 1}


def dense_cfg(root: Path, timesteps: int, episodes: int, every: int) -> Config:
    """A dense-only tiny PPO CartPole run with the given evaluation settings."""
    return tiny_config(
        root,
        "ppo",
        HYPERPARAMS,
        timesteps,
        RewindConfig(),
        PruneConfig(levels=0),
        eval=EvalConfig(episodes=episodes, every=every),
    )


def deterministic_return(model: PPO, seed: int) -> tuple[float, int]:
    """One deterministic CartPole episode on a plain env reset with ``seed``."""
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=seed)
    total, length, done = 0.0, 0, False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(int(action))
        total, length, done = total + float(reward), length + 1, terminated or truncated
    env.close()
    return total, length


@pytest.mark.parametrize(("n_envs", "episodes"), [(3, 7), (4, 4), (2, 1)])
def test_a_vector_env_counts_exactly_the_episodes_asked_for(n_envs: int, episodes: int) -> None:
    env = make_env(EnvConfig(), seed=11, n_envs=n_envs)
    model = PPO("MlpPolicy", env, seed=0, n_steps=64, batch_size=32)
    evaluation = run_episodes(model, env, episodes, seed=11)
    assert len(evaluation.returns) == len(evaluation.lengths) == episodes
    # Undiscounted CartPole: the return is the episode length.
    assert evaluation.returns == [float(n) for n in evaluation.lengths]
    env.close()


def test_each_sub_env_is_seeded_as_recorded(tmp_path: Path) -> None:
    cfg = dense_cfg(tmp_path, timesteps=128, episodes=5, every=0)
    Runner(cfg, build_trainer(cfg)).run()
    level = ChainPaths.of(cfg).level(0, "ticket")
    extra = json.loads((level / "metrics.json").read_text())["extra"]
    seeds = extra["eval_seeds"]
    assert extra["eval_episodes"] == 5 and len(seeds) == 5 and len(set(seeds)) == 5
    # One episode per sub-env: the final evaluation is exactly the episodes of these seeds.
    model = PPO.load(level / "model.zip", device="cpu")
    expected = sorted(deterministic_return(model, seed) for seed in seeds)
    results = np.load(level / EVALUATIONS_FILE)
    final = sorted(zip(results["results"][-1].tolist(), results["ep_lengths"][-1].tolist()))
    assert final == expected


def test_evaluations_npz_has_sb3_keys_and_one_row_per_evaluation(tmp_path: Path) -> None:
    cfg = dense_cfg(tmp_path, timesteps=192, episodes=3, every=64)
    Runner(cfg, build_trainer(cfg)).run()
    level = ChainPaths.of(cfg).level(0, "ticket")
    with np.load(level / EVALUATIONS_FILE) as data:
        assert set(data.files) == {"timesteps", "results", "ep_lengths"}
        timesteps, results, lengths = data["timesteps"], data["results"], data["ep_lengths"]
    curve = list(csv.DictReader(open(level / "eval_curve.csv")))
    assert timesteps.shape == (len(curve),) and results.shape == lengths.shape == (len(curve), 3)
    assert timesteps.tolist() == [int(row["step"]) for row in curve] == [64, 128, 192]
    assert results.mean(axis=1) == pytest.approx([float(row["eval/return_mean"]) for row in curve])
    assert lengths.mean(axis=1) == pytest.approx([float(row["eval/ep_length_mean"]) for row in curve])


def test_no_periodic_evaluation_duplicates_the_final_one(tmp_path: Path) -> None:
    """A budget of 160 trains to 192 (whole 64-step rollouts); the evaluation due at 160 is the end."""
    cfg = dense_cfg(tmp_path, timesteps=160, episodes=1, every=80)
    Runner(cfg, build_trainer(cfg)).run()
    level = ChainPaths.of(cfg).level(0, "ticket")
    steps = [int(row["step"]) for row in csv.DictReader(open(level / "eval_curve.csv"))]
    assert steps == [80, 192]
