"""Pixel observations: MinAtar frames through the small CNN, with the conv layer masked like any other."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from stable_baselines3 import DQN

from rl_tickets.chain.runner import Runner
from rl_tickets.config import (
    AlgoConfig,
    Config,
    ConfigError,
    EnvConfig,
    EvalConfig,
    LoggerConfig,
    PruneConfig,
    TrainConfig,
    validate,
)
from rl_tickets.rl.envs import make_single
from rl_tickets.rl.trainer import SB3Trainer
from rl_tickets.seeds import seed_for
from rl_tickets.sparsity.masks import load_mask


def test_minatar_observations_are_channels_first_floats() -> None:
    """10x10xC boolean frames become float32 CxHxW in [0, 1]."""
    env = make_single(
        EnvConfig(name="minatar_breakout", id="MinAtar/Breakout-v1", wrapper="channels_first_float")
    )
    observation, _ = env.reset(seed=0)
    assert observation.shape == (4, 10, 10) and observation.dtype == "float32"
    assert set(observation.flatten().tolist()) <= {0.0, 1.0}


def minatar_config(root: Path, prune: PruneConfig, extractor: str = "minatar_cnn", **changes: Any) -> Config:
    """A validated 256-step DQN MinAtar Breakout config with the updates brought forward.

    :param root: results root.
    :param prune: pruning settings.
    :param extractor: the features extractor's name.
    :param changes: other top-level Config fields to replace (controls, ...).
    """
    cfg = Config(
        algo=AlgoConfig(
            name="dqn",
            hyperparams={
                "learning_starts": 32,
                "train_freq": 8,
                "target_update_interval": 16,
                "batch_size": 16,
                "buffer_size": 500,
            },
            policy_kwargs={"features_extractor_class": extractor, "net_arch": []},
        ),
        env=EnvConfig(
            name="minatar_breakout",
            id="MinAtar/Breakout-v1",
            wrapper="channels_first_float",
            make_kwargs={"max_episode_steps": 100},
        ),
        train=TrainConfig(timesteps=256),
        prune=prune,
        eval=EvalConfig(episodes=1, every=0),
        logger=LoggerConfig(mode="disabled"),
        root=str(root),
        device="cpu",
    )
    cfg = replace(cfg, **changes)
    validate(cfg)
    return cfg


def trainer_for(cfg: Config) -> SB3Trainer:
    """The SB3 trainer the job builds for ``cfg``."""
    return SB3Trainer(cfg.algo, cfg.env, cfg.train.timesteps, cfg.eval, "cpu", seed_for(0, "eval"))


def test_dqn_on_minatar_prunes_the_conv_layer_and_keeps_zeros(tmp_path: Path) -> None:
    """A CNN policy's Conv2d weight is prunable; after training its pruned weights are exactly zero."""
    cfg = minatar_config(tmp_path, PruneConfig(levels=1, rate=0.5, scope="layer"))
    chain = Runner(cfg, trainer_for(cfg)).run()
    level = chain / "level_01" / "ticket"
    mask = load_mask(level / "mask.pt")
    conv = [name for name in mask if "features_extractor.cnn.0" in name and name.endswith("weight")]
    assert conv and mask[conv[0]].dim() == 4
    assert 0.45 < float(mask[conv[0]].float().mean()) < 0.55
    model = DQN.load(level / "model.zip", device="cpu")
    assert model._n_updates > 0
    params = dict(model.policy.named_parameters())
    for name, keep in mask.items():
        assert torch.all(params[name][~keep] == 0.0)
        assert torch.all(params[name.replace("q_net.", "q_net_target.", 1)][~keep] == 0.0)


def test_small_dense_shrinks_the_cnn_to_the_tickets_kept_count(tmp_path: Path) -> None:
    """small_dense scales the conv channels and the features as well as net_arch (here []): at 10.7%
    density its whole network holds the ticket's kept count within 5%."""
    cfg = minatar_config(tmp_path, PruneConfig(levels=1, rate=0.893), controls=["small_dense"])
    chain = Runner(cfg, trainer_for(cfg)).run()
    ticket = load_mask(chain / "level_01" / "ticket" / "mask.pt")
    kept = sum(int(m.sum()) for m in ticket.values())
    total = sum(m.numel() for m in ticket.values())
    assert kept == pytest.approx(0.107 * total, rel=0.01)
    small = DQN.load(chain / "level_01" / "small_dense" / "model.zip", device="cpu")
    params = dict(small.policy.named_parameters())
    count = sum(params[n].numel() for n in ticket)
    assert abs(count - kept) <= 0.05 * kept
    assert params["q_net.features_extractor.cnn.0.weight"].shape[0] < 16  # fewer channels


def test_small_dense_refuses_a_cnn_whose_channels_are_fixed_before_training(tmp_path: Path) -> None:
    root = tmp_path / "results"
    cfg = minatar_config(root, PruneConfig(levels=1), extractor="nature_cnn", controls=["small_dense"])
    with pytest.raises(ConfigError, match=r"small_dense.*features_extractor_class=nature_cnn"):
        Runner(cfg, trainer_for(cfg)).run()
    assert not root.exists() or not any(root.rglob("*"))
