"""The supervised trainer through the real runner: per-layer rates, masks that hold, early stopping, rewinding."""

import csv
import json
import re
from pathlib import Path

import pytest
import torch

from rl_tickets.chain.runner import Runner
from rl_tickets.cli.job import run_job
from rl_tickets.config import (
    Config,
    DataConfig,
    EvalConfig,
    LoggerConfig,
    ModelConfig,
    PruneConfig,
    RewindConfig,
    TrainConfig,
)
from rl_tickets.level import LevelPlan
from rl_tickets.sparsity.masks import load_mask
from rl_tickets.supervised.models import CONV_PATTERN, FC_PATTERN, OUTPUT_PATTERN
from rl_tickets.supervised.trainer import SupervisedTrainer

BUDGET, REWIND, EVERY, LEVELS = 100, 10, 25, 2
RATES = {CONV_PATTERN: 0.1, FC_PATTERN: 0.2, OUTPUT_PATTERN: 0.1}
COLUMNS = [
    "level",
    "variant",
    "density",
    "iterations",
    "early_stop_iteration",
    "test_accuracy_at_early_stop",
    "test_accuracy",
    "val_loss_min",
    "train_s",
    "empty_layers",  # layers with no live weight (issue 20); supervised nets have no actor/critic roles
]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """Conv-2 on the synthetic set: layer scope, the paper's conv/fc/output rates, late rewinding, reinit."""
    cfg = Config(
        task="supervised",
        model=ModelConfig("conv2"),
        data=DataConfig("synthetic"),
        train=TrainConfig(iterations=BUDGET, batch_size=60, lr=1e-3),
        eval=EvalConfig(every=EVERY),
        prune=PruneConfig(
            levels=LEVELS,
            scope="layer",
            rate=0.2,
            overrides={CONV_PATTERN: 0.1, OUTPUT_PATTERN: 0.1},
        ),
        rewind=RewindConfig(step=REWIND),
        controls=["reinit"],
        logger=LoggerConfig(mode="disabled"),
        device="cpu",
        root=str(tmp_path_factory.mktemp("results")),
    )
    return run_job(cfg)


def level_dir(chain: Path, level: int, variant: str) -> Path:
    if level == 0:
        dense = Path(json.loads((chain / "meta.json").read_text())["dense_dir"])
        return dense / "level_00" / "ticket"
    return chain / f"level_{level:02d}" / variant


def test_levels_csv_has_the_supervised_columns_and_the_reinit_control(chain):
    rows = read_csv(chain / "levels.csv")
    assert list(rows[0]) == COLUMNS
    assert [(int(r["level"]), r["variant"]) for r in rows] == [
        (0, "ticket"),
        (1, "ticket"),
        (1, "reinit"),
        (2, "ticket"),
        (2, "reinit"),
    ]
    ticket, control = rows[1], rows[2]
    assert ticket["density"] == control["density"]  # parameter-matched
    ticket_mask = load_mask(level_dir(chain, 1, "ticket") / "mask.pt")
    control_mask = load_mask(level_dir(chain, 1, "reinit") / "mask.pt")
    assert all(torch.equal(ticket_mask[n], control_mask[n]) for n in ticket_mask)


def test_layer_densities_fall_by_the_per_layer_rates(chain):
    rows = [r for r in read_csv(chain / "layers.csv") if r["variant"] == "ticket"]
    layers = {r["layer"] for r in rows}
    assert any(re.search(CONV_PATTERN, n) for n in layers) and any(re.search(FC_PATTERN, n) for n in layers)
    for row in rows:
        rate = next(r for pattern, r in RATES.items() if re.search(pattern, row["layer"]))
        numel, level = int(row["numel"]), int(row["level"])
        kept = float(row["density"]) * numel
        assert abs(kept - numel * (1 - rate) ** level) <= 1.0, row


def test_pruned_weights_are_exactly_zero_in_every_saved_model(chain):
    for level in range(1, LEVELS + 1):
        for variant in ("ticket", "reinit"):
            directory = level_dir(chain, level, variant)
            mask = load_mask(directory / "mask.pt")
            state = torch.load(directory / "model.pt", weights_only=True)["state_dict"]
            for name, keep in mask.items():
                assert torch.equal(state[name + "_mask"].bool(), keep)  # buffers carry the mask
                assert torch.count_nonzero(state[name][~keep]) == 0, (level, variant, name)
                assert torch.count_nonzero(state[name][keep]) > 0.99 * int(keep.sum())


def test_early_stopping_uses_evaluated_iterations_and_accuracy_is_far_above_chance(chain):
    for row in read_csv(chain / "levels.csv"):
        directory = level_dir(chain, int(row["level"]), row["variant"])
        curve = read_csv(directory / "eval_curve.csv")
        steps = [int(r["step"]) for r in curve]
        best = min(curve, key=lambda r: float(r["val/loss"]))
        assert int(row["early_stop_iteration"]) == int(best["step"]) and int(best["step"]) in steps
        assert float(row["val_loss_min"]) == pytest.approx(float(best["val/loss"]))
        assert float(row["test_accuracy_at_early_stop"]) == pytest.approx(float(best["test/accuracy"]))
        assert steps[-1] == BUDGET and all(s % EVERY == 0 or s == REWIND for s in steps)
        assert float(row["test_accuracy"]) > 0.6, row  # chance is 0.1


def test_tickets_rewind_to_iteration_k_and_train_to_the_budget(chain):
    dense = level_dir(chain, 0, "ticket")
    assert json.loads((dense / "metrics.json").read_text())["extra"]["snapshot_step"] == REWIND
    assert torch.load(dense / "rewind.pt", weights_only=True)["step"] == REWIND
    for variant in ("ticket", "reinit"):
        record = json.loads((level_dir(chain, 1, variant) / "metrics.json").read_text())
        assert record["plan"]["start"] == str(dense / "rewind.pt")
        assert record["extra"]["start_step"] == REWIND and record["extra"]["end_step"] == BUDGET
        assert record["iterations"] == BUDGET - REWIND


# ---- the trainer on its own (LeNet: fast) ---------------------------------------------------------


@pytest.fixture(scope="module")
def trainer() -> SupervisedTrainer:
    return SupervisedTrainer(
        ModelConfig("lenet_300_100"),
        DataConfig("synthetic"),
        TrainConfig(iterations=40, batch_size=30, lr=1e-3),
        EvalConfig(every=10),
        "auto",
        split_seed=0,
    )


@pytest.fixture(scope="module")
def dense(trainer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dense")
    trainer.train(LevelPlan(start=None, steps=40, mask=None, seed=3, snapshot_step=7), out)
    return out


def random_mask(trainer: SupervisedTrainer, density: float) -> dict[str, torch.Tensor]:
    params = trainer.fresh_params(0)
    generator = torch.Generator().manual_seed(1)
    return {
        n: torch.rand(params[n].shape, generator=generator) < density
        for n in trainer.prunable(params, include_biases=False)
    }


def test_checkpoints_are_self_describing_and_load_with_weights_only(trainer, dense):
    for name, step in (("init.pt", 0), ("rewind.pt", 7), ("model.pt", 40)):
        state = torch.load(dense / name, weights_only=True)
        assert state["step"] == step and state["model"] == "lenet_300_100"
        assert state["input_shape"] == [1, 8, 8] and state["num_classes"] == 10
        assert "classifier.0.weight_mask" in state["state_dict"] and state["optimizer"] == "adam"
    assert set(trainer.load_params(dense / "model.pt")) == set(trainer.fresh_params(0))


def test_rewind_snapshot_is_the_state_after_k_updates(trainer, dense, tmp_path):
    trainer.train(LevelPlan(start=None, steps=7, mask=None, seed=3), tmp_path)
    short = trainer.load_params(tmp_path / "model.pt")
    rewind = trainer.load_params(dense / "rewind.pt")
    assert all(torch.equal(short[n], rewind[n]) for n in rewind)


def test_rewinding_restores_the_snapshot_weights_masked(trainer, dense, tmp_path):
    mask = random_mask(trainer, 0.3)
    outcome = trainer.train(LevelPlan(start=dense / "rewind.pt", steps=0, mask=mask, seed=5), tmp_path)
    assert outcome.metrics["iterations"] == 0
    loaded = trainer.load_params(tmp_path / "model.pt")
    rewind = trainer.load_params(dense / "rewind.pt")
    for name, value in rewind.items():
        expected = value * mask[name] if name in mask else value
        assert torch.equal(loaded[name], expected), name
    assert torch.load(tmp_path / "model.pt", weights_only=True)["step"] == 7


def test_adam_with_restored_moments_does_not_revive_pruned_weights(trainer, dense, tmp_path):
    mask = random_mask(trainer, 0.2)
    plan = LevelPlan(start=dense / "rewind.pt", steps=33, mask=mask, seed=5, restore_optimizer=True)
    outcome = trainer.train(plan, tmp_path)
    assert outcome.extra["end_step"] == 40
    loaded = trainer.load_params(tmp_path / "model.pt")
    assert all(torch.count_nonzero(loaded[n][~keep]) == 0 for n, keep in mask.items())


def test_mask_schedule_updates_the_mask_during_training(trainer, tmp_path):
    target = random_mask(trainer, 0.5)
    calls = []

    def schedule(step: int, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        calls.append(step)
        return target if step == 20 else None

    plan = LevelPlan(start=None, steps=40, mask=None, seed=0, mask_schedule=schedule, mask_schedule_every=10)
    outcome = trainer.train(plan, tmp_path)
    assert calls == [0, 10, 20, 30]
    assert outcome.mask is not None and all(torch.equal(outcome.mask[n], target[n]) for n in target)
    loaded = trainer.load_params(tmp_path / "model.pt")
    assert all(torch.count_nonzero(loaded[n][~keep]) == 0 for n, keep in target.items())


@pytest.mark.parametrize("biases", [False, True])
def test_small_dense_matches_a_count_and_describe_names_the_pixel_layer(trainer, biases):
    cfg = Config(task="supervised", data=DataConfig("synthetic"), prune=PruneConfig(biases=biases))
    target = 5_000
    params = trainer.fresh_params(0, Runner(cfg, trainer).small_dense_scale(target))
    count = sum(params[n].numel() for n in trainer.prunable(params, include_biases=biases))
    assert abs(count - target) / target < 0.05
    facts = trainer.describe()
    assert (
        facts["input_layers"] == ["classifier.0.weight"]
        and facts["weights_total"] == 64 * 300 + 300 * 100 + 1000
    )
