"""Sparse training from scratch (static, SET, RigL): what the papers define, checked exactly.

- the cosine-decayed drop fraction (RigL, Evci et al. 2020) at known points;
- per-layer counts (uniform, ERK) exact at the start and constant through every update;
- SET drops exactly the smallest-magnitude live weights and grows among the inactive positions;
  RigL grows exactly the top-|gradient| inactive positions on a constructed case;
- grown weights are 0 with every optimizer's moments at 0; target networks follow the online mask;
- the mask invariant (pruned weights exactly 0 at every forward, online and target) for each schedule
  and all five algorithms, after steps and a save/load; RigL reads the *dense* gradient (the tap);
- the chain layout: ``level_01/<schedule>``, ``mask_updates.csv``, levels.csv rows, small_dense beside.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from tiny import CLASSES, ENVS, tiny_config
from torch import nn

from rl_tickets.chain.runner import Runner
from rl_tickets.chain.store import ChainPaths
from rl_tickets.config import ConfigError, PruneConfig, RewindConfig, resolved_end_fraction, validate
from rl_tickets.rl import mask_updates
from rl_tickets.rl.agents import AgentBuilder
from rl_tickets.rl.envs import MinAtarCNN
from rl_tickets.rl.mask_updates import SparseTraining
from rl_tickets.rl.policies import POLICIES, policy_optimizers
from rl_tickets.sparsity.dynamic import (
    LOG_COLUMNS,
    DynamicSchedule,
    apply_update,
    cosine_drop_fraction,
    drop_and_grow,
    layer_counts,
    random_mask,
)
from rl_tickets.sparsity.masks import (
    attach_masks,
    enforce_after_steps,
    is_target,
    load_mask,
    online_twins,
    prunable_names,
    read_mask,
    set_masks,
)
from rl_tickets.sparsity.pruning import erk_densities
from rl_tickets.trainers import build_trainer

torch.set_num_threads(1)


# ---- the schedule's numbers -------------------------------------------------------------------------
def test_cosine_drop_fraction_takes_rigls_values() -> None:
    end = 75_000
    assert cosine_drop_fraction(0, end, 0.1) == pytest.approx(0.1)
    assert cosine_drop_fraction(end // 4, end, 0.1) == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine_drop_fraction(end // 2, end, 0.1) == pytest.approx(0.05)
    assert cosine_drop_fraction(3 * end // 4, end, 0.1) == pytest.approx(
        0.1 * (1 - math.cos(math.pi / 4)) / 2
    )
    assert cosine_drop_fraction(end, end, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert cosine_drop_fraction(end + 1000, end, 0.1) == 0.0
    # Monotone non-increasing on the update grid.
    values = [cosine_drop_fraction(t, end, 0.3) for t in range(0, end + 1, 1000)]
    assert all(a >= b for a, b in zip(values, values[1:]))


SHAPES = {"a.weight": (256, 4), "b.weight": (256, 256), "c.weight": (2, 256), "conv.weight": (16, 3, 3, 3)}


@pytest.mark.parametrize("density", [0.8**7, 0.8**10, 0.8**13])
def test_layer_counts_uniform_and_erk_and_the_random_mask_draws_them_exactly(density: float) -> None:
    uniform = layer_counts(SHAPES, density, "uniform")
    assert uniform == {n: round(density * math.prod(s)) for n, s in SHAPES.items()}
    erk = layer_counts(SHAPES, density, "erk")
    wanted = erk_densities(SHAPES, density)
    total = sum(math.prod(s) for s in SHAPES.values())
    for name, shape in SHAPES.items():
        assert erk[name] == min(math.prod(shape), round(wanted[name] * math.prod(shape)))
    assert abs(sum(erk.values()) - density * total) <= len(SHAPES)
    # ERK keeps small layers denser than the big hidden layer.
    assert erk["a.weight"] / 1024 > erk["b.weight"] / 65536
    mask = random_mask(SHAPES, erk, torch.Generator().manual_seed(0))
    assert {n: int(m.sum()) for n, m in mask.items()} == erk
    assert {n: tuple(m.shape) for n, m in mask.items()} == SHAPES
    other = random_mask(SHAPES, erk, torch.Generator().manual_seed(1))
    assert not torch.equal(mask["b.weight"], other["b.weight"])


def constructed_layer(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 20x10 layer at 30% density with distinct weight magnitudes and distinct gradients."""
    generator = torch.Generator().manual_seed(seed)
    keep = torch.zeros(200, dtype=torch.bool)
    keep[torch.randperm(200, generator=generator)[:60]] = True
    weight = (torch.randperm(200, generator=generator).float() + 1.0) * 0.01 * keep
    signs = torch.where(torch.rand(200, generator=generator) < 0.5, -1.0, 1.0)
    grad = (torch.randperm(200, generator=generator).float() + 1.0) * signs  # distinct |grad|, both signs
    return keep.view(20, 10), weight.view(20, 10), grad.view(20, 10)


def test_set_drops_exactly_the_smallest_live_weights_and_grows_among_the_inactive() -> None:
    keep, weight, _ = constructed_layer()
    change = drop_and_grow(keep, weight, None, 0.1, torch.Generator().manual_seed(0))
    new, grown = change.mask, change.grown
    n = int(0.1 * 60)
    assert int(new.sum()) == 60 and int(grown.sum()) == n
    live = weight[keep]
    smallest = set(torch.topk(live, n, largest=False).values.tolist())
    dropped = keep & ~new
    assert set(weight[dropped].tolist()) <= smallest
    after_drop = keep.clone()
    after_drop[weight.abs() <= max(smallest)] &= False
    assert int(after_drop.sum()) == 60 - n
    assert not (grown & after_drop).any()  # grown among positions inactive after the drop
    assert torch.equal(new, after_drop | grown)
    # Random growth: another seed grows elsewhere.
    change = drop_and_grow(keep, weight, None, 0.1, torch.Generator().manual_seed(1))
    again = change.grown
    assert not torch.equal(grown, again)


def test_rigl_grows_exactly_the_top_gradient_inactive_positions() -> None:
    keep, weight, grad = constructed_layer()
    change = drop_and_grow(keep, weight, grad, 0.1, torch.Generator().manual_seed(0))
    new, grown = change.mask, change.grown
    n = int(0.1 * 60)
    after_drop = new & ~grown
    free = ~after_drop
    order = torch.argsort(grad.abs().flatten().masked_fill(~free.flatten(), -1.0), descending=True)
    expected = torch.zeros(200, dtype=torch.bool)
    expected[order[:n]] = True
    assert torch.equal(grown.flatten(), expected)
    assert int(new.sum()) == 60
    # Nothing changes for a dense layer (ERK keeps small layers dense): no inactive position.
    dense = torch.ones(20, 10, dtype=torch.bool)
    change = drop_and_grow(dense, weight + 1.0, grad, 0.3, torch.Generator().manual_seed(0))
    same, none = change.mask, change.grown
    assert torch.equal(same, dense) and not none.any()


def test_rigl_grows_every_position_with_a_gradient_then_silent_ones_at_random() -> None:
    """Exact zero gradients (dead units) rank below every nonzero one, and among themselves at random."""
    keep, weight, grad = constructed_layer()
    n = int(0.1 * 60)
    free_after_drop = ~drop_and_grow(keep, weight, grad, 0.1, torch.Generator().manual_seed(0)).mask
    sparse_grad = torch.zeros_like(grad)
    signal = (free_after_drop & ~keep).flatten().nonzero().squeeze(1)[:2]  # two free positions get a gradient
    sparse_grad.view(-1)[signal] = torch.tensor([3.0, -0.5])
    choices = []
    for seed in range(4):
        change = drop_and_grow(keep, weight, sparse_grad, 0.1, torch.Generator().manual_seed(seed))
        new, grown = change.mask, change.grown
        assert int(grown.sum()) == n and int(new.sum()) == 60
        assert grown.view(-1)[signal].all()  # both positions with a gradient are grown
        choices.append(frozenset(grown.view(-1).nonzero().squeeze(1).tolist()))
    assert len(set(choices)) > 1  # the silent rest is random, not the first free positions


def test_schedule_updates_once_per_period_until_the_end_and_logs_every_layer() -> None:
    shapes = {"a.weight": (32, 8), "b.weight": (4, 32)}
    counts = layer_counts(shapes, 0.25, "uniform")
    mask = random_mask(shapes, counts, torch.Generator().manual_seed(0))
    schedule = DynamicSchedule("set", mask, list(shapes), every=100, end=750, drop_fraction=0.2, seed=0)
    weights = {n: torch.randn(s) for n, s in shapes.items()}
    assert not schedule.due(0) and not schedule.due(99) and schedule.due(100)
    schedule.update(104, weights)  # steps arrive n_envs at a time: the first step at or after 100
    assert not schedule.due(150) and schedule.due(200)
    schedule.update(200, weights)
    assert not schedule.due(751)
    assert [r["step"] for r in schedule.log] == [104, 104, 200, 200]
    for row in schedule.log:
        assert row["kept"] == counts[row["layer"]]
        assert (
            row["dropped"] == row["grown"] == int(cosine_drop_fraction(row["step"], 750, 0.2) * row["kept"])
        )
        assert row["overlap"] >= 1 - row["dropped"] / row["kept"]
        assert set(row) == set(LOG_COLUMNS)
    assert {n: int(m.sum()) for n, m in schedule.mask.items()} == counts
    static = DynamicSchedule("static", mask, list(shapes), every=100, end=750, drop_fraction=0.2, seed=0)
    assert not any(static.due(t) for t in range(0, 1000, 50))


# ---- one update carried into a network: weights, moments, targets -------------------------------
class OnlineAndTarget(nn.Module):
    """A q_net and its q_net_target (SB3's names), one Adam over the online net only (as DQN)."""

    def __init__(self) -> None:
        super().__init__()
        self.q_net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        self.q_net_target = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        attach_masks(self)
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.optimizer = torch.optim.Adam(self.q_net.parameters(), lr=1e-2)
        enforce_after_steps(self, [self.optimizer])


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_an_update_zeroes_grown_weights_and_their_moments_and_targets_follow(method: str) -> None:
    torch.manual_seed(0)
    net = OnlineAndTarget()
    names = prunable_names(net)
    shapes = {n: tuple(dict(net.named_parameters())[n].shape) for n in names}
    counts = layer_counts(shapes, 0.4, "uniform")
    mask = random_mask(shapes, counts, torch.Generator().manual_seed(0))
    set_masks(net, mask)
    for _ in range(20):  # live weights and their moments move away from 0
        net.optimizer.zero_grad()
        net.q_net(torch.randn(32, 6)).pow(2).mean().backward()
        net.optimizer.step()
    net.q_net_target.load_state_dict(net.q_net.state_dict())
    schedule = DynamicSchedule(method, mask, names, every=1, end=100, drop_fraction=0.3, seed=0)
    params = dict(net.named_parameters())
    state_before = {n: {k: v.clone() for k, v in net.optimizer.state[params[n]].items()} for n in names}
    grads = {n: torch.randn(shapes[n]) for n in names} if method == "rigl" else None
    rows = apply_update(net, [net.optimizer], schedule, 1, grads)

    assert len(rows) == len(names) and all(r["dropped"] > 0 for r in rows)
    new = read_mask(net)
    for name in names:
        assert int(new[name].sum()) == counts[name]  # per-layer count unchanged
        grown, dropped = schedule.grown[name], mask[name] & ~new[name]
        kept = mask[name] & new[name] & ~grown
        weight = params[name].detach()
        assert (weight[grown] == 0).all() and (weight[~new[name]] == 0).all()
        state = net.optimizer.state[params[name]]
        for key in ("exp_avg", "exp_avg_sq"):
            assert (state[key][grown | dropped] == 0).all(), key
            assert torch.equal(state[key][kept], state_before[name][key][kept]), key
    for target, online in online_twins(net).items():
        if online in new:
            layer = net.get_submodule(target.rsplit(".", 1)[0])
            assert torch.equal(layer.weight_mask.bool(), new[online])  # the target follows the mask
            assert (params[target].detach()[~new[online]] == 0).all()
            assert (params[target].detach()[schedule.grown[online]] == 0).all()


# ---- all five algorithms: the invariant through training, a save and a load ---------------------
# Budgets and update periods small enough for a test, with updates and target updates really happening.
HYPERPARAMS: dict[str, dict[str, Any]] = {
    "ppo": dict(n_steps=64, batch_size=32, n_epochs=2),
    "a2c": dict(n_steps=8),
    "dqn": dict(
        learning_starts=64, train_freq=4, target_update_interval=32, batch_size=32, buffer_size=1_000
    ),
    "sac": dict(learning_starts=64, batch_size=32, buffer_size=1_000),
    "td3": dict(learning_starts=64, batch_size=32, buffer_size=1_000),
}
BUDGET, EVERY = 448, 64


class InvariantWatch:
    """Forward pre-hooks on every masked layer (online and target): pruned weights nonzero at a forward."""

    def __init__(self, module: nn.Module) -> None:
        self.forwards, self.violations = 0, 0
        self.handles = [
            sub.register_forward_pre_hook(self.check)
            for sub in module.modules()
            if hasattr(sub, "weight_mask")
        ]

    def check(self, sub: nn.Module, _args: Any) -> None:
        with torch.no_grad():
            self.forwards += 1
            self.violations += int((sub.weight * ~sub.weight_mask.bool()).count_nonzero() > 0)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextmanager
def watched(module: nn.Module) -> Iterator[InvariantWatch]:
    """Watch every forward of ``module``'s masked layers inside the block."""
    watch = InvariantWatch(module)
    try:
        yield watch
    finally:
        watch.close()


def sparse_agent(algo: str, method: str) -> tuple[BaseAlgorithm, DynamicSchedule]:
    """A tiny agent with a random ERK mask at 30% and the schedule that updates it."""
    model = CLASSES[algo](
        POLICIES[algo],
        ENVS[algo],
        seed=0,
        device="cpu",
        policy_kwargs=dict(net_arch=[32, 32]),
        **HYPERPARAMS[algo],
    )
    named = dict(model.policy.named_parameters())
    names = prunable_names(model.policy)
    shapes = {n: tuple(named[n].shape) for n in names}
    counts = layer_counts(shapes, 0.3, "erk")
    mask = random_mask(shapes, counts, torch.Generator().manual_seed(0))
    set_masks(model.policy, mask)
    schedule = DynamicSchedule(
        method, mask, names, every=EVERY, end=round(0.75 * BUDGET), drop_fraction=0.3, seed=0
    )
    return model, schedule


def pruned_nonzero(model: BaseAlgorithm) -> int:
    """Pruned-but-nonzero weights over every masked layer, online and target."""
    return sum(
        int((sub.weight.detach() * ~sub.weight_mask.bool()).count_nonzero())
        for sub in model.policy.modules()
        if hasattr(sub, "weight_mask")
    )


def target_masks_follow(model: BaseAlgorithm) -> bool:
    """Whether every target layer carries exactly its online twin's mask."""
    policy = model.policy
    buffers = {n: b for n, b in policy.named_buffers() if n.endswith("_mask")}
    return all(
        torch.equal(
            buffers[t.replace(".weight", ".weight_mask")], buffers[o.replace(".weight", ".weight_mask")]
        )
        for t, o in online_twins(policy).items()
        if t.endswith(".weight")
    )


@pytest.mark.parametrize("method", ["static", "set", "rigl"])
@pytest.mark.parametrize("algo", list(CLASSES))
def test_the_invariant_holds_and_counts_stay_exact_for_every_schedule_and_algorithm(
    algo: str, method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, schedule = sparse_agent(algo, method)
    counts = {n: int(m.sum()) for n, m in schedule.mask.items()}
    seen: list[dict[str, torch.Tensor] | None] = []
    real_apply = mask_updates.apply_update

    def spying_apply(
        module: nn.Module, optimizers: Any, sched: DynamicSchedule, step: int, grads: Any = None
    ) -> Any:
        seen.append(grads)
        before = {n: m.clone() for n, m in sched.mask.items()}
        rows = real_apply(module, optimizers, sched, step, grads)
        params = dict(module.named_parameters())
        for name in sched.updated:  # right after the update: grown at 0 with fresh moments everywhere
            grown = sched.grown[name]
            assert (params[name].detach()[grown] == 0).all()
            assert int(sched.mask[name].sum()) == int(before[name].sum())
            for optimizer in optimizers:
                for value in optimizer.state.get(params[name], {}).values():
                    if isinstance(value, torch.Tensor) and value.shape == grown.shape:
                        assert (value[grown] == 0).all()
        assert target_masks_follow(model)
        return rows

    monkeypatch.setattr(mask_updates, "apply_update", spying_apply)
    with watched(model.policy) as watch:
        model.learn(BUDGET, callback=SparseTraining(schedule))
    assert watch.forwards > 0 and watch.violations == 0
    assert pruned_nonzero(model) == 0 and target_masks_follow(model)
    assert {n: int(m.sum()) for n, m in read_mask(model.policy).items()} == counts
    assert {n: int(m.sum()) for n, m in schedule.mask.items()} == counts
    if method == "static":
        assert not schedule.log and not seen
    else:
        updates = sorted({r["step"] for r in schedule.log})
        assert len(updates) >= 3, updates  # updates really happened
        assert sum(r["dropped"] for r in schedule.log) > 0
        assert all(r["step"] <= schedule.end + EVERY for r in schedule.log)
        assert all(r["step"] % EVERY < 8 for r in schedule.log)  # at the update step's first gradient step
        changed = read_mask(model.policy)
        assert any(not torch.equal(changed[n], _initial(algo)[n]) for n in changed)
    if method == "rigl":
        # The tap's gradient is the dense one: nonzero at pruned positions, which the hook then masks.
        assert seen and all(grads is not None for grads in seen)
        assert any(bool((g[~schedule.mask[n]] != 0).any()) for grads in seen for n, g in grads.items())
    # Saved and loaded: masks and zeros survive, online and target.
    model.save(tmp_path / "model.zip")
    loaded = CLASSES[algo].load(
        tmp_path / "model.zip", device="cpu", custom_objects={"policy_class": POLICIES[algo]}
    )
    assert pruned_nonzero(loaded) == 0 and target_masks_follow(loaded)
    assert all(torch.equal(read_mask(loaded.policy)[n], read_mask(model.policy)[n]) for n in counts)


def _initial(algo: str) -> dict[str, torch.Tensor]:
    """The initial mask :func:`sparse_agent` draws for ``algo`` (for a 'mask changed' check)."""
    return sparse_agent(algo, "static")[1].mask


def test_a_parameter_without_gradient_grows_at_random_after_one_period() -> None:
    model, schedule = sparse_agent("dqn", "rigl")
    callback = SparseTraining(schedule)
    callback.init_callback(model)
    callback.reader = mask_updates.DenseGradients(schedule.updated)  # armed, nothing recorded
    callback.armed_at = 64
    model.num_timesteps = 64 + EVERY
    callback._on_step()
    assert callback.reader is None and schedule.log and {r["step"] for r in schedule.log} == {64 + EVERY}


class TinyImages(gym.Env):
    """Random 2x6x6 float images, random rewards, 16-step episodes: just enough for a CNN agent."""

    def __init__(self, discrete: bool) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2, 6, 6), np.float32)
        self.action_space = (
            gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        )
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.t += 1
        return self.observation_space.sample(), float(self.np_random.normal()), False, self.t >= 16, {}


@pytest.mark.parametrize("method", ["set", "rigl"])
@pytest.mark.parametrize(("algo", "share"), [("ppo", None), ("dqn", None), ("sac", True)])
def test_cnn_layers_and_a_shared_extractor_are_sparse_trained_with_targets_following(
    algo: str, share: bool | None, method: str
) -> None:
    kwargs: dict[str, Any] = {
        "features_extractor_class": MinAtarCNN,
        "features_extractor_kwargs": {"features_dim": 16},
        "net_arch": [16],
    }
    if share is not None:
        kwargs["share_features_extractor"] = share
    hyper: dict[str, Any] = dict(n_steps=32, batch_size=16, n_epochs=1) if algo == "ppo" else {}
    if algo != "ppo":
        hyper = dict(learning_starts=32, train_freq=1, gradient_steps=1, batch_size=16, buffer_size=300)
    if algo == "dqn":
        hyper |= dict(train_freq=4, target_update_interval=8)
    model = CLASSES[algo](
        POLICIES[algo],
        TinyImages(discrete=algo != "sac"),
        seed=0,
        device="cpu",
        policy_kwargs=kwargs,
        **hyper,
    )
    named = dict(model.policy.named_parameters())
    names = prunable_names(model.policy)
    conv = [n for n in names if "features_extractor.cnn.0" in n]
    assert conv and named[conv[0]].dim() == 4
    shapes = {n: tuple(named[n].shape) for n in names}
    counts = layer_counts(shapes, 0.3, "uniform")
    mask = random_mask(shapes, counts, torch.Generator().manual_seed(0))
    set_masks(model.policy, mask)
    schedule = DynamicSchedule(method, mask, names, every=32, end=160, drop_fraction=0.3, seed=0)
    with watched(model.policy) as watch:
        model.learn(224, callback=SparseTraining(schedule))
    assert watch.violations == 0 and pruned_nonzero(model) == 0 and target_masks_follow(model)
    assert any(r["layer"] == conv[0] and r["dropped"] > 0 for r in schedule.log)
    assert {n: int(m.sum()) for n, m in read_mask(model.policy).items()} == counts
    if share:  # the critic's extractor is the actor's object: updated once, under the actor's name
        assert model.policy.critic.features_extractor is model.policy.actor.features_extractor
        assert not any(n.startswith("critic.features_extractor") for n in names)


# ---- the chain: level_01/<schedule>, mask_updates.csv, levels.csv, small_dense beside ----------
CHAIN_HYPERPARAMS = {
    "ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 1},
    "dqn": {
        "learning_starts": 64,
        "train_freq": 4,
        "target_update_interval": 32,
        "batch_size": 16,
        "buffer_size": 1000,
    },
}


@pytest.mark.parametrize(("algo", "method"), [("ppo", "set"), ("dqn", "rigl"), ("ppo", "static")])
def test_a_sparse_chain_writes_its_level_its_updates_and_small_dense_beside(
    algo: str, method: str, tmp_path: Path
) -> None:
    prune = PruneConfig(levels=1, schedule=method, final_density=0.3, update_every=EVERY, distribution="erk")
    cfg = tiny_config(
        tmp_path,
        algo,
        CHAIN_HYPERPARAMS[algo],
        512,
        RewindConfig(),
        prune,
        net_arch=[32, 32],
        controls=["small_dense"],
    )
    chain = Runner(cfg, build_trainer(cfg)).run()
    with open(chain / "levels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["level"], r["variant"]) for r in rows] == [
        ("0", "ticket"),
        ("1", "small_dense"),
        ("1", method),
    ]
    directory = chain / "level_01" / method
    mask = load_mask(directory / "mask.pt")
    builder = AgentBuilder(cfg.algo, cfg.env, "cpu")
    named = dict(builder.reference.policy.named_parameters())
    shapes = {n: tuple(named[n].shape) for n in prunable_names(builder.reference.policy)}
    counts = layer_counts(shapes, 0.3, "erk")
    assert {n: int(m.sum()) for n, m in mask.items()} == counts
    density = sum(counts.values()) / sum(math.prod(s) for s in shapes.values())
    assert float(rows[2]["density"]) == pytest.approx(density, abs=1e-12)
    # small_dense is matched to the schedule's kept count (as beside a ticket), within its width rounding.
    assert float(rows[1]["density"]) == pytest.approx(density, rel=0.15)
    with open(directory / "mask_updates.csv", newline="") as handle:
        updates = list(csv.DictReader(handle))
    assert list(updates[0]) == list(LOG_COLUMNS) if updates else (directory / "mask_updates.csv").exists()
    if method == "static":
        assert not updates
    else:
        end = round(resolved_end_fraction(prune) * 512)
        assert {int(r["step"]) // EVERY for r in updates} == set(range(1, end // EVERY + 1))
        assert all(int(r["dropped"]) == int(r["grown"]) for r in updates)
        assert all(int(r["kept"]) == counts[r["layer"]] for r in updates)
        assert any(int(r["dropped"]) > 0 for r in updates)
        # The level trained from the dense run's initialisation with this mask drawn at the start.
    # A second run finds everything done.
    again = Runner(cfg, build_trainer(cfg))
    assert not any(again.needs_training(1, v) for v in (method, "small_dense"))


def test_static_set_and_rigl_start_from_the_same_mask_and_the_dense_init(tmp_path: Path) -> None:
    from rl_tickets.chain.context import ChainContext
    from rl_tickets.chain.plans import sparse_plan

    prune = PruneConfig(levels=1, schedule="static", final_density=0.2, distribution="erk")
    cfg = tiny_config(
        tmp_path, "ppo", CHAIN_HYPERPARAMS["ppo"], 512, RewindConfig(), prune, net_arch=[32, 32]
    )
    trainer = build_trainer(cfg)
    plans = {
        m: sparse_plan(ChainContext(replace(cfg, prune=replace(prune, schedule=m)), trainer), 1, m)
        for m in ("static", "set", "rigl")
    }
    first = plans["static"].mask
    assert first is not None
    for plan in plans.values():
        assert plan.mask is not None and all(torch.equal(plan.mask[n], first[n]) for n in first)
        assert (
            plan.start == ChainPaths.of(cfg).dense / "level_00" / "ticket" / "init.zip"
            and plan.start_step == 0
        )
    assert plans["set"].sparse is not None and plans["set"].sparse.end == round(0.75 * 512)


def test_config_refuses_what_sparse_training_cannot_mean(tmp_path: Path) -> None:
    base = tiny_config(
        tmp_path, "ppo", CHAIN_HYPERPARAMS["ppo"], 512, RewindConfig(), PruneConfig(schedule="set")
    )
    for prune, controls in [
        (PruneConfig(schedule="set", criterion="movement"), []),
        (PruneConfig(schedule="rigl", overrides={"action": 0.5}), []),
        (PruneConfig(schedule="static", drop_fraction=1.0), []),
        (PruneConfig(schedule="set", end_fraction=0.0), []),
        (PruneConfig(schedule="static"), ["reinit"]),
        (PruneConfig(schedule="gradual"), ["permute"]),
    ]:
        with pytest.raises(ConfigError):
            validate(replace(base, prune=prune, controls=controls))
    validate(replace(base, prune=PruneConfig(schedule="rigl"), controls=["small_dense"]))
    assert resolved_end_fraction(PruneConfig(schedule="set")) == 0.75
    assert resolved_end_fraction(PruneConfig(schedule="gradual")) == 0.8
    assert resolved_end_fraction(PruneConfig(schedule="rigl", end_fraction=0.5)) == 0.5


def test_end_fraction_hashes_of_existing_chains_are_unchanged() -> None:
    from rl_tickets.chain.identity import chain_identity
    from rl_tickets.config import Config

    def identity(prune: PruneConfig) -> dict[str, Any]:
        return {k: v for k, v in chain_identity(Config(prune=prune)).items() if k.startswith("prune.")}

    # Gradual's 0.8 was the schema default: explicit or implicit, it is left out of the identity.
    assert identity(PruneConfig(schedule="gradual")) == identity(
        PruneConfig(schedule="gradual", end_fraction=0.8)
    )
    assert "prune.end_fraction" not in identity(PruneConfig(schedule="gradual", end_fraction=0.8))
    assert identity(PruneConfig(end_fraction=0.8)) == identity(PruneConfig())
    assert identity(PruneConfig(schedule="gradual", end_fraction=0.6))["prune.end_fraction"] == 0.6
    # SET's own default (0.75) is left out too; another value is recorded.
    assert "prune.end_fraction" not in identity(PruneConfig(schedule="set"))
    assert identity(PruneConfig(schedule="set", end_fraction=0.8))["prune.end_fraction"] == 0.8


def test_targets_of_off_policy_agents_follow_the_online_mask_at_each_update() -> None:
    model, schedule = sparse_agent("td3", "set")
    model.learn(BUDGET, callback=SparseTraining(schedule))
    assert schedule.log
    assert all(is_target(target) for target in online_twins(model.policy))
    assert target_masks_follow(model)
    assert policy_optimizers(model.policy)


@pytest.mark.parametrize("method", ["static", "set", "rigl"])
def test_the_supervised_trainer_trains_static_set_and_rigl_with_exact_counts(
    method: str, tmp_path: Path
) -> None:
    from rl_tickets.config import Config, DataConfig, EvalConfig, LoggerConfig, TrainConfig

    prune = PruneConfig(levels=1, schedule=method, final_density=0.2, update_every=40)
    cfg = Config(
        task="supervised",
        data=DataConfig(name="digits"),
        train=TrainConfig(iterations=200, batch_size=32),
        prune=prune,
        eval=EvalConfig(every=0),
        logger=LoggerConfig(mode="disabled"),
        root=str(tmp_path),
        device="cpu",
        progress=False,
    )
    validate(cfg)
    trainer = build_trainer(cfg)
    chain = Runner(cfg, trainer).run()
    directory = chain / "level_01" / method
    mask = load_mask(directory / "mask.pt")
    params = trainer.load_params(directory / trainer.checkpoint_name)
    shapes = {n: tuple(m.shape) for n, m in mask.items()}
    assert {n: int(m.sum()) for n, m in mask.items()} == layer_counts(shapes, 0.2, "uniform")
    assert all(int(params[n][~mask[n]].count_nonzero()) == 0 for n in mask)  # the invariant, saved
    with open(directory / "mask_updates.csv", newline="") as handle:
        updates = list(csv.DictReader(handle))
    if method == "static":
        assert not updates
    else:  # iterations 40, 80, 120 (end = 0.75 * 200 = 150)
        assert sorted({int(r["step"]) for r in updates}) == [40, 80, 120]
        assert all(int(r["dropped"]) == int(r["grown"]) > 0 for r in updates)


# ---- the report: one-run verdicts and methods at equal density -----------------------------------
def write_chain(
    root: Path,
    chain_hash: str,
    seed: int,
    prune: dict[str, Any],
    rows: list[tuple[int, str, float, float]],
    env: str = "CartPole-v0",
    dense: str = "d0",
) -> None:
    """A finished chain as the report reads it: meta.json and levels.csv (level, variant, density, return)."""
    import json

    directory = root / "chains" / chain_hash / f"seed_{seed}"
    directory.mkdir(parents=True)
    meta = {
        "name": f"graesser-{chain_hash}",
        "task": "rl",
        "seed": seed,
        "metric": "eval_return_mean",
        "dense_dir": str(root / "dense" / dense / f"seed_{seed}"),
        "config": {"prune": prune, "env": {"id": env}},
    }
    (directory / "meta.json").write_text(json.dumps(meta))
    with open(directory / "levels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["level", "variant", "density", "eval_return_mean"])
        writer.writerows(rows)


def test_the_report_compares_methods_at_equal_density_and_gives_one_run_chains_verdicts(
    tmp_path: Path,
) -> None:
    from rl_tickets.report.cli import main
    from rl_tickets.report.methods import method_table, method_verdicts
    from rl_tickets.report.tables import ReportOptions, per_seed_table, verdict_table

    seeds = range(6)
    for s in seeds:
        dense = 150.0 + s
        imp = {"schedule": "iterative", "scope": "global", "distribution": "uniform"}
        write_chain(
            tmp_path,
            "imp",
            s,
            imp,
            [(0, "ticket", 1.0, dense), (1, "ticket", 0.8, dense), (2, "ticket", 0.64, dense - 1)],
        )
        static = {"schedule": "static", "distribution": "erk"}
        write_chain(
            tmp_path,
            "static",
            s,
            static,
            [
                (0, "ticket", 1.0, dense),
                (1, "static", 0.8004, 100.0 + s),
                (1, "small_dense", 0.79, 90.0 + 2 * s),
            ],
        )
        write_chain(
            tmp_path,
            "set",
            s,
            {"schedule": "set", "distribution": "erk"},
            [(0, "ticket", 1.0, dense), (1, "set", 0.7998, 120.0 + s)],
        )
    from rl_tickets.report.loading import discover

    experiments = discover(tmp_path)
    table = method_table(experiments)
    at = table[np.isclose(table["density"], table.loc[table["method"] == "set/erk", "density"].iloc[0])]
    assert set(at["method"]) == {"ticket/global", "static/erk", "set/erk", "small_dense"}
    assert len(table[table["method"] == "dense"]) == 6  # one dense row per seed, shared by every chain
    verdicts = method_verdicts(table, ReportOptions(), {"d0": (0.0, 200.0)})
    pair = verdicts[(verdicts["method"] == "set/erk") & (verdicts["comparison"] == "static/erk")].iloc[0]
    assert pair["verdict"] == "better" and pair["diff_mean"] == pytest.approx(20.0) and pair["n"] == 6
    assert set(verdicts.loc[verdicts["comparison"] == "dense", "method"]) >= {
        "set/erk",
        "static/erk",
        "ticket/global",
    }
    # A one-run chain's own verdicts: the schedule's run against dense and against small_dense beside it.
    static_exp = next(e for e in experiments if e.chain_hash == "static")
    own = verdict_table(per_seed_table(static_exp), ReportOptions(), (0.0, 200.0))
    assert set(own["comparison"]) == {"dense", "small_dense"} and set(own["level"]) == {1}
    beats = own[own["comparison"] == "small_dense"].iloc[0]
    assert beats["diff_mean"] == pytest.approx(np.mean([10.0 - s for s in seeds]))
    assert main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "methods.md").read_text()
    assert (
        "set/erk" in text
        and "better" in text
        and "methods.md" in (tmp_path / "report" / "index.md").read_text()
    )
    # The figure the markdown embeds is drawn, and its headings name the agent.
    assert "](methods.png)" in text and (tmp_path / "report" / "methods.png").stat().st_size > 10_000


def test_each_comparison_group_gets_its_own_environments_return_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rl_tickets.report.loading import discover
    from rl_tickets.report.methods import group_bounds, method_table, method_verdicts
    from rl_tickets.report.tables import ReportOptions

    for s in range(6):
        for env, dense, value in (("CartPole-v0", "d0", 200.0), ("CartPole-v1", "d1", 500.0)):
            for schedule in ("static", "set"):
                prune = {"schedule": schedule, "distribution": "erk"}
                rows = [(0, "ticket", 1.0, value), (1, schedule, 0.1, value)]
                write_chain(tmp_path, f"{schedule}-{dense}", s, prune, rows, env, dense)
    experiments = discover(tmp_path)
    assert group_bounds(experiments) == {"d0": (0.0, 200.0), "d1": (0.0, 500.0)}
    # Each verdict is computed with its own group's range: a CartPole-v0 pair (values at 200) with
    # (0, 200), a CartPole-v1 pair (at 500) with (0, 500), never the other group's.
    seen: set[tuple[float, tuple[float, float] | None]] = set()
    verdict = ReportOptions.verdict

    def recording(self: ReportOptions, mine: Any, theirs: Any, question: str, bounds: Any) -> Any:
        seen.add((float(np.max(theirs)), bounds))
        return verdict(self, mine, theirs, question, bounds)

    monkeypatch.setattr(ReportOptions, "verdict", recording)
    verdicts = method_verdicts(method_table(experiments), ReportOptions(), group_bounds(experiments))
    assert seen == {(200.0, (0.0, 200.0)), (500.0, (0.0, 500.0))}
    assert set(verdicts["group"]) == {"d0", "d1"}
    # Every seed at its cap, tied with dense: "matches" needs more seeds than 6 whatever the cap.
    assert set(verdicts.loc[verdicts["comparison"] == "dense", "verdict"]) == {"inconclusive"}


def test_method_summary_gives_each_cells_mean_sd_and_t_interval() -> None:
    from scipy import stats as scipy_stats

    from rl_tickets.report.method_plots import method_summary

    table = pd.DataFrame(
        {
            "group": ["g"] * 7,
            "method": ["dense"] * 3 + ["set/erk"] * 3 + ["static/erk"],
            "density": [1.0] * 3 + [0.1] * 4,
            "seed": [0, 1, 2, 0, 1, 2, 0],
            "value": [200.0, 200.0, 200.0, 100.0, 150.0, np.nan, 42.0],
        }
    )
    summary = method_summary(table).set_index("method")
    dense, set_, static = summary.loc["dense"], summary.loc["set/erk"], summary.loc["static/erk"]
    # Zero variance: the interval collapses onto the mean (capped CartPole returns tie like this).
    assert (dense["n"], dense["mean"], dense["ci_low"], dense["ci_high"]) == (3, 200.0, 200.0, 200.0)
    half = scipy_stats.t.ppf(0.975, 1) * np.std([100.0, 150.0], ddof=1) / np.sqrt(2)
    assert set_["n"] == 2 and set_["mean"] == 125.0  # the missing seed is left out, not counted as 0
    assert set_["ci_low"] == pytest.approx(125.0 - half) and set_["ci_high"] == pytest.approx(125.0 + half)
    assert static["n"] == 1 and static["mean"] == 42.0 and np.isnan(static["ci_low"])


def test_last10_is_the_mean_of_the_last_tenth_of_evaluations() -> None:
    from rl_tickets.report.metrics import last_fraction_of

    assert last_fraction_of(np.arange(25, dtype=float)) == pytest.approx(23.5)  # int(2.5) = 2: 23, 24
    assert last_fraction_of(np.arange(51, dtype=float)) == pytest.approx(48.0)  # Graesser: 51 -> last 5
    assert last_fraction_of(np.array([3.0, 7.0])) == 7.0  # at least one
    assert math.isnan(last_fraction_of(np.zeros(0)))


def test_the_graesser2022_presets_carry_their_gin_settings_and_no_zoo_value() -> None:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from rl_tickets.config import register_schemas

    register_schemas()
    with initialize_config_module(config_module="rl_tickets.conf", version_base="1.3"):
        dqn = OmegaConf.to_object(
            compose("config", ["experiment=graesser2022_dqn_cartpole", "prune.schedule=rigl"])
        )
        ppo = OmegaConf.to_object(compose("config", ["experiment=graesser2022_ppo_cartpole"]))
    assert dqn.env.id == "CartPole-v0" and dqn.train.timesteps == 50_000
    assert dqn.algo.hyperparams == {
        "learning_rate": 1e-3,
        "batch_size": 128,
        "buffer_size": 100_000,
        "learning_starts": 1000,
        "gamma": 0.99,
        "target_update_interval": 100,
        "train_freq": 1,
        "gradient_steps": 1,
        "exploration_fraction": 0.1,
        "exploration_initial_eps": 0.01,
        "exploration_final_eps": 0.01,
        "max_grad_norm": 1e6,
    }
    assert dqn.algo.policy_kwargs == {"net_arch": [256, 256]}
    assert (dqn.eval.every, dqn.eval.episodes) == (2000, 20)
    p = dqn.prune
    assert (p.distribution, p.update_every, p.drop_fraction, p.end_fraction, p.start_fraction) == (
        "erk",
        1000,
        0.1,
        0.75,
        0.2,
    )
    assert dqn.name == "graesser2022_dqn_rigl_erk"
    validate(dqn)
    assert ppo.env.n_envs == 8 and ppo.train.timesteps == 100_000 and ppo.prune.levels == 13
    validate(ppo)


@pytest.mark.parametrize(("schedule", "last"), [("set", 1), ("gradual", 1), ("iterative", 13)])
def test_progress_lines_name_the_schedules_last_level(
    schedule: str,
    last: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from rl_tickets.cli.job import Progress

    extra = {} if schedule == "iterative" else {"final_density": 0.3, "distribution": "erk"}
    prune = PruneConfig(levels=13, schedule=schedule, update_every=EVERY, **extra)
    cfg = tiny_config(tmp_path, "ppo", CHAIN_HYPERPARAMS["ppo"], 512, RewindConfig(), prune)
    progress = Progress(cfg, "eval_return_mean", 512, live=False)
    with caplog.at_level("INFO"):
        progress(1, schedule, {"density": 0.3, "eval_return_mean": 10.0})
    assert f"level 1/{last} {schedule}" in capsys.readouterr().out + caplog.text
    # The ETA counts the levels left: a one-run schedule has its dense level and one run.
    assert progress.total == 1 + last
