"""What zeroing pruned gradients during backward costs per gradient step (issue 20), in microseconds.

The gradient hooks of :func:`rl_tickets.sparsity.masks.enforce_after_steps` run once per partly pruned
parameter per backward. A whole-training benchmark (``scripts/bench_masks.py``) cannot resolve a cost of
about 1% on a shared machine; this one times one gradient step (zero_grad, forward, backward, SB3's
gradient clipping, Adam's step) of the same masked agent with and without the hooks, alternating, and
keeps the *minimum* over many steps, which load on the machine can only raise.

    python scripts/bench_gradient_hooks.py            # PPO (zoo CartPole net, batch 256), DQN ([256, 256], batch 64)
    python scripts/bench_gradient_hooks.py --rounds 10
"""

from __future__ import annotations

import argparse
import time

import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from rl_tickets.rl.policies import POLICIES
from rl_tickets.sparsity.masks import read_mask, set_masks

BATCHES = {"ppo": 256, "dqn": 64}  # rl-baselines3-zoo's CartPole batch sizes


def build(algo: str, hooks: bool, keep: float = 0.2) -> BaseAlgorithm:
    """A masked agent (``keep`` of every weight kept at random), with or without the gradient hooks.

    :param algo: ``ppo`` or ``dqn``.
    :param hooks: keep the gradient hooks (False: engine version 1's per-step work).
    :param keep: fraction of weights kept.
    """
    torch.manual_seed(0)
    if algo == "ppo":
        model: BaseAlgorithm = PPO(POLICIES["ppo"], "CartPole-v1", device="cpu", n_steps=256, batch_size=256)
    else:
        model = DQN(POLICIES["dqn"], "CartPole-v1", device="cpu", policy_kwargs={"net_arch": [256, 256]})
    set_masks(model.policy, {n: torch.rand(m.shape) < keep for n, m in read_mask(model.policy).items()})
    if not hooks:
        for handle in model.policy._grad_masks._handles.values():
            handle.remove()
    return model


def gradient_step(model: BaseAlgorithm, algo: str, obs: torch.Tensor, actions: torch.Tensor) -> None:
    """One update as SB3 makes it: zero_grad, a loss, backward, clip_grad_norm_, step.

    :param model: the agent.
    :param algo: ``ppo`` or ``dqn``.
    :param obs: a batch of observations.
    :param actions: a batch of actions.
    """
    optimizer = model.policy.optimizer
    optimizer.zero_grad()
    if algo == "ppo":
        values, log_prob, entropy = model.policy.evaluate_actions(obs, actions)
        loss = -log_prob.mean() + values.pow(2).mean() - entropy.mean()
    else:
        loss = model.policy.q_net(obs).gather(1, actions.long().view(-1, 1)).pow(2).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.policy.parameters(), 0.5)
    optimizer.step()


def main() -> None:
    """Print the minimum microseconds per gradient step with and without the hooks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="alternating rounds of --steps each")
    parser.add_argument("--steps", type=int, default=100, help="gradient steps per round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for algo, batch in BATCHES.items():
        models = {hooks: build(algo, hooks) for hooks in (True, False)}
        obs, actions = torch.randn(batch, 4), torch.randint(0, 2, (batch,)).float()
        best = {True: float("inf"), False: float("inf")}
        for round_ in range(args.rounds):
            for hooks in (True, False) if round_ % 2 else (False, True):
                for _ in range(args.steps):
                    start = time.perf_counter()
                    gradient_step(models[hooks], algo, obs, actions)
                    best[hooks] = min(best[hooks], time.perf_counter() - start)
        print(
            f"{algo}: minimum per gradient step {best[True] * 1e6:.1f} us with the gradient hooks, "
            f"{best[False] * 1e6:.1f} us without ({(best[True] - best[False]) * 1e6:+.1f} us, "
            f"{best[True] / best[False] - 1:+.1%})"
        )


if __name__ == "__main__":
    main()
