"""Learning curves in the report (a 2-seed fake root with eval_curve.csv and SB3 progress.csv per level),
and the headline metrics final, best and auc computed from constructed evaluation curves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rl_tickets.report import main, stats
from rl_tickets.report.curves import CURVE_COLUMNS
from rl_tickets.report.loading import load_chain
from rl_tickets.report.metrics import auc_of, best_of, level_metric
from rl_tickets.report.ranges import metric_bounds
from rl_tickets.report.records import dense_dir, level_dirs
from rl_tickets.report.tables import ReportOptions, verdict_table

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
    # A finished level (COMPLETE, written before manifests) holds readable metrics and a mask.
    (directory / "metrics.json").write_text("{}")
    torch.save({"w": torch.ones(2, dtype=torch.bool)}, directory / "mask.pt")
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


# --- The headline metric: final, best and auc from constructed evaluation curves. ---------------------

METRIC_SEEDS = (0, 1, 2, 3, 4)
# Uneven steps so the trapezoid's widths matter; the ticket peaks at 300 and ends at 150 + seed.
TICKET_STEPS = [1000, 2000, 4000, 8000]


def ticket_curve(seed: int) -> list[float]:
    """best 300 + 10s; auc = (1000·(400 + 10s) + 2000·(500 + 10s) + 4000·(350 + s)) / 2 / 7000
    = 200 + 17s/7; final 150 + s."""
    return [100.0, 300.0 + 10 * seed, 200.0, 150.0 + seed]


def write_curve(directory: Path, steps: list[int], values: list[float]) -> None:
    """A level directory with just its eval_curve.csv."""
    directory.mkdir(parents=True)
    pd.DataFrame({"step": steps, "eval/return_mean": values}).to_csv(
        directory / "eval_curve.csv", index=False
    )
    # A finished level (COMPLETE, written before manifests) holds readable metrics and a mask.
    (directory / "metrics.json").write_text("{}")
    torch.save({"w": torch.ones(2, dtype=torch.bool)}, directory / "mask.pt")
    (directory / "COMPLETE").write_text("")


def build_metric_root(root: Path) -> None:
    """5 CartPole-v1 seeds (a 1000-step limit: returns in [0, 1000]): dense constant 500 (4 evaluations),
    ticket as :func:`ticket_curve`, reinit evaluated once (auc undefined), and an untrained supermask row
    without any curve."""
    for seed in METRIC_SEEDS:
        chain = root / "chains" / "beef00000000" / f"seed_{seed}"
        chain.mkdir(parents=True)
        dense = root / "dense" / "d0" / f"seed_{seed}"
        meta = {"name": "metrics", "task": "rl", "algo": "ppo", "env": "cartpole", "seed": seed,
                "metric": "eval_return_mean", "dense_dir": str(dense),
                "config": {"env": {"id": "CartPole-v1", "make_kwargs": {"max_episode_steps": 1000}}}}  # fmt: skip
        (chain / "meta.json").write_text(json.dumps(meta))
        write_curve(dense / "level_00" / "ticket", TICKET_STEPS, [500.0] * 4)
        write_curve(chain / "level_01" / "ticket", TICKET_STEPS, ticket_curve(seed))
        write_curve(chain / "level_01" / "reinit", [8000], [90.0 + seed])
        rows = [
            {"level": 0, "variant": "ticket", "density": 1.0, "eval_return_mean": 500.0},
            {"level": 1, "variant": "ticket", "density": 0.8, "eval_return_mean": 150.0 + seed},
            {"level": 1, "variant": "reinit", "density": 0.8, "eval_return_mean": 90.0 + seed},
            {"level": 1, "variant": "supermask", "density": 0.8, "eval_return_mean": 20.0 + seed},
        ]
        pd.DataFrame(rows).to_csv(chain / "levels.csv", index=False)


@pytest.fixture(scope="module")
def metric_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("metrics")
    build_metric_root(root)
    labels: dict[str, str] = {}

    def spy(
        summary: pd.DataFrame, path: Path, ylabel: str, title: str, *args: object, **kwargs: object
    ) -> None:
        labels[path.parent.parent.name] = ylabel

    out = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("rl_tickets.report.cli.plot_metric_vs_density", spy)
        for metric in ("final", "best", "auc"):
            assert (
                main([str(root), "--out", str(root / metric), "--metric", metric, "--n-resamples", "200"])
                == 0
            )
            out[metric] = root / metric / "metrics"
    out["labels"] = labels  # type: ignore[assignment]
    return out


def values(report: Path, level: int, variant: str) -> list[float]:
    """The per-seed metric of (level, variant), by seed."""
    per_seed = pd.read_csv(report / "per_seed.csv")
    rows = per_seed[(per_seed["level"] == level) & (per_seed["variant"] == variant)].sort_values("seed")
    return rows["value"].tolist()


def test_best_auc_and_undefined_auc_exactly(metric_reports: dict[str, Path]) -> None:
    final, best, auc = metric_reports["final"], metric_reports["best"], metric_reports["auc"]
    assert values(final, 1, "ticket") == [150.0 + s for s in METRIC_SEEDS]
    assert values(best, 1, "ticket") == [300.0 + 10 * s for s in METRIC_SEEDS]
    assert values(auc, 1, "ticket") == pytest.approx([200 + 17 * s / 7 for s in METRIC_SEEDS], abs=1e-12)
    assert values(best, 0, "ticket") == [500.0] * 5 and values(auc, 0, "ticket") == [500.0] * 5
    # One evaluation: best is it, auc is undefined (NaN in the CSV, "–" in summary.md).
    assert values(best, 1, "reinit") == [90.0 + s for s in METRIC_SEEDS]
    assert np.isnan(values(auc, 1, "reinit")).all()
    # No curve at all (untrained): its levels.csv value is its only evaluation.
    assert values(best, 1, "supermask") == [20.0 + s for s in METRIC_SEEDS]
    assert np.isnan(values(auc, 1, "supermask")).all()
    assert "| 1 | reinit | 80% | 0 | – |" in (auc / "summary.md").read_text()


def test_the_metric_names_every_table_axis_and_verdict(metric_reports: dict[str, Path]) -> None:
    names = {
        "final": "final return (eval_return_mean)",
        "best": "best return (max over evaluations)",
        "auc": "return AUC (area under the evaluation curve / steps)",
    }
    for metric, label in names.items():
        report = metric_reports[metric]
        for table in ("per_seed.csv", "summary.csv", "verdicts.csv"):
            assert set(pd.read_csv(report / table)["metric"]) == {metric}, (metric, table)
        md = (report / "summary.md").read_text()
        assert f"`--metric {metric}`): **{label}**" in md and f"Metric: **{label}**" in md
        assert f"## {label[0].upper() + label[1:]} by density" in md
    assert metric_reports["labels"] == names  # the y axis of return_vs_density.png


def test_verdicts_on_the_chosen_metric_with_cartpoles_range(metric_reports: dict[str, Path]) -> None:
    best = pd.read_csv(metric_reports["best"] / "verdicts.csv").set_index("comparison")
    # best: ticket 300-340 against reinit 90-94: better (differences 210 + 9s, mean 228).
    assert best.loc["reinit", "verdict"] == "better" and best.loc["reinit", "diff_mean"] == pytest.approx(228)
    # dense at 500, ticket at 300-340: never "matches"; the bounded test was given the config's range
    # [0, 1000] (CartPole-v1, +1 per step, 1000 steps), wider than the data's hull [0, 500].
    assert best.loc["dense", "verdict"] != "matches"
    assert (best.loc["dense", "low"], best.loc["dense", "high"]) == (0.0, 1000.0)
    expected = stats.paired_verdict(
        [300.0 + 10 * s for s in METRIC_SEEDS], [500.0] * 5, 5, question="matches", bounds=(0.0, 1000.0)
    )
    assert best.loc["dense", "p_below"] == pytest.approx(expected.p_below)
    assert best.loc["dense", "verdict"] == expected.verdict
    auc = pd.read_csv(metric_reports["auc"] / "verdicts.csv").set_index("comparison")
    assert auc.loc["reinit", "verdict"] == "not enough seeds" and auc.loc["reinit", "n"] == 0


def test_metric_functions_on_constructed_curves(tmp_path: Path) -> None:
    steps, curve = np.array([0.0, 10.0, 30.0]), np.array([0.0, 100.0, 50.0])
    assert best_of(curve) == 100.0 and np.isnan(best_of(np.zeros(0)))
    # (10·50 + 20·75) / 30 = 2000 / 30.
    assert auc_of(steps, curve) == pytest.approx(2000 / 30, abs=1e-12)
    assert np.isnan(auc_of(np.array([5.0]), np.array([7.0])))
    write_curve(tmp_path / "lvl", [30, 0, 10, 10], [50.0, 0.0, 1.0, 100.0])  # unsorted, step 10 logged twice
    assert level_metric(tmp_path / "lvl", "eval/return_mean", "auc", final=-1.0) == pytest.approx(2000 / 30)
    assert level_metric(tmp_path / "lvl", "eval/return_mean", "final", final=-1.0) == -1.0
    assert level_metric(None, "eval/return_mean", "best", final=7.0) == 7.0


def test_known_metric_ranges() -> None:
    def rl(env_id: str, **make_kwargs: int) -> dict:
        return {"task": "rl", "config": {"env": {"id": env_id, "make_kwargs": make_kwargs}}}

    assert metric_bounds(rl("CartPole-v1")) == (0.0, 500.0)
    assert metric_bounds(rl("CartPole-v1", max_episode_steps=200)) == (0.0, 200.0)
    assert metric_bounds(rl("Acrobot-v1")) == (-500.0, 0.0)
    assert metric_bounds(rl("MountainCar-v0")) == (-200.0, 0.0)
    low, high = metric_bounds(rl("Pendulum-v1"))
    assert low == pytest.approx(-200 * (np.pi**2 + 6.4 + 0.004)) and high == 0.0
    assert metric_bounds(rl("LunarLander-v3")) is None and metric_bounds({"task": "rl"}) is None
    assert metric_bounds({"task": "supervised"}) == (0.0, 1.0)


def test_bounds_decide_tied_seeds(tmp_path: Path) -> None:
    """Every seed 500 in both arms: with the range known the bounded test weighs the ties (p < 1); without
    it constant differences are never evidence (p = 1)."""
    per_seed = pd.DataFrame(
        [
            {"seed": s, "level": lvl, "variant": "ticket", "density": 0.8**lvl, "value": 500.0}
            for s in range(5)
            for lvl in (0, 1)
        ]  # fmt: skip
    )
    known = verdict_table(per_seed, ReportOptions(), bounds=(0.0, 500.0)).iloc[0]
    guessed = verdict_table(per_seed, ReportOptions()).iloc[0]
    assert guessed["p_value"] == 1.0 and guessed["verdict"] == "inconclusive"
    # 5 tied seeds cannot reach 2.5% (that needs about 80 at this margin), but they count for something.
    assert 0.025 < known["p_value"] < 1.0 and known["verdict"] == "inconclusive"
    assert (known["low"], known["high"]) == (0.0, 500.0)


def test_a_copied_root_reads_its_own_dense_level(tmp_path: Path) -> None:
    """meta.json records the dense level's absolute path; a copy of the root (another machine, a backup)
    reads the dense level beside its own chain, not the original's, even while the original exists."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    build_root(original)
    for seed in SEEDS:
        meta_path = original / "chains" / "c0ffee000000" / f"seed_{seed}" / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta["dense_dir"] = str(original / "dense" / "dense0000000" / f"seed_{seed}")
        meta_path.write_text(json.dumps(meta))
    shutil.copytree(original, copy)
    chain = load_chain(copy / "chains" / "c0ffee000000" / "seed_0")
    assert chain is not None
    assert dense_dir(chain) == copy / "dense" / "dense0000000" / "seed_0"
    assert (
        level_dirs(chain)[(0, "ticket")] == copy / "dense" / "dense0000000" / "seed_0" / "level_00" / "ticket"
    )
    shutil.rmtree(copy / "dense")  # a copy of the chains alone still finds the recorded dense level
    assert dense_dir(chain) == original / "dense" / "dense0000000" / "seed_0"
