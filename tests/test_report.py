"""End-to-end report on a fake results root with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import scipy.stats
import torch

from rl_tickets.report import main, stats
from rl_tickets.report.formatting import fmt_density
from rl_tickets.report.loading import discover
from rl_tickets.report.masks import alive_inputs, analyse_masks, masks_markdown

OBS = ["cart_position", "cart_velocity", "pole_angle", "pole_angular_velocity"]
RL_SEEDS = [0, 1, 2, 3]
SUP_SEEDS = [0, 1, 2]
LEVELS = [0, 1, 2, 3]


def write_chain(
    root: Path,
    chain_hash: str,
    seed: int,
    meta: dict,
    rows: list[dict],
    masks: dict[int, dict[str, torch.Tensor]],
) -> Path:
    """Write one chain in the runner's layout: meta.json, levels.csv, layers.csv, level_NN/ticket/mask.pt."""
    chain = root / "chains" / chain_hash / f"seed_{seed}"
    chain.mkdir(parents=True)
    (chain / "meta.json").write_text(json.dumps({**meta, "seed": seed}))
    pd.DataFrame(rows).to_csv(chain / "levels.csv", index=False)
    layer_rows = [
        {
            "level": lvl,
            "variant": "ticket",
            "layer": n,
            "numel": m.numel(),
            "density": m.float().mean().item(),
        }
        for lvl, level_masks in masks.items()
        for n, m in level_masks.items()
    ]
    pd.DataFrame(layer_rows).to_csv(chain / "layers.csv", index=False)
    for lvl, level_masks in masks.items():
        (chain / f"level_{lvl:02d}" / "ticket").mkdir(parents=True)
        torch.save(level_masks, chain / f"level_{lvl:02d}" / "ticket" / "mask.pt")
    return chain


# SB3's PPO names: the actor is the policy body and action head, the critic the value body and head.
PI0, PI2 = "mlp_extractor.policy_net.0.weight", "action_net.weight"
VF0, VF2 = "mlp_extractor.value_net.0.weight", "value_net.weight"


def rl_masks(level: int) -> dict[str, torch.Tensor]:
    """Identical across seeds. cart_velocity (column 1) loses its actor edges at level 1 and its
    critic edges at level 2: alive at level 1 (the critic still reads it), dead from level 2."""
    pi0, vf0 = torch.ones(8, 4, dtype=torch.bool), torch.ones(8, 4, dtype=torch.bool)
    pi2, vf2 = torch.ones(2, 8, dtype=torch.bool), torch.ones(1, 8, dtype=torch.bool)
    if level >= 1:
        pi0[:, 1] = False
    if level >= 2:
        vf0[:, 1] = False
    vf2[0, 8 - 2 * level :] = False if level else True
    return {PI0: pi0, PI2: pi2, VF0: vf0, VF2: vf2}


def sup_masks(level: int, seed: int) -> dict[str, torch.Tensor]:
    """Seeds 0 and 1 share a mask, seed 2 keeps the disjoint rows: mean pairwise Jaccard = 1/3.
    Input column 5 is dead in every seed at every pruned level."""
    fc1 = torch.zeros(4, 6, dtype=torch.bool)
    rows = slice(0, 2) if seed in (0, 1) else slice(2, 4)
    fc1[rows, :5] = True
    return {"fc1.weight": fc1}


def build_root(root: Path) -> None:
    """Two experiments: PPO CartPole (4 seeds, seed 3 stops after level 2) and a supervised MLP (3 seeds)."""
    rl_meta = {
        "name": "ppo-cartpole",
        "task": "rl",
        "algo": "ppo",
        "env": "cartpole",
        "metric": "eval_return_mean",
        "unit": "timesteps",
        "input_layers": [PI0, VF0],
        # Written before roles were recorded, by the substring rule ("actor." inside "mlp_extractor."):
        # the report must not trust these lists; it rebuilds the roles from the module paths.
        "actor_layers": [PI0, VF0, PI2],
        "critic_layers": [VF0, VF2],
        "observation_names": OBS,
    }
    for seed in RL_SEEDS:
        last = 2 if seed == 3 else 3  # an incomplete chain
        rows = [
            {
                "level": 0,
                "variant": "ticket",
                "density": 1.0,
                "eval_return_mean": 450.0 + seed,
                "timesteps": 1,
            }
        ]
        for lvl in range(1, last + 1):
            ticket = 400.0 + seed + lvl
            # The ticket beats reinit on every seed, by 50-53; it is 48-50 below dense.
            rows.append({"level": lvl, "variant": "ticket", "density": 0.8**lvl, "eval_return_mean": ticket})
            rows.append(
                {
                    "level": lvl,
                    "variant": "reinit",
                    "density": 0.8**lvl,
                    "eval_return_mean": ticket - 50 - seed,
                }
            )
        write_chain(
            root, "aaaaaa111111", seed, rl_meta, rows, {lvl: rl_masks(lvl) for lvl in range(1, last + 1)}
        )
    # A chain still being set up: no meta.json yet. Must be skipped, not crash.
    (root / "chains" / "aaaaaa111111" / "seed_9").mkdir()

    sup_meta = {
        "name": "lenet-digits",
        "task": "supervised",
        "algo": "adam",
        "env": "digits",
        "metric": "test_accuracy",  # written before the early-stop headline: the report still uses it
        "unit": "iterations",
        "input_layers": ["fc1.weight"],
        "actor_layers": [],
        "critic_layers": [],
        "observation_names": None,
    }
    for seed in SUP_SEEDS:
        # The headline is the accuracy at early stop; the final accuracy (lower here) is a second column.
        acc = {"test_accuracy_at_early_stop": 0.9 + 0.01 * seed, "test_accuracy": 0.5}
        rows = [{"level": 0, "variant": "ticket", "density": 1.0, **acc}]
        for lvl in LEVELS[1:]:
            # Ticket equals dense on every seed (matches); reinit is better on every seed (worse).
            rows.append({"level": lvl, "variant": "ticket", "density": 0.8**lvl, **acc})
            rows.append(
                {
                    "level": lvl,
                    "variant": "reinit",
                    "density": 0.8**lvl,
                    "test_accuracy": 0.5,
                    "test_accuracy_at_early_stop": 0.95 + 0.01 * seed + 0.001 * lvl,
                }
            )
        write_chain(
            root, "bbbbbb222222", seed, sup_meta, rows, {lvl: sup_masks(lvl, seed) for lvl in LEVELS[1:]}
        )


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    build_root(root)
    # 4 and 3 seeds are below the default minimum of 5; the fixture lowers it to test the verdicts.
    assert main([str(root), "--n-resamples", "2000", "--min-seeds", "3"]) == 0
    return root / "report"


def test_files_exist(report_dir: Path) -> None:
    for exp in ("ppo-cartpole", "lenet-digits"):
        for name in (
            "summary.csv",
            "summary.md",
            "verdicts.csv",
            "per_seed.csv",
            "masks.md",
            "layer_density.png",
        ):
            assert (report_dir / exp / name).is_file(), f"{exp}/{name} missing"
    assert (report_dir / "ppo-cartpole" / "return_vs_density.png").is_file()
    assert (report_dir / "lenet-digits" / "accuracy_vs_density.png").is_file()
    index = (report_dir / "index.md").read_text()
    assert "[ppo-cartpole](ppo-cartpole/summary.md)" in index
    assert "[lenet-digits](lenet-digits/summary.md)" in index


def test_summary_numbers(report_dir: Path) -> None:
    summary = pd.read_csv(report_dir / "ppo-cartpole" / "summary.csv")
    dense = summary[(summary["level"] == 0) & (summary["variant"] == "ticket")].iloc[0]
    assert dense["n"] == 4 and dense["mean"] == pytest.approx(451.5) and dense["density"] == 1.0
    deepest = summary[(summary["level"] == 3) & (summary["variant"] == "ticket")].iloc[0]
    assert deepest["n"] == 3  # seed 3 stopped at level 2
    assert deepest["density"] == pytest.approx(0.512)
    assert deepest["ci_low"] <= deepest["mean"] <= deepest["ci_high"]
    # Ticket first within each level.
    assert summary[summary["level"] == 1]["variant"].tolist() == ["ticket", "reinit"]


def test_verdicts(report_dir: Path) -> None:
    rl = pd.read_csv(report_dir / "ppo-cartpole" / "verdicts.csv")
    assert set(rl[rl["comparison"] == "reinit"]["verdict"]) == {stats.BETTER}
    # Constant differences at 3-4 seeds: the bounded-mean test cannot rule out a few failing seeds
    # (docs/verdicts.md), so neither "below dense" nor "matches" is declared.
    assert set(rl[rl["comparison"] == "dense"]["verdict"]) == {stats.INCONCLUSIVE}
    assert rl[(rl["level"] == 3) & (rl["comparison"] == "reinit")]["n"].item() == 3
    sup = pd.read_csv(report_dir / "lenet-digits" / "verdicts.csv")
    # Equal differences on all 3 seeds: the exact sign-flip p-value 2/2^3 = 0.25, never p = 0.
    assert set(sup[sup["comparison"] == "reinit"]["verdict"]) == {stats.NO_DIFFERENCE}
    dense = sup[sup["comparison"] == "dense"]
    assert set(dense["verdict"]) == {stats.INCONCLUSIVE}
    assert dense["ci_low"].tolist() == pytest.approx([0.0, 0.0, 0.0])
    md = (report_dir / "ppo-cartpole" / "summary.md").read_text()
    assert "beats reinit?" in md and "matches dense?" in md
    assert "paired t-test" in md and "alpha = 0.05" in md and "m = 0.05 × |dense mean|" in md
    # Level 1: differences 50, 51, 52, 53: mean 51.5, t-interval 51.5 ± 3.182 * 1.291 / 2, p = 1.3e-5.
    assert "better: +51.5 [+49.45, +53.55], p=<0.0001 (n=4)" in md
    level1 = rl[(rl["level"] == 1) & (rl["comparison"] == "reinit")].iloc[0]
    assert level1["p_value"] == pytest.approx(scipy.stats.ttest_1samp([50, 51, 52, 53], 0).pvalue)
    assert level1["test"] == "t" and level1["margin"] == 0.0
    # Dense: every seed 49 below at level 1 (constant), margin 5% of the dense mean 451.5.
    dense_rl = rl[(rl["level"] == 1) & (rl["comparison"] == "dense")].iloc[0]
    assert dense_rl["margin"] == pytest.approx(0.05 * 451.5) and dense_rl["p_below"] == 1.0


def test_supervised_headline_is_accuracy_at_early_stop(report_dir: Path) -> None:
    summary = pd.read_csv(report_dir / "lenet-digits" / "summary.csv")
    dense = summary[(summary["level"] == 0) & (summary["variant"] == "ticket")].iloc[0]
    assert dense["mean"] == pytest.approx(0.91) and dense["secondary_mean"] == pytest.approx(0.5)
    md = (report_dir / "lenet-digits" / "summary.md").read_text()
    assert (
        "**test accuracy at early stop (test_accuracy_at_early_stop)**" in md and "mean test_accuracy" in md
    )
    # Accuracy lies in [0, 1]: the bounded test is told so.
    assert "range, known for this task: [0, 1]" in md


def test_holm_is_named_and_can_only_weaken(tmp_path: Path) -> None:
    build_root(tmp_path)
    out = tmp_path / "holm"
    assert main([str(tmp_path), "--out", str(out), "--min-seeds", "3", "--holm", "--n-resamples", "200"]) == 0
    verdicts = pd.read_csv(out / "ppo-cartpole" / "verdicts.csv")
    assert (verdicts["p_value_holm"] >= verdicts["p_value"]).all()
    assert "Holm-adjusted" in (out / "ppo-cartpole" / "summary.md").read_text()


def test_mask_analysis(report_dir: Path) -> None:
    rl = (report_dir / "ppo-cartpole" / "masks.md").read_text()
    assert "level 1: dead in every seed: none" in rl  # the critic still reads cart_velocity
    assert "level 2: dead in every seed: cart_velocity" in rl
    assert "level 3: dead in every seed: cart_velocity" in rl
    assert "| cart_velocity | 4/4 | 0/4 | 0/3 |" in rl
    # Identical masks across seeds.
    assert "| 1 | 88.6% | 4 | 1.000 |" in rl  # 78 of 88 weights kept
    # Actor vs critic at level 3: actor (24 + 16) / 48, critic (24 + 2) / 40.
    assert "## Actor vs critic density" in rl
    assert f"| 3 | {fmt_density(40 / 48)} | {fmt_density(26 / 40)} | 3 |" in rl
    # Level 1 -> 2 within a seed: kept 78 then 68, nested, so Jaccard = 68 / 78.
    assert f"| 1 → 2 | 4 | {68 / 78:.3f} |" in rl
    # Per-layer densities from layers.csv.
    assert f"| `{PI0}` | actor | 75% | 75% | 75% |" in rl
    assert f"| `{VF2}` | critic |" in rl

    sup = (report_dir / "lenet-digits" / "masks.md").read_text()
    assert "| 1 | 41.7% | 3 | 0.333 |" in sup  # pairs (A, A), (A, B), (A, B) -> 1/3
    assert "level 1: dead in every seed: input[5]" in sup
    assert "| 1 → 2 | 3 | 1.000 |" in sup
    assert "Actor vs critic" not in sup


def test_not_enough_seeds(tmp_path: Path) -> None:
    build_root(tmp_path)
    out = tmp_path / "elsewhere"
    # The default minimum (5 paired seeds) refuses a verdict on 4 and 3 seeds, however clear the data.
    assert main([str(tmp_path), "--out", str(out), "--n-resamples", "500"]) == 0
    for exp in ("ppo-cartpole", "lenet-digits"):
        verdicts = pd.read_csv(out / exp / "verdicts.csv")
        assert set(verdicts["verdict"]) == {stats.NOT_ENOUGH_SEEDS}
        md = (out / exp / "summary.md").read_text()
        assert "not enough seeds" in md and "fewer than 5 paired seeds" in md
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("make", [False, True])
def test_missing_or_empty_root(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: bool) -> None:
    root = tmp_path / "nothing"
    if make:
        (root / "chains").mkdir(parents=True)
    assert main([str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(root) in err[0]


def test_same_name_different_configs(tmp_path: Path) -> None:
    meta = {"name": "exp", "task": "rl", "metric": "eval_return_mean", "input_layers": []}
    row = [{"level": 0, "variant": "ticket", "density": 1.0, "eval_return_mean": 1.0}]
    for chain_hash in ("123456abcdef", "fedcba654321"):
        write_chain(tmp_path, chain_hash, 0, meta, row, {})
    write_chain(tmp_path, "999999000000", 0, {**meta, "name": "other"}, row, {})
    labels = [e.label for e in discover(tmp_path)]
    assert labels == ["exp-123456", "exp-fedcba", "other"]


def test_alive_inputs_conv_channels() -> None:
    conv = torch.ones(16, 3, 3, 3, dtype=torch.bool)
    conv[:, 2] = False
    alive = alive_inputs({"conv.weight": conv}, ["conv.weight", "absent.weight"])
    assert alive is not None and alive.tolist() == [True, True, False]
    assert alive_inputs({}, ["conv.weight"]) is None


def test_overlap_across_a_missing_level(tmp_path: Path) -> None:
    meta = {"name": "gap", "task": "rl", "metric": "eval_return_mean", "input_layers": ["w"]}
    row = [{"level": 0, "variant": "ticket", "density": 1.0, "eval_return_mean": 1.0}]
    full, half = torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool)
    half[:, :2] = True
    write_chain(tmp_path, "cafe00000000", 0, meta, row, {1: {"w": full}, 3: {"w": half}})
    analysis = analyse_masks(discover(tmp_path)[0])
    levels = analysis.overlap_levels
    assert levels[["from_level", "to_level"]].values.tolist() == [[1, 3]]
    assert levels["jaccard_mean"].item() == pytest.approx(0.5)
    assert analysis.inputs[analysis.inputs["level"] == 3]["alive_seeds"].tolist() == [1, 1, 0, 0]


def test_recorded_roles_decide_and_a_shared_extractor_gets_its_column(tmp_path: Path) -> None:
    """meta.json's ``roles`` (module identity at run time) win over any name; ``shared`` gets a column."""
    meta = {"name": "cnn", "task": "rl", "algo": "ppo", "metric": "eval_return_mean", "input_layers": []}
    meta["roles"] = {"enc.weight": "shared", "pi.weight": "actor", "vf.weight": "critic"}
    row = [{"level": 0, "variant": "ticket", "density": 1.0, "eval_return_mean": 1.0}]
    enc, pi, vf = (torch.zeros(10, dtype=torch.bool) for _ in range(3))
    enc[:3], pi[:5], vf[:9] = True, True, True
    write_chain(
        tmp_path, "c0ffee000000", 0, meta, row, {1: {"enc.weight": enc, "pi.weight": pi, "vf.weight": vf}}
    )
    analysis = analyse_masks(discover(tmp_path)[0])
    assert analysis.roles[["actor_density", "critic_density", "shared_density"]].values.tolist() == [
        [0.5, 0.9, 0.3]
    ]
    text = masks_markdown(discover(tmp_path)[0], analysis)
    assert "| level | actor | critic | shared | seeds |" in text and "| 1 | 50% | 90% | 30% | 1 |" in text
    assert "| `enc.weight` | shared |" in text


def test_dqn_has_no_actor_critic_table(tmp_path: Path) -> None:
    """DQN's layers are all ``q`` (by their module path, no roles recorded): no actor/critic split to show."""
    meta = {"name": "dqn", "task": "rl", "algo": "dqn", "metric": "eval_return_mean", "input_layers": []}
    row = [{"level": 0, "variant": "ticket", "density": 1.0, "eval_return_mean": 1.0}]
    mask = {"q_net.q_net.0.weight": torch.ones(4, 4, dtype=torch.bool)}
    write_chain(tmp_path, "d0d0d0000000", 0, meta, row, {1: mask})
    analysis = analyse_masks(discover(tmp_path)[0])
    assert analysis.roles.empty and analysis.layer_roles == {"q_net.q_net.0.weight": "q"}
    assert "Actor vs critic" not in masks_markdown(discover(tmp_path)[0], analysis)
