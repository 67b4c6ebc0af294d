"""Saving and loading an SB3 level: the model zip, its sidecar files, and what a plan restores.

A level's start is always read from disk: the model (SB3's zip, read by :mod:`rl_tickets.rl.safe_load`:
every pickled entry rebuilt from the config, nothing unpickled), its VecNormalize statistics (the
pickle-free ``X_vecnormalize.npz``; SB3's ``X_vecnormalize.pkl`` is written beside it for SB3 users and
never read) and, when asked, its replay buffer; then the plan says which of the optimizer state, step
counter and schedules carry over.

The replay buffer (``rewind.replay_buffer=restore``) is SB3's pickle: restoring it trusts the results
folder (the job says so when it starts, and the README's trust model).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import ConstantSchedule
from stable_baselines3.common.vec_env import VecEnv

from rl_tickets.level import LevelPlan
from rl_tickets.rl.agents import AgentBuilder
from rl_tickets.rl.envs import save_statistics, statistics_file
from rl_tickets.rl.policies import POLICIES, policy_optimizers
from rl_tickets.rl.safe_load import UnreadableCheckpoint, load_model, read_params
from rl_tickets.sparsity.masks import online_twins

# Fine-tuning holds every schedule constant, each at a value where the agent still learns: clip ranges
# at the rewind point k (the zoo's linear clip schedules end at 0.0, where PPO's policy stops moving),
# DQN's epsilon at its final value (at k=0 its value is 1.0: a random policy for the whole level).
# "rewind": the schedule's value at step k; "final": its value at the end of training.
FINETUNE_HOLD = {"clip_range": "rewind", "clip_range_vf": "rewind", "exploration_schedule": "final"}


def sidecar(checkpoint: Path, kind: str) -> Path:
    """The file stored beside a model checkpoint: ``X_vecnormalize.pkl`` or ``X_replay.pkl`` (SB3's
    pickles; the statistics rl_tickets reads are their pickle-free twin, ``X_vecnormalize.npz``).

    :param checkpoint: a model ``.zip``.
    :param kind: ``vecnormalize`` or ``replay``.
    """
    return checkpoint.with_name(f"{checkpoint.stem}_{kind}.pkl")


def save_state(model: BaseAlgorithm, path: Path, with_replay: bool) -> None:
    """Save a model with its VecNormalize statistics and, if asked, its replay buffer.

    :param model: the agent.
    :param path: the ``.zip`` to write.
    :param with_replay: also write the replay buffer (off-policy algorithms).
    """
    model.save(path)
    normalizer = model.get_vec_normalize_env()
    if normalizer is not None:
        normalizer.save(str(sidecar(path, "vecnormalize")))  # for SB3, rl-baselines3-zoo and the export
        save_statistics(normalizer, statistics_file(sidecar(path, "vecnormalize")))  # what rl_tickets reads
    if with_replay and isinstance(model, OffPolicyAlgorithm):
        model.save_replay_buffer(sidecar(path, "replay"))


def load_agent(agents: AgentBuilder, plan: LevelPlan, env: VecEnv) -> BaseAlgorithm:
    """Load the plan's checkpoint and restore exactly what the plan says.

    :param agents: the builder of this algorithm's agents.
    :param plan: what to start from.
    :param env: the training env (given to ``load``: forces a reset).
    """
    assert plan.start is not None
    # Nothing in the zip is unpickled: the policy class (so checkpoints keep loading when the policies
    # module moves), spaces and schedules are this config's, as a fresh agent has them.
    policy = POLICIES[agents.algo.name]
    model = load_model(plan.start, agents.cls, agents.reference, policy, env=env, device=agents.device)
    model.set_random_seed(plan.seed)
    if plan.start_step is not None:
        model.num_timesteps = plan.start_step
    if not plan.restore_optimizer:
        for optimizer in policy_optimizers(model.policy) + [getattr(model, "ent_coef_optimizer", None)]:
            if optimizer is not None:
                optimizer.state.clear()
    if isinstance(model, OffPolicyAlgorithm):
        replay = sidecar(plan.start, "replay")
        if plan.restore_replay_buffer and replay.exists():
            model.load_replay_buffer(replay)
        else:
            # learning_starts compares with the absolute step counter: wait again from here
            # instead of learning from an empty buffer.
            base = agents.algo.hyperparams.get(
                "learning_starts", inspect.signature(agents.cls).parameters["learning_starts"].default
            )
            model.learning_starts = model.num_timesteps + int(base)
    if plan.params:
        override_params(model, plan.params)
    return model


@torch.no_grad()
def override_params(model: BaseAlgorithm, params: dict[str, torch.Tensor]) -> None:
    """Replace online parameters and copy them into the target networks.

    :param model: the agent.
    :param params: online parameters by name.
    """
    named = dict(model.policy.named_parameters())
    for name, value in params.items():
        named[name].copy_(value.to(named[name].device))
    for target, online in online_twins(model.policy).items():
        named[target].copy_(named[online])


def hold_schedules(model: BaseAlgorithm, lr: float, hold_step: int, budget: int) -> None:
    """Fine-tuning: a constant learning rate; other schedules held per :data:`FINETUNE_HOLD`.

    :param model: the agent about to train.
    :param lr: the constant learning rate.
    :param hold_step: the rewind point k (progress ``1 - k / budget``, as SB3 computes it).
    :param budget: the dense training budget.
    """
    model.lr_schedule = ConstantSchedule(lr)
    progress = {"rewind": 1.0 - hold_step / budget, "final": 0.0}
    for name, at in FINETUNE_HOLD.items():
        schedule = getattr(model, name, None)
        if callable(schedule):
            setattr(model, name, ConstantSchedule(float(schedule(progress[at]))))


def load_online_params(checkpoint: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The named online policy parameters of a saved agent (CPU).

    :param checkpoint: a model ``.zip``.
    :param names: the online parameter names (targets excluded).
    """
    state = read_params(checkpoint)["policy"]  # the zip's data (and its pickles) is never read
    missing = [n for n in names if n not in state]
    if missing:
        raise UnreadableCheckpoint(checkpoint, f"holds no {', '.join(missing[:3])} (another network)")
    return {n: state[n].detach().clone() for n in names}
