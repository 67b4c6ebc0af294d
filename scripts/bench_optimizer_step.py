"""Micro-benchmarks behind two design choices in rl_tickets/sparsity/masks.py.

1. CPU ``sqrt`` on a 256x256 tensor that is 75% exact zeros vs a dense one: why the mask enforcer floors
   exact-zero Adam/RMSprop second moments (a sparse net leaves many of them exactly 0).
2. The enforcer's cost per optimizer step on DQN's zoo network ([256, 256], 80% of each layer pruned)
   next to a whole optimizer step.

Usage: ``python scripts/bench_optimizer_step.py`` (about 20 s; one torch thread).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from stable_baselines3 import DQN

from rl_tickets.rl.policies import POLICIES
from rl_tickets.sparsity.masks import online_weights, set_masks


def microseconds(call: Callable[[], object], repeats: int) -> float:
    """Mean wall time of ``call`` in microseconds."""
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1e6


def sqrt_on_zeros() -> tuple[float, float]:
    """(dense, 75%-zeros) microseconds per sqrt of a 256x256 float32 tensor."""
    generator = torch.Generator().manual_seed(0)
    dense = torch.rand(256, 256, generator=generator) + 0.1
    zeros = dense.clone()
    zeros[torch.rand(256, 256, generator=generator) < 0.75] = 0.0
    return microseconds(dense.sqrt, 2000), microseconds(zeros.sqrt, 2000)


def enforcer_cost() -> tuple[float, float]:
    """(enforcer hook, whole optimizer step incl. hook) microseconds on a sparse DQN network."""
    model = DQN(
        POLICIES["dqn"], "CartPole-v1", policy_kwargs={"net_arch": [256, 256]}, learning_starts=0, seed=0
    )
    weights = online_weights(model.policy)
    set_masks(model.policy, {n: w.abs() > w.abs().flatten().quantile(0.8) for n, w in weights.items()})
    model.learn(600)  # creates the optimizer state
    optimizer = model.policy.optimizer
    hooks = list(optimizer._optimizer_step_post_hooks.values())

    def run_hooks() -> None:
        for hook in hooks:
            hook(optimizer, (), {})

    return microseconds(run_hooks, 5000), microseconds(optimizer.step, 2000)


def main() -> None:
    """Print both measurements."""
    torch.set_num_threads(1)
    dense, zeros = sqrt_on_zeros()
    print(f"sqrt 256x256: dense {dense:.0f} us, 75% exact zeros {zeros:.0f} us ({zeros / dense:.1f}x)")
    hook, step = enforcer_cost()
    print(
        f"DQN [256,256], 80% pruned: enforcer {hook:.1f} us per optimizer step; optimizer step {step:.0f} us"
    )


if __name__ == "__main__":
    main()
