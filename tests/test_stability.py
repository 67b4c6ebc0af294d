"""The instability analysis (Frankle et al. 2020) checked against what the paper defines: the path's ends
are the two copies themselves, masks hold at every point, the copies share their start at k and differ
only by their noise, identical noise gives instability 0, and the rewind step chosen from the evidence
gives the chain with that step written out. RL analyses run for PPO (with VecNormalize), DQN and SAC
with budgets small enough for seconds and settings that make gradient updates really happen."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rl_tickets.chain.store import ChainPaths
from rl_tickets.cli.job import run_job
from rl_tickets.cli.sweep_summary import sweep_chain_dirs
from rl_tickets.config import (
    AlgoConfig,
    Config,
    ConfigError,
    DataConfig,
    EnvConfig,
    EvalConfig,
    LoggerConfig,
    PruneConfig,
    StabilityConfig,
    TrainConfig,
    validate,
)
from rl_tickets.level import Trainer, snapshot_file
from rl_tickets.rl.evaluation import EVALUATIONS_FILE, Evaluation, save_evaluations
from rl_tickets.sparsity.masks import load_mask
from rl_tickets.stability.analysis import Analysis
from rl_tickets.stability.choose import CHOICE_FILE, choose_step, resolve_auto
from rl_tickets.stability.figures import FIGURES, SUMMARY_CSV, write_figures, write_reports
from rl_tickets.stability.interpolation import barrier, instability, interpolate
from rl_tickets.stability.pairs import PairSpec, evaluate_path, train_pair
from rl_tickets.stability.settings import check_settings, grid, learner_config, mask_config
from rl_tickets.stability.store import PAIR_RECORD, PATH_RECORD, StabilityPaths, dense_reference
from rl_tickets.stability.tables import INSTABILITY_CSV, STABILITY_CSV
from rl_tickets.trainers import build_trainer

ALPHAS = 3
RL: dict[str, dict[str, Any]] = {
    # (env, budget, steps, hyperparams): every copy takes several gradient updates after k.
    "ppo": {
        "env": EnvConfig(name="cartpole", id="CartPole-v1", n_envs=2, normalize=True),
        "timesteps": 512,
        "steps": [0.0, 128.0],
        "hyperparams": {"n_steps": 32, "batch_size": 32, "n_epochs": 2},
    },
    "dqn": {
        "env": EnvConfig(name="cartpole", id="CartPole-v1"),
        "timesteps": 512,
        "steps": [0.0, 0.25],
        "hyperparams": {
            "learning_starts": 64,
            "train_freq": 8,
            "gradient_steps": 1,
            "target_update_interval": 32,
            "batch_size": 16,
            "buffer_size": 1_000,
        },
    },
    "sac": {
        "env": EnvConfig(name="pendulum", id="Pendulum-v1"),
        "timesteps": 256,
        "steps": [0.0, 64.0],
        "hyperparams": {"learning_starts": 32, "batch_size": 16, "buffer_size": 1_000},
    },
}


def rl_config(root: Path, algo: str, **changes: Any) -> Config:
    """A tiny validated ``task=stability`` config of an RL chain: levels 0 and 1, two rewind steps."""
    spec = RL[algo]
    cfg = Config(
        task="stability",
        algo=AlgoConfig(name=algo, hyperparams=dict(spec["hyperparams"]), policy_kwargs={"net_arch": [16]}),
        env=spec["env"],
        train=TrainConfig(timesteps=spec["timesteps"]),
        prune=PruneConfig(rate=0.5),
        eval=EvalConfig(episodes=2, every=0),
        stability=StabilityConfig(of="rl", steps=list(spec["steps"]), levels=[0, 1], alphas=ALPHAS),
        logger=LoggerConfig(mode="disabled"),
        root=str(root),
        device="cpu",
        progress=False,
    )
    cfg = replace(cfg, **changes)
    validate(cfg)
    check_settings(cfg)
    return cfg


def supervised_config(root: Path, **stability: Any) -> Config:
    """A tiny ``task=stability`` config of LeNet on scikit-learn's digits (a few seconds per training)."""
    settings = {"of": "supervised", "steps": [0.0, 0.25], "levels": [0, 2], "alphas": 5, **stability}
    cfg = Config(
        task="stability",
        data=DataConfig("digits"),
        train=TrainConfig(iterations=200, batch_size=60, lr=1.2e-3),
        prune=PruneConfig(rate=0.5, scope="layer"),
        eval=EvalConfig(every=50),
        stability=StabilityConfig(**settings),
        logger=LoggerConfig(mode="disabled"),
        root=str(root),
        device="cpu",
        progress=False,
    )
    validate(cfg)
    check_settings(cfg)
    return cfg


def analyse(cfg: Config) -> tuple[Path, Trainer]:
    """Run one seed's analysis; return its seed directory and trainer."""
    trainer = build_trainer(learner_config(cfg))
    return Analysis(cfg, trainer).run(), trainer


@pytest.fixture(scope="module", params=sorted(RL))
def rl_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Config, Path, Trainer]:
    """One finished RL analysis per algorithm (shared by the RL tests)."""
    cfg = rl_config(tmp_path_factory.mktemp(request.param), request.param)
    return (cfg, *analyse(cfg))


@pytest.fixture(scope="module")
def supervised_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path, Trainer]:
    """One finished supervised analysis (shared by the supervised tests)."""
    cfg = supervised_config(tmp_path_factory.mktemp("supervised"))
    return (cfg, *analyse(cfg))


def pair_dirs(seed_dir: Path) -> list[Path]:
    """The seed's finished pairs."""
    return [d for d in sorted(seed_dir.glob("k_*/level_*")) if (d / PAIR_RECORD).is_file()]


def taken_steps(seed_dir: Path) -> list[int]:
    """The rewind steps the dense run's snapshots were taken at."""
    record = json.loads((seed_dir / "dense" / "metrics.json").read_text())
    return sorted({int(k) for k in record["extra"]["snapshots"].values()})


# ---- interpolation and instability, by definition -------------------------------------------------
def test_interpolation_is_exact_at_both_ends_and_linear_between() -> None:
    generator = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(50, 7, generator=generator), "b": torch.randn(7, generator=generator)}
    b = {"w": torch.randn(50, 7, generator=generator), "b": torch.randn(7, generator=generator)}
    assert all(torch.equal(interpolate(a, b, 0.0)[n], a[n]) for n in a)
    assert all(torch.equal(interpolate(a, b, 1.0)[n], b[n]) for n in a)
    assert torch.allclose(interpolate(a, b, 0.25)["w"], 0.75 * a["w"] + 0.25 * b["w"])
    with pytest.raises(KeyError):
        interpolate(a, {"w": b["w"]}, 0.5)


def test_instability_is_the_mean_of_the_ends_minus_the_worst_point() -> None:
    # Returns (higher is better): ends 500 and 480, worst 300 at alpha 0.5.
    assert instability([500.0, 420.0, 300.0, 450.0, 480.0], True) == (190.0, 2)
    # Error (lower is better): ends 0.02 and 0.04, worst 0.10.
    value, worst = instability([0.02, 0.10, 0.04], False)
    assert value == pytest.approx(0.07) and worst == 1
    # A path whose worst point is an end: half the gap of the ends, but no barrier.
    assert instability([430.0, 250.0, 60.0], True) == (185.0, 2)
    assert barrier([430.0, 245.0, 60.0], [0.0, 0.5, 1.0], True) == 0.0
    assert barrier([430.0, 200.0, 60.0], [0.0, 0.5, 1.0], True) == pytest.approx(45.0)
    assert barrier([0.02, 0.10, 0.04], [0.0, 0.5, 1.0], False) == pytest.approx(0.07)


def test_grid_takes_fractions_and_whole_steps(tmp_path: Path) -> None:
    cfg = supervised_config(tmp_path, steps=[0.0, 0.005, 0.5, 120.0, 100.0])
    assert grid(cfg) == [0, 1, 100, 120]  # 0.005 * 200 rounds to 1; 0.5 * 200 = 100 once


@pytest.mark.parametrize(
    "change, says",
    [
        ({"stability": StabilityConfig(steps=[0.0, 1.5])}, "stability.steps has 1.5"),
        ({"stability": StabilityConfig(steps=[0.0, 600.0])}, "stability.steps has 600"),
        ({"stability": StabilityConfig(alphas=1)}, "stability.alphas=1"),
        ({"stability": StabilityConfig(levels=[0, 0])}, "stability.levels"),
        ({"prune": PruneConfig(schedule="gradual")}, "prune.schedule=gradual"),
    ],
)
def test_settings_an_analysis_cannot_use_are_refused(
    tmp_path: Path, change: dict[str, Any], says: str
) -> None:
    cfg = replace(rl_config(tmp_path, "ppo"), **change)
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        check_settings(cfg)


def test_rewind_auto_is_refused_on_the_analysis_itself(tmp_path: Path) -> None:
    cfg = rl_config(tmp_path, "ppo")
    with pytest.raises(ConfigError, match="rewind.auto"):
        check_settings(replace(cfg, rewind=replace(cfg.rewind, auto=True)))


# ---- RL: PPO (normalised), DQN, SAC ----------------------------------------------------------------
def test_rl_analysis_trains_every_pair_with_real_updates(rl_run: tuple[Config, Path, Trainer]) -> None:
    cfg, seed_dir, _ = rl_run
    ks = taken_steps(seed_dir)
    assert len(ks) == 2 and ks[0] == 0
    pairs = pair_dirs(seed_dir)
    assert len(pairs) == len(ks) * 2
    for pair in pairs:
        record = json.loads((pair / PAIR_RECORD).read_text())
        for copy in ("a", "b"):
            extra = record["copies"][copy]["extra"]
            assert extra["n_updates"] > 0, f"{pair}: copy {copy} took no gradient update"
            assert extra["start_step"] == record["k"] and extra["end_step"] >= cfg.train.timesteps
    rows = (seed_dir / STABILITY_CSV).read_text().strip().splitlines()
    assert len(rows) == 1 + len(pairs) * ALPHAS
    assert (seed_dir / INSTABILITY_CSV).is_file()


def test_rl_path_ends_are_each_copys_own_evaluation(rl_run: tuple[Config, Path, Trainer]) -> None:
    """Alpha 0 and 1 replay exactly each copy's final evaluation: same episodes, same returns (PPO's
    VecNormalize statistics included)."""
    _, seed_dir, _ = rl_run
    for pair in pair_dirs(seed_dir):
        points = json.loads((pair / PATH_RECORD).read_text())["points"]
        for copy, point in (("a", points[0]), ("b", points[-1])):
            with np.load(pair / copy / "evaluations.npz") as evaluations:
                own = evaluations["results"][-1].tolist()
            assert point["returns"] == own, f"{pair} alpha {point['alpha']} differs from copy {copy}"


def test_rl_copies_share_the_start_and_differ_by_their_noise(rl_run: tuple[Config, Path, Trainer]) -> None:
    _, seed_dir, trainer = rl_run
    for pair in pair_dirs(seed_dir):
        record = json.loads((pair / PAIR_RECORD).read_text())
        assert record["seeds"]["a"] != record["seeds"]["b"]
        assert record["copies"]["a"]["extra"]["seed"] == record["seeds"]["a"]
        assert record["copies"]["b"]["extra"]["seed"] == record["seeds"]["b"]
        assert Path(record["start"]).parent == seed_dir / "dense"
        a = trainer.load_params(pair / "a" / trainer.checkpoint_name)
        b = trainer.load_params(pair / "b" / trainer.checkpoint_name)
        assert any(not torch.equal(a[n], b[n]) for n in a), f"{pair}: the two copies ended equal"


def test_rl_masks_hold_at_every_alpha(
    rl_run: tuple[Config, Path, Trainer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every point of a ticket's path is evaluated with its pruned weights exactly 0 (online and target)."""
    cfg, seed_dir, trainer = rl_run
    pair = next(p for p in pair_dirs(seed_dir) if p.name == "level_01")
    mask = load_mask(pair / "mask.pt")
    assert any(not bool(m.all()) for m in mask.values())
    seen = []
    original = trainer.evaluate

    def checked(model: Any, eval_env: Any) -> Any:
        named = dict(model.policy.named_parameters())
        for name, kept in mask.items():
            assert torch.all(named[name].detach().cpu()[~kept] == 0), name
        seen.append(model.policy)
        return original(model, eval_env)

    monkeypatch.setattr(trainer, "evaluate", checked)
    analysis = Analysis(cfg, trainer)
    evaluate_path(pair, analysis.evaluator, trainer.checkpoint_name, mask, [0.0, 0.3, 0.5, 0.7, 1.0])
    assert len(seen) == 5


def test_the_analysis_dense_run_is_the_chains_dense_run(rl_run: tuple[Config, Path, Trainer]) -> None:
    """Snapshots at every k do not perturb training: the analysis's dense run ends exactly where the
    k=0 chain's level 0 ends (same seed, same machine)."""
    cfg, seed_dir, trainer = rl_run
    chain_dense = ChainPaths.of(mask_config(cfg, 0)).dense / "level_00" / "ticket"
    ours = trainer.load_params(seed_dir / "dense" / trainer.checkpoint_name)
    theirs = trainer.load_params(chain_dense / trainer.checkpoint_name)
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)


# ---- supervised ------------------------------------------------------------------------------------
def test_supervised_path_ends_are_each_copys_test_error(supervised_run: tuple[Config, Path, Trainer]) -> None:
    _, seed_dir, _ = supervised_run
    for pair in pair_dirs(seed_dir):
        record = json.loads((pair / PAIR_RECORD).read_text())
        points = json.loads((pair / PATH_RECORD).read_text())["points"]
        for copy, point in (("a", points[0]), ("b", points[-1])):
            assert point["value"] == pytest.approx(
                1.0 - record["copies"][copy]["metrics"]["test_accuracy"], abs=1e-12
            )
            assert point["loss"] > 0


def test_identical_noise_gives_instability_zero(
    supervised_run: tuple[Config, Path, Trainer], tmp_path: Path
) -> None:
    """Two copies with the same noise seed are one network twice: every point of the path is that
    network, so the instability and the barrier are exactly 0."""
    cfg, seed_dir, trainer = supervised_run
    k = taken_steps(seed_dir)[1]
    mask = load_mask(seed_dir / f"k_{k:09d}" / "level_02" / "mask.pt")
    spec = PairSpec(
        k=k,
        level=2,
        start=snapshot_file(seed_dir / "dense", k, ".pt"),
        mask=mask,
        mask_sha256=None,
        density=0.25,
        seeds=(7, 7),
    )
    final = tmp_path / "pair"
    train_pair(trainer, spec, final, seed_dir / "dense")
    a, b = (trainer.load_params(final / c / trainer.checkpoint_name) for c in ("a", "b"))
    assert all(torch.equal(a[n], b[n]) for n in a)
    record = evaluate_path(
        final, Analysis(cfg, trainer).evaluator, trainer.checkpoint_name, mask, [0.0, 0.5, 1.0]
    )
    assert len({p["value"] for p in record["points"]}) == 1
    assert record["instability"] == 0.0 and record["barrier"] == 0.0


def test_supervised_masks_hold_at_every_alpha(
    supervised_run: tuple[Config, Path, Trainer], monkeypatch: pytest.MonkeyPatch
) -> None:
    import rl_tickets.stability.supervised_path as supervised_path

    cfg, seed_dir, trainer = supervised_run
    pair = next(p for p in pair_dirs(seed_dir) if p.name == "level_02")
    mask = load_mask(pair / "mask.pt")
    original, seen = supervised_path.evaluate, []

    def checked(model: torch.nn.Module, split: Any) -> tuple[float, float]:
        named = dict(model.named_parameters())
        for name, kept in mask.items():
            assert torch.all(named[name].detach()[~kept] == 0), name
        seen.append(1)
        return original(model, split)

    monkeypatch.setattr(supervised_path, "evaluate", checked)
    evaluate_path(
        pair, Analysis(cfg, trainer).evaluator, trainer.checkpoint_name, mask, [0.0, 0.25, 0.5, 1.0]
    )
    assert len(seen) == 4


def test_a_rerun_trains_nothing_and_new_alphas_only_reevaluate(
    supervised_run: tuple[Config, Path, Trainer], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, seed_dir, trainer = supervised_run
    before = (seed_dir / INSTABILITY_CSV).read_text()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished analysis trained again")

    monkeypatch.setattr(trainer, "train", refuse)
    Analysis(cfg, trainer).run()
    assert (seed_dir / INSTABILITY_CSV).read_text() == before
    more = replace(cfg, stability=replace(cfg.stability, alphas=9))
    Analysis(more, trainer).run()
    assert all(len(json.loads((p / PATH_RECORD).read_text())["points"]) == 9 for p in pair_dirs(seed_dir))
    Analysis(cfg, trainer).run()  # back to 5 alphas: re-evaluated, the ends are the same copies
    assert (seed_dir / INSTABILITY_CSV).read_text() == before


def test_a_killed_pair_is_trained_again(tmp_path: Path) -> None:
    cfg = supervised_config(tmp_path, steps=[0.0], levels=[0])
    seed_dir, trainer = analyse(cfg)
    pair = seed_dir / "k_000000000" / "level_00"
    (pair / "a" / trainer.checkpoint_name).write_bytes(b"damaged")  # fails its manifest
    (pair.with_name("level_00.partial")).mkdir()  # what a kill leaves
    analyse(cfg)
    assert (pair / "COMPLETE").is_file() and not pair.with_name("level_00.partial").exists()
    assert list(pair.parent.glob("level_00.corrupt-*"))


def test_per_k_masks_come_from_the_chain_rewound_to_each_k(tmp_path: Path) -> None:
    cfg = supervised_config(tmp_path, masks="per_k", levels=[1])
    seed_dir, _ = analyse(cfg)
    for k in taken_steps(seed_dir):
        chain = ChainPaths.of(mask_config(cfg, k))
        assert mask_config(cfg, k).rewind.step == k
        own = load_mask(chain.level(1, "ticket") / "mask.pt")
        used = load_mask(seed_dir / f"k_{k:09d}" / "level_01" / "mask.pt")
        assert all(torch.equal(own[n], used[n]) for n in own)


def test_figures_and_summary(supervised_run: tuple[Config, Path, Trainer]) -> None:
    _, seed_dir, _ = supervised_run
    summary = write_figures(seed_dir.parent)
    assert (seed_dir.parent / SUMMARY_CSV).is_file()
    assert all((seed_dir.parent / name).stat().st_size > 1000 for name in FIGURES)
    assert set(summary["level"]) == {0, 2} and (summary["seeds"] == 1).all()


def test_the_report_gets_a_section_per_analysis(
    supervised_run: tuple[Config, Path, Trainer], tmp_path: Path
) -> None:
    cfg, seed_dir, _ = supervised_run
    index = write_reports(Path(cfg.root), tmp_path)
    assert "Instability analyses" in index and "lenet_300_100 digits" in index
    folder = next(tmp_path.glob("stability-lenet_300_100_digits-*"))
    assert {p.name for p in folder.iterdir()} >= {SUMMARY_CSV, *FIGURES, "stability.md"}
    assert "| 2 |" in (folder / "stability.md").read_text()


def test_supervised_presets_say_what_task_stability_analyses() -> None:
    from hydra import compose, initialize_config_module

    from rl_tickets.config import register_schemas

    register_schemas()
    with initialize_config_module(config_module="rl_tickets.conf", version_base="1.3"):
        lenet = compose(config_name="config", overrides=["experiment=lth_lenet_mnist5k", "task=stability"])
        default = compose(config_name="config", overrides=["task=stability"])
    assert (lenet.stability.of, lenet.train.iterations) == ("supervised", 3000)
    assert default.stability.of == "rl"


# ---- choosing k ------------------------------------------------------------------------------------
def test_choose_step_takes_the_smallest_k_where_every_level_is_stable() -> None:
    rows = [
        {"k": 0, "level": 0, "instability": 10.0, "dense_metric": 100.0},
        {"k": 0, "level": 3, "instability": 1.0, "dense_metric": 100.0},
        {"k": 50, "level": 0, "instability": 4.0, "dense_metric": 100.0},
        {"k": 50, "level": 3, "instability": 6.0, "dense_metric": 100.0},
        {"k": 90, "level": 0, "instability": 5.0, "dense_metric": 100.0},
        {"k": 90, "level": 3, "instability": 0.0, "dense_metric": 100.0},
    ]
    assert choose_step(rows, [0, 3], 0.05) == 90
    assert choose_step(rows, [3], 0.05) == 0
    assert choose_step(rows, [0], 0.05) == 50
    assert choose_step(rows, [0, 3], 0.01) is None
    assert choose_step(rows, [0, 7], 0.5) is None  # a level without pairs is never stable


def test_rewind_auto_gives_the_chain_with_that_step_written_out(
    supervised_run: tuple[Config, Path, Trainer],
) -> None:
    cfg, seed_dir, _ = supervised_run
    chain_cfg = replace(learner_config(cfg), rewind=replace(cfg.rewind, auto=True))
    lenient = replace(chain_cfg, stability=replace(cfg.stability, threshold=10.0))
    resolved, record = resolve_auto(lenient)
    assert resolved.rewind.step == 0 and not resolved.rewind.auto  # everything is stable at 10x
    assert record["analysis"] == str(seed_dir)
    rows = [json.loads((p / PATH_RECORD).read_text()) for p in pair_dirs(seed_dir)]
    worst = max(r["instability"] for r in rows)
    dense = json.loads((seed_dir / "dense" / "metrics.json").read_text())
    dense_metric = dense["metrics"][dense["metric"]]
    if worst > 0:
        with pytest.raises(ConfigError, match="no k of"):
            resolve_auto(replace(chain_cfg, stability=replace(cfg.stability, threshold=0.0)))
    strict = replace(chain_cfg, stability=replace(cfg.stability, threshold=worst / abs(dense_metric)))
    step = resolve_auto(strict)[0].rewind.step
    written = replace(learner_config(cfg), rewind=replace(cfg.rewind, step=step))
    assert ChainPaths.of(resolve_auto(strict)[0]) == ChainPaths.of(written)


def test_the_sweep_summary_finds_the_chain_rewind_auto_chose(
    supervised_run: tuple[Config, Path, Trainer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep of ``rewind.auto=true`` jobs is summarised from the chains with the chosen step written out."""
    cfg, seed_dir, _ = supervised_run
    auto = replace(learner_config(cfg), rewind=replace(cfg.rewind, auto=True))
    latest = max(taken_steps(seed_dir))
    assert latest > 0
    # Whatever the tiny analysis measured, let it choose its latest k: the chain then differs from k=0's.
    monkeypatch.setattr("rl_tickets.stability.choose.choose_step", lambda *_: latest)
    job = tmp_path / "sweep" / "0" / ".hydra"
    job.mkdir(parents=True)
    (job / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(auto)))
    chosen = ChainPaths.of(resolve_auto(auto)[0]).chain
    assert chosen != ChainPaths.of(auto).chain and not chosen.exists()
    assert sweep_chain_dirs(tmp_path / "sweep") == []  # that chain has not run
    chosen.mkdir(parents=True)
    try:
        (chosen / "levels.csv").write_text("level\n")
        assert sweep_chain_dirs(tmp_path / "sweep") == [chosen]
    finally:
        (chosen / "levels.csv").unlink()
        chosen.rmdir()


def test_the_best_reference_is_the_dense_runs_best_mean_return(tmp_path: Path) -> None:
    """A DQN-like dense run that peaked at 103.1 and ended at 20.6: ``final`` gives 20.6 (a threshold of
    1.03 at 5%), ``best`` the peak; a final evaluation above every earlier one is its own best."""
    record = {"metric": "eval_return_mean", "metrics": {"eval_return_mean": 20.6}}
    returns = [[100.0, 106.2], [21.0, 20.2]]  # means 103.1 and 20.6
    save_evaluations(
        tmp_path / EVALUATIONS_FILE, [Evaluation(s, r, [1, 1]) for s, r in zip((10, 20), returns)]
    )
    assert dense_reference(tmp_path, record, "final") == 20.6
    assert dense_reference(tmp_path, record, "best") == pytest.approx(103.1)
    rising = {"metric": "eval_return_mean", "metrics": {"eval_return_mean": 200.0}}
    assert dense_reference(tmp_path, rising, "best") == 200.0


def test_rewind_auto_judges_against_the_best_reference(
    rl_run: tuple[Config, Path, Trainer], tmp_path: Path
) -> None:
    """A copy of a finished analysis whose dense run peaked far above its final return: ``best`` judges
    against the peak, ``final`` against the final return (a threshold so loose that every k is stable, so
    the choice never depends on how this machine's runs went)."""
    cfg, _, _ = rl_run
    root = tmp_path / "root"
    shutil.copytree(cfg.root, root)
    cfg = replace(cfg, root=str(root))
    dense = StabilityPaths.of(cfg).dense
    final = json.loads((dense / "metrics.json").read_text())
    final_metric = float(final["metrics"][final["metric"]])
    peak = abs(final_metric) + 1000.0
    save_evaluations(
        dense / EVALUATIONS_FILE, [Evaluation(1, [peak], [1]), Evaluation(2, [final_metric], [1])]
    )
    chain_cfg = replace(learner_config(cfg), rewind=replace(cfg.rewind, auto=True))
    for reference, expected in (("best", peak), ("final", final_metric)):
        changed = replace(chain_cfg, stability=replace(cfg.stability, threshold=1e6, reference=reference))
        record = resolve_auto(changed)[1]
        assert record["reference"] == reference and record["dense_metric"] == pytest.approx(expected)
        assert record["threshold"] == pytest.approx(1e6 * abs(expected))


def test_the_best_reference_is_refused_for_supervised_runs(tmp_path: Path) -> None:
    cfg = supervised_config(tmp_path)
    cfg = replace(cfg, stability=replace(cfg.stability, reference="best"))
    with pytest.raises(ConfigError, match="stability.reference=best reads the RL dense run") as error:
        check_settings(cfg)
    assert "\n" not in str(error.value)


def test_rewind_auto_without_an_analysis_is_one_line(tmp_path: Path) -> None:
    cfg = supervised_config(tmp_path)
    chain_cfg = replace(learner_config(cfg), rewind=replace(cfg.rewind, auto=True))
    with pytest.raises(ConfigError, match="no instability analysis of these settings") as error:
        resolve_auto(chain_cfg)
    assert "\n" not in str(error.value)


def test_the_job_runs_the_analysis_and_a_chain_chosen_by_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = supervised_config(tmp_path, steps=[0.0, 0.5], levels=[0])
    seed_dir = run_job(cfg)
    assert seed_dir == StabilityPaths.of(cfg).seed_dir
    assert "instability" in capsys.readouterr().out
    assert (seed_dir.parent / FIGURES[1]).is_file()
    chain_cfg = replace(
        learner_config(cfg),
        rewind=replace(cfg.rewind, auto=True),
        stability=replace(cfg.stability, threshold=10.0),
        prune=replace(cfg.prune, levels=1),
    )
    chain = run_job(chain_cfg)
    choice = json.loads((chain / CHOICE_FILE).read_text())
    assert choice["rewind.step"] == 0 and choice["analysis"] == str(seed_dir)
    assert (chain / "levels.csv").is_file()


def test_stability_keys_apply_to_the_analysis_and_to_rewind_auto(tmp_path: Path) -> None:
    """``rewind.auto=true`` finds its analysis by the same ``stability.*`` keys, so they may be given."""
    from rl_tickets.cli.applicability import check_applicable

    chain_cfg = learner_config(rl_config(tmp_path, "ppo"))
    auto = replace(chain_cfg, rewind=replace(chain_cfg.rewind, auto=True))
    check_applicable(auto, ["rewind.auto", "stability.steps"])
    with pytest.raises(ConfigError, match="stability.steps applies only to"):
        check_applicable(chain_cfg, ["stability.steps"])


def test_the_command_line_recipe(tmp_path: Path) -> None:
    """The README's two commands, as a user types them: the analysis, then a chain rewound to its k."""
    import subprocess
    import sys

    common = [
        "data=digits",
        "train.iterations=100",
        "eval.every=50",
        "stability.steps=[0,0.5]",
        "stability.levels=[0]",
        "logger.mode=disabled",
        f"root={tmp_path}",
    ]
    analysis = [sys.executable, "-m", "rl_tickets", "task=stability", "stability.of=supervised", *common]
    done = subprocess.run(analysis, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "instability" in done.stdout
    chain = [
        sys.executable,
        "-m",
        "rl_tickets",
        "task=supervised",
        "rewind.auto=true",
        "stability.threshold=10",
    ]
    done = subprocess.run([*chain, "prune.levels=1", *common], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rewind.auto: rewind.step=0 for seed 0" in done.stdout
    assert len(list(tmp_path.glob(f"chains/*/seed_0/{CHOICE_FILE}"))) == 1
