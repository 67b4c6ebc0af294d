"""Sweeps: joblib and submitit_local multiruns complete and resume; one lock per chain."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from tiny import tiny_ppo_args

from rl_tickets.chain.runner import Runner
from rl_tickets.config import Config
from rl_tickets.report import main as report_main
from rl_tickets.rl.trainer import SB3Trainer
from rl_tickets.seeds import seed_for

TINY = ["logger.mode=disabled", *tiny_ppo_args(512, 1, every=None)]


def multirun(root: Path, launcher: str, seeds: str) -> subprocess.CompletedProcess[str]:
    """``rl-tickets --multirun hydra/launcher=<launcher> seed=<seeds>`` in a subprocess."""
    command = [sys.executable, "-m", "rl_tickets", "--multirun", f"hydra/launcher={launcher}", f"seed={seeds}",
               f"root={root}", *TINY]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def model_stamps(root: Path) -> dict[Path, int]:
    """Modification times of every saved level model under a root."""
    return {p: p.stat().st_mtime_ns for p in root.glob("**/level_*/*/model.zip")}


@pytest.mark.parametrize(("launcher", "seeds"), [("joblib", "0,1,2"), ("submitit_local", "0")])
def test_multirun_completes_and_resumes(tmp_path: Path, launcher: str, seeds: str) -> None:
    """Every seed's chain completes; the same sweep again trains nothing."""
    first = multirun(tmp_path, launcher, seeds)
    assert first.returncode == 0, first.stderr[-3000:]
    chains = sorted((tmp_path / "chains").glob("*/seed_*"))
    assert [c.name for c in chains] == [f"seed_{s}" for s in seeds.split(",")]
    for chain in chains:
        assert len((chain / "levels.csv").read_text().splitlines()) == 3  # header, level 0, level 1
    # The sweep ends with one per-variant summary over its seeds (printed, and as CSV in the sweep dir).
    assert "sweep summary" in first.stdout and "ppo_cartpole: eval_return_mean over seeds" in first.stdout
    assert (first.stdout + first.stderr).count("sweep summary (") == 1  # once, not again through logging
    (summary_csv,) = (tmp_path / "hydra" / "multirun").glob("*/summary.csv")
    summary = pd.read_csv(summary_csv)
    assert list(summary.columns) == ["experiment", "metric", "level", "variant", "density", "n", "mean", "sd"]
    assert summary["n"].tolist() == [len(chains)] * 2
    stamps = model_stamps(tmp_path)
    assert len(stamps) == 2 * len(chains)
    again = multirun(tmp_path, launcher, seeds)
    assert again.returncode == 0, again.stderr[-3000:]
    assert model_stamps(tmp_path) == stamps
    # The report reads the sweep's root: tables, plot and mask analysis for the experiment.
    assert report_main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    written = {p.name for p in (tmp_path / "report" / "ppo_cartpole").iterdir()}
    assert {"summary.md", "summary.csv", "return_vs_density.png", "masks.md"} <= written


def test_two_jobs_on_one_chain_never_train_it_twice(tmp_path: Path) -> None:
    """Two runners of the same chain at once: the lock serialises them and the second finds it done."""
    cfg = Config()
    cfg.root, cfg.logger.mode = str(tmp_path), "disabled"
    cfg.train.timesteps, cfg.env.n_envs, cfg.prune.levels, cfg.eval.episodes = 256, 1, 1, 1
    cfg.algo.hyperparams = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}
    calls: list[int] = []

    class Counting(SB3Trainer):
        def train(self, plan, out, curve_sink=None):  # type: ignore[no-untyped-def]
            calls.append(plan.seed)
            return super().train(plan, out, curve_sink)

    errors: list[BaseException] = []

    def job() -> None:
        trainer = Counting(cfg.algo, cfg.env, cfg.train.timesteps, cfg.eval, "cpu", seed_for(0, "eval"))
        try:
            Runner(cfg, trainer).run()
        except BaseException as error:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(error)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(calls) == 2  # level 0 and level 1, once each
