"""Building SB3 agents with mask-aware policies from the config: algorithms, hyperparameters, widths.

:class:`AgentBuilder` checks the algorithm against the environment once (action space, wrappers,
hyperparameter names) and then builds agents: full ones to train, light ones (a one-transition
replay buffer) only to read weights, layer names and shapes.
"""

from __future__ import annotations

import inspect
from functools import cached_property
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from rl_tickets.config import AlgoConfig, ConfigError, EnvConfig
from rl_tickets.rl.envs import (
    FEATURE_EXTRACTORS,
    check_wrappers,
    make_env,
    make_single,
    scaled_extractor_kwargs,
)
from rl_tickets.rl.policies import POLICIES

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC, "td3": TD3}
ACTION_SPACES: dict[str, type[gym.Space]] = {
    "dqn": gym.spaces.Discrete,
    "sac": gym.spaces.Box,
    "td3": gym.spaces.Box,
}
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}
NOISES = {"normal": NormalActionNoise, "ornstein_uhlenbeck": OrnsteinUhlenbeckActionNoise}
# SB3's default hidden layers, made explicit when the small_dense control shrinks them.
DEFAULT_NET_ARCH: dict[str, list[int]] = {
    "ppo": [64, 64],
    "a2c": [64, 64],
    "dqn": [64, 64],
    "sac": [256, 256],
    "td3": [400, 300],
}


def fitting_algos(action_space: gym.Space) -> list[str]:
    """The algorithms that can act in ``action_space`` (what an error about a misfit suggests instead).

    :param action_space: the environment's action space.
    """
    return [name for name in ALGOS if isinstance(action_space, ACTION_SPACES.get(name, gym.Space))]


def to_schedule(value: Any) -> Any:
    """Translate a schedule mapping into an SB3 schedule; other values pass through.

    ``{schedule: linear, start: 1e-3, end: 0.0}`` is rl-baselines3-zoo's ``lin_1e-3``.

    :param value: a hyperparameter value from the config.
    """
    if isinstance(value, dict) and "schedule" in value:
        if value["schedule"] == "linear":
            return LinearSchedule(
                float(value["start"]), float(value.get("end", 0.0)), float(value.get("fraction", 1.0))
            )
        if value["schedule"] == "constant":
            return ConstantSchedule(float(value["value"]))
        raise ConfigError(f"schedule {value['schedule']!r} is not valid; choose linear or constant")
    return value


def _scaled(net_arch: Any, scale: float) -> Any:
    """``net_arch`` with every hidden width multiplied by ``scale`` (at least 1 unit)."""
    if isinstance(net_arch, dict):
        return {k: _scaled(v, scale) for k, v in net_arch.items()}
    return [max(1, round(int(w) * scale)) for w in net_arch]


class AgentBuilder:
    """Builds agents of one algorithm on one environment, checked against each other once."""

    def __init__(self, algo: AlgoConfig, env: EnvConfig, device: str) -> None:
        """Check the algorithm against the environment before anything is trained.

        :param algo: algorithm name, hyperparameters and policy kwargs.
        :param env: the environment.
        :param device: auto, cpu, cuda or cuda:N.
        """
        self.algo, self.env_cfg = algo, env
        self.cls = ALGOS[algo.name]
        check_wrappers(env)
        self._check_hyperparams()
        probe = make_single(env)
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()
        wanted = ACTION_SPACES.get(algo.name)
        if wanted is not None and not isinstance(self.action_space, wanted):
            kind = "discrete" if wanted is gym.spaces.Discrete else "continuous (Box)"
            fits = fitting_algos(self.action_space)
            raise ConfigError(
                f"algo={algo.name} needs a {kind} action space but env={env.name} ({env.id}) has "
                f"{self.action_space}; use {', '.join(fits[:-1])} or {fits[-1]}"
            )
        self.device = self._pick_device(device)

    def _check_hyperparams(self) -> None:
        """Reject hyperparameter names the algorithm's constructor does not take."""
        valid = set(inspect.signature(self.cls.__init__).parameters) - {
            "self",
            "policy",
            "env",
            "policy_kwargs",
            "seed",
            "device",
            "_init_setup_model",
        }
        unknown = sorted(set(self.algo.hyperparams) - valid)
        if unknown:
            raise ConfigError(
                f"algo.hyperparams has unknown keys {unknown} for {self.algo.name}; valid: {sorted(valid)}"
            )

    def _pick_device(self, device: str) -> str:
        """SB3's advice: GPU for CNN policies and off-policy agents, CPU for small on-policy MLPs."""
        if device != "auto":
            return device
        cnn = "features_extractor_class" in self.algo.policy_kwargs
        on_policy_mlp = self.algo.name in ("ppo", "a2c") and not cnn
        return "cuda" if torch.cuda.is_available() and not on_policy_mlp else "cpu"

    @property
    def off_policy(self) -> bool:
        """Whether the algorithm keeps a replay buffer."""
        return issubclass(self.cls, OffPolicyAlgorithm)

    def hyperparams(self, light: bool) -> dict[str, Any]:
        """Constructor kwargs; ``light`` builds only the network (tiny replay buffer).

        :param light: skip allocating a real replay buffer.
        """
        out = {k: to_schedule(v) for k, v in self.algo.hyperparams.items()}
        noise = out.pop("action_noise", None)
        if noise is not None:
            dim = int(np.prod(self.action_space.shape))
            sigma = float(noise.get("sigma", 0.1))
            out["action_noise"] = NOISES[noise["type"]](np.zeros(dim), sigma * np.ones(dim))
        if light and self.off_policy:
            out["buffer_size"] = 1
        return out

    def policy_kwargs(self, width_scale: float) -> dict[str, Any]:
        """Policy kwargs with names translated to classes and widths scaled (hidden layers and CNN).

        :param width_scale: hidden-width factor (small_dense control).
        """
        kwargs = dict(self.algo.policy_kwargs)
        if "activation_fn" in kwargs:
            kwargs["activation_fn"] = ACTIVATIONS[kwargs["activation_fn"]]
        extractor = kwargs.get("features_extractor_class")
        if extractor is not None:
            kwargs["features_extractor_class"] = FEATURE_EXTRACTORS[extractor]
        if width_scale != 1.0:
            kwargs["net_arch"] = _scaled(
                kwargs.get("net_arch", DEFAULT_NET_ARCH[self.algo.name]), width_scale
            )
            if extractor is not None:
                kwargs["features_extractor_kwargs"] = scaled_extractor_kwargs(
                    extractor, dict(kwargs.get("features_extractor_kwargs", {})), width_scale
                )
        return kwargs

    def build(
        self, env: VecEnv | gym.Env, seed: int, width_scale: float = 1.0, light: bool = False
    ) -> BaseAlgorithm:
        """A fresh agent with a mask-aware policy.

        :param env: the (vector) environment.
        :param seed: SB3's seed (network init, action sampling).
        :param width_scale: hidden-width factor (small_dense control).
        :param light: skip allocating a real replay buffer (to read weights only).
        """
        return self.cls(
            POLICIES[self.algo.name],
            env,
            seed=seed,
            device=self.device,
            verbose=0,
            policy_kwargs=self.policy_kwargs(width_scale),
            **self.hyperparams(light),
        )

    def template(self, seed: int, width_scale: float = 1.0) -> BaseAlgorithm:
        """A light agent on a single env, only to read freshly initialised weights.

        :param seed: SB3's seed.
        :param width_scale: hidden-width factor.
        """
        env = make_env(self.env_cfg, seed=seed)
        try:
            return self.build(env, seed, width_scale, light=True)
        finally:
            env.close()

    @cached_property
    def reference(self) -> BaseAlgorithm:
        """One light agent built once, to read layer names and shapes (not rebuilt per call)."""
        return self.template(0)
