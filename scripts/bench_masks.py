"""Throughput of the mask-aware policies against plain Stable-Baselines3.

For PPO on CartPole-v1, DQN on CartPole-v1 and SAC on Pendulum-v1 (rl-baselines3-zoo hyperparameters
from ``conf/zoo``), this trains the masked agent (our ``POLICIES`` class with a real ~80%-sparse mask
applied by ``set_masks``) and the plain agent (SB3's ``"MlpPolicy"``) on the same env and seed, in
alternating pairs (masked first, then plain first, ...), and times ``learn()`` alone. It reports the
median masked/plain ratio of environment steps per second with its spread, and checks that after
training the masked agent has exact zeros where its mask says (online and target networks), that
gradient updates happened and that Adam's first moment is 0 at pruned positions (pruned weights get no
gradient: it is zeroed during backward, before SB3 clips the norm).

Exit status: 0 all good; 1 a masked weight is not zero, a mask drifted or no update happened;
3 a median ratio is below ``--bar`` (not checked with ``--quick``).

Examples::

    python scripts/bench_masks.py                 # 5 pairs per algorithm, the README numbers
    python scripts/bench_masks.py --quick         # 1 short pair per algorithm: smoke test
    python scripts/bench_masks.py --algos sac --pairs 7 --steps sac=3000 --threads 1
    python scripts/bench_masks.py --fused-adam    # both agents on PyTorch's fused Adam
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env

from rl_tickets.rl.agents import ACTIVATIONS, to_schedule
from rl_tickets.rl.policies import POLICIES, policy_optimizers
from rl_tickets.sparsity.masks import Mask, dense_mask, density, is_target, online_name, read_mask, set_masks
from rl_tickets.sparsity.pruning import PruneSpec, next_mask

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "dqn": DQN, "sac": SAC}
# Target networks each algorithm must have (their weights are checked against the online mask).
TARGETS: dict[str, tuple[str, ...]] = {"ppo": (), "dqn": ("q_net_target.",), "sac": ("critic_target.",)}
EXIT_INVARIANT, EXIT_BAR = 1, 3


@dataclass(frozen=True)
class Case:
    """One benchmarked algorithm-and-env pair.

    :param algo: SB3 algorithm key (``ppo``, ``dqn``, ``sac``).
    :param env_id: Gymnasium id.
    :param zoo: file stem under ``conf/zoo``.
    :param steps: environment steps per timed ``learn()``.
    :param quick_steps: steps per run with ``--quick``.
    :param overrides: hyperparameters replacing the zoo's (so a short run really trains).
    """

    algo: str
    env_id: str
    zoo: str
    steps: int
    quick_steps: int
    overrides: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "ppo": Case("ppo", "CartPole-v1", "ppo_cartpole", 20_000, 4_096),
    # zoo: learning_starts 1000, then 128 gradient steps every 256 env steps.
    "dqn": Case("dqn", "CartPole-v1", "dqn_cartpole", 16_000, 2_000, {"learning_starts": 500}),
    "sac": Case("sac", "Pendulum-v1", "sac_pendulum", 1_000, 300, {"learning_starts": 100}),
}


@dataclass
class Run:
    """One timed ``learn()``.

    :param variant: ``masked`` or ``plain``.
    :param steps: environment steps actually taken (``num_timesteps``).
    :param seconds: wall time of ``learn()`` (``time.perf_counter``).
    :param cpu_seconds: CPU time of this process during ``learn()`` (``time.process_time``).
    :param updates: ``model._n_updates`` after training.
    """

    variant: str
    steps: int
    seconds: float
    cpu_seconds: float
    updates: int

    @property
    def rate(self) -> float:
        """Environment steps per wall-clock second."""
        return self.steps / self.seconds

    @property
    def cpu_rate(self) -> float:
        """Environment steps per CPU second (insensitive to time spent waiting for a busy CPU)."""
        return self.steps / self.cpu_seconds


@dataclass
class Result:
    """All pairs of one case, with the masked agent's final check.

    :param case: what was run.
    :param pairs: ``(masked, plain)`` runs in the order they were timed.
    :param mask_density: fraction of prunable weights kept by the mask.
    :param problems: invariant violations found after training (empty when all holds).
    """

    case: Case
    pairs: list[tuple[Run, Run]] = field(default_factory=list)
    mask_density: float = 1.0
    problems: list[str] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        """Masked/plain wall-clock steps-per-second ratio of each pair (the benchmarked number)."""
        return [masked.rate / plain.rate for masked, plain in self.pairs]

    @property
    def cpu_ratios(self) -> list[float]:
        """Masked/plain CPU-time steps-per-second ratio of each pair (a cross-check on busy machines)."""
        return [masked.cpu_rate / plain.cpu_rate for masked, plain in self.pairs]


def zoo_dir() -> Path:
    """``conf/zoo`` of this checkout, or the copy shipped inside the installed package."""
    local = Path(__file__).resolve().parents[1] / "conf" / "zoo"
    return local if local.is_dir() else Path(str(resources.files("rl_tickets.conf") / "zoo"))


def load_zoo(
    case: Case, directory: Path, fused_adam: bool = False
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Constructor kwargs, policy kwargs and ``n_envs`` from the zoo file, with the case's overrides.

    :param case: the benchmarked pair.
    :param directory: the ``conf/zoo`` directory.
    :param fused_adam: ask for PyTorch's fused Adam (``optimizer_kwargs={"fused": True}``).
    """
    raw = OmegaConf.to_container(OmegaConf.load(directory / f"{case.zoo}.yaml"), resolve=True)
    assert isinstance(raw, dict)
    algo = raw.get("algo", {})
    hyperparams = {k: to_schedule(v) for k, v in {**algo.get("hyperparams", {}), **case.overrides}.items()}
    policy_kwargs = dict(algo.get("policy_kwargs", {}))
    if isinstance(policy_kwargs.get("activation_fn"), str):
        policy_kwargs["activation_fn"] = ACTIVATIONS[policy_kwargs["activation_fn"]]
    if fused_adam:
        policy_kwargs["optimizer_kwargs"] = {**policy_kwargs.get("optimizer_kwargs", {}), "fused": True}
    return hyperparams, policy_kwargs, int(raw.get("env", {}).get("n_envs", 1))


def build(case: Case, masked: bool, seed: int, zoo: Path, fused_adam: bool = False) -> BaseAlgorithm:
    """A fresh agent: our mask-aware policy class or SB3's ``MlpPolicy``, same env and seed.

    :param case: the benchmarked pair.
    :param masked: use ``POLICIES[algo]`` instead of ``"MlpPolicy"``.
    :param seed: env and network seed.
    :param zoo: the ``conf/zoo`` directory.
    :param fused_adam: use PyTorch's fused Adam.
    """
    hyperparams, policy_kwargs, n_envs = load_zoo(case, zoo, fused_adam)
    env = make_vec_env(case.env_id, n_envs=n_envs, seed=seed)
    policy = POLICIES[case.algo] if masked else "MlpPolicy"
    return ALGOS[case.algo](
        policy, env, seed=seed, device="cpu", verbose=0, policy_kwargs=policy_kwargs, **hyperparams
    )


def make_mask(model: BaseAlgorithm, sparsity: float, criterion: str, seed: int) -> Mask:
    """A one-shot mask removing ``sparsity`` of every online weight tensor, ranked by ``criterion``.

    :param model: an agent with a mask-aware policy.
    :param sparsity: fraction of prunable weights removed.
    :param criterion: ``magnitude`` (of the initial weights) or ``random``.
    :param seed: seed of the random criterion.
    """
    names = read_mask(model.policy).keys()
    params = dict(model.policy.named_parameters())
    weights = {n: params[n].detach().cpu() for n in names}
    spec = PruneSpec(rate=sparsity, scope="layer", criterion=criterion)
    return next_mask(
        spec, weights, weights, dense_mask(weights), generator=torch.Generator().manual_seed(seed)
    )


def timed_learn(model: BaseAlgorithm, steps: int, variant: str) -> Run:
    """Time ``model.learn(steps)`` alone (wall clock).

    :param model: the agent.
    :param steps: environment steps to train.
    :param variant: label of the run.
    """
    gc.collect()
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(steps)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return Run(variant, model.num_timesteps, seconds, cpu_seconds, int(getattr(model, "_n_updates", 0)))


def check_masked(model: BaseAlgorithm, mask: Mask, before: dict[str, torch.Tensor], algo: str) -> list[str]:
    """Invariant violations of a trained masked agent; empty when everything holds.

    Every pruned weight is exactly 0.0 in the online network and its target twin, the mask buffers
    still hold the mask, gradient updates happened, live weights moved and Adam's first moment is 0
    at pruned positions.

    :param model: the trained masked agent.
    :param mask: the mask applied before training.
    :param before: online prunable weights right after the mask was applied.
    :param algo: algorithm key (which target networks must exist).
    """
    problems: list[str] = []
    policy = model.policy
    if model._n_updates <= 0:
        problems.append(f"no gradient update happened (_n_updates={model._n_updates})")
    held = read_mask(policy)
    problems += [f"mask buffer of {n} drifted" for n in mask if not torch.equal(held[n], mask[n])]
    checked_targets: set[str] = set()
    for name, param in policy.named_parameters():
        online = online_name(name)
        if online not in mask:
            continue
        alive = param.detach().cpu()[~mask[online]]
        if alive.count_nonzero():
            problems.append(f"{name}: {int(alive.count_nonzero())} pruned weights are not exactly zero")
        if is_target(name):
            checked_targets.add(name.split(".")[0] + ".")
        elif torch.equal(param.detach().cpu(), before[name]):
            problems.append(f"{name}: weights did not change during training")
    problems += [
        f"target network {t} not found or not masked" for t in TARGETS[algo] if t not in checked_targets
    ]
    # Pruned weights have no gradient, so Adam's first moment stays exactly 0 there (issue 20).
    named = dict(policy.named_parameters())
    for optimizer in policy_optimizers(policy):
        for name in mask:
            state = optimizer.state.get(named[name], {})
            if "exp_avg" in state and state["exp_avg"].detach().cpu()[~mask[name]].count_nonzero():
                problems.append(f"{name}: Adam's exp_avg is not 0 at pruned positions")
    return problems


def run_pair(
    case: Case, steps: int, seed: int, masked_first: bool, args: argparse.Namespace
) -> tuple[Run, Run, BaseAlgorithm, Mask, dict[str, torch.Tensor]]:
    """Build and time one masked and one plain agent, in the given order.

    :param case: the benchmarked pair.
    :param steps: environment steps per run.
    :param seed: the shared seed.
    :param masked_first: time the masked agent first.
    :param args: the CLI options (sparsity, criterion, zoo directory).
    :returns: the masked and plain runs, the trained masked agent, its mask and its weights before training.
    """
    runs: dict[str, Run] = {}
    masked_model, mask, before = None, {}, {}
    for variant in ("masked", "plain") if masked_first else ("plain", "masked"):
        model = build(case, variant == "masked", seed, args.zoo, args.fused_adam)
        if variant == "masked":
            mask = make_mask(model, args.sparsity, args.criterion, seed)
            set_masks(model.policy, mask)
            params = dict(model.policy.named_parameters())
            before = {n: params[n].detach().cpu().clone() for n in mask}
            masked_model = model
        runs[variant] = timed_learn(model, steps, variant)
        model.get_env().close()
    assert masked_model is not None
    return runs["masked"], runs["plain"], masked_model, mask, before


def bench(case: Case, steps: int, pairs: int, args: argparse.Namespace) -> Result:
    """Warm up, then time ``pairs`` alternating pairs and check the masked agent of each pair.

    :param case: the benchmarked pair.
    :param steps: environment steps per run.
    :param pairs: number of pairs.
    :param args: the CLI options.
    """
    result = Result(case)
    if args.warmup and not args.quick:
        run_pair(case, case.quick_steps, args.seed, True, args)
    for index in range(pairs):
        masked, plain, model, mask, before = run_pair(case, steps, args.seed, index % 2 == 0, args)
        result.pairs.append((masked, plain))
        result.mask_density = density(mask)
        result.problems += [f"pair {index}: {p}" for p in check_masked(model, mask, before, case.algo)]
        if plain.updates <= 0:
            result.problems.append(f"pair {index}: plain agent made no gradient update")
        print(
            f"  {case.algo} pair {index + 1}/{pairs} ({'masked' if index % 2 == 0 else 'plain'} first): "
            f"masked {masked.rate:7.1f}/s  plain {plain.rate:7.1f}/s  ratio {masked.rate / plain.rate:.3f}  "
            f"(cpu-time ratio {masked.cpu_rate / plain.cpu_rate:.3f})  "
            f"updates {masked.updates}/{plain.updates}",
            flush=True,
        )
    return result


def spread(values: Sequence[float]) -> tuple[float, float, float, float, float]:
    """Median, min, max and the interquartile range (q1, q3) of ``values``.

    :param values: at least one number.
    """
    if len(values) < 2:
        v = values[0]
        return v, v, v, v, v
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), min(values), max(values), q1, q3


def table(results: Sequence[Result], bar: float) -> str:
    """A markdown table of the measured numbers.

    :param results: one per benchmarked case.
    :param bar: the minimum median ratio.
    """
    lines = [
        "| algo | env | steps/run | pairs | density | plain steps/s | masked steps/s "
        "| ratio median | min | max | IQR | cpu-time ratio median | zeros + updates | bar |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for r in results:
        med, low, high, q1, q3 = spread(r.ratios)
        plain = statistics.median(p.rate for _, p in r.pairs)
        masked = statistics.median(m.rate for m, _ in r.pairs)
        lines.append(
            f"| {r.case.algo.upper()} | {r.case.env_id} | {r.pairs[0][0].steps} | {len(r.pairs)} "
            f"| {r.mask_density:.3f} | {plain:.0f} | {masked:.0f} | **{med:.3f}** | {low:.3f} | {high:.3f} "
            f"| {q1:.3f}-{q3:.3f} | {statistics.median(r.cpu_ratios):.3f} | {'ok' if not r.problems else 'FAIL'} | {'ok' if med >= bar else 'MISS'} |"
        )
    return "\n".join(lines)


def parse_steps(items: Sequence[str]) -> dict[str, int]:
    """``["ppo=20000", "sac=1000"]`` -> ``{"ppo": 20000, "sac": 1000}``.

    :param items: ``ALGO=STEPS`` strings.
    """
    out: dict[str, int] = {}
    for item in items:
        algo, _, value = item.partition("=")
        if algo not in CASES or not value.isdigit() or int(value) <= 0:
            raise argparse.ArgumentTypeError(
                f"--steps {item!r}: expected ALGO=N with ALGO in {sorted(CASES)}"
            )
        out[algo] = int(value)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line.

    :param argv: arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", nargs="+", choices=sorted(CASES), default=list(CASES), help="what to run")
    parser.add_argument("--pairs", type=int, default=7, help="alternating masked/plain pairs (default 7)")
    defaults = " ".join(f"{a}={c.steps}" for a, c in CASES.items())
    parser.add_argument(
        "--steps", nargs="+", default=[], metavar="ALGO=N", help=f"env steps per run (default {defaults})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed shared by both agents of every pair")
    parser.add_argument(
        "--sparsity", type=float, default=0.8, help="fraction of weights pruned (default 0.8)"
    )
    parser.add_argument("--criterion", choices=("magnitude", "random"), default="magnitude")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads; 0 keeps torch's default (default 1: on a busy 2-core machine torch's "
        "own threads spin against other processes and every run gets 10-25x slower)",
    )
    parser.add_argument("--bar", type=float, default=0.97, help="minimum median ratio (default 0.97)")
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="skip the untimed warm-up pair"
    )
    parser.add_argument("--quick", action="store_true", help="1 short pair per algorithm; bar not enforced")
    parser.add_argument(
        "--fused-adam",
        action="store_true",
        help="both agents use PyTorch's fused Adam (optimizer_kwargs fused=True) instead of SB3's default",
    )
    parser.add_argument(
        "--zoo", type=Path, default=None, help="conf/zoo directory (default: this checkout's)"
    )
    args = parser.parse_args(argv)
    try:
        args.steps = parse_steps(args.steps)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if not 0.0 < args.sparsity < 1.0 or args.pairs < 1:
        parser.error("--sparsity must be in (0, 1) and --pairs at least 1")
    args.zoo = args.zoo or zoo_dir()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and return the exit status.

    :param argv: arguments (default ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = 1 if args.quick else args.pairs
    adam = "fused" if args.fused_adam else "default"
    print(
        f"torch threads {torch.get_num_threads()}, pairs {pairs}, "
        f"sparsity {args.sparsity} ({args.criterion}), Adam {adam}"
    )
    results = []
    for algo in args.algos:
        case = CASES[algo]
        if args.quick:
            case = replace(case, steps=case.quick_steps)
        results.append(bench(case, args.steps.get(algo, case.steps), pairs, args))
    print()
    print(table(results, args.bar))
    problems = [f"{r.case.algo}: {p}" for r in results for p in r.problems]
    for problem in problems:
        print(f"INVARIANT BROKEN {problem}", file=sys.stderr)
    if problems:
        return EXIT_INVARIANT
    missed = [r.case.algo for r in results if spread(r.ratios)[0] < args.bar]
    if missed and not args.quick:
        print(f"median ratio below {args.bar} for {', '.join(missed)}", file=sys.stderr)
        return EXIT_BAR
    return 0


if __name__ == "__main__":
    sys.exit(main())
