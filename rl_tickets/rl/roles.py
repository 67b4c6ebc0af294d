"""What each layer of an SB3 policy is for: actor, critic, shared or Q, and which layers read the input.

Roles are decided by **module identity**, never by name: SB3's policy object says which submodule
computes what (``policy.mlp_extractor.policy_net`` and ``policy.action_net`` feed the action
distribution, ``policy.mlp_extractor.value_net`` and ``policy.value_net`` the value), and a layer's role
is that of the nearest such submodule above it. Names cannot decide it: ``"actor."`` is a substring of
``"mlp_extractor."``, which once put the whole PPO/A2C critic body among the actor's layers.

- PPO/A2C (:class:`ActorCriticPolicy`): ``mlp_extractor.policy_net`` and ``action_net`` are the actor,
  ``mlp_extractor.value_net`` and ``value_net`` the critic; the features extractor is *shared* when
  ``share_features_extractor`` (one object read by both), else ``pi_features_extractor`` (stored as
  ``features_extractor``) is the actor's and ``vf_features_extractor`` the critic's. ``log_std`` is a
  bare parameter of no Linear/Conv layer: never pruned, so it has no role here.
- SAC/TD3: everything under ``actor`` is the actor, under ``critic`` the critic; a features extractor
  that the actor and the critic hold as *the same object* (``share_features_extractor=True``) is shared.
  Target networks (``actor_target``, ``critic_target``) are not prunable-counted: they carry the online
  mask.
- DQN: everything under ``q_net`` is ``q`` (there is no actor/critic split); ``q_net_target`` is a target.

A Linear/Conv layer under none of these is ``other`` (a custom policy this module does not know).
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn.policies import DQNPolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from rl_tickets.sparsity.masks import MASKED_MODULES, prunable_names

ACTOR = "actor"
CRITIC = "critic"
SHARED = "shared"
Q = "q"
OTHER = "other"
# Every role a layer can have, in the order tables list them.
ROLES = (ACTOR, CRITIC, SHARED, Q, OTHER)


def role_anchors(policy: BasePolicy) -> dict[int, str]:
    """The submodules that decide roles, keyed by ``id(module)``: the role of everything below them.

    :param policy: an SB3 policy (PPO/A2C, DQN, SAC or TD3).
    :return: ``{id(submodule): role}``; empty for a policy class this module does not know.
    """
    anchors: dict[int, str] = {}
    if isinstance(policy, ActorCriticPolicy):
        anchors[id(policy.mlp_extractor.policy_net)] = ACTOR
        anchors[id(policy.action_net)] = ACTOR
        anchors[id(policy.mlp_extractor.value_net)] = CRITIC
        anchors[id(policy.value_net)] = CRITIC
        if policy.pi_features_extractor is policy.vf_features_extractor:
            anchors[id(policy.features_extractor)] = SHARED
        else:
            anchors[id(policy.pi_features_extractor)] = ACTOR
            anchors[id(policy.vf_features_extractor)] = CRITIC
    elif isinstance(policy, DQNPolicy):
        anchors[id(policy.q_net)] = Q
    elif isinstance(policy, (SACPolicy, TD3Policy)):
        anchors[id(policy.actor)] = ACTOR
        anchors[id(policy.critic)] = CRITIC
        # With share_features_extractor=True SB3 hands the actor's extractor object to the critic.
        if policy.actor.features_extractor is policy.critic.features_extractor:
            anchors[id(policy.actor.features_extractor)] = SHARED
    return anchors


def _walk(
    module: nn.Module, prefix: str, role: str | None, anchors: dict[int, str], out: dict[str, str]
) -> None:
    """Give every parameter below ``module`` the role of its nearest anchored ancestor (first name wins)."""
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        child_role = anchors.get(id(child), role)
        for param_name, _ in child.named_parameters(recurse=False):
            if child_role is not None:
                # A shared module is reached twice (actor.* and critic.*); its first name is the one
                # prunable_names (and so every mask) uses.
                out.setdefault(f"{path}.{param_name}", child_role)
        _walk(child, f"{path}.", child_role, anchors, out)


def layer_roles(policy: BasePolicy) -> dict[str, str]:
    """The role of every online Linear/Conv2d parameter (weights and biases), by module identity.

    :param policy: an SB3 policy with masks attached.
    :return: ``{parameter name as in mask.pt: role}``, one of :data:`ROLES`, in network order.
    """
    found: dict[str, str] = {}
    _walk(policy, "", None, role_anchors(policy), found)
    return {name: found.get(name, OTHER) for name in prunable_names(policy, include_biases=True)}


def input_layers(policy: BasePolicy, observation_space: gym.Space) -> list[str]:
    """Weights that read the observation itself: the layers fed the output of a parameter-free
    features extractor (SB3's ``FlattenExtractor``), found by tensor identity in one forward pass.

    A learned extractor (a CNN) has no such layers: its first layer's inputs are pixels or channels,
    not observation dimensions. SAC/TD3 critics read the observation concatenated with the action (a
    new tensor), so they are not listed either, as before.

    :param policy: an SB3 policy with masks attached.
    :param observation_space: the environment's observation space.
    """
    extractors = [m for m in policy.modules() if isinstance(m, BaseFeaturesExtractor)]
    if any(p.numel() for m in extractors for p in m.parameters()):
        return []
    outputs: list[torch.Tensor] = []
    readers: set[int] = set()
    handles = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for m in extractors]
    handles += [
        m.register_forward_pre_hook(
            lambda mod, args: readers.add(id(mod)) if any(args[0] is o for o in outputs) else None
        )
        for m in policy.modules()
        if isinstance(m, MASKED_MODULES)
    ]
    try:
        # Neither the space's sampler nor torch's global generator may move: a description must not
        # change what is trained after it.
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            obs, _ = policy.obs_to_tensor(copy.deepcopy(observation_space).sample())
            policy(obs)
    finally:
        for handle in handles:
            handle.remove()
    prunable = set(prunable_names(policy))
    return [
        f"{prefix}.weight"
        for prefix, m in policy.named_modules()
        if id(m) in readers and f"{prefix}.weight" in prunable
    ]


def describe_policy(policy: BasePolicy, observation_space: gym.Space) -> dict[str, Any]:
    """What meta.json records of a policy: input layers, roles, the layers of each role, weight count.

    :param policy: a (light) agent's policy.
    :param observation_space: the environment's observation space.
    :return: ``input_layers``; ``roles`` ({parameter: role}, biases included, so a mask with
        ``prune.biases`` is covered); ``actor_layers``, ``critic_layers``, ``shared_layers``,
        ``q_layers`` (weights only, as before); ``weights_total`` (prunable weights).
    """
    names = prunable_names(policy)
    weights = dict(policy.named_parameters())
    roles = layer_roles(policy)
    return {
        "input_layers": input_layers(policy, observation_space),
        "roles": roles,
        **{f"{role}_layers": [n for n in names if roles[n] == role] for role in (ACTOR, CRITIC, SHARED, Q)},
        "weights_total": int(np.sum([weights[n].numel() for n in names])),
    }
