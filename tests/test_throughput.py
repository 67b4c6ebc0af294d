"""Throughput plumbing: the time breakdown of every level, ``workers=N`` giving the results of
``workers=1``, and masks enforced with no host copy per optimizer step. No timing is asserted (the
machine is shared): only that the fields exist and add up."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from stable_baselines3.common.save_util import load_from_zip_file
from tiny import levels_without_time, tiny_config
from torch import nn

from rl_tickets.chain.manifest import marker_digest
from rl_tickets.chain.runner import Mirror, Runner
from rl_tickets.chain.store import ChainPaths
from rl_tickets.chain.workers import Task, WorkerPool, threads_per_worker
from rl_tickets.config import Config, PruneConfig, RewindConfig
from rl_tickets.sparsity.masks import attach_masks, enforce_after_steps, load_mask, set_masks
from rl_tickets.timing import TIME_KEYS, Stopwatch, recorded_seconds
from rl_tickets.trainers import build_trainer

HYPERPARAMS = {"n_steps": 64, "batch_size": 32, "n_epochs": 1}


def chain_cfg(root: Path, **changes: Any) -> Config:
    """A tiny PPO chain: 2 pruned levels, rewound to step 64, two trained controls and an untrained one."""
    changes.setdefault("controls", ["reinit", "random_mask"])
    return tiny_config(
        root, "ppo", HYPERPARAMS, 192, RewindConfig(step=64), PruneConfig(levels=2), net_arch=[8], **changes
    )


class Rows(Mirror):
    """Records the rows the runner sends to its mirrors (what W&B receives)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []
        self.curves: list[tuple[str, dict[str, Any]]] = []

    def level(self, variant: str, row: dict[str, Any]) -> None:
        """Keep the row."""
        self.rows.append((variant, row))

    def curve(self, variant: str, offset: int, start_step: int, row: dict[str, Any]) -> None:
        """Keep the curve point."""
        self.curves.append((variant, row))


def test_every_level_records_a_consistent_time_breakdown(tmp_path: Path) -> None:
    cfg = chain_cfg(tmp_path, controls=["reinit", "supermask"])
    cfg.prune.levels, cfg.supermask.samples = 1, 2
    mirror = Rows()
    chain = Runner(cfg, build_trainer(cfg), [mirror]).run()
    paths = ChainPaths.of(cfg)
    table = {(int(r["level"]), r["variant"]): r for r in csv.DictReader(open(chain / "levels.csv"))}
    assert set(table) == {(0, "ticket"), (1, "ticket"), (1, "reinit"), (1, "supermask")}
    for (level, variant), row in table.items():
        record = json.loads((paths.level(level, variant) / "metrics.json").read_text())
        spent = record["time"]
        assert list(spent) == list(TIME_KEYS) and all(v >= 0 for v in spent.values())
        assert (
            spent["total_s"] >= spent["train_s"] + spent["eval_s"] + spent["save_s"] + spent["prune_s"] - 1e-3
        )
        assert float(row["train_s"]) == spent["train_s"]
        if variant == "supermask":  # evaluated, never trained
            assert spent["train_s"] == 0 and spent["eval_s"] > 0 and record["steps_per_s"] is None
        else:
            assert spent["train_s"] > 0 and spent["eval_s"] > 0 and spent["save_s"] > 0
            assert record["steps_per_s"] == pytest.approx(record["timesteps"] / spent["train_s"], rel=1e-3)
        if level > 0:
            assert spent["prune_s"] > 0  # the mask (or the control's start) was built
    # The mirrors (W&B) receive the whole breakdown with each level's row.
    assert len(mirror.rows) == 4
    for _, row in mirror.rows:
        assert set(TIME_KEYS) <= set(row)
    assert any("steps_per_s" in row for _, row in mirror.rows)


def test_stopwatch_sections_never_overlap() -> None:
    ticks = iter([0.0, 1.0, 3.0, 3.0, 4.0, 10.0])  # one read per section entry and exit
    watch = Stopwatch(clock=lambda: next(ticks))
    with watch.section("train"):  # 0 .. 10, paused 1 .. 3 and 3 .. 4
        with watch.section("eval"):  # 1 .. 3
            pass
        with watch.section("save"):  # 3 .. 4
            pass
    assert watch.record(["train", "eval", "save"]) == {"train_s": 7.0, "eval_s": 2.0, "save_s": 1.0}


def model_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor an SB3 zip holds (policy parameters and buffers, optimizer states), by name."""
    _, params, _ = load_from_zip_file(path, device="cpu")
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            flat[prefix] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}/{key}", item)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(f"{prefix}/{index}", item)

    walk("", params)
    return flat


def test_two_workers_give_the_results_of_one(tmp_path: Path) -> None:
    serial, parallel = chain_cfg(tmp_path / "serial"), chain_cfg(tmp_path / "parallel", workers=2)
    Runner(serial, build_trainer(serial)).run()
    mirror = Rows()
    with mock.patch.object(WorkerPool, "run", autospec=True, side_effect=WorkerPool.run) as run:
        Runner(parallel, build_trainer(parallel), [mirror]).run()
    # Every pruned level's variants went through the pool, tickets first among those ready; a control
    # at L waits only for the ticket at L-1 (which decides the mask at L), so it trains beside the ticket at L.
    tasks = {t.key: t.after for t in run.call_args.args[1]}
    assert list(tasks)[:2] == [(1, "ticket"), (2, "ticket")] and len(tasks) == 6
    assert tasks[(2, "reinit")] == ((1, "ticket"), (1, "reinit"))
    ours, theirs = ChainPaths.of(parallel), ChainPaths.of(serial)
    assert levels_without_time(ours.chain / "levels.csv") == levels_without_time(theirs.chain / "levels.csv")
    assert len(levels_without_time(ours.chain / "levels.csv")) == 7  # dense + 2 levels x 3 variants
    for level in range(3):
        for variant in ("ticket", "reinit", "random_mask") if level else ("ticket",):
            mine, reference = ours.level(level, variant), theirs.level(level, variant)
            if level:  # a control that finished before its ticket still names the ticket as upstream
                upstream = json.loads((mine / "COMPLETE").read_text())["upstream"]
                assert upstream == marker_digest(
                    ours.level(level if variant != "ticket" else level - 1, "ticket")
                )
            mask, expected = load_mask(mine / "mask.pt"), load_mask(reference / "mask.pt")
            assert mask.keys() == expected.keys()
            assert all(torch.equal(mask[n], expected[n]) for n in mask), (level, variant)
            zips = sorted(p.name for p in reference.glob("*.zip"))
            assert zips == sorted(p.name for p in mine.glob("*.zip")) and "model.zip" in zips
            for name in zips:
                a, b = model_tensors(mine / name), model_tensors(reference / name)
                assert a.keys() == b.keys()
                assert all(torch.equal(a[k], b[k]) for k in a), (level, variant, name)
    # Rows and curves trained in the workers still reach the parent's mirrors.
    assert sorted(v for v, _ in mirror.rows) == sorted(["ticket"] * 3 + ["reinit", "random_mask"] * 2)
    assert {v for v, _ in mirror.curves} == {"ticket", "reinit", "random_mask"}


def test_threads_are_divided_among_workers() -> None:
    assert threads_per_worker(0, 16, 4) == 4
    assert threads_per_worker(0, 1, 2) == 1  # MLP agents: one thread each, never zero
    assert threads_per_worker(3, 16, 4) == 3  # an explicit setting wins


def _double(key: tuple[int, str], outbox: Any) -> int:
    """A worker job for the pool test: one message, then a result."""
    outbox.put(key)
    return key[0] * 2


def test_the_pool_runs_a_task_only_after_its_dependencies() -> None:
    tasks = [Task((2, "b"), after=((1, "a"),)), Task((1, "a")), Task((3, "c"), after=((2, "b"), (0, "gone")))]
    done: list[tuple[tuple[int, str], int]] = []
    messages: list[Any] = []
    with WorkerPool(2, threads=1) as pool:
        pool.run(
            tasks, _double, on_message=messages.append, on_done=lambda key, value: done.append((key, value))
        )
    assert done == [((1, "a"), 2), ((2, "b"), 4), ((3, "c"), 6)]
    assert [tuple(m) for m in messages] == [(1, "a"), (2, "b"), (3, "c")]


def test_the_enforcer_step_hook_makes_no_host_copy() -> None:
    """Masks stay on the network's device: the post-step hook neither copies to the host nor syncs."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    attach_masks(net)
    set_masks(net, {"0.weight": torch.rand(8, 6) > 0.5, "2.weight": torch.rand(2, 8) > 0.5})
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    enforce_after_steps(net, [optimizer])
    net(torch.randn(4, 6)).sum().backward()
    optimizer.step()  # Adam itself reads its step counter on the host; the hook is what is checked
    (enforcer,) = net._mask_enforcers
    enforcer.steps = 0  # the next call floors the second moments as well
    with torch.no_grad():
        net[0].weight.add_(1.0)  # revive pruned weights: the hook must zero them again
    forbidden = ("cpu", "item", "tolist", "numpy", "__bool__")
    patches = [mock.patch.object(torch.Tensor, name, side_effect=AssertionError(name)) for name in forbidden]
    for patch in patches:
        patch.start()
    try:
        for _ in range(2):
            enforcer(optimizer, (), {})
    finally:
        for patch in patches:
            patch.stop()
    assert int((net[0].weight[~net[0].weight_mask.bool()] != 0).sum()) == 0


def test_recorded_seconds_count_a_levels_total_once() -> None:
    # total_s already holds the sections; a record without it is the sum of its sections.
    assert recorded_seconds({"train_s": 47.5, "eval_s": 0.8, "save_s": 0.1, "total_s": 48.6}) == 48.6
    assert recorded_seconds({"train_s": 47.5, "eval_s": 0.8}) == pytest.approx(48.3)
