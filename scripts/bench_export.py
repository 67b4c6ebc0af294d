"""Bytes and CPU latency of the exported forms (dense with zeros, compact, sparse CSR) across densities.

Size and latency do not depend on training, so each network is untrained and pruned one-shot by weight
magnitude, each layer to the same density (a global ranking of an untrained PPO network would remove its
0.01-gain action head first). Each network is written as a finished level in the runner's layout and
exported with ``rl_tickets.export.export_level``, whose record holds the numbers: parameters and
``torch.save`` bytes of the whole policy's weights (every network, targets included, no optimizer
state), and the median latency of the deterministic actor, its forms timed interleaved in one process.

    python scripts/bench_export.py                   # PPO CartPole, DQN CartPole, DQN MinAtar CNN
    python scripts/bench_export.py --calls 1000 --densities 1 0.1
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from rl_tickets.config import ConfigError, EnvConfig
from rl_tickets.export import export_level
from rl_tickets.rl.agents import ALGOS
from rl_tickets.rl.checkpoints import save_state
from rl_tickets.rl.envs import FEATURE_EXTRACTORS, make_env
from rl_tickets.rl.policies import POLICIES
from rl_tickets.sparsity.masks import dense_mask, online_weights, read_mask, save_mask, set_masks
from rl_tickets.sparsity.pruning import PruneSpec, next_mask

CARTPOLE = EnvConfig(name="cartpole", id="CartPole-v1")
MINATAR = EnvConfig(name="minatar_breakout", id="MinAtar/Breakout-v1", wrapper="channels_first_float")
# label -> (algo, env, policy_kwargs): the zoo's networks (PPO's default [64, 64], DQN [256, 256]) and
# the MinAtar CNN of conf/zoo/dqn_minatar_breakout.yaml.
MODELS: dict[str, tuple[str, EnvConfig, dict[str, Any]]] = {
    "PPO CartPole [64, 64]": ("ppo", CARTPOLE, {"net_arch": [64, 64]}),
    "DQN CartPole [256, 256]": ("dqn", CARTPOLE, {"net_arch": [256, 256]}),
    "DQN MinAtar CNN": ("dqn", MINATAR, {"net_arch": [], "features_extractor_class": "minatar_cnn"}),
}
FORMS = ("dense", "compact", "sparse")


def pruned_agent(
    algo: str, env_cfg: EnvConfig, policy_kwargs: dict[str, Any], density: float
) -> BaseAlgorithm:
    """An untrained agent with every prunable layer pruned by magnitude to ``density``.

    :param algo: ppo or dqn.
    :param env_cfg: the environment.
    :param policy_kwargs: policy kwargs (``features_extractor_class`` by registry name).
    :param density: fraction of weights kept per layer.
    """
    kwargs = dict(policy_kwargs)
    if "features_extractor_class" in kwargs:
        kwargs["features_extractor_class"] = FEATURE_EXTRACTORS[kwargs["features_extractor_class"]]
    light = {"buffer_size": 1} if algo == "dqn" else {}
    agent = ALGOS[algo](
        POLICIES[algo], make_env(env_cfg, seed=0), seed=0, device="cpu", policy_kwargs=kwargs, **light
    )
    if density < 1.0:
        weights = online_weights(agent.policy)
        spec = PruneSpec(rate=1.0 - density, scope="layer")
        set_masks(agent.policy, next_mask(spec, weights, weights, dense_mask(weights)))
    return agent


def write_level(root: Path, algo: str, env_cfg: EnvConfig, agent: BaseAlgorithm) -> Path:
    """Write ``agent`` as a finished level in the runner's layout.

    :param root: a fresh results root.
    :param algo: the algorithm name.
    :param env_cfg: the environment.
    :param agent: the pruned agent.
    """
    seed_dir = root / "chains" / "bench" / "seed_0"
    level = seed_dir / "level_01" / "ticket"
    level.mkdir(parents=True)
    (seed_dir / "identity.json").write_text(
        json.dumps({"task": "rl", "algo.name": algo, "env.id": env_cfg.id})
    )
    save_state(agent, level / "model.zip", with_replay=False)
    save_mask(read_mask(agent.policy), level / "mask.pt")
    (level / "COMPLETE").write_text("")
    return level


def _ratio(value: float | None, dense: float) -> str:
    """``value (ratio x)``, or n/a."""
    if value is None:
        return "n/a"
    return f"{value:,.0f} ({value / dense:.2f}x)" if value >= 100 else f"{value:.1f} ({value / dense:.2f}x)"


def row(label: str, density: float, record: dict[str, Any]) -> str:
    """One markdown row from an export record.

    :param label: the model's label.
    :param density: the target density.
    :param record: ``export.json``.
    """
    params = record["parameters"]["policy"]
    weights = record["weights_bytes"]
    cells = [
        label,
        f"{100 * density:g}%",
        f"{params['dense']:,}",
        f"{params['nonzero']:,}",
        f"{params['compact']:,}" if "compact" in params else "n/a",
        f"{weights['dense']:,}",
        _ratio(weights.get("compact"), weights["dense"]),
        _ratio(weights.get("sparse"), weights["dense"]),
    ]
    for batch in ("batch_1", "batch_256"):
        times = {form: 1e3 * ms for form, ms in record["latency_ms"][batch].items()}  # microseconds
        cells += [f"{times['dense']:.1f}", _ratio(times.get("compact"), times["dense"])]
        cells.append(_ratio(times.get("sparse"), times["dense"]))
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| model | weights kept per layer | params | live | compact params | weights bytes dense | compact | sparse "
    "| batch 1 us dense | compact | sparse | batch 256 us dense | compact | sparse |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def main() -> None:
    """Export every (model, density) pair and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.1, 0.02])
    parser.add_argument("--calls", type=int, default=500, help="timed calls per form and batch size")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    # One thread: the small networks here run fastest that way, and the machine is shared.
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, median of {args.calls} interleaved calls per form\n")
    print(HEADER)
    with tempfile.TemporaryDirectory() as scratch:
        for label in args.models:
            algo, env_cfg, policy_kwargs = MODELS[label]
            for i, density in enumerate(args.densities):
                try:
                    agent = pruned_agent(algo, env_cfg, policy_kwargs, density)
                except ConfigError as error:
                    print(f"| {label} | skipped: {error} |")
                    break
                root = Path(scratch) / f"{algo}_{env_cfg.name}_{i}"
                record = export_level(write_level(root, algo, env_cfg, agent), root / "out", calls=args.calls)
                print(row(label, density, record), flush=True)


if __name__ == "__main__":
    main()
