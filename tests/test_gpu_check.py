"""The GPU check: tests marked ``cuda`` (the mask invariant and a tiny chain on the device), which skip
without CUDA and which ``scripts/gpu_check.sh`` runs on a GPU machine; and that script itself at toy
size on the CPU (``--tiny --device cpu``), so it cannot rot before a GPU machine is available.

``RL_TICKETS_TEST_DEVICE`` picks the device of the ``cuda`` tests (default ``cuda``; the tiny check
sets ``cpu`` so they run there too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from stable_baselines3 import DQN, PPO
from tiny import tiny_config

from rl_tickets.chain.runner import Runner
from rl_tickets.config import EnvConfig, EvalConfig, PruneConfig, RewindConfig
from rl_tickets.rl.checkpoints import load_online_params
from rl_tickets.rl.envs import make_env
from rl_tickets.rl.policies import POLICIES
from rl_tickets.sparsity.masks import is_target, load_mask, online_name, read_mask, set_masks
from rl_tickets.trainers import build_trainer

REPO = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("RL_TICKETS_TEST_DEVICE", "cuda")
needs_device = pytest.mark.skipif(
    DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="no CUDA device"
)


@pytest.mark.cuda
@needs_device
@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_masks_stay_exact_on_the_device(algo: str) -> None:
    """An 80%-sparse mask on the device: masks live there, and after real gradient updates every pruned
    weight is exactly 0.0 online and (DQN) in the target network."""
    env = make_env(EnvConfig(), seed=0)  # CartPole-v1
    if algo == "ppo":
        model = PPO(POLICIES["ppo"], env, n_steps=64, batch_size=32, n_epochs=2, device=DEVICE, seed=0)
    else:
        model = DQN(
            POLICIES["dqn"],
            env,
            learning_starts=64,
            train_freq=4,
            target_update_interval=50,
            device=DEVICE,
            seed=0,
        )
    generator = torch.Generator().manual_seed(0)
    mask = {
        name: torch.rand(keep.shape, generator=generator) >= 0.8
        for name, keep in read_mask(model.policy).items()
    }
    set_masks(model.policy, mask)
    before = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
    model.learn(512)
    assert model._n_updates > 0
    moved = False
    for name, param in model.policy.named_parameters():
        assert param.device.type == torch.device(DEVICE).type, name
        keep = mask.get(online_name(name) if is_target(name) else name)
        if keep is None:
            continue
        assert torch.count_nonzero(param.detach().cpu()[~keep]) == 0, name
        moved |= not torch.equal(param, before[name])
    assert moved
    for name, buffer in model.policy.named_buffers():
        if name.endswith("_mask"):
            assert buffer.device.type == torch.device(DEVICE).type, name
    env.close()


@pytest.mark.cuda
@needs_device
def test_a_tiny_chain_trains_on_the_device(tmp_path: Path) -> None:
    """Dense level 0 and one pruned level through the runner with ``device=<device>``: meta.json says
    the device, and the saved level has exact zeros where its mask says."""
    cfg = tiny_config(
        tmp_path,
        "ppo",
        {"n_steps": 64, "batch_size": 64, "n_epochs": 1},
        512,
        RewindConfig(),
        PruneConfig(levels=1),
        n_envs=2,
        device=DEVICE,
        eval=EvalConfig(episodes=2, every=256),
    )
    chain = Runner(cfg, build_trainer(cfg)).run()
    meta = json.loads((chain / "meta.json").read_text())
    assert torch.device(meta["device"]).type == torch.device(DEVICE).type
    level = chain / "level_01" / "ticket"
    mask = load_mask(level / "mask.pt")
    params = load_online_params(level / "model.zip", list(mask))
    for name, keep in mask.items():
        assert torch.count_nonzero(params[name][~keep]) == 0, name
    assert 0.75 < sum(int(k.sum()) for k in mask.values()) / sum(k.numel() for k in mask.values()) < 0.85


def test_the_gpu_check_runs_every_step_at_toy_size_on_the_cpu(tmp_path: Path) -> None:
    """``scripts/gpu_check.sh --tiny --device cpu``: every step succeeds and lands in the JSON and the
    markdown (tests run on the CPU, MinAtar chains and Conv-2 train 2 levels each, the profile counts
    optimizer steps with no device copies on a CPU and the same host syncs with and without masks)."""
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--tiny", "--device", "cpu", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,  # the script's own tiny budget is 1200 s: a slow machine is never a failure
    )
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    failed = {
        n: Path(s["log"]).read_text()[-1500:] for n, s in record["steps"].items() if s["status"] != "ok"
    }
    assert done.returncode == 0 and not failed, (done.stderr[-2000:], failed)
    steps = record["steps"]
    assert list(steps) == ["cuda_tests", "bench_masks", "minatar_ppo", "minatar_dqn", "conv2", "profile"]
    assert steps["cuda_tests"]["counts"] == {"passed": 3}
    assert steps["bench_masks"]["table"]
    for name in ("minatar_ppo", "minatar_dqn", "conv2"):
        levels = steps[name]["levels"]
        assert [row["level"] for row in levels] == [0, 1] and all(row["device"] == "cpu" for row in levels)
        assert levels[1]["density"] < 1.0
    profile = steps["profile"]["result"]
    for algo in ("ppo", "dqn"):
        plain, masked = profile[algo]["plain"], profile[algo]["masked"]
        assert plain["optimizer_steps"] == masked["optimizer_steps"] > 0
        assert masked["totals"]["memcpy_htod"] == masked["totals"]["memcpy_dtoh"] == 0  # no device on a CPU
        assert masked["per_step"]["host_syncs"] == plain["per_step"]["host_syncs"]
    text = (tmp_path / "gpu_check.md").read_text()
    assert "| profile | ok |" in text and "| ppo | masked |" in text and "minatar_dqn:" in text
