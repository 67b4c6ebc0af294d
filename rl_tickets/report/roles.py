"""Layer roles in the report: actor, critic, shared (a features extractor both read) or q (DQN).

A chain written since roles were recorded carries them in ``meta.json`` (``roles``: parameter -> role,
decided by module identity in :mod:`rl_tickets.rl.roles` when the chain ran). Older chains have only
``actor_layers``/``critic_layers``, which a substring rule got wrong (every ``mlp_extractor.*`` layer,
the critic's ``mlp_extractor.value_net.*`` included, was listed as the actor's). For them the roles are
rebuilt from the mask's parameter names by **exact dotted paths**, the module paths SB3 gives its
submodules (``name.split(".")[:2] == ["mlp_extractor", "value_net"]``), never by substring: the same
answer as the module rule for SB3's policies of the five algorithms, MLP and CNN, shared and separate
extractors (``tests/test_roles.py`` checks the two agree on real policies).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

ACTOR, CRITIC, SHARED, Q, OTHER = "actor", "critic", "shared", "q", "other"
# Roles the report gives a density column (masks.md, layer_density.png): DQN's ``q`` is its whole
# network, whose density is the level's own.
DENSITY_ROLES = (ACTOR, CRITIC, SHARED)

# Exact module paths -> role, per algorithm family (the first match wins; paths are dotted components).
ACTOR_CRITIC_PATHS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("mlp_extractor", "policy_net"), ACTOR),
    (("action_net",), ACTOR),
    (("mlp_extractor", "value_net"), CRITIC),
    (("value_net",), CRITIC),
    (("vf_features_extractor",), CRITIC),
)
ACTOR_CRITIC_ALGOS = ("ppo", "a2c")
SPLIT_ALGOS = ("sac", "td3")


def _starts(parts: Sequence[str], path: Sequence[str]) -> bool:
    """Whether the dotted components ``parts`` begin with the module path ``path`` (whole components)."""
    return list(parts[: len(path)]) == list(path)


def roles_from_names(algo: str, names: Iterable[str]) -> dict[str, str]:
    """Roles of an SB3 policy's parameters from their names' module paths (chains without ``roles``).

    PPO/A2C: ``mlp_extractor.policy_net`` and ``action_net`` actor, ``mlp_extractor.value_net``,
    ``value_net`` and ``vf_features_extractor`` critic; ``features_extractor`` is the actor's when a
    separate ``vf_features_extractor`` has parameters, else shared. SAC/TD3: ``actor.*`` actor,
    ``critic.*`` critic; ``actor.features_extractor`` is shared when the critic has no extractor
    parameters of its own (SB3 lists a shared extractor once, under the actor). DQN: ``q_net.*`` q.

    :param algo: ``meta["algo"]``.
    :param names: the parameter names of a mask.
    :return: ``{name: role}``, ``other`` for a name outside these paths.
    """
    split = {n: n.split(".") for n in names}
    separate_vf = any(p[0] == "vf_features_extractor" for p in split.values())
    critic_extractor = any(_starts(p, ("critic", "features_extractor")) for p in split.values())
    roles = {}
    for name, parts in split.items():
        role = OTHER
        if algo in ACTOR_CRITIC_ALGOS:
            role = next((r for path, r in ACTOR_CRITIC_PATHS if _starts(parts, path)), OTHER)
            if _starts(parts, ("features_extractor",)):
                role = ACTOR if separate_vf else SHARED
        elif algo in SPLIT_ALGOS:
            if _starts(parts, ("actor", "features_extractor")) and not critic_extractor:
                role = SHARED
            elif parts[0] in (ACTOR, CRITIC):
                role = parts[0]
        elif algo == "dqn" and parts[0] == "q_net":
            role = Q
        roles[name] = role
    return roles


def report_roles(meta: dict[str, Any], names: Iterable[str]) -> dict[str, str]:
    """The roles of a chain's mask entries: meta.json's ``roles``, else rebuilt from the names (RL only).

    :param meta: the chain's ``meta.json``.
    :param names: the mask's parameter names.
    :return: ``{name: role}``; empty for supervised chains (no roles).
    """
    names = list(names)
    if isinstance(meta.get("roles"), dict):
        recorded = meta["roles"]
        return {n: str(recorded.get(n, OTHER)) for n in names}
    if meta.get("task") != "rl":
        return {}
    return roles_from_names(str(meta.get("algo") or ""), names)


def role_density(mask: dict[str, torch.Tensor], roles: dict[str, str], role: str) -> float:
    """Kept over total of the mask entries with ``role``; NaN if none has it.

    :param mask: one level's mask.
    :param roles: ``{name: role}``.
    :param role: the role.
    """
    present = [m for n, m in mask.items() if roles.get(n) == role]
    total = sum(m.numel() for m in present)
    return float(sum(int(m.sum()) for m in present) / total) if total else float("nan")


def role_row(level: int, masks: Sequence[dict[str, torch.Tensor]], roles: dict[str, str]) -> dict[str, Any]:
    """``<role>_density`` of :data:`DENSITY_ROLES` at one level, mean over seeds (NaN where absent).

    :param level: the level.
    :param masks: one mask per seed.
    :param roles: ``{name: role}`` (shared by the seeds of one experiment).
    """
    row: dict[str, Any] = {"level": level}
    for role in DENSITY_ROLES:
        values = [role_density(m, roles, role) for m in masks]
        row[f"{role}_density"] = (
            float(np.mean(values)) if values and np.isfinite(values).all() else float("nan")
        )
    row["n_seeds"] = len(masks)
    return row
