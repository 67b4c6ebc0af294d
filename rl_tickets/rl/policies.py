"""SB3 policy subclasses that carry masks from construction on.

SB3 builds every network *and its optimizers* inside the policy's ``_build`` (targets included), so
one override of that hook reaches every layer: after the parent builds, we register mask buffers
(all ones) on every Linear/Conv2d and hook every optimizer so pruned weights stay exactly zero and
get no gradient (zeroed during backward, before SB3 clips the gradient norm; see
:func:`rl_tickets.sparsity.masks.enforce_after_steps`). SAC's ``ent_coef_optimizer`` lives on the
algorithm, not the policy, and steps ``log_ent_coef`` only, which no mask covers.

These classes are pickled by reference inside saved models, so they must stay importable here.
A CNN is just a ``features_extractor_class`` in ``policy_kwargs``; the same classes serve both.
"""

from __future__ import annotations

import torch
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.dqn.policies import DQNPolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy

from rl_tickets.sparsity.masks import attach_masks, enforce_after_steps


def policy_optimizers(policy: torch.nn.Module) -> list[torch.optim.Optimizer]:
    """Every optimizer SB3 hangs on a policy or its sub-networks (``optimizer`` attributes).

    :param policy: an SB3 policy.
    """
    found: list[torch.optim.Optimizer] = []
    for module in policy.modules():
        optimizer = getattr(module, "optimizer", None)
        if isinstance(optimizer, torch.optim.Optimizer) and all(optimizer is not o for o in found):
            found.append(optimizer)
    return found


class _MaskedBuild(BasePolicy):
    """Mixin: after SB3's ``_build``, attach masks; pruned weights get no gradient and stay zero."""

    def _build(self, lr_schedule: Schedule) -> None:  # type: ignore[override]
        super()._build(lr_schedule)  # type: ignore[misc]
        attach_masks(self)
        enforce_after_steps(self, policy_optimizers(self))


class MaskedActorCriticPolicy(_MaskedBuild, ActorCriticPolicy):
    """PPO/A2C policy with mask buffers on every Linear/Conv2d."""


class MaskedDQNPolicy(_MaskedBuild, DQNPolicy):
    """DQN policy; the target Q-network carries the online mask."""


class MaskedSACPolicy(_MaskedBuild, SACPolicy):
    """SAC policy; the critic target carries the critic's mask."""


class MaskedTD3Policy(_MaskedBuild, TD3Policy):
    """TD3 policy; actor and critic targets carry their online masks."""


POLICIES: dict[str, type[BasePolicy]] = {
    "ppo": MaskedActorCriticPolicy,
    "a2c": MaskedActorCriticPolicy,
    "dqn": MaskedDQNPolicy,
    "sac": MaskedSACPolicy,
    "td3": MaskedTD3Policy,
}
