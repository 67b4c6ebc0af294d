"""Layer roles decided by module identity (rl/roles.py): every layer's role by name, for each algorithm,
MLP and CNN policies, shared and separate features extractors; and the per-role densities of the tables."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

from rl_tickets.chain.tables import role_densities
from rl_tickets.report.roles import roles_from_names
from rl_tickets.rl.envs import MinAtarCNN
from rl_tickets.rl.policies import POLICIES
from rl_tickets.rl.roles import describe_policy, layer_roles

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC, "td3": TD3}
IMAGE = gym.spaces.Box(0.0, 1.0, (4, 10, 10), np.float32)


class ImageEnv(gym.Env):
    """MinAtar-shaped channels-first frames (no MinAtar needed), discrete or continuous actions."""

    observation_space = IMAGE

    def __init__(self, continuous: bool = False) -> None:
        self.action_space = (
            gym.spaces.Box(-1.0, 1.0, (2,), np.float32) if continuous else gym.spaces.Discrete(3)
        )

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return IMAGE.sample(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return IMAGE.sample(), 0.0, False, False, {}


def build(algo: str, env: gym.Env, **policy_kwargs: Any) -> BaseAlgorithm:
    """An untrained agent with the suite's masked policy class (as the trainer builds it)."""
    extra = {"buffer_size": 64} if algo in ("dqn", "sac", "td3") else {}
    return ALGOS[algo](POLICIES[algo], env, policy_kwargs=policy_kwargs, device="cpu", seed=0, **extra)


def weight_roles(model: BaseAlgorithm) -> dict[str, str]:
    """The roles of the weights (biases share their layer's role; checked separately)."""
    return {n: r for n, r in layer_roles(model.policy).items() if n.endswith("weight")}


PPO_MLP = {
    "mlp_extractor.policy_net.0.weight": "actor",
    "mlp_extractor.policy_net.2.weight": "actor",
    # The substring rule listed these two as actor layers ("actor." is inside "mlp_extractor.").
    "mlp_extractor.value_net.0.weight": "critic",
    "mlp_extractor.value_net.2.weight": "critic",
    "action_net.weight": "actor",
    "value_net.weight": "critic",
}


@pytest.mark.parametrize("algo", ["ppo", "a2c"])
def test_ppo_and_a2c_mlp_roles(algo: str) -> None:
    model = build(algo, gym.make("CartPole-v1"))
    assert weight_roles(model) == PPO_MLP
    roles = layer_roles(model.policy)
    # Biases (prunable with prune.biases) take their layer's role; log_std is no layer's and absent.
    assert roles["mlp_extractor.value_net.0.bias"] == "critic" and roles["action_net.bias"] == "actor"
    assert not any(n.startswith("log_std") for n in roles)


def test_ppo_separate_mlp_extractors_have_the_same_roles() -> None:
    """share_features_extractor=False with an MLP: the two FlattenExtractors hold no weights."""
    model = build("ppo", gym.make("CartPole-v1"), share_features_extractor=False)
    assert model.policy.pi_features_extractor is not model.policy.vf_features_extractor
    assert weight_roles(model) == PPO_MLP


def test_ppo_cnn_shared_extractor_is_shared() -> None:
    model = build("ppo", ImageEnv(), features_extractor_class=MinAtarCNN, net_arch=[])
    assert weight_roles(model) == {
        "features_extractor.cnn.0.weight": "shared",
        "features_extractor.linear.0.weight": "shared",
        "action_net.weight": "actor",
        "value_net.weight": "critic",
    }


def test_ppo_cnn_separate_extractors_belong_to_actor_and_critic() -> None:
    model = build(
        "ppo", ImageEnv(), features_extractor_class=MinAtarCNN, net_arch=[], share_features_extractor=False
    )
    assert weight_roles(model) == {
        "features_extractor.cnn.0.weight": "actor",  # pi_features_extractor, stored as features_extractor
        "features_extractor.linear.0.weight": "actor",
        "vf_features_extractor.cnn.0.weight": "critic",
        "vf_features_extractor.linear.0.weight": "critic",
        "action_net.weight": "actor",
        "value_net.weight": "critic",
    }


def test_dqn_layers_are_q_and_the_target_is_not_listed() -> None:
    model = build("dqn", gym.make("CartPole-v1"))
    assert weight_roles(model) == {
        "q_net.q_net.0.weight": "q",
        "q_net.q_net.2.weight": "q",
        "q_net.q_net.4.weight": "q",
    }
    facts = describe_policy(model.policy, model.observation_space)
    assert facts["actor_layers"] == [] and facts["critic_layers"] == [] and facts["shared_layers"] == []
    assert facts["q_layers"] == list(weight_roles(model))


def test_dqn_cnn_extractor_is_q() -> None:
    model = build("dqn", ImageEnv(), features_extractor_class=MinAtarCNN, net_arch=[])
    assert weight_roles(model) == {
        "q_net.features_extractor.cnn.0.weight": "q",
        "q_net.features_extractor.linear.0.weight": "q",
        "q_net.q_net.0.weight": "q",
    }


def test_sac_roles() -> None:
    model = build("sac", gym.make("Pendulum-v1"), net_arch=[8, 8])
    critic = {f"critic.qf{i}.{j}.weight": "critic" for i in (0, 1) for j in (0, 2, 4)}
    assert weight_roles(model) == {
        "actor.latent_pi.0.weight": "actor",
        "actor.latent_pi.2.weight": "actor",
        "actor.mu.weight": "actor",
        "actor.log_std.weight": "actor",
        **critic,
    }


def test_sac_cnn_shared_extractor_is_shared_and_separate_ones_are_not() -> None:
    shared = build(
        "sac",
        ImageEnv(continuous=True),
        features_extractor_class=MinAtarCNN,
        net_arch=[8],
        share_features_extractor=True,
    )
    separate = build(
        "sac",
        ImageEnv(continuous=True),
        features_extractor_class=MinAtarCNN,
        net_arch=[8],
        share_features_extractor=False,
    )
    heads = {
        "actor.latent_pi.0.weight": "actor",
        "actor.mu.weight": "actor",
        "actor.log_std.weight": "actor",
        "critic.qf0.0.weight": "critic",
        "critic.qf0.2.weight": "critic",
        "critic.qf1.0.weight": "critic",
        "critic.qf1.2.weight": "critic",
    }
    extractor = ("features_extractor.cnn.0.weight", "features_extractor.linear.0.weight")
    # share_features_extractor=True hands the actor's extractor object to the critic: listed once, as actor.*.
    assert shared.policy.actor.features_extractor is shared.policy.critic.features_extractor
    assert weight_roles(shared) == {**{f"actor.{n}": "shared" for n in extractor}, **heads}
    assert weight_roles(separate) == {
        **{f"actor.{n}": "actor" for n in extractor},
        **{f"critic.{n}": "critic" for n in extractor},
        **heads,
    }


def test_td3_roles_targets_excluded() -> None:
    model = build("td3", gym.make("Pendulum-v1"), net_arch=[8, 8])
    assert weight_roles(model) == {
        "actor.mu.0.weight": "actor",
        "actor.mu.2.weight": "actor",
        "actor.mu.4.weight": "actor",
        **{f"critic.qf{i}.{j}.weight": "critic" for i in (0, 1) for j in (0, 2, 4)},
    }


@pytest.mark.parametrize(
    ("algo", "env", "kwargs", "inputs"),
    [
        ("ppo", "CartPole-v1", {}, ["mlp_extractor.policy_net.0.weight", "mlp_extractor.value_net.0.weight"]),
        # No hidden layers: the heads read the observation (the old ".0.weight" rule missed them).
        ("ppo", "CartPole-v1", {"net_arch": []}, ["action_net.weight", "value_net.weight"]),
        ("dqn", "CartPole-v1", {}, ["q_net.q_net.0.weight"]),
        # The critic reads observation and action concatenated: not an observation-only input layer.
        ("sac", "Pendulum-v1", {"net_arch": [8]}, ["actor.latent_pi.0.weight"]),
        ("td3", "Pendulum-v1", {"net_arch": [8]}, ["actor.mu.0.weight"]),
    ],
)
def test_input_layers_are_the_layers_fed_the_observation(
    algo: str, env: str, kwargs: dict, inputs: list[str]
) -> None:
    model = build(algo, gym.make(env), **kwargs)
    assert describe_policy(model.policy, model.observation_space)["input_layers"] == inputs


def test_a_cnn_has_no_observation_input_layers() -> None:
    model = build("ppo", ImageEnv(), features_extractor_class=MinAtarCNN, net_arch=[])
    facts = describe_policy(model.policy, model.observation_space)
    assert facts["input_layers"] == []
    assert facts["shared_layers"] == ["features_extractor.cnn.0.weight", "features_extractor.linear.0.weight"]
    assert facts["weights_total"] == sum(
        p.numel() for n, p in model.policy.named_parameters() if n in facts["roles"] and n.endswith("weight")
    )


def test_role_densities_count_each_roles_mask_entries() -> None:
    mask = {
        "a.weight": torch.tensor([True, False, False, False]),  # actor: 1 + 3 of 4 + 4
        "b.weight": torch.tensor([True, True, True, True]),
        "c.weight": torch.tensor([[True, False], [False, False]]),  # critic: 1 of 4
        "d.weight": torch.tensor([True]),  # no role: ignored
    }
    roles = {"a.weight": "actor", "b.weight": "actor", "c.weight": "critic"}
    assert role_densities(mask, roles) == {"actor_density": 5 / 8, "critic_density": 1 / 4}
    assert role_densities(mask, {}) == {}


@pytest.mark.parametrize(
    ("algo", "continuous", "kwargs"),
    [
        ("ppo", False, {}),
        ("a2c", False, {"share_features_extractor": False}),
        ("ppo", False, {"features_extractor_class": MinAtarCNN, "net_arch": []}),
        ("ppo", False, {"features_extractor_class": MinAtarCNN, "share_features_extractor": False}),
        ("dqn", False, {"features_extractor_class": MinAtarCNN}),
        (
            "sac",
            True,
            {"features_extractor_class": MinAtarCNN, "net_arch": [8], "share_features_extractor": True},
        ),
        ("sac", True, {"features_extractor_class": MinAtarCNN, "net_arch": [8]}),
        ("td3", True, {"features_extractor_class": MinAtarCNN, "net_arch": [8]}),
        (
            "td3",
            True,
            {"features_extractor_class": MinAtarCNN, "net_arch": [8], "share_features_extractor": True},
        ),
    ],
)
def test_the_reports_name_paths_agree_with_module_identity(algo: str, continuous: bool, kwargs: dict) -> None:
    """Chains written before meta.json recorded roles get them from the mask's names (report/roles.py):
    the exact module paths must give what module identity gives, for every algorithm and extractor."""
    model = build(algo, ImageEnv(continuous=continuous), **kwargs)
    by_module = layer_roles(model.policy)
    assert roles_from_names(algo, by_module) == by_module
    assert set(by_module.values()) != {"other"}


def test_describing_a_policy_moves_no_random_generator() -> None:
    """describe_policy runs one forward pass; what is trained after it must not depend on it."""
    model = build("ppo", gym.make("CartPole-v1"))
    space = model.observation_space
    space.seed(3)
    torch_state, space_state = torch.get_rng_state().clone(), space.np_random.bit_generator.state
    describe_policy(model.policy, space)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert space.np_random.bit_generator.state == space_state
