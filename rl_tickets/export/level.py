"""A finished level directory as the exporter reads it: algorithm, checkpoint, statistics, masked agent.

Nothing in the level is unpickled: the checkpoint is read by :mod:`rl_tickets.rl.safe_load`, whose
pickled entries (policy class and kwargs, spaces, schedules) are rebuilt from the config the results
folder records (its ``identity.json``: the settings that differ from the schema's defaults) and the
level's width (``metrics.json``); the level must pass the same checks a rerun applies
(:mod:`rl_tickets.chain.contents`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy

from rl_tickets.chain.contents import contents_problem
from rl_tickets.chain.manifest import problem
from rl_tickets.chain.store import COMPLETE, is_complete
from rl_tickets.config import Config, ConfigError
from rl_tickets.rl.agents import ALGOS, AgentBuilder
from rl_tickets.rl.checkpoints import sidecar
from rl_tickets.rl.policies import POLICIES
from rl_tickets.rl.safe_load import UnreadableCheckpoint, read_checkpoint


class ExportError(ValueError):
    """A user error (not a finished RL level, an output that exists): one line, exit status 2."""


@dataclass
class Level:
    """What a finished ``level_NN/<variant>`` directory holds.

    :param path: the level directory.
    :param algo: ``ppo``, ``a2c``, ``dqn``, ``sac`` or ``td3``.
    :param env_id: the Gymnasium id the agent was trained on.
    :param data: the checkpoint's SB3 data (pickled entries rebuilt from the recorded config).
    :param params: the checkpoint's state dicts (``policy``, optimizers).
    :param variables: the checkpoint's extra torch variables (SAC's ``log_ent_coef``).
    """

    path: Path
    algo: str
    env_id: str
    data: dict[str, Any]
    params: dict[str, Any]
    variables: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        """The level's ``model.zip``."""
        return self.path / "model.zip"

    @property
    def vecnormalize(self) -> Path | None:
        """The level's VecNormalize statistics, if the env was normalised."""
        path = sidecar(self.checkpoint, "vecnormalize")
        return path if path.exists() else None

    @property
    def cls(self) -> type[BaseAlgorithm]:
        """The SB3 algorithm class."""
        return ALGOS[self.algo]

    def agent(self) -> BaseAlgorithm:
        """The level's agent as trained (mask-aware policy, masks loaded), on the CPU."""
        model = build_agent(self.cls, self.data)
        model.policy.load_state_dict(self.params["policy"])
        return model


def build_agent(cls: type[BaseAlgorithm], data: dict[str, Any]) -> BaseAlgorithm:
    """An agent built from checkpoint data the way ``<Algo>.load`` builds it, without an env.

    The replay buffer is built with one slot (only the networks are wanted); ``data`` is not changed.

    :param cls: the SB3 algorithm class.
    :param data: SB3 data as returned by ``load_from_zip_file``.
    """
    light = {**data, "buffer_size": 1} if "buffer_size" in data else dict(data)
    model = cls(policy=light["policy_class"], env=None, device="cpu", _init_setup_model=False)
    model.__dict__.update(light)
    model._setup_model()
    return model


def sb3_base(policy_class: type[BasePolicy]) -> type[BasePolicy]:
    """The first Stable-Baselines3 class in a policy class's MRO (``MaskedDQNPolicy`` -> ``DQNPolicy``).

    :param policy_class: a policy class, ours or SB3's.
    """
    for base in policy_class.__mro__:
        if base.__module__.startswith("stable_baselines3.") and issubclass(base, BasePolicy):
            return base
    raise ExportError(f"{policy_class.__name__} derives from no Stable-Baselines3 policy class")


def _identity(level_dir: Path) -> dict[str, Any]:
    """The identity.json of the chain or dense run that holds ``level_dir``."""
    record = level_dir.parent.parent / "identity.json"
    if not record.exists():
        raise ExportError(
            f"{level_dir} is not inside a results tree (no {record}); "
            "give ROOT/chains/<hash>/seed_<s>/level_NN/<variant> or ROOT/dense/<hash>/seed_<s>/level_00/ticket"
        )
    try:
        identity = json.loads(record.read_text())
    except (OSError, ValueError) as error:
        raise ExportError(f"{record} is unreadable ({error})") from None
    if not isinstance(identity, dict):
        raise ExportError(f"{record} is not a JSON object")
    return identity


def recorded_config(identity: dict[str, Any]) -> Config:
    """The config a results folder records: its identity's values over the schema's defaults.

    :param identity: an identity.json (``{"section.field": value}``; defaults are left out of it).
    """
    cfg = Config()
    for key, value in identity.items():
        section, _, field = key.partition(".")
        target = getattr(cfg, section, None) if field else cfg
        name = field or section
        if target is not None and hasattr(target, name) and not callable(getattr(target, name)):
            setattr(target, name, value)
    if ":" in str(cfg.env.id):  # gym.make would import the module named before the colon
        raise ExportError(f"identity.json names env.id={cfg.env.id!r}; an id with a module part is refused")
    return cfg


def _fresh_agent(level_dir: Path, cfg: Config) -> Any:
    """An agent of the recorded config at the level's width: what its pickled entries are rebuilt from."""
    try:
        plan = json.loads((level_dir / "metrics.json").read_text()).get("plan") or {}
        width = float(plan.get("width_scale") or 1.0)
    except (OSError, ValueError, TypeError, AttributeError):
        width = 1.0
    try:
        return AgentBuilder(cfg.algo, cfg.env, "cpu").template(0, width)
    except (ConfigError, ValueError, TypeError, KeyError, AssertionError) as error:
        raise ExportError(f"{level_dir}: its recorded config does not build an agent ({error})") from None


def read_level(level_dir: Path) -> Level:
    """Open a finished RL level directory, or raise :class:`ExportError` saying what is wrong.

    :param level_dir: ``.../level_NN/<variant>``.
    """
    if not level_dir.is_dir():
        raise ExportError(f"{level_dir} is not a directory")
    if not level_dir.parent.name.startswith("level_"):
        raise ExportError(f"{level_dir} is not a level directory (expected .../level_NN/<variant>)")
    if not is_complete(level_dir):
        raise ExportError(f"{level_dir} is not a finished level (no {COMPLETE} marker)")
    if (damage := problem(level_dir) or contents_problem(level_dir)) is not None:
        raise ExportError(f"{level_dir} failed verification: {damage}; rerun its chain to train it again")
    identity = _identity(level_dir)
    if identity.get("task", "rl") != "rl":
        raise ExportError(f"{level_dir} is a {identity['task']} level; only RL agents are exported")
    algo = identity.get("algo.name")
    if algo not in ALGOS:
        raise ExportError(f"{level_dir}: unknown algorithm {algo!r} in identity.json")
    checkpoint = level_dir / "model.zip"
    if not checkpoint.exists():
        raise ExportError(f"{level_dir} has no model.zip")
    fresh = _fresh_agent(level_dir, recorded_config(identity))
    try:
        data, params, variables = read_checkpoint(checkpoint, fresh, POLICIES[algo])
    except UnreadableCheckpoint as error:
        raise ExportError(
            f"{level_dir} failed verification: {error.reason}; rerun its chain to train it again"
        ) from None
    params = {k: {n: t.cpu() for n, t in v.items()} if k == "policy" else v for k, v in params.items()}
    return Level(level_dir, algo, str(identity.get("env.id", "")), data, params, variables or {})


def plain_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A policy state dict without rl_tickets' mask buffers (what SB3's own classes expect).

    :param state: a masked policy's state dict.
    """
    return {k: v for k, v in state.items() if not k.endswith(("weight_mask", "bias_mask"))}
