"""Gymnasium environments as SB3 vector envs, plus the small pieces pixel environments need.

MinAtar (optional extra) is the cheap pixel/CNN option on a CPU: 10x10xC **bool** observations,
channels last. :class:`ChannelsFirstFloat` casts and transposes them, and :class:`MinAtarCNN` is the
small CNN of the MinAtar paper (NatureCNN's strides need inputs of at least 36x36).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from torch import nn

from rl_tickets.config import ConfigError, EnvConfig


class ChannelsFirstFloat(gym.ObservationWrapper):
    """HxWxC observations (any dtype) -> float32 CxHxW, so a Conv2d policy can read them."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        h, w, c = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0.0, 1.0, (c, h, w), np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """Transpose to channels-first float32."""
        return np.ascontiguousarray(np.transpose(observation, (2, 0, 1)), dtype=np.float32)


class MinAtarCNN(BaseFeaturesExtractor):
    """One 3x3 conv (16 channels) + a linear layer, as in Young & Tian 2019's MinAtar baselines.

    :param observation_space: CxHxW float observations.
    :param features_dim: width of the linear layer (the features the heads read).
    :param channels: output channels of the conv layer (the small_dense control shrinks both).
    """

    def __init__(
        self, observation_space: gym.spaces.Box, features_dim: int = 128, channels: int = 16
    ) -> None:
        super().__init__(observation_space, features_dim)
        in_channels, height, width = observation_space.shape
        self.cnn = nn.Sequential(nn.Conv2d(in_channels, channels, 3, stride=1), nn.ReLU(), nn.Flatten())
        self.linear = nn.Sequential(nn.Linear(channels * (height - 2) * (width - 2), features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Features of a batch of CxHxW observations."""
        return self.linear(self.cnn(observations))


WRAPPERS: dict[str, Callable[[gym.Env], gym.Env]] = {"channels_first_float": ChannelsFirstFloat}
FEATURE_EXTRACTORS: dict[str, type[BaseFeaturesExtractor]] = {
    "nature_cnn": NatureCNN,
    "minatar_cnn": MinAtarCNN,
}
# Constructor arguments that set a features extractor's widths; the small_dense control scales them.
# NatureCNN's channels are fixed inside SB3, so it has none and small_dense refuses it.
EXTRACTOR_WIDTHS: dict[str, tuple[str, ...]] = {"minatar_cnn": ("channels", "features_dim")}


def scaled_extractor_kwargs(name: str, kwargs: dict[str, Any], scale: float) -> dict[str, Any]:
    """Features-extractor kwargs with every width (conv channels, features) multiplied by ``scale``.

    :param name: a key of :data:`FEATURE_EXTRACTORS`.
    :param kwargs: the configured ``features_extractor_kwargs``.
    :param scale: the width factor of the small_dense control (at least one unit stays).
    """
    if name not in EXTRACTOR_WIDTHS:
        raise ConfigError(
            f"controls=[small_dense] shrinks CNN channels, but algo.policy_kwargs.features_extractor_class={name} "
            f"fixes them; use {', '.join(EXTRACTOR_WIDTHS)} or leave small_dense out"
        )
    defaults = inspect.signature(FEATURE_EXTRACTORS[name]).parameters
    widths = {
        k: max(1, round(int(kwargs.get(k, defaults[k].default)) * scale)) for k in EXTRACTOR_WIDTHS[name]
    }
    return {**kwargs, **widths}


def register_optional_envs(env_id: str) -> None:
    """Register environment families that Gymnasium does not load by itself (MinAtar, ALE).

    :param env_id: the Gymnasium id about to be made.
    """
    try:
        if env_id.startswith("MinAtar/"):
            import minatar.gym

            if env_id not in gym.registry:
                minatar.gym.register_envs()
        elif env_id.startswith("ALE/"):
            import ale_py

            gym.register_envs(ale_py)
    except ImportError as error:
        extra = "minatar" if env_id.startswith("MinAtar/") else "atari"
        raise ConfigError(f"env.id={env_id} needs `pip install rl-tickets[{extra}]` ({error})") from None


def make_single(cfg: EnvConfig) -> gym.Env:
    """One wrapped environment (used to read spaces before anything is trained).

    :param cfg: the environment config.
    """
    register_optional_envs(cfg.id)
    try:
        env = gym.make(cfg.id, **cfg.make_kwargs)
    except gym.error.Error as error:
        raise ConfigError(f"env.id={cfg.id} cannot be made: {error}") from None
    except ModuleNotFoundError as error:
        raise ConfigError(
            f"env.id={cfg.id} needs a missing package ({error}); e.g. pip install gymnasium[box2d]"
        ) from None
    return WRAPPERS[cfg.wrapper](env) if cfg.wrapper else env


def make_env(
    cfg: EnvConfig,
    seed: int,
    n_envs: int | None = None,
    normalize_from: Path | None = None,
    training: bool = True,
    monitor_dir: Path | None = None,
) -> VecEnv:
    """A seeded vector env, wrapped in VecNormalize when configured.

    :param cfg: the environment config.
    :param seed: seed of the first sub-env (the others take seed + i).
    :param n_envs: number of sub-envs (default ``cfg.n_envs``).
    :param normalize_from: VecNormalize statistics to start from: SB3's ``X_vecnormalize.pkl`` beside a
        checkpoint, whose pickle-free twin ``X_vecnormalize.npz`` (:func:`save_statistics`) is what is read.
    :param training: whether VecNormalize statistics keep updating (False for evaluation).
    :param monitor_dir: where SB3's ``Monitor`` writes ``<i>.monitor.csv`` for sub-env i (every episode's
        return, length and time, as rl-baselines3-zoo's training writes them); None: no files.
    """
    register_optional_envs(cfg.id)
    wrapper = WRAPPERS[cfg.wrapper] if cfg.wrapper else None
    venv = make_vec_env(
        cfg.id,
        n_envs=n_envs or cfg.n_envs,
        seed=seed,
        wrapper_class=wrapper,
        env_kwargs=dict(cfg.make_kwargs),
        monitor_dir=str(monitor_dir) if monitor_dir is not None else None,
    )
    if not cfg.normalize:
        return venv
    if normalize_from is not None and statistics_file(normalize_from).exists():
        env = load_statistics(statistics_file(normalize_from), venv)
    elif normalize_from is not None and normalize_from.exists():
        # Statistics only as SB3's pickle (a level written before the pickle-free file): never unpickled
        # here; the runner converts them first when the user trusts the folder (trust_pickles=true).
        raise PickledStatistics(normalize_from)
    else:
        env = VecNormalize(venv, **cfg.normalize_kwargs)
    env.training = training
    if not training:
        env.norm_reward = False
    return env


class PickledStatistics(ConfigError):
    """VecNormalize statistics that exist only as a pickle, which rl_tickets does not load by itself.

    :param path: the ``.pkl`` file.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} holds VecNormalize statistics only as a pickle (written by an rl_tickets before "
            f"pickle-free statistics); loading a pickle can run code: if you trust this results folder, "
            f"add trust_pickles=true (converts them once), else delete the level to train it again"
        )
        self.path = path


def statistics_file(pickled: Path) -> Path:
    """The pickle-free statistics beside SB3's ``X_vecnormalize.pkl``: ``X_vecnormalize.npz``.

    :param pickled: the ``.pkl`` path.
    """
    return pickled.with_suffix(".npz")


def _rms_arrays(prefix: str, rms: RunningMeanStd) -> dict[str, np.ndarray]:
    """A RunningMeanStd as arrays named ``<prefix>mean``, ``var`` and ``count``."""
    return {f"{prefix}mean": rms.mean, f"{prefix}var": rms.var, f"{prefix}count": np.asarray(rms.count)}


def save_statistics(env: VecNormalize, path: Path) -> None:
    """Write VecNormalize's statistics and settings as a pickle-free ``.npz`` (read with allow_pickle=False).

    :param env: the normaliser.
    :param path: the ``.npz`` to write.
    """
    arrays = {
        "norm_obs": np.asarray(env.norm_obs),
        "norm_reward": np.asarray(env.norm_reward),
        "clip_obs": np.asarray(env.clip_obs),
        "clip_reward": np.asarray(env.clip_reward),
        "gamma": np.asarray(env.gamma),
        "epsilon": np.asarray(env.epsilon),
        **_rms_arrays("ret_", env.ret_rms),
    }
    if env.norm_obs and isinstance(env.obs_rms, dict):
        arrays["norm_obs_keys"] = np.asarray(sorted(env.obs_rms), dtype=np.str_)
        for key, rms in env.obs_rms.items():
            arrays.update(_rms_arrays(f"obs.{key}.", rms))
    elif env.norm_obs:
        arrays.update(_rms_arrays("obs_", env.obs_rms))
    with open(path, "wb") as handle:  # a handle: np.savez would append .npz to a name without it
        np.savez(handle, **arrays)


def _set_rms(rms: RunningMeanStd, arrays: Any, prefix: str) -> None:
    """Fill a RunningMeanStd from the arrays written by :func:`save_statistics` (shapes checked)."""
    mean, var = arrays[f"{prefix}mean"], arrays[f"{prefix}var"]
    if mean.shape != rms.mean.shape or var.shape != rms.var.shape:
        raise ValueError(f"{prefix}statistics have shape {mean.shape}, the environment {rms.mean.shape}")
    rms.mean, rms.var, rms.count = (
        mean.astype(np.float64),
        var.astype(np.float64),
        float(arrays[f"{prefix}count"]),
    )


def load_statistics(path: Path, venv: VecEnv) -> VecNormalize:
    """A VecNormalize around ``venv`` with the statistics of :func:`save_statistics` (no pickle read).

    :param path: the ``.npz``.
    :param venv: the vector env to wrap.
    """
    with np.load(path, allow_pickle=False) as arrays:
        keys = [str(k) for k in arrays["norm_obs_keys"]] if "norm_obs_keys" in arrays else None
        env = VecNormalize(
            venv,
            norm_obs=bool(arrays["norm_obs"]),
            norm_reward=bool(arrays["norm_reward"]),
            clip_obs=float(arrays["clip_obs"]),
            clip_reward=float(arrays["clip_reward"]),
            gamma=float(arrays["gamma"]),
            epsilon=float(arrays["epsilon"]),
            norm_obs_keys=keys,
        )
        _set_rms(env.ret_rms, arrays, "ret_")
        if env.norm_obs and isinstance(env.obs_rms, dict):
            for key, rms in env.obs_rms.items():
                _set_rms(rms, arrays, f"obs.{key}.")
        elif env.norm_obs:
            _set_rms(env.obs_rms, arrays, "obs_")
    return env


def convert_pickled(pickled: Path, cfg: EnvConfig) -> None:
    """Write the pickle-free twin of SB3's pickled statistics. Unpickles: for trusted folders only.

    :param pickled: an ``X_vecnormalize.pkl`` (``trust_pickles=true`` said it may be loaded).
    :param cfg: the environment config (SB3's loader checks the statistics against its spaces).
    """
    venv = make_vec_env(
        cfg.id, n_envs=1, wrapper_class=WRAPPERS.get(cfg.wrapper or ""), env_kwargs=dict(cfg.make_kwargs)
    )
    try:
        target = statistics_file(pickled)
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        save_statistics(VecNormalize.load(str(pickled), venv), partial)
        partial.replace(target)
    finally:
        venv.close()


def check_wrappers(cfg: EnvConfig) -> None:
    """Raise ConfigError if ``env.wrapper`` names no known wrapper.

    :param cfg: the environment config.
    """
    if cfg.wrapper and cfg.wrapper not in WRAPPERS:
        raise ConfigError(f"env.wrapper={cfg.wrapper!r} is not valid; choose one of: {', '.join(WRAPPERS)}")
