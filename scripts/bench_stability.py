"""What one (k, level) pair of the instability analysis costs, against one level's training.

For each task (``ppo``: the default job, PPO on CartPole-v1 with rl-baselines3-zoo's settings, 100,000
steps, 10 evaluation episodes every 25,000 steps; ``lenet``: ``experiment=lth_lenet_mnist5k``,
LeNet-300-100 on mnist5k, 3,000 iterations), each round times a level, a pair and a level again (the
level's cost is the mean of the two that bracket the pair, so load that drifts during a round hits both
sides alike):

- ``level``: :meth:`Trainer.train` of the dense level from a fresh network over the whole budget, with
  its periodic and final evaluations and its saving: what one level of a chain costs to train;
- ``pair``: :func:`rl_tickets.stability.pairs.train_pair` at k = 0 (two copies over the whole budget,
  the most expensive k, evaluated at their end only, as ``task=stability`` trains them) plus :func:`rl_tickets.stability.pairs.evaluate_path` at the default 11 alphas
  (RL: ``eval.episodes`` deterministic episodes per alpha; supervised: the test split per alpha).

The bar (issue 23): the median of the per-round ratios pair / level is at most 2.2. Also reported: the
path evaluation's seconds and share. The clock is ``time.process_time`` by default (this process's CPU
time, which other jobs on a shared machine barely disturb) with one torch thread; ``--clock wall`` uses
``time.perf_counter``.

Usage::

    python scripts/bench_stability.py [--tasks ppo lenet] [--rounds 3] [--clock cpu] [--out bench_stability.json]
        [--overrides train.timesteps=4096]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rl_tickets.config import Config, register_schemas
from rl_tickets.level import LevelPlan, Trainer, snapshot_file
from rl_tickets.stability.analysis import EVALUATORS
from rl_tickets.stability.pairs import PairSpec, evaluate_path, train_pair
from rl_tickets.stability.settings import alphas
from rl_tickets.trainers import build_trainer

BAR = 2.2
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
TASKS: dict[str, list[str]] = {"ppo": [], "lenet": ["experiment=lth_lenet_mnist5k"]}


def composed(overrides: list[str], root: Path) -> Config:
    """The config ``rl-tickets`` would run with these overrides (W&B off).

    :param overrides: command-line overrides.
    :param root: results root.
    """
    register_schemas()
    with initialize_config_module(config_module="rl_tickets.conf", version_base="1.3"):
        node = compose(config_name="config", overrides=[*overrides, f"root={root}", "logger.mode=disabled"])
    return OmegaConf.to_object(node)  # type: ignore[return-value]


def initial_snapshot(trainer: Trainer, directory: Path, seed: int) -> Path:
    """A fresh network's state at step 0 (what a pair at k = 0 starts from), made once, untimed.

    :param trainer: the task's trainer.
    :param directory: where to write it.
    :param seed: the network's seed.
    """
    directory.mkdir(parents=True)
    trainer.train(LevelPlan(start=None, steps=1, mask=None, seed=seed, snapshot_steps=(0,)), directory)
    return snapshot_file(directory, 0, Path(trainer.checkpoint_name).suffix)


def one_round(
    trainer: Trainer, pairs: Trainer, start: Path, root: Path, seed: int, clock: Callable[[], float]
) -> dict[str, float]:
    """Time a level, a pair (k = 0, dense) and a level again: the level's cost is the mean of the two
    that bracket the pair, so a load that drifts during the round hits both sides alike.

    :param trainer: the task's trainer (a chain's levels).
    :param pairs: the trainer of the copies (as ``task=stability`` builds it: evaluation at the end only).
    :param start: the state at step 0 the pair's copies start from.
    :param root: a scratch directory for this round.
    :param seed: the round's seed.
    :param clock: the clock.
    """
    evaluator = EVALUATORS[task_of(pairs)](pairs)
    levels = []
    for side in ("before", "after"):
        if side == "after":
            spec = PairSpec(0, 0, start, None, None, 1.0, (seed + 1, seed + 2))
            began = clock()
            train_pair(pairs, spec, root / "pair", start.parent)
            trained = clock()
            evaluate_path(root / "pair", evaluator, pairs.checkpoint_name, None, alphas(11))
            path, pair = clock() - trained, clock() - began
        (root / side).mkdir(parents=True)
        began = clock()
        trainer.train(LevelPlan(start=None, steps=trainer.budget, mask=None, seed=seed), root / side)
        levels.append(clock() - began)
    level = sum(levels) / 2
    return {
        "level_before": levels[0],
        "level_after": levels[1],
        "level": level,
        "path": path,
        "pair": pair,
        "ratio": pair / level,
    }


def task_of(trainer: Trainer) -> str:
    """``rl`` or ``supervised`` (the key of the path evaluators)."""
    return "supervised" if trainer.unit == "iterations" else "rl"


def bench(task: str, rounds: int, clock: Callable[[], float], extra: list[str]) -> dict[str, Any]:
    """Alternating rounds of level vs pair for one task.

    :param task: ``ppo`` or ``lenet``.
    :param rounds: rounds.
    :param clock: the clock.
    :param extra: further overrides (a quick check: ``train.timesteps=4096``).
    """
    with tempfile.TemporaryDirectory() as scratch:
        cfg = composed([*TASKS[task], *extra], Path(scratch))
        trainer = build_trainer(cfg)
        pairs = build_trainer(replace(cfg, eval=replace(cfg.eval, every=0)))  # as the stability job does
        start = initial_snapshot(trainer, Path(scratch) / "start", cfg.seed)
        results = []
        for i in range(rounds):
            where = Path(scratch) / f"round_{i}"
            results.append(one_round(trainer, pairs, start, where, cfg.seed + i, clock))
            print(
                f"{task} round {i}: " + ", ".join(f"{k} {v:.2f}" for k, v in results[-1].items()), flush=True
            )
    median = {k: statistics.median(r[k] for r in results) for k in results[0]}
    return {
        "task": task,
        "budget": trainer.budget,
        "eval_episodes": cfg.eval.episodes,
        "rounds": results,
        "median": median,
        "ratio_range": [min(r["ratio"] for r in results), max(r["ratio"] for r in results)],
        "path_share_median": statistics.median(r["path"] / r["pair"] for r in results),
        "bar": BAR,
        "passes": median["ratio"] <= BAR,
    }


def main() -> None:
    """Run the benchmark and print one line per task."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--overrides", nargs="*", default=[], help="extra overrides for every task (quick checks)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    report = {
        "clock": args.clock,
        "tasks": [bench(t, args.rounds, CLOCKS[args.clock], args.overrides) for t in args.tasks],
    }
    report["wall_s"] = time.perf_counter() - started
    for r in report["tasks"]:
        m = r["median"]
        print(
            f"{r['task']}: level {m['level']:.1f} s, pair {m['pair']:.1f} s (path {m['path']:.2f} s, "
            f"{100 * r['path_share_median']:.1f}%), ratio {m['ratio']:.3f} (range {r['ratio_range'][0]:.3f}-"
            f"{r['ratio_range'][1]:.3f}; bar {BAR}: {'passes' if r['passes'] else 'FAILS'})"
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
