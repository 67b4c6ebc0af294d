"""Iterations per second of the supervised trainer against a plain PyTorch loop, and what the masks cost.

For LeNet-300-100 on mnist5k and Conv-2 on random 3x32x32 tensors, each round times four runs of
the same model, batch size and Adam, in an order that rotates from round to round (so drift in the
machine's load hits every variant alike):

- ``plain``: the simplest loop over on-device tensors (a seeded permutation per epoch, forward,
  ``backward()``, ``step()``), timed around the loop;
- ``dense``: :meth:`SupervisedTrainer.train` on a dense level (level 0), timed by the trainer
  around its loop minus its evaluations and saves (``outcome.time["train_s"]``), so both count iterations only;
- ``sparse``: the trainer with an 80%-sparse mask, hence with the post-step mask hook;
- ``sparse_no_hook``: the same with the hook switched off, to isolate the masks' share.

Reports median iterations/s, the median of the per-round ratios dense/plain (the bar: >= 0.95x) and
sparse/plain with their range, the median share of a sparse level's time spent in the mask hook, the
same from each variant's fastest run (the least disturbed by other jobs), and the per-level cost
outside the loop (start and end evaluations, writing ``model.pt``).

Clocks: ``--clock cpu`` (default) times with ``time.process_time``, the CPU time of this process,
which other jobs on a shared machine barely disturb (wall-clock ratios there swing by 2x from run
to run); ``--clock wall`` uses ``time.perf_counter``. On a shared or small machine also pass
``--threads 1``: two threads competing with other jobs slow down tenfold, and the CPU clock then
counts the spinning of both.

Usage::

    python scripts/bench_supervised.py [--rounds 7] [--lenet-iterations 300] [--conv2-iterations 30]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from rl_tickets.config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from rl_tickets.level import LevelPlan
from rl_tickets.sparsity.masks import Mask
from rl_tickets.supervised.data import Dataset, Split, load_dataset
from rl_tickets.supervised.models import build_model
from rl_tickets.supervised.trainer import SupervisedTrainer

BAR = 0.95
Clock = Callable[[], float]
CLOCKS: dict[str, Clock] = {"cpu": time.process_time, "wall": time.perf_counter}
BATCH, LR = 60, 1.2e-3


def random_images(n_train: int, n_eval: int, seed: int = 0) -> Dataset:
    """Random 3x32x32 images with random labels (CIFAR-10's shape); tiny val/test splits.

    :param n_train: training samples.
    :param n_eval: samples in each of validation and test (small: the bench measures training).
    :param seed: fixes the tensors.
    """
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        return Split(
            torch.rand(n, 3, 32, 32, generator=generator), torch.randint(0, 10, (n,), generator=generator)
        )

    return Dataset(split(n_train), split(n_eval), split(n_eval), (3, 32, 32), 10, "random")


def plain_loop(model_name: str, data: Dataset, iterations: int, seed: int, clock: Clock) -> float:
    """The reference: the same model, batch and Adam in the simplest loop over on-device tensors.

    :param model_name: a registered model.
    :param data: the dataset (its train split is used).
    :param iterations: optimizer steps.
    :param seed: initialisation and sampling seed.
    :param clock: the timer.
    :return: seconds spent in the loop.
    """
    model = build_model(model_name, data.input_shape, data.num_classes, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(seed)
    x, y, n, done = data.train.x, data.train.y, len(data.train), 0
    started = clock()
    while done < iterations:
        for index in torch.randperm(n, generator=generator)[: n - n % BATCH].split(BATCH):
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == iterations:
                break
    return clock() - started


def trainer_run(
    trainer: SupervisedTrainer, iterations: int, mask: Mask | None, hook: bool, overhead: list[float]
) -> float:
    """One level through the trainer, into a throwaway directory.

    :param trainer: the supervised trainer (eval.every=0: evaluations only at start and end).
    :param iterations: optimizer steps.
    :param mask: the level's mask (None: dense).
    :param hook: keep the post-step mask hook (False: patched out, to measure its cost).
    :param overhead: receives the seconds spent outside the training loop.
    :return: seconds the trainer spent training (its loop minus evaluations).
    """
    with tempfile.TemporaryDirectory() as out, contextlib.ExitStack() as stack:
        if not hook:
            stack.enter_context(
                mock.patch("rl_tickets.supervised.networks.enforce_after_steps", lambda *a, **k: None)
            )
        started = trainer.clock()
        outcome = trainer.train(LevelPlan(start=None, steps=iterations, mask=mask, seed=0), Path(out))
        seconds = float(outcome.time["train_s"])
        overhead.append(trainer.clock() - started - seconds)
        return seconds


def sparse_mask(trainer: SupervisedTrainer, keep: float) -> Mask:
    """A random mask keeping ``keep`` of every prunable weight tensor.

    :param trainer: supplies the names and shapes.
    :param keep: density in (0, 1].
    """
    params = trainer.fresh_params(0)
    generator = torch.Generator().manual_seed(0)
    return {
        n: torch.rand(params[n].shape, generator=generator) < keep for n in trainer.prunable(params, False)
    }


def bench(
    label: str, model_name: str, data: Dataset, iterations: int, rounds: int, clock: Clock
) -> dict[str, float]:
    """Time plain / dense / sparse / sparse_no_hook in rotating order and print a summary.

    :param label: printed name.
    :param model_name: a registered model.
    :param data: the dataset.
    :param iterations: optimizer steps per timed run.
    :param rounds: rounds of the four runs (>= 5 for a usable median).
    :param clock: the timer, for the plain loop and inside the trainer.
    """
    trainer = SupervisedTrainer(
        ModelConfig(model_name),
        DataConfig(data.name),
        TrainConfig(iterations=iterations, batch_size=BATCH, lr=LR),
        EvalConfig(every=0),
        "cpu",
        split_seed=0,
        dataset=data,
        clock=clock,
    )
    mask = sparse_mask(trainer, 0.2)
    overhead: list[float] = []
    runs: dict[str, Callable[[], float]] = {
        "plain": lambda: plain_loop(model_name, data, iterations, 0, clock),
        "dense": lambda: trainer_run(trainer, iterations, None, True, overhead),
        "sparse": lambda: trainer_run(trainer, iterations, mask, True, []),
        "sparse_no_hook": lambda: trainer_run(trainer, iterations, mask, False, []),
    }
    for run in runs.values():  # warm-up: allocator, kernels, lazy imports
        run()
    overhead.clear()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            seconds[name].append(runs[name]())
    t = seconds
    dense_ratios = [p / d for p, d in zip(t["plain"], t["dense"])]
    sparse_ratios = [p / s for p, s in zip(t["plain"], t["sparse"])]
    hook_shares = [1 - n / s for s, n in zip(t["sparse"], t["sparse_no_hook"])]
    rate = {name: iterations / statistics.median(values) for name, values in t.items()}
    # Other jobs on the machine only ever add time: the fastest run of each variant is the
    # least disturbed estimate of its own cost, a cross-check on the median of paired ratios.
    best = {name: min(values) for name, values in t.items()}
    result = {
        **{f"{name}_it_s": value for name, value in rate.items()},
        "dense_ratio": statistics.median(dense_ratios),
        "sparse_ratio": statistics.median(sparse_ratios),
        "hook_share": statistics.median(hook_shares),
        "dense_ratio_of_best": best["plain"] / best["dense"],
        "sparse_ratio_of_best": best["plain"] / best["sparse"],
        "hook_share_of_best": 1 - best["sparse_no_hook"] / best["sparse"],
        "level_overhead_s": statistics.median(overhead),
    }
    verdict = "ok" if result["dense_ratio"] >= BAR else f"BELOW the {BAR}x bar"
    print(
        f"{label} ({iterations} iterations x {rounds} rounds; per level outside the loop "
        f"(evaluations, model.pt) {1000 * result['level_overhead_s']:.0f} ms)\n"
        f"  it/s: plain {rate['plain']:.1f}, trainer dense {rate['dense']:.1f}, "
        f"sparse {rate['sparse']:.1f}, sparse without hook {rate['sparse_no_hook']:.1f}\n"
        f"  trainer/plain dense  {result['dense_ratio']:.3f}x (range {min(dense_ratios):.3f}-"
        f"{max(dense_ratios):.3f}; fastest runs {result['dense_ratio_of_best']:.3f}x) {verdict}\n"
        f"  trainer/plain sparse {result['sparse_ratio']:.3f}x (range {min(sparse_ratios):.3f}-"
        f"{max(sparse_ratios):.3f}; fastest runs {result['sparse_ratio_of_best']:.3f}x)\n"
        f"  mask hook: {100 * result['hook_share']:.1f}% of a sparse level's training time (range "
        f"{100 * min(hook_shares):.1f}..{100 * max(hook_shares):.1f}%; fastest runs "
        f"{100 * result['hook_share_of_best']:.1f}%)",
        flush=True,
    )
    return result


def main() -> None:
    """Parse arguments and run both benchmarks."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the four timed runs")
    parser.add_argument("--lenet-iterations", type=int, default=300)
    parser.add_argument("--conv2-iterations", type=int, default=30)
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu", help="cpu: process time; wall")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, Adam {LR}, "
        f"{args.clock} clock",
        flush=True,
    )
    mnist5k = load_dataset("mnist5k", "data", download=False, seed=0)
    bench("LeNet-300-100 mnist5k", "lenet_300_100", mnist5k, args.lenet_iterations, args.rounds, clock)
    bench("Conv-2 random 3x32x32", "conv2", random_images(600, 10), args.conv2_iterations, args.rounds, clock)


if __name__ == "__main__":
    main()
