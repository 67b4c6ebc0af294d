"""scripts/report_stability.py: chosen-k tickets against k = 0 tickets, paired by seed, and pooled arms."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest


def _load_script() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "scripts" / "report_stability.py"
    spec = importlib.util.spec_from_file_location("report_stability", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


SCRIPT = _load_script()
# The chosen k per seed: seed 0's analysis chose k = 0 (its chosen-k chain is its k = 0 chain).
CHOSEN = {0: 0, 1: 1024, 2: 1024, 3: 5120, 4: 1024}
GAIN = {0: 0.0, 1: 40.0, 2: 55.0, 3: 30.0, 4: 45.0}  # chosen-k ticket minus k = 0 ticket at every level


def write_chain(root: Path, chain_hash: str, seed: int, name: str, step: int, returns: list[float]) -> Path:
    """A chain in the runner's layout (meta.json, levels.csv) trained with ``rewind.step=step``."""
    chain = root / "chains" / chain_hash / f"seed_{seed}"
    chain.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": name,
        "task": "rl",
        "seed": seed,
        "metric": "eval_return_mean",
        "config": {"rewind": {"step": step}, "env": {"id": "CartPole-v1"}},
    }
    (chain / "meta.json").write_text(json.dumps(meta))
    rows = [
        {"level": lvl, "variant": "ticket", "density": 0.8**lvl, "eval_return_mean": r}
        for lvl, r in enumerate(returns)
    ]
    pd.DataFrame(rows).to_csv(chain / "levels.csv", index=False)
    return chain


def build_root(root: Path) -> None:
    """As the study leaves it: a seed whose analysis chose k = 0 ran its chosen-k chain in its k = 0
    chain's directory (same hash), whose meta.json then carries the chosen-k arm's name."""
    for seed in CHOSEN:
        k0 = [480.0, 400.0 - 10 * seed, 300.0 + seed, 200.0 - seed]
        if CHOSEN[seed] == 0:
            chain = write_chain(root, "k0hash", seed, "ppo_cartpole_auto_k", 0, k0)
        else:
            write_chain(root, "k0hash", seed, "ppo_cartpole_k0", 0, k0)
            chosen = [k0[0]] + [r + GAIN[seed] for r in k0[1:]]
            chain = write_chain(
                root, f"auto{CHOSEN[seed]}", seed, "ppo_cartpole_auto_k", CHOSEN[seed], chosen
            )
        (chain / SCRIPT.CHOICE_FILE).write_text(json.dumps({"rewind.step": CHOSEN[seed]}))


def test_chosen_k_is_paired_with_k0_by_seed_and_its_gain_found(tmp_path: Path) -> None:
    build_root(tmp_path)
    k0, chosen = SCRIPT.arms("ppo_cartpole", SCRIPT.discover(tmp_path))
    assert [c.seed for c in k0.chains] == [c.seed for c in chosen.chains] == [0, 1, 2, 3, 4]
    table = SCRIPT.compare_arms(k0, chosen, SCRIPT.ReportOptions())
    assert list(table["level"]) == [1, 2, 3]
    mean_gain = sum(GAIN.values()) / len(GAIN)
    assert table["n"].tolist() == [5, 5, 5]
    assert table["diff_mean"].tolist() == pytest.approx([mean_gain] * 3)
    assert (table["verdict"] == "better").all()
    assert table["k_per_seed"].iloc[0] == "0:0 1:1024 2:1024 3:5120 4:1024"


def test_the_script_pools_the_arm_and_writes_the_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_root(tmp_path)
    monkeypatch.setattr(sys, "argv", ["report_stability.py", str(tmp_path)])
    SCRIPT.main()
    out = tmp_path / "report"
    table = pd.read_csv(out / "ppo_cartpole_chosen_k_vs_k0.csv")
    assert len(table) == 3 and (table["verdict"] == "better").all()
    assert "chosen k is" in (out / "ppo_cartpole_chosen_k_vs_k0.md").read_text()
    for arm in ("ppo_cartpole_auto_k_pooled", "ppo_cartpole_k0_pooled"):
        pooled = pd.read_csv(out / arm / "per_seed.csv")
        assert sorted(pooled["seed"].unique()) == [0, 1, 2, 3, 4], arm


def test_instability_sources_counts_pairs_unstable_by_their_ends_and_by_a_barrier(tmp_path: Path) -> None:
    seed_dir = tmp_path / "stability" / "abc123" / "seed_0"
    seed_dir.mkdir(parents=True)
    (seed_dir / "identity.json").write_text(json.dumps({"algo.name": "ppo", "env.id": "CartPole-v1"}))
    pairs = pd.DataFrame(
        {  # stable; unstable by the ends only; unstable with a dip in the middle; unstable at an end with a dip
            "stable": [True, False, False, False],
            "worst_alpha": [0.0, 1.0, 0.5, 0.0],
            "end_a": [500.0, 500.0, 500.0, 100.0],
            "end_b": [500.0, 200.0, 450.0, 480.0],
            "worst": [500.0, 200.0, 400.0, 100.0],
            "barrier": [0.0, 0.0, 60.0, 30.0],
            "threshold": [25.0] * 4,
        }
    )
    pairs.to_csv(seed_dir / "instability.csv", index=False)
    table = SCRIPT.instability_sources(tmp_path)
    assert "| abc123 | ppo CartPole-v1 | 4 | 3 | 2 | 2 | 1 | 60 |" in table


def test_training_cost_sums_the_recorded_seconds_of_analyses_and_chains_with_their_dense_level(
    tmp_path: Path,
) -> None:
    def run(directory: Path, **seconds: float) -> None:
        # As the runner writes it: the sections and their total (which must not be counted twice).
        directory.mkdir(parents=True)
        time = {**seconds, "total_s": sum(seconds.values())}
        (directory / "metrics.json").write_text(json.dumps({"metrics": {}, "time": time}))

    analysis = tmp_path / "stability" / "abc123"
    run(analysis / "seed_0" / "dense", train_s=1000.0, eval_s=80.0)
    run(analysis / "seed_0" / "k_000000000" / "level_00" / "a", train_s=900.0, save_s=20.0)
    run(analysis / "seed_0" / "k_000000000" / "level_00" / "b", train_s=600.0)
    chain = write_chain(tmp_path, "chainhash", 0, "dqn_cartpole_k0", 0, [100.0, 200.0])
    meta = json.loads((chain / "meta.json").read_text())
    (chain / "meta.json").write_text(json.dumps({**meta, "dense_dir": "elsewhere/dense/densehash/seed_0"}))
    run(chain / "level_01" / "ticket", train_s=1800.0)
    run(tmp_path / "dense" / "densehash" / "seed_0" / "level_00" / "ticket", train_s=1800.0)
    table = SCRIPT.training_cost(tmp_path)
    assert "| analysis abc123 | 3 | 0.72 |" in table  # 2,600 s
    assert "| chain chainhash (dqn_cartpole_k0) | 2 | 1.00 |" in table  # its level and its dense level 0
