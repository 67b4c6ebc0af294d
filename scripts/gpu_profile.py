"""Host-device copies per optimizer step, with and without masks (torch.profiler).

For PPO and DQN with the MinAtar CNN (MinAtar/Breakout-v1) on ``--device``, each variant is built
with the same seed, warmed up by a short ``learn()`` (which fills the rollout or replay buffer), and
then one call of SB3's own ``train()`` is profiled:

- ``plain``: SB3's policy class with the same MinAtar CNN (no mask machinery at all);
- ``masked``: rl_tickets' mask-aware policy with 80% of every layer pruned (``set_masks``: the
  post-step re-zeroing and the gradient hooks are active).

Counted per optimizer step (``Optimizer.step#...`` events): CUDA memcpy activities host-to-device and
device-to-host (none exist on a CPU), and the operator calls that force a device-to-host sync
(``aten::_local_scalar_dense``: ``.item()``, ``bool()``; SB3's own loss logging makes some). The
difference masked - plain is what the masks cost in copies.

Usage::

    python scripts/gpu_profile.py --device cuda [--tiny] [--out profile.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from torch.profiler import ProfilerActivity, profile

from rl_tickets.config import AlgoConfig, EnvConfig
from rl_tickets.rl.agents import AgentBuilder
from rl_tickets.rl.envs import make_env
from rl_tickets.sparsity.masks import read_mask, set_masks

CONF = Path(__file__).resolve().parents[1] / "conf"
SPARSITY = 0.8
# Small buffers and an early start: the profile needs a filled buffer, not a trained agent.
OVERRIDES = {"dqn": {"learning_starts": 256, "buffer_size": 4096}, "ppo": {}}
# (warm-up env steps, DQN gradient steps profiled), full and tiny. 128 steps span two of the masks'
# periodic second-moment floors (every 64 optimizer steps), so their cost is counted too.
SIZES = {False: (2048, 128), True: (320, 8)}


def configs(algo: str, tiny: bool) -> tuple[AlgoConfig, EnvConfig]:
    """The MinAtar Breakout env and the algorithm's MinAtar preset from ``conf/`` (plus :data:`OVERRIDES`).

    :param algo: ``ppo`` or ``dqn``.
    :param tiny: PPO rollouts of 64 steps per env instead of the preset's 128.
    """
    env = OmegaConf.to_container(OmegaConf.load(CONF / "env" / "minatar_breakout.yaml"))
    zoo = OmegaConf.to_container(OmegaConf.load(CONF / "zoo" / f"{algo}_minatar_breakout.yaml"))
    assert isinstance(env, dict) and isinstance(zoo, dict)
    env_cfg = EnvConfig(**{**env, "n_envs": int(zoo.get("env", {}).get("n_envs", 1))})
    hyperparams = {**zoo["algo"]["hyperparams"], **OVERRIDES[algo]}
    if tiny and algo == "ppo":
        hyperparams["n_steps"] = 64
    return AlgoConfig(algo, hyperparams, dict(zoo["algo"]["policy_kwargs"])), env_cfg


def build(algo: str, masked: bool, device: str, tiny: bool, seed: int = 0) -> BaseAlgorithm:
    """A fresh agent on MinAtar Breakout: SB3's own policy class, or ours with an 80%-sparse mask.

    :param algo: ``ppo`` or ``dqn``.
    :param masked: rl_tickets' policy with a random mask pruning :data:`SPARSITY` of every layer.
    :param device: ``cuda``, ``cuda:N`` or ``cpu``.
    :param tiny: smaller rollouts.
    :param seed: seed of the env, the network and the mask.
    """
    algo_cfg, env_cfg = configs(algo, tiny)
    builder = AgentBuilder(algo_cfg, env_cfg, device)
    env = make_env(env_cfg, seed=seed)
    if masked:
        model = builder.build(env, seed)
        generator = torch.Generator().manual_seed(seed)
        mask = {
            name: torch.rand(keep.shape, generator=generator) >= SPARSITY
            for name, keep in read_mask(model.policy).items()
        }
        set_masks(model.policy, mask)
        return model
    return builder.cls(
        "MlpPolicy",
        env,
        seed=seed,
        device=builder.device,
        verbose=0,
        policy_kwargs=builder.policy_kwargs(1.0),
        **builder.hyperparams(light=False),
    )


def count_events(names: list[str]) -> dict[str, int]:
    """Optimizer steps, CUDA memcpy activities by direction and host syncs among profiler event names.

    :param names: the name of every profiled event.
    """
    counts = Counter(names)
    return {
        "optimizer_steps": sum(n for name, n in counts.items() if name.startswith("Optimizer.step#")),
        "memcpy_htod": sum(n for name, n in counts.items() if "Memcpy HtoD" in name),
        "memcpy_dtoh": sum(n for name, n in counts.items() if "Memcpy DtoH" in name),
        "host_syncs": counts.get("aten::_local_scalar_dense", 0),
    }


def profile_train(model: BaseAlgorithm, algo: str, tiny: bool) -> dict[str, Any]:
    """Warm up with ``learn()``, then profile one ``train()`` call; counts per optimizer step.

    :param model: the agent.
    :param algo: ``ppo`` or ``dqn``.
    :param tiny: smaller warm-up and fewer DQN gradient steps.
    """
    warm, gradient_steps = SIZES[tiny]
    model.learn(max(warm, model.n_envs * getattr(model, "n_steps", 0)))
    activities = [ProfilerActivity.CPU]
    if model.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        if algo == "dqn":
            model.train(gradient_steps=gradient_steps, batch_size=model.batch_size)
        else:
            model.train()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
    counts = count_events([event.name for event in prof.events()])
    steps = max(counts["optimizer_steps"], 1)
    per_step = {k: round(v / steps, 3) for k, v in counts.items() if k != "optimizer_steps"}
    return {"optimizer_steps": counts["optimizer_steps"], "totals": counts, "per_step": per_step}


def run(device: str, tiny: bool) -> dict[str, Any]:
    """Both algorithms, plain and masked.

    :param device: ``cuda``, ``cuda:N`` or ``cpu``.
    :param tiny: toy sizes.
    """
    results: dict[str, Any] = {"device": device, "sparsity": SPARSITY, "tiny": tiny}
    for algo in ("ppo", "dqn"):
        results[algo] = {
            variant: profile_train(build(algo, variant == "masked", device, tiny), algo, tiny)
            for variant in ("plain", "masked")
        }
    return results


def main(argv: list[str] | None = None) -> int:
    """Profile and write the JSON (stdout, or ``--out``).

    :param argv: arguments (default: the command line).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (a smoke test, e.g. on a CPU)")
    parser.add_argument("--out", type=Path, help="JSON file to write (default: stdout)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run(args.device, args.tiny)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
