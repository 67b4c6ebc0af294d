"""The IMP runner: resume, extension, kill-safety, identity rules and result files.

A spy wraps the real SB3 trainer and records every ``train()`` call, so "skips completed levels"
means the trainer was never called for them, not merely that the files look the same.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from stable_baselines3 import PPO
from tiny import levels_without_time, tiny_config

from rl_tickets.chain import identity
from rl_tickets.chain.identity import ENGINE_VERSION, chain_identity, dense_identity, digest
from rl_tickets.chain.runner import Runner
from rl_tickets.chain.store import COMPLETE, ChainPaths
from rl_tickets.config import (
    AlgoConfig,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    LoggerConfig,
    ModelConfig,
    PruneConfig,
    RewindConfig,
    TrainConfig,
    validate,
)
from rl_tickets.level import CurveSink, LevelOutcome, LevelPlan
from rl_tickets.rl.trainer import SB3Trainer
from rl_tickets.seeds import seed_for
from rl_tickets.sparsity.masks import load_mask

BUDGET, K = 192, 64


def tiny_cfg(root: Path, levels: int = 2, rate: float = 0.2, **changes: Any) -> Config:
    """A validated tiny PPO CartPole chain (one 64-step rollout per update, rewound to step 64).

    :param root: results root.
    :param levels: prune.levels.
    :param rate: prune.rate.
    :param changes: top-level Config fields to replace.
    """
    hyperparams = {"n_steps": 64, "batch_size": 32, "n_epochs": 1}
    return tiny_config(
        root,
        "ppo",
        hyperparams,
        BUDGET,
        RewindConfig(step=K),
        PruneConfig(levels=levels, rate=rate),
        **changes,
    )


class Killed(RuntimeError):
    """Stands in for a kill in the middle of a level."""


@dataclass
class SpyTrainer:
    """Delegates everything to a real trainer and records each ``train()`` call as (level, variant).

    :param inner: the real trainer.
    :param kill_at: raise :class:`Killed` inside this level's training, after writing a stray file.
    """

    inner: SB3Trainer
    kill_at: int | None = None
    calls: list[tuple[int, str]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def train(self, plan: LevelPlan, out: Path, curve_sink: CurveSink | None = None) -> LevelOutcome:
        """Record the call, then train (or die half way)."""
        level = int(out.parent.name.removeprefix("level_"))
        self.calls.append((level, out.name.removesuffix(".partial")))
        if level == self.kill_at:
            (out / "half_written.bin").write_bytes(b"\0" * 10)
            raise Killed(f"killed during level {level}")
        return self.inner.train(plan, out, curve_sink)


def spy(cfg: Config, kill_at: int | None = None) -> SpyTrainer:
    """A spy around the SB3 trainer the job would build for ``cfg``."""
    inner = SB3Trainer(
        cfg.algo, cfg.env, cfg.train.timesteps, cfg.eval, cfg.device, seed_for(cfg.seed, "eval")
    )
    return SpyTrainer(inner, kill_at)


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative path -> bytes), lock files aside."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def all_masks(paths: ChainPaths, levels: int) -> dict[int, dict[str, torch.Tensor]]:
    """Each ticket level's saved mask."""
    return {level: load_mask(paths.level(level, "ticket") / "mask.pt") for level in range(levels + 1)}


def test_rerun_trains_nothing_and_raising_levels_trains_only_the_new_ones(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, levels=2)
    first = spy(cfg)
    chain = Runner(cfg, first).run()
    assert first.calls == [(0, "ticket"), (1, "ticket"), (2, "ticket")]
    before = tree(tmp_path)

    again = spy(cfg)
    assert Runner(cfg, again).run() == chain
    assert again.calls == [], "a completed level was trained again"
    assert tree(tmp_path) == before  # nothing rewritten either (meta.json and tables come out identical)

    extended = tiny_cfg(tmp_path, levels=3)
    more = spy(extended)
    assert Runner(extended, more).run() == chain  # prune.levels is not identity: same directory
    assert more.calls == [(3, "ticket")]
    rows = list(csv.DictReader(open(chain / "levels.csv")))
    assert [int(r["level"]) for r in rows] == [0, 1, 2, 3]
    # Earlier levels are untouched by the extension.
    for level in (0, 1, 2):
        directory = ChainPaths.of(cfg).level(level, "ticket")
        for name in ("model.zip", "mask.pt", "metrics.json"):
            assert (directory / name).read_bytes() == before[str((directory / name).relative_to(tmp_path))]


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    whole = tiny_cfg(tmp_path / "whole", levels=3)
    Runner(whole, spy(whole)).run()

    cfg = tiny_cfg(tmp_path / "killed", levels=3)
    dying = spy(cfg, kill_at=2)
    with pytest.raises(Killed):
        Runner(cfg, dying).run()
    paths = ChainPaths.of(cfg)
    partial = paths.level(2, "ticket").with_name("ticket.partial")
    # The kill lost only the level in progress: 0 and 1 are complete, 2 is a stray .partial.
    assert dying.calls == [(0, "ticket"), (1, "ticket"), (2, "ticket")]
    assert all((paths.level(level, "ticket") / COMPLETE).exists() for level in (0, 1))
    assert (partial / "half_written.bin").exists() and not paths.level(2, "ticket").exists()

    resumed = spy(cfg)
    Runner(cfg, resumed).run()
    assert resumed.calls == [(2, "ticket"), (3, "ticket")]
    assert not list(tmp_path.rglob("*.partial")), "a .partial directory survived the resume"
    assert not (paths.level(2, "ticket") / "half_written.bin").exists()
    assert (paths.level(2, "ticket") / COMPLETE).exists()

    reference = ChainPaths.of(whole)
    assert reference.chain.relative_to(tmp_path / "whole") == paths.chain.relative_to(tmp_path / "killed")
    ours, theirs = all_masks(paths, 3), all_masks(reference, 3)
    for level in range(4):
        assert ours[level].keys() == theirs[level].keys()
        assert all(torch.equal(ours[level][n], theirs[level][n]) for n in ours[level]), level
    assert levels_without_time(paths.chain / "levels.csv") == levels_without_time(
        reference.chain / "levels.csv"
    )
    assert (paths.chain / "layers.csv").read_text() == (reference.chain / "layers.csv").read_text()
    # Not a vacuous match: the chain really pruned, level after level.
    assert len({tuple(row.values()) for row in levels_without_time(paths.chain / "levels.csv")}) == 4


@pytest.mark.parametrize("which", ["dense", "chain"])
def test_a_directory_recording_a_different_identity_is_refused_and_left_untouched(
    which: str, tmp_path: Path
) -> None:
    cfg = tiny_cfg(tmp_path)
    directory = getattr(ChainPaths.of(cfg), which)
    directory.mkdir(parents=True)
    (directory / "identity.json").write_text('{"algo.name": "dqn", "seed": 0}')
    (directory / "levels.csv").write_text("precious results\n")
    before = tree(directory)
    trainer = spy(cfg)
    with pytest.raises(ConfigError, match="different config"):
        Runner(cfg, trainer).run()
    assert trainer.calls == []
    assert tree(directory) == before


# Pinned: if one of these changes, every existing results directory is orphaned. Change them only
# deliberately (and say so in the README), never to make this test pass.
DQN_ZOO = {
    "learning_rate": 2.3e-3,
    "batch_size": 64,
    "buffer_size": 100_000,
    "learning_starts": 1000,
    "gamma": 0.99,
    "target_update_interval": 10,
    "train_freq": 256,
    "gradient_steps": 128,
    "exploration_fraction": 0.16,
    "exploration_final_eps": 0.04,
}
PINNED: dict[str, tuple[Config, str, str, dict[str, Any]]] = {
    "default_ppo_cartpole": (
        Config(),
        "6b3911aa4bee",
        "e076257cdb23",
        {
            "algo.name": "ppo",
            "env.id": "CartPole-v1",
            "seed": 0,
            "task": "rl",
            "prune.min_layer_density": 0.001,
            "engine_version": 2,
        },
    ),
    "dqn_cartpole_zoo": (
        Config(
            algo=AlgoConfig(name="dqn", hyperparams=DQN_ZOO, policy_kwargs={"net_arch": [256, 256]}),
            train=TrainConfig(timesteps=50_000),
        ),
        "b460459a77b3",
        "cac133a19da8",
        {
            "algo.hyperparams": DQN_ZOO,
            "algo.name": "dqn",
            "algo.policy_kwargs": {"net_arch": [256, 256]},
            "env.id": "CartPole-v1",
            "seed": 0,
            "task": "rl",
            "train.timesteps": 50_000,
            "prune.min_layer_density": 0.001,
            "engine_version": 2,
        },
    ),
    "supervised_lenet": (
        Config(
            task="supervised",
            model=ModelConfig(name="lenet_300_100"),
            data=DataConfig(name="mnist5k"),
            prune=PruneConfig(overrides={r"^classifier\.4\.weight$": 0.1}),
        ),
        "272ee4d10138",
        "34333e9f9f5d",
        {
            "data.name": "mnist5k",
            "model.name": "lenet_300_100",
            "prune.overrides": {r"^classifier\.4\.weight$": 0.1},
            "seed": 0,
            "task": "supervised",
            "prune.min_layer_density": 0.001,
            "engine_version": 2,
        },
    ),
}


# The pins before engine version 2 (issue 20: pruned gradients zeroed before clipping, the layer floor).
# Pruned levels moved to new chain directories; dense levels must not move, so they stay shared.
CHAIN_HASHES_OF_ENGINE_1 = {
    "default_ppo_cartpole": "e076257cdb23",
    "dqn_cartpole_zoo": "cac133a19da8",
    "supervised_lenet": "73e4b1032010",
}


@pytest.mark.parametrize("name", list(PINNED))
def test_engine_version_2_moved_every_chain_and_no_dense_level(name: str) -> None:
    cfg, chain_hash, dense_hash, _ = PINNED[name]
    assert chain_identity(cfg)["engine_version"] == ENGINE_VERSION == 2
    assert "engine_version" not in dense_identity(cfg)
    assert not any(k.startswith("prune.") for k in dense_identity(cfg))
    assert chain_hash != CHAIN_HASHES_OF_ENGINE_1[name]
    # The dense pins are the ones engine version 1 had (the default job's dense hash was its chain hash).
    assert dense_hash == {"supervised_lenet": "34333e9f9f5d"}.get(name, CHAIN_HASHES_OF_ENGINE_1[name])
    # prune.min_layer_density is recorded even at its default.
    assert chain_identity(cfg)["prune.min_layer_density"] == PruneConfig().min_layer_density


@pytest.mark.parametrize("name", list(PINNED))
def test_identity_hashes_are_pinned(name: str) -> None:
    cfg, chain_hash, dense_hash, recorded = PINNED[name]
    assert chain_identity(cfg) == recorded
    assert digest(chain_identity(cfg)) == chain_hash
    assert digest(dense_identity(cfg)) == dense_hash
    paths = ChainPaths.of(cfg)
    assert paths.chain == Path("results/chains") / chain_hash / "seed_0"
    assert paths.dense == Path("results/dense") / dense_hash / "seed_0"


NOT_IDENTITY: dict[str, Any] = {
    "prune.levels": ("prune", {"levels": 17}),
    "controls": ("controls", ["reinit", "permute"]),
    "eval": ("eval", EvalConfig(episodes=3, every=123)),
    "logger": ("logger", LoggerConfig(mode="online", project="elsewhere", entity="me")),
    "device": ("device", "cuda"),
    "root": ("root", "/somewhere/else"),
    "name": ("name", "my experiment"),
    "threads": ("threads", 4),
    "workers": ("workers", 2),
    "progress": ("progress", False),
    "env.observation_names": ("env", {"observation_names": ["x", "v", "theta", "omega"]}),
}


def _changed(cfg: Config, section: str, value: Any) -> Config:
    """``cfg`` with one top-level field replaced, or some fields of a section (given as a dict)."""
    if isinstance(value, dict) and section != "controls":
        return replace(cfg, **{section: replace(getattr(cfg, section), **value)})
    return replace(cfg, **{section: value})


@pytest.mark.parametrize("key", list(NOT_IDENTITY))
def test_non_identity_settings_do_not_change_the_directory(key: str) -> None:
    for cfg, chain_hash, dense_hash, _ in PINNED.values():
        changed = _changed(cfg, *NOT_IDENTITY[key])
        assert changed != cfg
        assert digest(chain_identity(changed)) == chain_hash
        assert digest(dense_identity(changed)) == dense_hash


IDENTITY: dict[str, Any] = {
    "algo.hyperparams": ("algo", {"hyperparams": {"gamma": 0.95}}),
    "algo.policy_kwargs": ("algo", {"policy_kwargs": {"net_arch": [8]}}),
    "env.id": ("env", {"id": "Acrobot-v1"}),
    "env.n_envs": ("env", {"n_envs": 4}),
    "train.timesteps": ("train", TrainConfig(timesteps=12_345)),
    "rewind.step": ("rewind", RewindConfig(step=100)),
    "rewind.optimizer": ("rewind", RewindConfig(optimizer="restore")),
}
CHAIN_ONLY: dict[str, Any] = {
    "prune.rate": ("prune", {"rate": 0.5}),
    "prune.scope": ("prune", {"scope": "layer"}),
    "prune.exclude": ("prune", {"exclude": ["value_net"]}),
    "retrain.mode": ("retrain", replace(Config().retrain, mode="finetune")),
    "prune.min_layer_density": ("prune", {"min_layer_density": 0.0}),
}


@pytest.mark.parametrize("key", list(IDENTITY) + list(CHAIN_ONLY))
def test_identity_settings_change_the_directory(key: str) -> None:
    base = Config()
    changed = _changed(base, *(IDENTITY.get(key) or CHAIN_ONLY[key]))
    assert digest(chain_identity(changed)) != digest(chain_identity(base))
    # Pruning and retraining settings leave the dense level's directory (and its training) shared.
    dense_changes = digest(dense_identity(changed)) != digest(dense_identity(base))
    assert dense_changes == (key in IDENTITY)


def test_seed_is_a_subdirectory_not_part_of_the_hash() -> None:
    base, other = Config(), Config(seed=3)
    assert chain_identity(other)["seed"] == 3
    assert digest(chain_identity(other)) == digest(chain_identity(base))
    assert ChainPaths.of(other).chain == ChainPaths.of(base).chain.parent / "seed_3"


def test_a_new_knob_at_its_default_value_keeps_the_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a future schema gaining ``prune.new_knob`` with a no-op default."""

    @dataclass
    class PruneWithKnob(PruneConfig):
        new_knob: float = 0.5

    @dataclass
    class ConfigWithKnob(Config):
        prune: PruneConfig = field(default_factory=PruneWithKnob)

    monkeypatch.setattr(identity, "Config", ConfigWithKnob)
    for cfg, chain_hash, dense_hash, _ in PINNED.values():
        upgraded = ConfigWithKnob(**{f: copy.deepcopy(getattr(cfg, f)) for f in Config.__dataclass_fields__})
        upgraded.prune = PruneWithKnob(**vars(cfg.prune))
        assert digest(chain_identity(upgraded)) == chain_hash
        assert digest(dense_identity(upgraded)) == dense_hash
        upgraded.prune.new_knob = 0.7
        assert digest(chain_identity(upgraded)) != chain_hash
        assert digest(dense_identity(upgraded)) == dense_hash


def test_chains_differing_only_in_rate_share_the_dense_level(tmp_path: Path) -> None:
    trainer = spy(tiny_cfg(tmp_path))
    first = tiny_cfg(tmp_path, levels=1, rate=0.2)
    second = tiny_cfg(tmp_path, levels=1, rate=0.5)
    Runner(first, trainer).run()
    Runner(second, trainer).run()
    assert trainer.calls == [(0, "ticket"), (1, "ticket"), (1, "ticket")]
    a, b = ChainPaths.of(first), ChainPaths.of(second)
    assert a.dense == b.dense and a.chain != b.chain
    densities = [float(list(csv.DictReader(open(p.chain / "levels.csv")))[1]["density"]) for p in (a, b)]
    total = sum(m.numel() for m in load_mask(a.level(0, "ticket") / "mask.pt").values())
    assert densities[0] == pytest.approx(0.8, abs=1 / total) and densities[1] == pytest.approx(
        0.5, abs=1 / total
    )


def test_result_files_have_the_documented_columns_and_loadable_models(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path, levels=2)
    trainer = spy(cfg)
    chain = Runner(cfg, trainer).run()
    paths = ChainPaths.of(cfg)
    with open(chain / "levels.csv") as handle:
        assert (
            handle.readline().strip()
            == "level,variant,density,eval_return_mean,eval_return_std,timesteps,eval_return_max,train_s,"
            "actor_density,critic_density,empty_layers"
        )
    with open(chain / "layers.csv") as handle:
        assert handle.readline().strip() == "level,variant,layer,numel,density,role,empty"
    rows = list(csv.DictReader(open(chain / "levels.csv")))
    layer_rows = list(csv.DictReader(open(chain / "layers.csv")))
    assert [(int(r["level"]), r["variant"]) for r in rows] == [(0, "ticket"), (1, "ticket"), (2, "ticket")]
    assert [int(r["timesteps"]) for r in rows] == [BUDGET, BUDGET - K, BUDGET - K]
    for row in rows:
        level = int(row["level"])
        directory = paths.level(level, "ticket")
        assert {"model.zip", "mask.pt", "metrics.json", COMPLETE} <= {p.name for p in directory.iterdir()}
        mask = load_mask(directory / "mask.pt")
        total = sum(m.numel() for m in mask.values())
        assert float(row["density"]) == pytest.approx(
            sum(int(m.sum()) for m in mask.values()) / total, abs=1e-12
        )
        assert abs(float(row["density"]) * total - 0.8**level * total) <= 1
        assert float(row["eval_return_mean"]) > 0 and float(row["eval_return_std"]) >= 0
        assert row["empty_layers"] == ""
        mine = [r for r in layer_rows if int(r["level"]) == level]
        assert [r["layer"] for r in mine] == list(mask)
        for r in mine:
            assert int(r["numel"]) == mask[r["layer"]].numel()
            assert float(r["density"]) == pytest.approx(mask[r["layer"]].float().mean().item())
            # PPO: the policy body and action head are the actor, the value body and head the critic.
            on_actor_side = (
                r["layer"].split(".")[:2] == ["mlp_extractor", "policy_net"]
                or r["layer"] == "action_net.weight"
            )
            assert r["role"] == ("actor" if on_actor_side else "critic")
        for role in ("actor", "critic"):
            names = [r["layer"] for r in mine if r["role"] == role]
            kept = sum(int(mask[n].sum()) for n in names) / sum(mask[n].numel() for n in names)
            assert float(row[f"{role}_density"]) == pytest.approx(kept, abs=1e-12)
        # Plain SB3 loads the level's model; its mask buffers are the saved mask and pruned weights are 0.
        model = PPO.load(directory / "model.zip", device="cpu")
        state = model.policy.state_dict()
        for name, keep in mask.items():
            assert torch.equal(state[name + "_mask"].bool(), keep)
            assert int((state[name][~keep] != 0).sum()) == 0


@pytest.mark.parametrize("floor", [0.0, 0.001])
def test_a_layer_pruned_to_nothing_is_warned_about_and_marked(
    tmp_path: Path, floor: float, caplog: pytest.LogCaptureFixture
) -> None:
    """The action head pruned at 99% on its own: gone at prune.min_layer_density=0, one weight at the default."""
    prune = PruneConfig(levels=1, overrides={"action_net": 0.99}, min_layer_density=floor)
    cfg = replace(tiny_cfg(tmp_path), prune=prune)
    validate(cfg)
    with caplog.at_level(logging.WARNING, logger="rl_tickets.chain.levels"):
        chain = Runner(cfg, spy(cfg)).run()
    rows = {(r["level"], r["variant"]): r for r in csv.DictReader(open(chain / "levels.csv"))}
    heads = [r for r in csv.DictReader(open(chain / "layers.csv")) if r["layer"] == "action_net.weight"]
    record = json.loads((chain / "level_01" / "ticket" / "metrics.json").read_text())
    warnings = [r.getMessage() for r in caplog.records if "no live weights" in r.getMessage()]
    head = {r["level"]: (float(r["density"]), r["empty"]) for r in heads}
    if floor == 0.0:
        assert rows[("1", "ticket")]["empty_layers"] == "action_net.weight"
        assert head["1"] == (0.0, "1") and record["empty_layers"] == ["action_net.weight"]
        assert warnings == [
            "rl-tickets: warning: level 1 ticket has no live weights in action_net.weight "
            "(prune.min_layer_density=0.0); the network is cut there"
        ]
    else:
        assert rows[("1", "ticket")]["empty_layers"] == ""
        assert head["1"] == (1 / 32, "0") and record["empty_layers"] == []  # 2 x 16 weights, one kept
        assert warnings == []
    assert rows[("0", "ticket")]["empty_layers"] == "" and head["0"] == (1.0, "0")
