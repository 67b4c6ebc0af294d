"""Scaling out: the SLURM and local submitit launcher configs compose without a cluster, every knob in
them is commented, and a job returns its float objective to Hydra (what sweepers such as Optuna need),
checked through submitit's local executor, whose log files land where the README says."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny import tiny_ppo_args

from rl_tickets.cli.objective import objective

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = REPO / "conf" / "hydra" / "launcher"


def hydra_cfg(*overrides: str) -> dict:
    """``rl-tickets <overrides> --cfg hydra`` parsed: the composed Hydra config, no cluster needed."""
    done = subprocess.run(
        [sys.executable, "-m", "rl_tickets", *overrides, "--cfg", "hydra"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return yaml.safe_load(done.stdout)["hydra"]


def test_the_slurm_launcher_composes_with_our_defaults_and_takes_overrides() -> None:
    launcher = hydra_cfg("hydra/launcher=slurm", "hydra.launcher.partition=gpu")["launcher"]
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher["partition"] == "gpu"
    # Not submitit's defaults (60 minutes kills long chains; 0 timeouts never requeues).
    assert launcher["timeout_min"] == 240 and launcher["max_num_timeout"] == 3
    assert launcher["array_parallelism"] == 32 and launcher["cpus_per_task"] == 2 and launcher["mem_gb"] == 8
    assert launcher["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"


def test_the_local_launcher_composes_as_the_same_plugin() -> None:
    launcher = hydra_cfg("hydra/launcher=local", "hydra.launcher.cpus_per_task=2")["launcher"]
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert launcher["cpus_per_task"] == 2 and launcher["timeout_min"] == 60


@pytest.mark.parametrize("name", ["slurm", "local"])
def test_every_knob_of_a_launcher_config_is_commented(name: str) -> None:
    """Each key set in the file has a comment line right above it (what it is, how to size it)."""
    lines = (LAUNCHERS / f"{name}.yaml").read_text().splitlines()
    keys = [i for i, line in enumerate(lines) if re.match(r"^[a-z_]+:", line) and line != "defaults:"]
    assert len(keys) >= 5
    for i in keys:
        assert lines[i - 1].startswith("#"), lines[i]


def write_chain(chain: Path, values: dict[tuple[int, str], float], metric: str = "eval_return_mean") -> Path:
    """A chain directory with meta.json and levels.csv holding ``values`` for (level, variant)."""
    chain.mkdir(parents=True)
    (chain / "meta.json").write_text(json.dumps({"metric": metric}))
    with open(chain / "levels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["level", "variant", "density", metric])
        writer.writeheader()
        for (level, variant), value in values.items():
            writer.writerow({"level": level, "variant": variant, "density": 0.8**level, metric: value})
    return chain


def test_the_objective_is_the_ticket_metric_at_the_deepest_level_or_its_mean_over_pruned_levels(
    tmp_path: Path,
) -> None:
    values = {(0, "ticket"): 500.0, (1, "ticket"): 400.0, (1, "reinit"): 1.0, (2, "ticket"): 100.0}
    values[(3, "ticket")] = 7.0  # a deeper level from an earlier, longer run of the chain
    chain = write_chain(tmp_path / "c", values)
    assert objective(chain, "deepest", levels=2) == 100.0
    assert objective(chain, "mean", levels=2) == 250.0  # levels 1 and 2; dense and controls left out
    assert objective(chain, "deepest", levels=0) == objective(chain, "mean", levels=0) == 500.0
    supervised = write_chain(tmp_path / "s", {(0, "ticket"): 0.9, (1, "ticket"): 0.8}, "test_accuracy")
    assert objective(supervised, "deepest", levels=1) == pytest.approx(0.8)
    gradual = write_chain(tmp_path / "g", {(0, "ticket"): 500.0, (1, "gradual"): 321.0})
    assert objective(gradual, "deepest", levels=1) == 321.0
    assert math.isnan(objective(write_chain(tmp_path / "e", {}), "mean", levels=3))


def test_submitit_local_jobs_return_their_objective_and_log_under_the_sweep_dir(tmp_path: Path) -> None:
    """Two seeds through submitit's local executor (the SLURM plugin's code path on this machine): each
    job returns objective=mean computed from its own chain, and submitit's logs are under the sweep
    directory as <sweep dir>/.submitit/<job id>/<job id>_0_log.{out,err}."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rl_tickets",
            "--multirun",
            "hydra/launcher=local",
            f"root={tmp_path}",
            *tiny_ppo_args(512, 2, episodes=2),
            "objective=mean",
            "seed=0,1",
            "+hydra.callbacks.returns._target_=hydra_returns.RecordReturns",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "hydra" / "multirun").glob("*")
    returns = {
        r["seed"]: r["value"] for r in (json.loads(p.read_text()) for p in sweep.glob("*/return.json"))
    }
    assert sorted(returns) == [0, 1]
    for seed, value in returns.items():
        (chain,) = (tmp_path / "chains").glob(f"*/seed_{seed}")
        with open(chain / "levels.csv", newline="") as handle:
            tickets = [
                float(r["eval_return_mean"]) for r in csv.DictReader(handle) if r["variant"] == "ticket"
            ]
        assert len(tickets) == 3
        assert value == pytest.approx((tickets[1] + tickets[2]) / 2)
    logs = sorted(p.name for p in (sweep / ".submitit").glob("*/*_0_log.*"))
    assert len(logs) == 4 and {name.rsplit(".", 1)[1] for name in logs} == {"out", "err"}
