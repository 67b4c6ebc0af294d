"""What sparse training (static, SET, RigL) costs: one mask update, and a whole run against ``static``.

1. **One mask update** on SB3's DQN with a 512x512 MLP (Graesser et al. 2022's classic-control network,
   every layer sparse, ERK at 10% density): drop, grow, every optimizer's state reset, the online mask
   copied to the target network, as :func:`rl_tickets.sparsity.dynamic.apply_update` does it inside
   training (Adam's state populated by real gradient steps first; RigL given dense gradients). Reports the
   median and the spread of ``--updates`` updates, in milliseconds of process CPU time.
2. **Whole runs**: the same agent trained with ``static``, ``set`` and ``rigl`` (mask updates every
   ``--every`` steps until 75% of the run, drop fraction 0.1 cosine-decayed: the study's settings), in
   rotating order, ``--repeats`` times; process CPU time of ``learn()`` (robust to other jobs on the
   machine), and the median ratio set/static and rigl/static with the range over repeats.

Single-threaded (``torch.set_num_threads(1)``), CPU. Examples::

    python scripts/bench_sparse_training.py                      # the README numbers
    python scripts/bench_sparse_training.py --quick              # a smoke test (seconds)
    python scripts/bench_sparse_training.py --width 256 --steps 10000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from stable_baselines3 import DQN

from rl_tickets.rl.mask_updates import SparseTraining
from rl_tickets.rl.policies import POLICIES, policy_optimizers
from rl_tickets.sparsity.dynamic import DynamicSchedule, apply_update, layer_counts, random_mask
from rl_tickets.sparsity.masks import prunable_names, set_masks

# Graesser et al.'s classic-control DQN (rigl/rl/tfagents/configs/dqn_gym_dense_config.gin) in SB3.
HYPERPARAMS: dict[str, Any] = dict(
    learning_rate=1e-3,
    batch_size=128,
    buffer_size=100_000,
    learning_starts=1000,
    gamma=0.99,
    target_update_interval=100,
    train_freq=1,
    gradient_steps=1,
    exploration_initial_eps=0.01,
    exploration_final_eps=0.01,
    max_grad_norm=1e6,
)


def agent(width: int, density: float, seed: int = 0) -> tuple[DQN, dict[str, torch.Tensor], list[str]]:
    """A masked DQN on CartPole-v0 with a ``width`` x ``width`` MLP and a random ERK mask.

    :param width: hidden width.
    :param density: overall density of the mask.
    :param seed: SB3 and mask seed.
    :return: the agent, its mask and the masked names.
    """
    model = DQN(
        POLICIES["dqn"],
        "CartPole-v0",
        seed=seed,
        device="cpu",
        policy_kwargs={"net_arch": [width, width]},
        **HYPERPARAMS,
    )
    named = dict(model.policy.named_parameters())
    names = prunable_names(model.policy)
    shapes = {n: tuple(named[n].shape) for n in names}
    mask = random_mask(shapes, layer_counts(shapes, density, "erk"), torch.Generator().manual_seed(seed))
    set_masks(model.policy, mask)
    return model, mask, names


def time_updates(width: int, density: float, updates: int) -> dict[str, list[float]]:
    """Milliseconds (process CPU) of single SET and RigL updates on a trained-for-a-bit agent.

    :param width: hidden width.
    :param density: mask density.
    :param updates: updates timed per method.
    """
    out: dict[str, list[float]] = {}
    for method in ("set", "rigl"):
        model, mask, names = agent(width, density)
        model.learn(1200)  # 200 gradient steps: Adam's moments exist for every parameter
        named = dict(model.policy.named_parameters())
        schedule = DynamicSchedule(method, mask, names, every=1, end=10**9, drop_fraction=0.1, seed=0)
        generator = torch.Generator().manual_seed(1)
        times = []
        for step in range(1, updates + 1):
            grads = {n: torch.randn(named[n].shape, generator=generator) for n in names}
            started = time.process_time()
            apply_update(
                model.policy,
                policy_optimizers(model.policy),
                schedule,
                step,
                grads if method == "rigl" else None,
            )
            times.append(1000 * (time.process_time() - started))
        out[method] = times
    return out


def time_runs(width: int, density: float, steps: int, every: int, repeats: int) -> dict[str, list[float]]:
    """Process CPU seconds of ``learn(steps)`` per method, ``repeats`` rotations of the three.

    :param width: hidden width.
    :param density: mask density.
    :param steps: environment steps per run.
    :param every: mask-update period.
    :param repeats: rotations.
    """
    methods = ["static", "set", "rigl"]
    out: dict[str, list[float]] = {m: [] for m in methods}
    for repeat in range(repeats):
        order = methods[repeat % 3 :] + methods[: repeat % 3]
        for method in order:
            model, mask, names = agent(width, density, seed=repeat)
            schedule = DynamicSchedule(method, mask, names, every, round(0.75 * steps), 0.1, seed=repeat)
            started = time.process_time()
            model.learn(steps, callback=SparseTraining(schedule))
            out[method].append(time.process_time() - started)
            if method != "static":
                assert schedule.log and sum(r["dropped"] for r in schedule.log) > 0, "no update happened"
    return out


def main() -> None:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=512, help="hidden width of the update benchmark")
    parser.add_argument("--run-width", type=int, default=256, help="hidden width of the whole runs")
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20_000, help="environment steps per whole run")
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.updates, args.steps, args.repeats, args.run_width, args.every = 5, 2000, 1, 64, 250
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, process CPU time")
    print(
        f"\n1. one mask update, DQN {args.width}x{args.width}, ERK density {args.density}, {args.updates} updates"
    )
    for method, times in time_updates(args.width, args.density, args.updates).items():
        print(
            f"   {method:<5} median {statistics.median(times):6.2f} ms  (min {min(times):.2f}, max {max(times):.2f})"
        )
    print(
        f"\n2. whole runs, DQN {args.run_width}x{args.run_width}, {args.steps} steps, updates every {args.every} "
        f"until 75%, {args.repeats} repeats"
    )
    runs = time_runs(args.run_width, args.density, args.steps, args.every, args.repeats)
    for method, seconds in runs.items():
        print(f"   {method:<6} " + " ".join(f"{s:7.1f}" for s in seconds) + " s")
    for method in ("set", "rigl"):
        ratios = [a / b for a, b in zip(runs[method], runs["static"])]
        print(
            f"   {method}/static median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})"
        )


if __name__ == "__main__":
    main()
