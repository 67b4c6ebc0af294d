"""Cross-environment aggregates in the report: one protocol on three environments, another on one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rl_tickets.report import aggregates, main
from rl_tickets.report.aggregate_plots import _score_name
from rl_tickets.report.crossenv import IQM_COLUMNS, POI_COLUMNS, PROFILE_COLUMNS, Aggregate, normalise

SEEDS = range(5)
# Returns of very different scales and signs: normalisation is what makes them comparable.
ENVS = {"cartpole": (500.0, 100.0), "acrobot": (-80.0, 20.0), "pendulum": (-200.0, 50.0)}
PROTOCOL = {
    "prune": {"levels": 2, "rate": 0.2, "scope": "global"},
    "rewind": {"step": 0},
    "retrain": {"mode": "rewind"},
}


def write_chain(root: Path, chain_hash: str, seed: int, env: str, config: dict, rows: list[dict]) -> None:
    """meta.json and levels.csv of one chain (no level directories: aggregates need only levels.csv)."""
    chain = root / "chains" / chain_hash / f"seed_{seed}"
    chain.mkdir(parents=True)
    meta = {
        "name": f"ppo_{env}",
        "task": "rl",
        "algo": "ppo",
        "env": env,
        "seed": seed,
        "metric": "eval_return_mean",
        "config": config,
    }
    (chain / "meta.json").write_text(json.dumps(meta))
    pd.DataFrame(rows).to_csv(chain / "levels.csv", index=False)


def ticket_return(env: str, level: int, seed: int) -> float:
    """Dense best; the ticket loses a little per level; reinit always lies below the ticket."""
    top, spread = ENVS[env]
    return top - 0.1 * spread * level - 0.05 * spread * seed


def build_root(root: Path) -> None:
    for i, env in enumerate(ENVS):
        config = {**PROTOCOL, "algo": {"hyperparams": {"n_steps": 32 * (i + 1)}}, "env": {"id": env}}
        for seed in SEEDS:
            rows = [
                {
                    "level": 0,
                    "variant": "ticket",
                    "density": 1.0,
                    "eval_return_mean": ticket_return(env, 0, seed),
                }
            ]
            for level in (1, 2):
                ticket = ticket_return(env, level, seed)
                rows += [
                    {"level": level, "variant": "ticket", "density": 0.8**level, "eval_return_mean": ticket},
                    {
                        "level": level,
                        "variant": "reinit",
                        "density": 0.8**level,
                        "eval_return_mean": ticket - ENVS[env][1] * (0.5 + 0.01 * seed),
                    },
                ]
            write_chain(root, f"{i}" * 12, seed, env, config, rows)
    # Another protocol (a different pruning rate) on one environment only: never aggregated.
    other = {**PROTOCOL, "prune": {**PROTOCOL["prune"], "rate": 0.5}}
    rows = [{"level": 0, "variant": "ticket", "density": 1.0, "eval_return_mean": 1.0}]
    write_chain(root, "f" * 12, 0, "cartpole", other, rows)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crossenv")
    build_root(root)
    assert main([str(root), "--n-resamples", "1000"]) == 0
    return root / "report"


def test_one_aggregate_with_its_files(report: Path) -> None:
    folders = sorted(p.name for p in report.glob("across-*"))
    assert folders == ["across-ppo_acrobot+cartpole+pendulum"]
    folder = report / folders[0]
    for name in (
        "aggregates.md",
        "iqm.csv",
        "improvement.csv",
        "performance_profile.csv",
        "iqm.png",
        "performance_profile.png",
        "probability_of_improvement.png",
    ):
        assert (folder / name).is_file(), name
    assert list(pd.read_csv(folder / "iqm.csv").columns) == IQM_COLUMNS
    assert list(pd.read_csv(folder / "improvement.csv").columns) == POI_COLUMNS
    assert list(pd.read_csv(folder / "performance_profile.csv").columns) == PROFILE_COLUMNS
    index = (report / "index.md").read_text()
    assert f"({folders[0]}/aggregates.md)" in index and "ppo: acrobot+cartpole+pendulum" in index


def test_aggregate_numbers(report: Path) -> None:
    """IQM over 3 environments x 5 seeds of min-max scores, recomputed by hand; the ticket beats reinit
    on every run of every environment, so P(ticket > reinit) = 1."""
    folder = report / "across-ppo_acrobot+cartpole+pendulum"
    iqm = pd.read_csv(folder / "iqm.csv")
    row = iqm[(iqm["level"] == 2) & (iqm["variant"] == "ticket")].iloc[0]
    assert (row["n_envs"], row["n_runs"]) == (3, 15) and row["density"] == pytest.approx(0.64)
    tasks = []
    for env, (_, spread) in ENVS.items():
        values = [ticket_return(env, lvl, s) for lvl in (0, 1, 2) for s in SEEDS]
        values += [ticket_return(env, lvl, s) - spread * (0.5 + 0.01 * s) for lvl in (1, 2) for s in SEEDS]
        low, high = min(values), max(values)
        tasks.append(np.array([(ticket_return(env, 2, s) - low) / (high - low) for s in SEEDS]))
    assert row["iqm"] == pytest.approx(aggregates.iqm(tasks))
    assert row["ci_low"] <= row["iqm"] <= row["ci_high"]
    poi = pd.read_csv(folder / "improvement.csv")
    assert poi["control"].unique().tolist() == ["reinit"]
    assert poi["probability"].tolist() == [1.0, 1.0] and poi["ci_low"].tolist() == [1.0, 1.0]
    profile = pd.read_csv(folder / "performance_profile.csv")
    at_zero = profile[(profile["tau"] == 0.0) & (profile["level"] == 2) & (profile["variant"] == "reinit")]
    assert at_zero["fraction"].item() == pytest.approx(12 / 15)  # the worst run of each env scores exactly 0
    md = (folder / "aggregates.md").read_text()
    assert "stratified-bootstrap" in md and "P(ticket > reinit)" in md


def test_dense_normalisation_puts_the_dense_mean_at_one() -> None:
    per_seed = pd.DataFrame(
        {"level": [0, 0, 1, 1], "variant": ["ticket"] * 4, "value": [-80.0, -60.0, -100.0, -70.0]}
    )
    scores = normalise(per_seed, "dense")
    assert scores.tolist() == pytest.approx([20 / 30, 40 / 30, 0.0, 1.0])
    assert normalise(per_seed.assign(value=500.0), "minmax").tolist() == [1.0] * 4


def test_the_aggregate_names_its_metric(report: Path, tmp_path: Path) -> None:
    """``--metric best`` scores the same runs by their best evaluation; these chains have no curves, so
    each level's one evaluation is its best and the IQM table equals the final one."""
    build_root(tmp_path)
    assert main([str(tmp_path), "--n-resamples", "1000", "--metric", "best"]) == 0
    name = "across-ppo_acrobot+cartpole+pendulum"
    text = (tmp_path / "report" / name / "aggregates.md").read_text()
    assert "`--metric best`): best return (max over evaluations)" in text
    assert (
        "`--metric final`): final return (eval_return_mean)" in (report / name / "aggregates.md").read_text()
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "report" / name / "iqm.csv"), pd.read_csv(report / name / "iqm.csv")
    )


def test_aggregate_axes_name_the_metric() -> None:
    for metric in ("final", "best", "auc"):
        label = _score_name(Aggregate("x", [], normalisation="minmax", metric=metric))
        assert label == f"min-max normalised score of the {metric} metric"
