"""What a chain costs: whole ``rl-tickets`` processes against plain Stable-Baselines3, serial against
``workers=2``, and a cost table for planning a study.

(a) **Overhead over plain SB3.** The default job's dense level (``rl-tickets prune.levels=0``) and one
    pruned level (``prune.levels=1`` on the same root: only level 1 trains) against a plain SB3 process
    that builds ``PPO("MlpPolicy")`` with the same composed hyperparameters and runs ``learn()`` for the
    same steps, without evaluation. Whole processes (interpreter start, imports, Hydra, evaluation,
    saving included), in alternating order, one torch thread each. Reports the median ratio, its
    spread, and the level's time breakdown from its metrics.json. Bar: median <= 1.10.
(b) **Parallel variants.** A 2-level chain with 3 trained controls (``reinit, random_mask, permute``)
    at ``workers=1`` and ``workers=2``, each in a fresh root, in alternating order; checks that both
    give the same levels.csv (time columns aside). Bar: median speedup >= 1.5x.
(c) **Cost table.** A chain's wall time for levels x controls, projected from (a)'s measured
    per-level cost and process overhead, for 1 and 2 workers (the ticket chain or the work shared
    among the workers, whichever is longer); (b)'s measured chain is printed beside its projection.

Exit status: 0 both bars met; 1 workers=2 gave other results than workers=1; 3 a bar is missed
(not checked with ``--quick``).

Examples::

    python scripts/bench_chain.py                    # the README's numbers (about 16 min on 2 cores)
    python scripts/bench_chain.py --quick            # tiny budgets, one round each: a smoke test
    python scripts/bench_chain.py --pairs 5 --chain-rounds 2 --out bench_chain.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl_tickets.chain.tables import TIME_COLUMNS
from rl_tickets.timing import TIME_KEYS

EXIT_MISMATCH, EXIT_BAR = 1, 3
OVERHEAD_BAR, SPEEDUP_BAR = 1.10, 1.5
CONTROLS = "[reinit,random_mask,permute]"
QUICK_STEPS = 4096


@dataclass
class Timed:
    """One whole process: its wall time and, for ours, the trained levels' metrics.json time records.

    :param seconds: wall time of the process.
    :param levels: ``time`` records of the levels it trained.
    """

    seconds: float
    levels: list[dict[str, float]]


def run_process(args: Sequence[str]) -> float:
    """Run a command to completion (output discarded unless it fails); its wall seconds.

    :param args: the command line.
    """
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def ours(root: Path, overrides: Sequence[str]) -> Timed:
    """``rl-tickets root=ROOT ...`` as a process; the time records of the levels it trained (newest files).

    :param root: results root.
    :param overrides: Hydra overrides.
    """
    before = {p: p.stat().st_mtime for p in root.rglob("metrics.json")} if root.exists() else {}
    seconds = run_process(
        [sys.executable, "-m", "rl_tickets", f"root={root}", "logger.mode=disabled", *overrides]
    )
    trained = [p for p in root.rglob("metrics.json") if before.get(p) != p.stat().st_mtime]
    return Timed(seconds, [json.loads(p.read_text())["time"] for p in trained])


def plain_learn(overrides: Sequence[str]) -> None:
    """The plain SB3 process: compose the same config, build SB3's own PPO/A2C/... with its
    hyperparameters and run ``learn()`` for the budget (what (a) compares against)."""
    import torch
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf
    from stable_baselines3.common.env_util import make_vec_env

    from rl_tickets.config import Config, register_schemas
    from rl_tickets.rl.agents import ALGOS, to_schedule

    torch.set_num_threads(1)  # as rl-tickets does for MLP agents
    register_schemas()
    with initialize_config_module(config_module="rl_tickets.conf", version_base="1.3"):
        cfg: Config = OmegaConf.to_object(compose(config_name="config", overrides=list(overrides)))  # type: ignore[assignment]
    hyperparams = {k: to_schedule(v) for k, v in cfg.algo.hyperparams.items()}
    env = make_vec_env(cfg.env.id, n_envs=cfg.env.n_envs, seed=cfg.seed)
    model = ALGOS[cfg.algo.name](
        "MlpPolicy",
        env,
        seed=cfg.seed,
        device="cpu",
        policy_kwargs=dict(cfg.algo.policy_kwargs),
        **hyperparams,
    )
    model.learn(cfg.train.timesteps)


def plain(overrides: Sequence[str]) -> Timed:
    """The plain SB3 learn() as a whole process.

    :param overrides: the same Hydra overrides as ours.
    """
    return Timed(run_process([sys.executable, __file__, "--plain", *overrides]), [])


def spread(values: Sequence[float]) -> str:
    """``median (min-max)``."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def overhead(pairs: int, budget: Sequence[str], work: Path) -> dict[str, Any]:
    """(a): ours (dense level, then one pruned level) against plain SB3, ``pairs`` alternating rounds.

    :param pairs: rounds.
    :param budget: overrides applied to every process (e.g. a shorter budget for --quick).
    :param work: scratch directory.
    """
    runs: dict[str, list[Timed]] = {"dense": [], "pruned": [], "plain": []}
    for index in range(pairs):
        root = work / f"overhead_{index}"
        steps = [
            ("dense", lambda r=root: ours(r, ["prune.levels=0", *budget])),
            ("pruned", lambda r=root: ours(r, ["prune.levels=1", *budget])),
        ]
        order = (
            [("plain", lambda: plain(budget)), *steps]
            if index % 2 == 0
            else [*steps, ("plain", lambda: plain(budget))]
        )
        for name, action in order:
            runs[name].append(action())
            print(f"  (a) round {index}: {name} {runs[name][-1].seconds:.1f} s", flush=True)
    result: dict[str, Any] = {"plain_s": [t.seconds for t in runs["plain"]]}
    for name in ("dense", "pruned"):
        ratios = [
            ours_run.seconds / plain_run.seconds for ours_run, plain_run in zip(runs[name], runs["plain"])
        ]
        breakdown = {key: statistics.median(t.levels[0][key] for t in runs[name]) for key in TIME_KEYS}
        result[name] = {
            "seconds": [t.seconds for t in runs[name]],
            "ratios": ratios,
            "median_ratio": statistics.median(ratios),
            "time": breakdown,
            "outside_level_s": statistics.median(t.seconds - t.levels[0]["total_s"] for t in runs[name]),
        }
    return result


def levels_without_time(path: Path) -> list[dict[str, str]]:
    """levels.csv rows without its time columns (what must be equal for any number of workers)."""
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in csv.DictReader(handle)]


def parallel(rounds: int, budget: Sequence[str], work: Path) -> dict[str, Any]:
    """(b): the same 2-level chain with 3 controls at workers=1 and workers=2, alternating.

    :param rounds: rounds (each trains the chain twice).
    :param budget: overrides applied to every process.
    :param work: scratch directory.
    """
    times: dict[int, list[float]] = {1: [], 2: []}
    tables: dict[int, list[dict[str, str]]] = {}
    for index in range(rounds):
        for workers in (1, 2) if index % 2 == 0 else (2, 1):
            root = work / f"parallel_{index}_w{workers}"
            timed = ours(root, ["prune.levels=2", f"controls={CONTROLS}", f"workers={workers}", *budget])
            times[workers].append(timed.seconds)
            tables[workers] = levels_without_time(next(root.glob("chains/*/seed_0/levels.csv")))
            print(f"  (b) round {index}: workers={workers} {timed.seconds:.1f} s", flush=True)
    speedups = [one / two for one, two in zip(times[1], times[2])]
    return {
        "workers_1_s": times[1],
        "workers_2_s": times[2],
        "speedups": speedups,
        "median_speedup": statistics.median(speedups),
        "same_results": tables[1] == tables[2],
    }


def projected(
    levels: int, controls: int, level_s: float, dense_s: float, outside_s: float, workers: int
) -> float:
    """A chain's wall seconds: a process's fixed cost, the dense level, then ``levels x (1 + controls)``
    trainings of ``level_s`` each, on ``workers`` processes. The controls of a level may train beside its
    ticket, so with several workers the chain takes the longer of the ticket chain (``levels`` trainings
    one after another) and the total work shared among the workers."""
    trainings = levels * (1 + controls)
    return outside_s + dense_s + max(levels * level_s, trainings * level_s / workers)


def cost_table(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """(c) as markdown lines: minutes per chain (one seed) for levels x trained controls, workers 1 and 2."""
    level_s, dense_s = a["pruned"]["time"]["total_s"], a["dense"]["time"]["total_s"]
    outside_s = a["dense"]["outside_level_s"]
    lines = [
        "| levels | controls | workers=1 (min) | workers=2 (min) |",
        "|---:|---:|---:|---:|",
    ]
    for levels in (3, 10, 20):
        for controls in (0, 1, 3, 5):
            one, two = (projected(levels, controls, level_s, dense_s, outside_s, w) / 60 for w in (1, 2))
            lines.append(f"| {levels} | {controls} | {one:.1f} | {two:.1f} |")
    for workers in (1, 2):
        model = projected(2, 3, level_s, dense_s, outside_s, workers)
        measured = statistics.median(b[f"workers_{workers}_s"])
        lines.append(
            f"\ncheck: levels=2, 3 controls, workers={workers}: projected {model:.0f} s, measured {measured:.0f} s"
        )
    return lines


def report(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The README's tables as markdown lines."""
    lines = [
        "(a) ours / plain SB3, whole processes",
        "",
        "| level | plain s (median) | ours s (median) | ratio median (min-max) | train_s | eval_s | save_s | prune_s | total_s | outside the level s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("dense", "pruned"):
        r, t = a[name], a[name]["time"]
        lines.append(
            f"| {name} | {statistics.median(a['plain_s']):.1f} | {statistics.median(r['seconds']):.1f} | "
            f"{spread(r['ratios'])} | {t['train_s']:.1f} | {t['eval_s']:.1f} | {t['save_s']:.2f} | "
            f"{t['prune_s']:.2f} | {t['total_s']:.1f} | {r['outside_level_s']:.1f} |"
        )
    lines += [
        "",
        "(b) 2 levels, 3 controls, whole processes",
        "",
        "| workers=1 s | workers=2 s | speedup median (min-max) | same levels.csv |",
        "|---|---|---|---|",
        f"| {', '.join(f'{s:.0f}' for s in b['workers_1_s'])} | {', '.join(f'{s:.0f}' for s in b['workers_2_s'])} "
        f"| {spread(b['speedups'])} | {b['same_results']} |",
        "",
        "(c) projected minutes per chain and seed",
        "",
        *cost_table(a, b),
    ]
    return lines


def machine_state() -> dict[str, Any]:
    """Load average and other rl-tickets processes (the benchmark wants the machine to itself)."""
    found = subprocess.run(["pgrep", "-af", "bin/rl-tickets"], capture_output=True, text=True).stdout.strip()
    return {"loadavg": os.getloadavg(), "cpus": os.cpu_count(), "other_rl_tickets": found.splitlines()}


def main(argv: Sequence[str] | None = None) -> int:
    """Run (a), (b), (c); print the tables; exit 3 if a bar is missed, 1 if the results differ."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="(a) alternating rounds")
    parser.add_argument("--chain-rounds", type=int, default=2, help="(b) alternating rounds")
    parser.add_argument("--steps", type=int, default=None, help="train.timesteps (default: the job's)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps, one round each, no bars")
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    steps = QUICK_STEPS if args.quick and args.steps is None else args.steps
    budget = [f"train.timesteps={steps}"] if steps else []
    pairs, rounds = (1, 1) if args.quick else (args.pairs, args.chain_rounds)
    before = machine_state()
    if before["other_rl_tickets"]:
        print(f"warning: other rl-tickets processes are running: {before['other_rl_tickets']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_chain_") as scratch:
        a = overhead(pairs, budget, Path(scratch))
        b = parallel(rounds, budget, Path(scratch))
    lines = report(a, b)
    print("\n".join(lines))
    if args.out:
        record = {
            "a": a,
            "b": b,
            "budget": budget,
            "machine_before": before,
            "machine_after": machine_state(),
        }
        args.out.write_text(json.dumps(record, indent=2))
    if not b["same_results"]:
        print("workers=2 gave other results than workers=1", file=sys.stderr)
        return EXIT_MISMATCH
    if args.quick:
        return 0
    missed = a["dense"]["median_ratio"] > OVERHEAD_BAR or a["pruned"]["median_ratio"] > OVERHEAD_BAR
    missed = missed or b["median_speedup"] < SPEEDUP_BAR
    return EXIT_BAR if missed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--plain":
        plain_learn(sys.argv[2:])
    else:
        sys.exit(main())
