"""Pixel observations: MinAtar frames through the small CNN, with the conv layer masked like any other."""

from __future__ import annotations

from pathlib import Path

import torch
from stable_baselines3 import DQN

from rl_tickets.config import (
    AlgoConfig,
    Config,
    EnvConfig,
    EvalConfig,
    LoggerConfig,
    PruneConfig,
    TrainConfig,
    validate,
)
from rl_tickets.envs import make_single
from rl_tickets.masks import load_mask
from rl_tickets.runner import Runner
from rl_tickets.trainers.sb3 import SB3Trainer, seed_for


def test_minatar_observations_are_channels_first_floats() -> None:
    """10x10xC boolean frames become float32 CxHxW in [0, 1]."""
    env = make_single(
        EnvConfig(name="minatar_breakout", id="MinAtar/Breakout-v1", wrapper="channels_first_float")
    )
    observation, _ = env.reset(seed=0)
    assert observation.shape == (4, 10, 10) and observation.dtype == "float32"
    assert set(observation.flatten().tolist()) <= {0.0, 1.0}


def test_dqn_on_minatar_prunes_the_conv_layer_and_keeps_zeros(tmp_path: Path) -> None:
    """A CNN policy's Conv2d weight is prunable; after training its pruned weights are exactly zero."""
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
            policy_kwargs={"features_extractor_class": "minatar_cnn", "net_arch": []},
        ),
        env=EnvConfig(
            name="minatar_breakout",
            id="MinAtar/Breakout-v1",
            wrapper="channels_first_float",
            make_kwargs={"max_episode_steps": 100},
        ),
        train=TrainConfig(timesteps=256),
        prune=PruneConfig(levels=1, rate=0.5),
        eval=EvalConfig(episodes=1, every=0),
        logger=LoggerConfig(mode="disabled"),
        root=str(tmp_path),
        device="cpu",
    )
    validate(cfg)
    trainer = SB3Trainer(cfg.algo, cfg.env, cfg.train.timesteps, cfg.eval, "cpu", seed_for(0, "eval"))
    chain = Runner(cfg, trainer).run()
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
