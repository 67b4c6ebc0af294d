"""Learning curves in the report: a 2-seed fake root with eval_curve.csv and SB3 progress.csv per level."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rl_tickets.report import main
from rl_tickets.report.curves import CURVE_COLUMNS

SEEDS = (0, 1)
LEVELS = (0, 1, 2)
STEPS = np.arange(0, 10_001, 2_500)


def write_level(directory: Path, seed: int, level: int, offset: float) -> None:
    """One level's eval_curve.csv (5 evaluations) and progress.csv (one row per 500 steps)."""
    directory.mkdir(parents=True)
    returns = 100 + 40 * STEPS / STEPS[-1] - 10 * level + offset + seed
    pd.DataFrame({"step": STEPS, "eval/return_mean": returns, "eval/return_std": 1.0}).to_csv(
        directory / "eval_curve.csv", index=False
    )
    steps = np.arange(500, 10_001, 500)
    pd.DataFrame(
        {"time/total_timesteps": steps, "rollout/ep_rew_mean": 50 + steps / 200 + seed, "train/loss": 0.1}
    ).to_csv(directory / "progress.csv", index=False)
    (directory / "COMPLETE").write_text("")


def build_root(root: Path) -> None:
    """PPO-like chains for two seeds: dense level 0 under ROOT/dense (found through meta.json's
    dense_dir, recorded relative to another working directory), ticket and reinit at levels 1-2."""
    for seed in SEEDS:
        chain = root / "chains" / "c0ffee000000" / f"seed_{seed}"
        chain.mkdir(parents=True)
        meta = {
            "name": "ppo_cartpole",
            "task": "rl",
            "algo": "ppo",
            "env": "cartpole",
            "seed": seed,
            "metric": "eval_return_mean",
            "unit": "timesteps",
            "dense_dir": f"results/dense/dense0000000/seed_{seed}",
        }
        (chain / "meta.json").write_text(json.dumps(meta))
        rows = [{"level": 0, "variant": "ticket", "density": 1.0, "eval_return_mean": 140.0 + seed}]
        write_level(root / "dense" / "dense0000000" / f"seed_{seed}" / "level_00" / "ticket", seed, 0, 0.0)
        for level in LEVELS[1:]:
            for variant, offset in (("ticket", 0.0), ("reinit", -30.0)):
                write_level(chain / f"level_{level:02d}" / variant, seed, level, offset)
                rows.append({"level": level, "variant": variant, "density": 0.8**level,
                             "eval_return_mean": 140.0 - 10 * level + offset + seed})  # fmt: skip
        pd.DataFrame(rows).to_csv(chain / "levels.csv", index=False)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("curves")
    build_root(root)
    assert main([str(root), "--n-resamples", "500"]) == 0
    return root / "report" / "ppo_cartpole"


def test_curve_files_exist_with_the_right_columns(report_dir: Path) -> None:
    for name in ("learning_curves.png", "training_curves.png", "learning_curves.csv"):
        assert (report_dir / name).is_file(), name
    curves = pd.read_csv(report_dir / "learning_curves.csv")
    assert list(curves.columns) == CURVE_COLUMNS
    assert set(curves["source"]) == {"eval", "train"}
    assert set(zip(curves["level"], curves["variant"])) == {(0, "ticket"), (1, "ticket"), (1, "reinit"),
                                                            (2, "ticket"), (2, "reinit")}  # fmt: skip
    assert "![learning curves](learning_curves.png)" in (report_dir / "summary.md").read_text()


def test_curve_numbers(report_dir: Path) -> None:
    """Mean over the two seeds at each evaluation step; the band spans them; level 0 came from ROOT/dense."""
    curves = pd.read_csv(report_dir / "learning_curves.csv")
    evals = curves[(curves["source"] == "eval") & (curves["level"] == 2) & (curves["variant"] == "reinit")]
    assert evals["step"].tolist() == STEPS.tolist()
    assert (evals["n"] == 2).all()
    expected = 100 + 40 * STEPS / STEPS[-1] - 20 - 30 + 0.5  # mean of seeds 0 and 1
    assert evals["mean"].to_numpy() == pytest.approx(expected)
    # Two seeds one apart: the bootstrap interval of the mean is their range.
    assert (evals["ci_high"] - evals["ci_low"]).to_numpy() == pytest.approx(np.ones(len(STEPS)))
    assert evals["density"].iloc[0] == pytest.approx(0.64)
    train = curves[(curves["source"] == "train") & (curves["level"] == 0)]
    assert train["metric"].unique().tolist() == ["rollout/ep_rew_mean"]
    assert train["mean"].iloc[-1] == pytest.approx(50 + 10_000 / 200 + 0.5)
