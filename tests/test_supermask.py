"""Supermask controls: masks evaluated under a weight rule (init, signed_constant, shared, resampled), never trained."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from stable_baselines3 import PPO as SB3PPO
from tiny import tiny_config

from rl_tickets.chain.runner import Runner
from rl_tickets.chain.store import ChainPaths
from rl_tickets.config import Config, ConfigError, PruneConfig, RewindConfig, SupermaskConfig, validate
from rl_tickets.level import CurveSink, LevelOutcome, LevelPlan
from rl_tickets.rl.trainer import SB3Trainer
from rl_tickets.sparsity.masks import load_mask
from rl_tickets.sparsity.supermask import (
    SHARED_VALUES,
    DrawSpec,
    draw_params,
    recorded_settings,
    relevant,
    signs_of,
)

PPO = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}
SAMPLES = 3


def make_cfg(root: Path, **changes: Any) -> Config:
    """A tiny PPO CartPole chain with one pruned level at 50%."""
    return tiny_config(
        root, "ppo", PPO, 256, RewindConfig(step=0), PruneConfig(levels=1, rate=0.5), net_arch=[8], **changes
    )


@dataclass
class CountingTrainer:
    """Delegates to a real trainer and counts the levels it trains."""

    inner: SB3Trainer
    trained: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def train(self, plan: LevelPlan, out: Path, curve_sink: CurveSink | None = None) -> LevelOutcome:
        """Count, then train."""
        self.trained.append(f"{out.parent.name}/{out.name}")
        return self.inner.train(plan, out, curve_sink)


def trainer_for(cfg: Config) -> CountingTrainer:
    """The counting SB3 trainer of a config."""
    return CountingTrainer(SB3Trainer(cfg.algo, cfg.env, cfg.train.timesteps, cfg.eval, "cpu", eval_seed=7))


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, CountingTrainer, Path]:
    """A finished chain (ticket only), then the supermask controls added in a second run."""
    root = tmp_path_factory.mktemp("supermask")
    cfg = make_cfg(root)
    Runner(cfg, trainer_for(cfg)).run()
    cfg = replace(cfg, controls=["supermask", "random_supermask"], supermask=SupermaskConfig(samples=SAMPLES))
    trainer = trainer_for(cfg)
    directory = Runner(cfg, trainer).run()
    return cfg, trainer, directory


def rows(directory: Path) -> dict[str, dict[str, str]]:
    """levels.csv rows of level 1 by variant."""
    with open(directory / "levels.csv") as handle:
        return {r["variant"]: r for r in csv.DictReader(handle) if r["level"] == "1"}


def test_adding_supermask_controls_to_a_finished_chain_trains_nothing(chain: tuple) -> None:
    _, trainer, directory = chain
    assert trainer.trained == []
    table = rows(directory)
    for variant in ("supermask", "random_supermask"):
        assert table[variant]["timesteps"] == "0"
        assert float(table[variant]["eval_return_max"]) >= float(table[variant]["eval_return_mean"]) > 0
        assert not (directory / "level_01" / variant / "model.zip").exists()
    assert table["ticket"]["eval_return_max"] == ""  # trained rows have no draws


def plain_return(checkpoint: Path, mask: dict[str, torch.Tensor], episodes: int, eval_seed: int) -> float:
    """The masked initial policy evaluated by hand: SB3's own load, weights multiplied by the mask, and
    deterministic CartPole episodes reset with ``eval_seed + i`` (the evaluation env's seeds)."""
    model = SB3PPO.load(checkpoint, device="cpu")
    named = dict(model.policy.named_parameters())
    with torch.no_grad():
        for name, keep in mask.items():
            named[name].mul_(keep)
    returns = []
    for i in range(episodes):
        env = gym.make("CartPole-v1")
        obs, _ = env.reset(seed=eval_seed + i)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
        env.close()
    return sum(returns) / len(returns)


def test_init_evaluates_the_mask_on_the_tickets_own_initial_weights(chain: tuple) -> None:
    cfg, trainer, directory = chain
    start = ChainPaths.of(cfg).level(0, "ticket") / "init.zip"
    initial = trainer.inner.load_params(start)
    for variant in ("supermask", "random_supermask"):
        level = directory / "level_01" / variant
        record = json.loads((level / "metrics.json").read_text())
        assert record["extra"]["supermask"]["weights"] == "init"
        (draw,) = record["extra"]["draws"]  # one deterministic evaluation, no draws
        mask = load_mask(level / "mask.pt")
        params = draw_params(DrawSpec("init"), 0, mask, initial)
        assert all(torch.equal(params[n], initial[n]) for n in initial)  # exactly the ticket's own weights
        expected = plain_return(start, mask, cfg.eval.episodes, trainer.inner.eval_seed)
        assert draw["eval_return_mean"] == record["eval_return_mean"] == expected
        assert record["eval_return_std"] == 0.0 and record["eval_return_max"] == expected


def test_resampled_draws_are_recorded_differ_and_reproduce_from_their_seeds(chain: tuple) -> None:
    cfg, _, directory = chain
    cfg = replace(cfg, supermask=SupermaskConfig(samples=SAMPLES, weights="resampled"))
    trainer = trainer_for(cfg)
    Runner(cfg, trainer).run()
    assert trainer.trained == []
    level = directory / "level_01"
    record = json.loads((level / "supermask" / "metrics.json").read_text())
    draws = record["extra"]["draws"]
    assert len(draws) == SAMPLES and len({d["seed"] for d in draws}) == SAMPLES
    assert record["extra"]["supermask"]["weights"] == "resampled"
    values = [d["eval_return_mean"] for d in draws]
    assert record["eval_return_mean"] == pytest.approx(sum(values) / SAMPLES)
    assert record["eval_return_max"] == max(values)
    # The same draw seeds pair the two variants.
    random_draws = json.loads((level / "random_supermask" / "metrics.json").read_text())["extra"]["draws"]
    assert [d["seed"] for d in random_draws] == [d["seed"] for d in draws]
    # Rebuild draw 0 from its seed and the saved mask: the same return.
    mask = load_mask(level / "supermask" / "mask.pt")
    ticket = load_mask(level / "ticket" / "mask.pt")
    assert all(torch.equal(mask[n], ticket[n]) for n in ticket)
    start = ChainPaths.of(cfg).level(0, "ticket") / "init.zip"
    params = trainer.inner.load_params(start)
    fresh = [trainer.inner.fresh_params(d["seed"]) for d in draws]
    spec = DrawSpec("resampled")
    first = draw_params(spec, 0, mask, params, fresh[0])
    assert trainer.inner.evaluate_params(first, mask, start) == draws[0]["eval_return_mean"]
    second = draw_params(spec, 1, mask, params, fresh[1])
    assert any(not torch.equal(first[n], second[n]) for n in mask)


def test_random_supermask_keeps_the_tickets_per_layer_counts(chain: tuple) -> None:
    _, _, directory = chain
    ticket = load_mask(directory / "level_01" / "ticket" / "mask.pt")
    random = load_mask(directory / "level_01" / "random_supermask" / "mask.pt")
    assert all(int(ticket[n].sum()) == int(random[n].sum()) for n in ticket)
    assert any(not torch.equal(ticket[n], random[n]) for n in ticket)


def test_shared_reports_the_mean_and_the_best_over_w_and_only_relevant_changes_evaluate_again(
    chain: tuple,
) -> None:
    cfg, _, directory = chain
    values = [-1.0, 0.5, 2.0]
    cfg = replace(cfg, supermask=SupermaskConfig(weights="shared", shared_values=values))
    trainer = trainer_for(cfg)
    Runner(cfg, trainer).run()
    assert trainer.trained == []
    path = directory / "level_01" / "supermask" / "metrics.json"
    record = json.loads(path.read_text())
    draws = record["extra"]["draws"]
    assert [d["w"] for d in draws] == values and all(d["weights"] == "shared" for d in draws)
    returns = [d["eval_return_mean"] for d in draws]
    assert record["eval_return_mean"] == pytest.approx(sum(returns) / 3) and record["eval_return_max"] == max(
        returns
    )
    # supermask.samples means nothing to shared: nothing is evaluated again.
    before = path.stat().st_mtime_ns
    Runner(replace(cfg, supermask=replace(cfg.supermask, samples=7)), trainer_for(cfg)).run()
    assert path.stat().st_mtime_ns == before
    # Back to the default rule: evaluated again, still without training.
    cfg = replace(cfg, supermask=SupermaskConfig())
    trainer = trainer_for(cfg)
    Runner(cfg, trainer).run()
    assert trainer.trained == [] and json.loads(path.read_text())["extra"]["supermask"]["weights"] == "init"


def _toy() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A mask, start weights with mixed signs, and fresh weights over a layer and its bias."""
    gen = torch.Generator().manual_seed(0)
    start = {"l.weight": torch.randn(6, 5, generator=gen), "l.bias": torch.randn(6, generator=gen)}
    fresh = {"l.weight": torch.randn(6, 5, generator=gen), "l.bias": torch.randn(6, generator=gen)}
    mask = {"l.weight": torch.rand(6, 5, generator=gen) > 0.5}
    return mask, start, fresh


def test_init_is_the_starting_weights_and_biases_unchanged() -> None:
    mask, start, _ = _toy()
    params = draw_params(DrawSpec("init"), 0, mask, start)
    assert all(torch.equal(params[n], start[n]) for n in start)


def test_signed_constant_is_the_start_sign_times_the_layers_initial_std() -> None:
    mask, start, _ = _toy()
    params = draw_params(DrawSpec("signed_constant"), 0, mask, start)
    std = float(start["l.weight"].std())
    assert torch.equal(params["l.weight"].abs(), torch.full((6, 5), std))
    assert torch.equal(torch.sign(params["l.weight"]), torch.sign(start["l.weight"]))
    assert torch.equal(params["l.bias"], start["l.bias"])  # biases as initialised


@pytest.mark.parametrize("draw", range(len(SHARED_VALUES)))
def test_shared_sets_every_weight_to_one_value_without_signs_and_biases_to_zero(draw: int) -> None:
    mask, start, _ = _toy()
    params = draw_params(DrawSpec("shared"), draw, mask, start)
    assert SHARED_VALUES == (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)  # Gaier & Ha 2019's values
    assert torch.equal(params["l.weight"], torch.full((6, 5), SHARED_VALUES[draw]))  # the sign is w's own
    assert torch.equal(params["l.bias"], torch.zeros(6))


def test_resampled_draws_keep_ticket_signs_or_their_own() -> None:
    mask, start, fresh = _toy()
    ticket = draw_params(DrawSpec("resampled", signs="ticket"), 0, mask, start, fresh)
    assert torch.equal(ticket["l.weight"].abs(), fresh["l.weight"].abs())
    assert torch.equal(torch.sign(ticket["l.weight"]), signs_of(start["l.weight"]))
    assert torch.equal(ticket["l.bias"], fresh["l.bias"])  # biases as the fresh network's
    own = draw_params(DrawSpec("resampled", signs="random"), 0, mask, start, fresh)
    assert torch.equal(own["l.weight"], fresh["l.weight"])


OLD_INIT = {"samples": 10, "weights": "init", "signs": "ticket"}  # metrics.json before engine version 2


@pytest.mark.parametrize(
    "now,stale",
    [
        (
            {"samples": 10, "weights": "resampled", "signs": "ticket", "shared_values": list(SHARED_VALUES)},
            False,
        ),
        (
            {"samples": 5, "weights": "resampled", "signs": "ticket", "shared_values": list(SHARED_VALUES)},
            True,
        ),
        ({"samples": 10, "weights": "init", "signs": "ticket", "shared_values": list(SHARED_VALUES)}, True),
    ],
)
def test_a_level_recorded_with_the_old_init_reads_as_resampled(now: dict[str, Any], stale: bool) -> None:
    assert recorded_settings(OLD_INIT)["weights"] == "resampled"
    assert (relevant(recorded_settings(OLD_INIT)) != relevant(now)) == stale
    # The old shared (one magnitude with per-connection signs) is no rule of today's: always evaluated again.
    old_shared = {**OLD_INIT, "weights": "shared"}
    assert relevant(recorded_settings(old_shared)) != relevant({**now, "weights": "shared"})


def test_bad_supermask_settings_are_one_line(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"supermask.weights='random' is not valid; choose one of: init, signed_constant, shared, resampled",
    ):
        validate(replace(cfg, supermask=SupermaskConfig(weights="random")))
    with pytest.raises(ConfigError, match=r"supermask.samples=0 must be > 0"):
        validate(replace(cfg, supermask=SupermaskConfig(samples=0)))
    with pytest.raises(ConfigError, match=r"supermask.shared_values=\[\] must hold at least one value"):
        validate(replace(cfg, supermask=SupermaskConfig(shared_values=[])))


def test_report_shows_untrained_rows_and_their_own_verdict(tmp_path: Path) -> None:
    """The report keeps supermask rows out of "beats <control>?" and asks its own question."""
    import pandas as pd

    from rl_tickets.report import main as report_main

    meta = {"name": "sm", "task": "rl", "metric": "eval_return_mean", "input_layers": []}
    for seed in range(5):
        chain = tmp_path / "chains" / "abcdef123456" / f"seed_{seed}"
        chain.mkdir(parents=True)
        (chain / "meta.json").write_text(json.dumps({**meta, "seed": seed}))
        rows = [
            {"level": 0, "variant": "ticket", "density": 1.0, "eval_return_mean": 500.0, "timesteps": 100},
            {
                "level": 1,
                "variant": "ticket",
                "density": 0.8,
                "eval_return_mean": 480.0 + seed,
                "timesteps": 100,
            },
            # The ticket's mask untrained scores 40 + seed above the random mask on every seed.
            {
                "level": 1,
                "variant": "supermask",
                "density": 0.8,
                "eval_return_mean": 60.0 + 2 * seed,
                "timesteps": 0,
            },
            {
                "level": 1,
                "variant": "random_supermask",
                "density": 0.8,
                "eval_return_mean": 20.0 + seed,
                "timesteps": 0,
            },
        ]
        pd.DataFrame(rows).to_csv(chain / "levels.csv", index=False)
    assert report_main([str(tmp_path), "--n-resamples", "200"]) == 0
    verdicts = pd.read_csv(tmp_path / "report" / "sm" / "verdicts.csv")
    assert set(verdicts["comparison"]) == {"dense", "supermask_vs_random_supermask"}
    untrained = verdicts[verdicts["comparison"] == "supermask_vs_random_supermask"].iloc[0]
    assert untrained["verdict"] == "better" and untrained["diff_mean"] == pytest.approx(42.0)
    summary_md = (tmp_path / "report" / "sm" / "summary.md").read_text()
    assert "ticket mask beats random mask without training?" in summary_md
    assert "| 1 | supermask | 80% | 5 |" in summary_md
