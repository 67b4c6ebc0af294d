"""What each layer of an SB3 policy is for: the input layers, the actor's and the critic's."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.policies import BasePolicy

from rl_tickets.sparsity.masks import prunable_names

ACTOR_PARTS = ("policy_net", "action_net", "actor.")
CRITIC_PARTS = ("value_net", "critic.")


def describe_policy(policy: BasePolicy, algo: str, observation_space: gym.Space) -> dict[str, Any]:
    """Input layers (weights reading the observation directly), actor/critic layers, weight count.

    :param policy: a (light) agent's policy.
    :param algo: the algorithm's name (DQN has no actor/critic split).
    :param observation_space: the environment's observation space.
    """
    names = prunable_names(policy)
    obs_dim = int(np.prod(observation_space.shape))
    extractor_params = any("features_extractor" in n for n, _ in policy.named_parameters())
    weights = dict(policy.named_parameters())
    inputs = [
        n
        for n in names
        if n.endswith(".0.weight") and weights[n].dim() == 2 and weights[n].shape[1] == obs_dim
    ]
    two_roles = algo != "dqn"
    return {
        "input_layers": [] if extractor_params else inputs,
        "actor_layers": [n for n in names if two_roles and any(p in n for p in ACTOR_PARTS)],
        "critic_layers": [n for n in names if two_roles and any(p in n for p in CRITIC_PARTS)],
        "weights_total": sum(weights[n].numel() for n in names),
    }
