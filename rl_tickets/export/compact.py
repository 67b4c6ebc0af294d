"""The compact network: a ticket's MLP with its dead hidden units removed, as a plain SB3 checkpoint.

A hidden unit with no surviving outgoing weight contributes nothing and is dropped. A unit with no
surviving incoming weight outputs the constant ``act(b)``; it is folded into the bias of every layer that
reads it (both heads where a layer feeds two: SAC's ``latent_pi`` into ``mu`` and ``log_std``) and
dropped. Removing units can leave others dead, so this repeats until nothing changes.

SB3 rebuilds a policy from the ``net_arch`` saved in ``policy_kwargs``, one width list per branch. Where
several networks share one list (SAC/TD3 twin critics share ``qf``; target networks share their online
network's widths), a unit index is kept if it is alive in any of them, and every network drops the
same indices, each folding its own constants. Optimizer moments are not carried over: the compact zip
holds freshly initialised optimizers for the new shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import recursive_getattr, save_to_zip_file
from torch import nn

from rl_tickets.export.level import Level, build_agent, plain_state
from rl_tickets.export.plain import plain_data

# Sequential networks of each branch (a key of SB3's ``net_arch``) and the heads reading the last
# hidden layer of a Sequential that holds only hidden layers. ``{critic}`` expands to every Q-network
# of the critic and its target.
ACTOR_CRITIC = {
    "pi": (("mlp_extractor.policy_net", ("action_net",)),),
    "vf": (("mlp_extractor.value_net", ("value_net",)),),
}
BRANCHES: dict[str, dict[str, tuple[tuple[str, tuple[str, ...]], ...]]] = {
    "ppo": ACTOR_CRITIC,
    "a2c": ACTOR_CRITIC,
    "dqn": {"q": (("q_net.q_net", ()), ("q_net_target.q_net", ()))},
    "sac": {"pi": (("actor.latent_pi", ("actor.mu", "actor.log_std")),), "qf": (("{critic}", ()),)},
    "td3": {"pi": (("actor.mu", ()), ("actor_target.mu", ())), "qf": (("{critic}", ()),)},
}
CRITIC = re.compile(r"^critic(_target)?\.qf\d+$")
COMPACT_NOTE = "optimizer moments not carried over: compact.zip holds fresh optimizers for the new shapes"


@dataclass(frozen=True)
class Hidden:
    """One hidden layer of one network: the Linear writing it, the Linears reading it, its activation."""

    producer: str
    consumers: tuple[str, ...]
    activation: nn.Module


def _expand(policy: BasePolicy, path: str) -> list[str]:
    """``{critic}`` -> every Q-network of the critic and its target; other paths stay."""
    if path != "{critic}":
        return [path]
    return [name for name, _ in policy.named_modules() if CRITIC.match(name)]


def _hidden_of(policy: BasePolicy, path: str, heads: tuple[str, ...]) -> list[Hidden]:
    """The hidden layers of one Sequential (its last Linear is the output unless ``heads`` are given)."""
    sequential = policy.get_submodule(path)
    linears = [i for i, m in enumerate(sequential) if isinstance(m, nn.Linear)]
    names = [f"{path}.{i}" for i in linears]
    readers = [(name,) for name in names[1:]] + ([heads] if heads and names else [])
    return [Hidden(names[k], readers[k], sequential[linears[k] + 1]) for k in range(len(readers))]


def hidden_layers(policy: BasePolicy, algo: str) -> dict[str, list[list[Hidden]]]:
    """Per net_arch branch, per depth, the hidden layers that must keep one width.

    :param policy: an SB3 policy with MLP networks.
    :param algo: ppo, a2c, dqn, sac or td3.
    """
    out: dict[str, list[list[Hidden]]] = {}
    for branch, chains in BRANCHES[algo].items():
        networks = [
            _hidden_of(policy, name, heads) for path, heads in chains for name in _expand(policy, path)
        ]
        out[branch] = [list(depth) for depth in zip(*networks)]
    return out


def _removable(state: dict[str, torch.Tensor], layer: Hidden) -> torch.Tensor:
    """Units with no surviving incoming or no surviving outgoing weight."""
    has_in = (state[f"{layer.producer}.weight"] != 0).any(dim=1)
    has_out = torch.zeros_like(has_in)
    for reader in layer.consumers:
        has_out |= (state[f"{reader}.weight"] != 0).any(dim=0)
    return ~(has_in & has_out)


@torch.no_grad()
def _drop(state: dict[str, torch.Tensor], layer: Hidden, keep: torch.Tensor) -> None:
    """Remove the units not in ``keep``, folding their constant outputs into the readers' biases.

    A dropped unit either has no incoming weight (it outputs exactly ``act(b)``) or no outgoing one
    (its column is zero, so the fold adds exactly 0): folding every dropped unit is exact.
    """
    bias = state[f"{layer.producer}.bias"]
    constant = layer.activation(bias[~keep])
    for reader in layer.consumers:
        weight = state[f"{reader}.weight"]
        state[f"{reader}.bias"] = state[f"{reader}.bias"] + weight[:, ~keep] @ constant
        state[f"{reader}.weight"] = weight[:, keep]
    state[f"{layer.producer}.weight"] = state[f"{layer.producer}.weight"][keep]
    state[f"{layer.producer}.bias"] = bias[keep]


def compact_state(
    state: dict[str, torch.Tensor], layers: dict[str, list[list[Hidden]]]
) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """Remove dead units until none is left; returns the new state dict and widths per branch.

    :param state: a plain (mask-free) policy state dict; not modified.
    :param layers: from :func:`hidden_layers`.
    """
    state = {k: v.detach().clone() for k, v in state.items()}
    changed = True
    while changed:
        changed = False
        for depths in layers.values():
            for group in depths:
                removable = torch.stack([_removable(state, layer) for layer in group]).all(dim=0)
                keep = ~removable
                if not keep.any():
                    # SB3 cannot build a zero-width layer; one kept unit is still exact.
                    keep[0] = True
                if not keep.all():
                    for layer in group:
                        _drop(state, layer, keep)
                    changed = True
    return state, widths(state, layers)


def widths(state: dict[str, torch.Tensor], layers: dict[str, list[list[Hidden]]]) -> dict[str, list[int]]:
    """Hidden widths per branch as the state dict has them.

    :param state: a policy state dict.
    :param layers: from :func:`hidden_layers`.
    """
    return {
        branch: [int(state[f"{group[0].producer}.weight"].shape[0]) for group in depths]
        for branch, depths in layers.items()
    }


def net_arch(algo: str, widths: dict[str, list[int]]) -> Any:
    """SB3's ``net_arch`` for these widths (DQN takes one list, the others one list per branch).

    :param algo: ppo, a2c, dqn, sac or td3.
    :param widths: from :func:`compact_state`.
    """
    return widths["q"] if algo == "dqn" else dict(widths)


@dataclass
class Compacted:
    """The compact agent and what changed.

    :param agent: the compact agent (SB3's own policy class).
    :param widths_before: hidden widths per branch of the level's network.
    :param widths_after: hidden widths per branch after removing dead units.
    """

    agent: BaseAlgorithm
    widths_before: dict[str, list[int]]
    widths_after: dict[str, list[int]]


def compact(level: Level, policy: BasePolicy) -> tuple[Compacted, dict[str, Any], dict[str, Any]]:
    """Build the compact agent and the data and state dicts its checkpoint holds.

    :param level: the opened level.
    :param policy: the level's policy (to read its layer structure).
    """
    layers = hidden_layers(policy, level.algo)
    state = plain_state(level.params["policy"])
    before = widths(state, layers)
    new_state, after = compact_state(state, layers)
    data = plain_data(level.data)
    data["policy_kwargs"] = {**data["policy_kwargs"], "net_arch": net_arch(level.algo, after)}
    agent = build_agent(level.cls, data)
    agent.policy.load_state_dict(new_state)
    names, _ = agent._get_torch_save_params()
    params = {name: recursive_getattr(agent, name).state_dict() for name in names}
    return Compacted(agent, before, after), data, params


def write_compact(level: Level, policy: BasePolicy, path: Path) -> Compacted:
    """Write ``compact.zip`` (plain SB3, smaller ``net_arch``, fresh optimizers) and return the agent.

    :param level: the opened level.
    :param policy: the level's policy.
    :param path: the ``.zip`` to write.
    """
    result, data, params = compact(level, policy)
    save_to_zip_file(path, data=data, params=params, pytorch_variables=level.variables)
    return result


def head_outputs(
    policy: BasePolicy, algo: str, obs: torch.Tensor, actions: torch.Tensor
) -> list[torch.Tensor]:
    """Every output a network of the policy computes: logits or means, values, Q-values, targets' too.

    :param policy: an SB3 policy.
    :param algo: ppo, a2c, dqn, sac or td3.
    :param obs: a batch of observations.
    :param actions: a batch of actions in [-1, 1] (critic inputs of SAC/TD3; ignored otherwise).
    """
    with torch.no_grad():
        if algo in ("ppo", "a2c"):
            features = policy.extract_features(obs)
            pi, vf = features if isinstance(features, tuple) else (features, features)
            return [
                policy.action_net(policy.mlp_extractor.forward_actor(pi)),
                policy.value_net(policy.mlp_extractor.forward_critic(vf)),
            ]
        if algo == "dqn":
            return [policy.q_net(obs), policy.q_net_target(obs)]
        critics = [*policy.critic(obs, actions), *policy.critic_target(obs, actions)]
        if algo == "sac":
            mean, log_std, _ = policy.actor.get_action_dist_params(obs)
            return [mean, log_std, *critics]
        return [policy.actor(obs), policy.actor_target(obs), *critics]
