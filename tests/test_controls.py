"""Retraining modes and controls: each one's defining property, through the real Runner and SB3.

A spy wraps the SB3 trainer and, with ``PPO``/``DQN`` ``learn``/``train`` patched for the module,
records what every level of every variant *actually* started from (parameters, masks, step counter
at ``learn()`` entry) and the schedule values each gradient update used. "Rewound weights" are the
online parameters of the dense run's ``rewind.zip``; "trained weights" those of a level's ``model.zip``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import load_from_zip_file
from tiny import tiny_config

from rl_tickets.chain.runner import Runner
from rl_tickets.chain.store import COMPLETE, ChainPaths
from rl_tickets.config import (
    Config,
    ConfigError,
    PruneConfig,
    RetrainConfig,
    RewindConfig,
)
from rl_tickets.level import CurveSink, LevelOutcome, LevelPlan
from rl_tickets.rl.trainer import SB3Trainer
from rl_tickets.seeds import seed_for
from rl_tickets.sparsity.gradual import GradualSchedule, target_density
from rl_tickets.sparsity.masks import Mask, is_target, load_mask, online_name, read_mask
from rl_tickets.sparsity.pruning import erk_densities, next_mask

BUDGET, K = 512, 128
PPO_ROLLOUT = 64 * 2  # n_steps * n_envs
CONTROLS = ["reinit", "sign_reinit", "permute", "random_mask", "random_reinit", "small_dense"]
FINETUNE_LR = 3.7e-4  # equal to no value the linear schedule takes at an update
CLIP_START, CLIP_END = 0.2, 0.1
HYPERPARAMS: dict[str, dict[str, Any]] = {
    "ppo": {
        "n_steps": 64,
        "batch_size": 64,
        "n_epochs": 1,
        "learning_rate": {"schedule": "linear", "start": 1.0e-3},
        "clip_range": {"schedule": "linear", "start": CLIP_START, "end": CLIP_END},
    },
    "dqn": {
        "learning_starts": 64,
        "train_freq": 16,
        "gradient_steps": 1,
        "target_update_interval": 32,
        "batch_size": 16,
        "buffer_size": 1_000,
        "exploration_fraction": 0.5,
        "learning_rate": {"schedule": "linear", "start": 2.0e-3},
    },
}


def make_cfg(root: Path, algo: str = "ppo", net_arch: list[int] | None = None, **changes: Any) -> Config:
    """A tiny validated CartPole config: one level at 20% pruning, rewound to step ``K``.

    :param root: results root.
    :param algo: ppo or dqn.
    :param net_arch: hidden widths (default ``[16, 16]``).
    :param changes: top-level Config fields to replace (prune, retrain, controls, seed, ...).
    """
    return tiny_config(
        root,
        algo,
        HYPERPARAMS[algo],
        BUDGET,
        RewindConfig(step=K),
        PruneConfig(levels=1, rate=0.2),
        net_arch=net_arch or [16, 16],
        n_envs=2 if algo == "ppo" else 1,
        **changes,
    )


@dataclass
class Learn:
    """What one level's ``learn()`` started from and the schedule values of each of its updates."""

    num_timesteps: int = -1
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    mask: Mask = field(default_factory=dict)
    updates: list[dict[str, float]] = field(default_factory=list)


# The level being trained by a Spy right now (the patched learn/train record into it).
_ACTIVE: list[Learn] = []


@dataclass
class Spy:
    """Delegates to a real trainer; records each ``train()`` call's plan and what its ``learn()`` saw.

    :param inner: the real SB3 trainer.
    """

    inner: SB3Trainer
    calls: list[tuple[int, str]] = field(default_factory=list)
    plans: dict[tuple[int, str], LevelPlan] = field(default_factory=dict)
    learns: dict[tuple[int, str], Learn] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def train(self, plan: LevelPlan, out: Path, curve_sink: CurveSink | None = None) -> LevelOutcome:
        """Record the call and the plan, then train with learn()/train() recording switched on."""
        key = (int(out.parent.name.removeprefix("level_")), out.name.removesuffix(".partial"))
        self.calls.append(key)
        self.plans[key] = plan
        self.learns[key] = Learn()
        _ACTIVE.append(self.learns[key])
        try:
            return self.inner.train(plan, out, curve_sink)
        finally:
            _ACTIVE.pop()


def _update_values(model: BaseAlgorithm) -> dict[str, float]:
    """The schedule values the gradient update that just ran used."""
    progress = model._current_progress_remaining
    values = {
        "step": model.num_timesteps,
        "lr": model.policy.optimizer.param_groups[0]["lr"],
        "progress": progress,
    }
    if isinstance(model, PPO):
        values["clip_range"] = model.clip_range(progress)
    if isinstance(model, DQN):
        values["exploration_rate"] = model.exploration_rate
    return values


@pytest.fixture(scope="module", autouse=True)
def recording() -> Iterator[None]:
    """Patch PPO and DQN so that learn() and train() report into the active Spy's record."""
    with pytest.MonkeyPatch.context() as patch:
        for cls in (PPO, DQN):

            def learn(self: BaseAlgorithm, *args: Any, _original: Any = cls.learn, **kwargs: Any) -> Any:
                if _ACTIVE:
                    _ACTIVE[-1].num_timesteps = self.num_timesteps
                    _ACTIVE[-1].params = {
                        n: p.detach().cpu().clone() for n, p in self.policy.named_parameters()
                    }
                    _ACTIVE[-1].mask = read_mask(self.policy)
                return _original(self, *args, **kwargs)

            def train(self: BaseAlgorithm, *args: Any, _original: Any = cls.train, **kwargs: Any) -> None:
                _original(self, *args, **kwargs)
                if _ACTIVE:
                    _ACTIVE[-1].updates.append(_update_values(self))

            patch.setattr(cls, "learn", learn)
            patch.setattr(cls, "train", train)
        yield


def make_spy(cfg: Config) -> Spy:
    """A spy around the SB3 trainer exactly as the job builds it for ``cfg``."""
    return Spy(
        SB3Trainer(cfg.algo, cfg.env, cfg.train.timesteps, cfg.eval, cfg.device, seed_for(cfg.seed, "eval"))
    )


@dataclass
class Chain:
    """A finished run: its config, spy and paths."""

    cfg: Config
    spy: Spy
    paths: ChainPaths

    def mask(self, level: int, variant: str) -> Mask:
        """A finished level's saved mask."""
        return load_mask(self.paths.level(level, variant) / "mask.pt")

    def params(self, checkpoint: Path) -> dict[str, torch.Tensor]:
        """Online parameters of a checkpoint."""
        return self.spy.inner.load_params(checkpoint)

    @property
    def rewound(self) -> dict[str, torch.Tensor]:
        """Online parameters of the dense run's snapshot at rewind.step."""
        return self.params(self.paths.level(0, "ticket") / "rewind.zip")

    @property
    def rewound_targets(self) -> dict[str, torch.Tensor]:
        """Target-network parameters of the dense run's snapshot at rewind.step (DQN)."""
        _, state, _ = load_from_zip_file(self.paths.level(0, "ticket") / "rewind.zip", device="cpu")
        return {n: t for n, t in state["policy"].items() if is_target(n) and not n.endswith("_mask")}

    def metrics(self, level: int, variant: str) -> dict[str, Any]:
        """A finished level's metrics.json."""
        return json.loads((self.paths.level(level, variant) / "metrics.json").read_text())

    def rows(self) -> list[dict[str, str]]:
        """levels.csv."""
        with open(self.paths.chain / "levels.csv") as handle:
            return list(csv.DictReader(handle))


def run(cfg: Config) -> Chain:
    """Run ``cfg`` with a fresh spy."""
    spy = make_spy(cfg)
    Runner(cfg, spy).run()
    return Chain(cfg, spy, ChainPaths.of(cfg))


@pytest.fixture(scope="module")
def ppo(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """One command: PPO CartPole, the ticket and every control at level 1."""
    return run(make_cfg(tmp_path_factory.mktemp("ppo"), "ppo", controls=list(CONTROLS)))


@pytest.fixture(scope="module")
def dqn(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """One command: DQN CartPole, the ticket and every control at level 1."""
    return run(make_cfg(tmp_path_factory.mktemp("dqn"), "dqn", controls=list(CONTROLS)))


@pytest.fixture(params=["ppo", "dqn"])
def chain(request: pytest.FixtureRequest) -> Chain:
    """The PPO and the DQN chain in turn."""
    return request.getfixturevalue(request.param)


def kept(mask: Mask) -> int:
    """Number of kept weights."""
    return sum(int(m.sum()) for m in mask.values())


def same_mask(a: Mask, b: Mask) -> bool:
    """Whether two masks cover the same tensors with the same entries."""
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def online(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The online (non-target) parameters."""
    return {n: p for n, p in params.items() if not is_target(n)}


def assert_starts_from(entry: dict[str, torch.Tensor], source: dict[str, torch.Tensor], mask: Mask) -> None:
    """The online start equals ``source`` times ``mask`` exactly, for every online parameter."""
    assert online(entry).keys() == source.keys()
    for name, value in source.items():
        expected = value * mask[name] if name in mask else value
        assert torch.equal(entry[name], expected), name


def assert_targets_synced(entry: dict[str, torch.Tensor]) -> None:
    """Every target-network parameter equals its online twin (and there are targets)."""
    targets = [n for n in entry if is_target(n)]
    assert targets
    for name in targets:
        assert torch.equal(entry[name], entry[online_name(name)]), name


def live_layers(mask: Mask) -> list[str]:
    """Layers with at least two kept weights, so that "differs" and "permuted" can hold.

    Global magnitude pruning may remove a whole layer: PPO's action head starts at SB3's
    orthogonal gain 0.01, far below every other layer, and goes first.
    """
    names = [n for n, m in mask.items() if int(m.sum()) >= 2]
    assert len(names) >= 3, "too few live layers for the test to mean anything"
    return names


# ---- one command: ticket and every control, per level, in levels.csv ---------------------------
def test_one_command_writes_the_ticket_and_every_control_with_their_returns(chain: Chain) -> None:
    assert chain.spy.calls == [(0, "ticket"), (1, "ticket")] + [(1, c) for c in CONTROLS]
    rows = chain.rows()
    assert [(int(r["level"]), r["variant"]) for r in rows] == [(0, "ticket"), (1, "ticket")] + [
        (1, c) for c in CONTROLS
    ]
    for row in rows:
        assert math.isfinite(float(row["eval_return_mean"])) and float(row["eval_return_mean"]) > 0
    seeds = set()
    for control in CONTROLS:
        directory = chain.paths.level(1, control)
        assert {"model.zip", "mask.pt", "metrics.json", COMPLETE} <= {p.name for p in directory.iterdir()}
        recorded = chain.metrics(1, control)["plan"]["control_seed"]
        assert recorded == seed_for(chain.cfg.seed, 1, control)
        seeds.add(recorded)
    assert len(seeds) == len(CONTROLS)
    # random_reinit draws random_mask's mask (same generator seed), with its own fresh weights.
    plan = chain.metrics(1, "random_reinit")["plan"]
    assert plan["generator_seed"] == chain.metrics(1, "random_mask")["plan"]["control_seed"]
    assert plan["generator_seed"] != plan["control_seed"]
    # Every level really trained: gradient updates happened (DQN too, after learning_starts).
    for key, learn in chain.spy.learns.items():
        assert len(learn.updates) >= 2, key


def test_controls_added_later_train_only_the_controls(ppo: Chain) -> None:
    cfg = replace(ppo.cfg, controls=[], prune=replace(ppo.cfg.prune, rate=0.5))
    first = run(cfg)
    assert first.spy.calls == [(1, "ticket")]  # level 0 is shared with the fixture's chain
    ticket_dir = first.paths.level(1, "ticket")
    before = {p.name: p.read_bytes() for p in ticket_dir.iterdir()}
    later = run(replace(cfg, controls=["reinit", "random_mask"]))
    assert later.paths.chain == first.paths.chain  # controls are not identity
    assert later.spy.calls == [(1, "reinit"), (1, "random_mask")]
    assert {p.name: p.read_bytes() for p in ticket_dir.iterdir()} == before
    variants = [(int(r["level"]), r["variant"]) for r in later.rows()]
    assert variants == [(0, "ticket"), (1, "ticket"), (1, "reinit"), (1, "random_mask")]


# ---- the controls' defining properties ------------------------------------------------------------
def test_ticket_starts_from_the_rewound_weights_times_its_mask(chain: Chain) -> None:
    learn = chain.spy.learns[(1, "ticket")]
    mask = chain.mask(1, "ticket")
    assert same_mask(learn.mask, mask)
    assert_starts_from(learn.params, chain.rewound, mask)
    assert learn.num_timesteps == K


def test_reinit_keeps_the_mask_with_fresh_weights(chain: Chain) -> None:
    learn = chain.spy.learns[(1, "reinit")]
    mask, rewound = chain.mask(1, "ticket"), chain.rewound
    assert same_mask(chain.mask(1, "reinit"), mask) and same_mask(learn.mask, mask)
    for name in live_layers(mask):
        keep = mask[name]
        assert not torch.equal(learn.params[name], rewound[name] * keep), name
        assert bool((learn.params[name][keep] != rewound[name][keep]).all()), name
    # Fresh from the policy's own initialiser with the recorded control seed.
    fresh = chain.spy.inner.fresh_params(chain.metrics(1, "reinit")["plan"]["control_seed"])
    assert_starts_from(learn.params, fresh, mask)
    assert learn.num_timesteps == K
    if chain.cfg.algo.name == "dqn":
        assert_targets_synced(learn.params)
        # Not vacuous: the ticket's own targets lag its online network.
        ticket = chain.spy.learns[(1, "ticket")].params
        assert any(not torch.equal(ticket[n], ticket[online_name(n)]) for n in ticket if is_target(n))


def test_sign_reinit_keeps_signs_and_mask_with_fresh_magnitudes(chain: Chain) -> None:
    learn = chain.spy.learns[(1, "sign_reinit")]
    mask, rewound = chain.mask(1, "ticket"), chain.rewound
    assert same_mask(chain.mask(1, "sign_reinit"), mask) and same_mask(learn.mask, mask)
    fresh = chain.spy.inner.fresh_params(chain.metrics(1, "sign_reinit")["plan"]["control_seed"])
    for name, keep in mask.items():
        start, old = learn.params[name][keep], rewound[name][keep]
        assert torch.equal(torch.sign(start), torch.sign(old)), name
        assert bool((start.abs() != old.abs()).all()), name
        assert torch.equal(start.abs(), fresh[name][keep].abs()), name
        assert int((learn.params[name][~keep] != 0).sum()) == 0, name
    assert live_layers(mask)
    if chain.cfg.algo.name == "dqn":
        assert_targets_synced(learn.params)


def test_permute_shuffles_the_kept_rewound_values_within_each_layer(chain: Chain) -> None:
    learn = chain.spy.learns[(1, "permute")]
    mask, rewound = chain.mask(1, "ticket"), chain.rewound
    assert same_mask(chain.mask(1, "permute"), mask) and same_mask(learn.mask, mask)
    for name, keep in mask.items():
        start, old = learn.params[name][keep], rewound[name][keep]
        assert torch.equal(torch.sort(start).values, torch.sort(old).values), name
        if name in live_layers(mask):
            assert not torch.equal(start, old), name
        assert int((learn.params[name][~keep] != 0).sum()) == 0, name
    # Parameters outside the mask (biases) are the rewound ones.
    for name in online(learn.params).keys() - mask.keys():
        assert torch.equal(learn.params[name], rewound[name]), name
    if chain.cfg.algo.name == "dqn":
        assert_targets_synced(learn.params)


@pytest.mark.parametrize("control", ["random_mask", "random_reinit"])
def test_random_masks_match_the_tickets_per_layer_counts(chain: Chain, control: str) -> None:
    learn = chain.spy.learns[(1, control)]
    ticket, mask = chain.mask(1, "ticket"), chain.mask(1, control)
    assert same_mask(learn.mask, mask)
    assert mask.keys() == ticket.keys()
    for name in ticket:
        assert abs(int(mask[name].sum()) - int(ticket[name].sum())) <= 1, name
        if 0 < int(ticket[name].sum()) < ticket[name].numel():
            assert not torch.equal(mask[name], ticket[name]), name
    assert not same_mask(mask, ticket)
    if control == "random_mask":
        assert_starts_from(learn.params, chain.rewound, mask)
        if chain.cfg.algo.name == "dqn":  # the rewound targets, like the ticket's, under the new mask
            for name, value in chain.rewound_targets.items():
                keep = mask.get(online_name(name))
                assert torch.equal(learn.params[name], value * keep if keep is not None else value), name
    else:
        assert same_mask(mask, chain.mask(1, "random_mask"))  # that random mask, fresh weights
        fresh = chain.spy.inner.fresh_params(chain.metrics(1, control)["plan"]["control_seed"])
        assert_starts_from(learn.params, fresh, mask)
        rewound = chain.rewound
        for name in live_layers(mask):
            keep = mask[name]
            assert bool((learn.params[name][keep] != rewound[name][keep]).all()), name
        if chain.cfg.algo.name == "dqn":
            assert_targets_synced(learn.params)


def test_small_dense_matches_the_tickets_weight_count(chain: Chain) -> None:
    ticket = chain.mask(1, "ticket")
    live = kept(ticket)
    plan = chain.metrics(1, "small_dense")["plan"]
    assert plan["ticket_weights"] == live and plan["width_scale"] < 1.0
    shrunk = chain.params(chain.paths.level(1, "small_dense") / "model.zip")
    count = sum(shrunk[n].numel() for n in ticket)
    assert abs(count - live) <= 0.05 * live
    assert count < sum(m.numel() for m in ticket.values())
    # Dense, from its own initialisation, for the full budget.
    small = chain.mask(1, "small_dense")
    assert all(bool(m.all()) for m in small.values())
    assert chain.spy.learns[(1, "small_dense")].num_timesteps == 0
    rows = {r["variant"]: r for r in chain.rows() if r["level"] == "1"}
    assert int(rows["small_dense"]["timesteps"]) == BUDGET
    assert float(rows["small_dense"]["density"]) == pytest.approx(float(rows["ticket"]["density"]), rel=0.05)


def test_small_dense_counts_biases_when_the_ticket_prunes_them(ppo: Chain) -> None:
    """With prune.biases=true the ticket's kept count includes biases, and so does small_dense's size."""
    cfg = replace(ppo.cfg, controls=["small_dense"], prune=replace(ppo.cfg.prune, biases=True))
    chain = run(cfg)
    ticket = chain.mask(1, "ticket")
    assert any(n.endswith("bias") for n in ticket)
    live = kept(ticket)
    assert chain.metrics(1, "small_dense")["plan"]["ticket_weights"] == live
    shrunk = chain.params(chain.paths.level(1, "small_dense") / "model.zip")
    count = sum(shrunk[n].numel() for n in ticket)  # weights and biases, as density counts them
    assert abs(count - live) <= 0.05 * live
    rows = {r["variant"]: r for r in chain.rows() if r["level"] == "1"}
    assert float(rows["small_dense"]["density"]) == pytest.approx(float(rows["ticket"]["density"]), rel=0.05)


# ---- retraining modes ------------------------------------------------------------------------
def test_finetune_continues_from_the_trained_weights_at_the_constant_rate(ppo: Chain) -> None:
    cfg = replace(
        ppo.cfg,
        controls=[],
        prune=replace(ppo.cfg.prune, levels=2),
        retrain=RetrainConfig(mode="finetune", finetune_lr=FINETUNE_LR),
    )
    chain = run(cfg)
    assert chain.spy.calls == [(1, "ticket"), (2, "ticket")]
    for level in (1, 2):
        learn = chain.spy.learns[(level, "ticket")]
        mask = chain.mask(level, "ticket")
        trained = chain.params(chain.paths.level(level - 1, "ticket") / "model.zip")
        assert_starts_from(learn.params, trained, mask)
        # The step counter is the checkpoint's own (no rewind).
        assert learn.num_timesteps == chain.metrics(level - 1, "ticket")["extra"]["end_step"]
        assert len(learn.updates) == (BUDGET - K) // PPO_ROLLOUT
        # The clip range is held at its value at the rewind point k, not at the schedule's end.
        clip_at_k = CLIP_START + (CLIP_END - CLIP_START) * K / BUDGET
        for update in learn.updates:
            assert update["lr"] == FINETUNE_LR
            assert update["clip_range"] == pytest.approx(clip_at_k, abs=1e-12)
        plan = chain.metrics(level, "ticket")["plan"]
        assert (plan["constant_lr"], plan["hold_step"]) == (FINETUNE_LR, K)


def test_finetune_trains_the_policy_when_the_clip_schedule_ends_at_zero(tmp_path: Path) -> None:
    """The zoo's PPO schedules decay to 0; held at that end value, PPO's clip range 0 kept the policy still."""
    hyperparams = dict(HYPERPARAMS["ppo"], clip_range={"schedule": "linear", "start": CLIP_START})
    cfg = tiny_config(
        tmp_path,
        "ppo",
        hyperparams,
        BUDGET,
        RewindConfig(step=0),
        PruneConfig(levels=1, rate=0.2, scope="layer"),  # global pruning may remove the tiny head
        net_arch=[16, 16],
        n_envs=2,
        retrain=RetrainConfig(mode="finetune", finetune_lr=1e-3),
    )
    chain = run(cfg)
    level = chain.paths.level(1, "ticket")
    with open(level / "progress.csv") as handle:
        logged = [float(r["train/clip_range"]) for r in csv.DictReader(handle) if r.get("train/clip_range")]
    updates = chain.spy.learns[(1, "ticket")].updates
    assert len(updates) == BUDGET // PPO_ROLLOUT
    # SB3 writes an update's train/* with the next rollout's dump, so the last update is not logged.
    assert len(logged) == len(updates) - 1
    for value in logged + [u["clip_range"] for u in updates]:
        assert value == pytest.approx(CLIP_START)  # the schedule's start value, as k = 0
    # The action head moves: its live weights change by more than half their norm over the level
    # (measured: 1.41x at clip 0.2; 0.24x with the clip range held at the schedule's end, 0.0).
    start = chain.spy.learns[(1, "ticket")].params["action_net.weight"]
    end = chain.params(level / "model.zip")["action_net.weight"]
    keep = chain.mask(1, "ticket")["action_net.weight"]
    assert (end - start)[keep].norm() > 0.5 * start[keep].norm()


def test_lr_rewind_continues_from_the_trained_weights_with_the_schedule_at_k(ppo: Chain) -> None:
    cfg = replace(
        ppo.cfg, controls=[], prune=replace(ppo.cfg.prune, levels=2), retrain=RetrainConfig(mode="lr_rewind")
    )
    chain = run(cfg)
    assert chain.spy.calls == [(1, "ticket"), (2, "ticket")]
    dense = {u["step"]: u for u in ppo.spy.learns[(0, "ticket")].updates}
    for level in (1, 2):
        learn = chain.spy.learns[(level, "ticket")]
        trained = chain.params(chain.paths.level(level - 1, "ticket") / "model.zip")
        assert_starts_from(learn.params, trained, chain.mask(level, "ticket"))
        rewound = ppo.rewound
        assert any(not torch.equal(trained[n], rewound[n]) for n in chain.mask(level, "ticket"))
        assert learn.num_timesteps == K
        first = learn.updates[0]
        assert first["step"] == K + PPO_ROLLOUT
        # Exactly the dense run's schedule values at that step, i.e. the schedule replayed from k.
        assert [u["step"] for u in learn.updates] == list(range(K + PPO_ROLLOUT, BUDGET + 1, PPO_ROLLOUT))
        for update in learn.updates:
            assert update == dense[update["step"]]
        assert first["lr"] == pytest.approx(1e-3 * (1 - first["step"] / BUDGET), rel=1e-12)
        assert (
            first["lr"] < dense[PPO_ROLLOUT]["lr"] and first["clip_range"] < dense[PPO_ROLLOUT]["clip_range"]
        )


# ---- criteria compare with the weights the pruned level started from ---------------------------
def expected_mask(chain: Chain, final: Path, reference: Path, current: Mask) -> Mask:
    """The mask the chain's pruning rule gives ranking ``final``'s weights against ``reference``'s."""
    spec = Runner(chain.cfg, chain.spy.inner).spec
    return next_mask(spec, chain.params(final), chain.params(reference), current)


def test_movement_under_late_rewinding_compares_with_the_rewind_point(ppo: Chain) -> None:
    chain = run(replace(ppo.cfg, controls=[], prune=replace(ppo.cfg.prune, criterion="movement")))
    assert chain.spy.calls == [(1, "ticket")] and chain.cfg.rewind.step == K > 0
    dense_dir = chain.paths.level(0, "ticket")
    mask = chain.mask(1, "ticket")
    full = {n: torch.ones_like(m) for n, m in mask.items()}
    assert same_mask(mask, expected_mask(chain, dense_dir / "model.zip", dense_dir / "rewind.zip", full))
    # Not vacuous: against the initialisation the same rule keeps other weights.
    assert not same_mask(mask, expected_mask(chain, dense_dir / "model.zip", dense_dir / "init.zip", full))


def test_magnitude_increase_under_finetune_compares_with_the_levels_own_start(ppo: Chain) -> None:
    prune = replace(ppo.cfg.prune, levels=2, criterion="magnitude_increase")
    chain = run(replace(ppo.cfg, controls=[], prune=prune, retrain=RetrainConfig(mode="finetune")))
    assert chain.spy.calls == [(1, "ticket"), (2, "ticket")]
    level = [chain.paths.level(n, "ticket") for n in range(3)]
    first, second = chain.mask(1, "ticket"), chain.mask(2, "ticket")
    full = {n: torch.ones_like(m) for n, m in first.items()}
    # The dense level started from the initialisation; level 1 from the dense level's trained weights.
    assert same_mask(first, expected_mask(chain, level[0] / "model.zip", level[0] / "init.zip", full))
    assert same_mask(second, expected_mask(chain, level[1] / "model.zip", level[0] / "model.zip", first))
    assert not same_mask(second, expected_mask(chain, level[1] / "model.zip", level[0] / "init.zip", first))


# ---- gradual pruning and ERK --------------------------------------------------------------------
def test_gradual_pruning_follows_the_polynomial_schedule_in_the_chain_layout(chain: Chain) -> None:
    every, final_density = 64, 0.3
    prune = replace(chain.cfg.prune, schedule="gradual", final_density=final_density, update_every=every)
    gradual = run(replace(chain.cfg, controls=[], prune=prune))
    assert gradual.spy.calls == [(1, "gradual")]  # level 0 is shared with the fixture's chain
    directory = gradual.paths.level(1, "gradual")
    assert {"model.zip", "mask.pt", "metrics.json", COMPLETE} <= {p.name for p in directory.iterdir()}
    rows = gradual.rows()
    assert [(int(r["level"]), r["variant"]) for r in rows] == [(0, "ticket"), (1, "gradual")]
    assert math.isfinite(float(rows[1]["eval_return_mean"]))
    assert len(gradual.spy.learns[(1, "gradual")].updates) >= 2

    schedule = gradual.spy.plans[(1, "gradual")].mask_schedule
    assert isinstance(schedule, GradualSchedule)
    begin, end = round(0.2 * BUDGET), round(0.8 * BUDGET)
    assert (schedule.begin, schedule.end) == (begin, end)
    mask = gradual.mask(1, "gradual")
    total = sum(m.numel() for m in mask.values())
    assert abs(kept(mask) - final_density * total) <= 1
    assert float(rows[1]["density"]) == pytest.approx(kept(mask) / total, abs=1e-12)
    assert same_mask(mask, schedule.mask)
    # Every checkpoint lands on the polynomial within one weight; several lie strictly in between.
    assert schedule.history
    for step, reached in schedule.history:
        assert step % every == 0 and begin < step
        assert abs(reached * total - target_density(step, begin, end, final_density) * total) <= 1, step
    between = [d for _, d in schedule.history if final_density + 1 / total < d < 1.0]
    assert len(between) >= 2
    assert schedule.history[-1][1] == pytest.approx(kept(mask) / total, abs=1e-12)


def test_erk_masks_follow_the_erk_densities(ppo: Chain) -> None:
    prune = replace(ppo.cfg.prune, rate=0.5, distribution="erk")
    chain = run(replace(ppo.cfg, controls=[], prune=prune))
    assert chain.spy.calls == [(1, "ticket")]
    mask = chain.mask(1, "ticket")
    wanted = erk_densities({n: tuple(m.shape) for n, m in mask.items()}, 0.5)
    for name, keep in mask.items():
        assert abs(int(keep.sum()) - wanted[name] * keep.numel()) <= 1, name
    assert len({round(d, 6) for d in wanted.values()}) > 1  # not uniform
    assert any(d == 1.0 for d in wanted.values())  # the tiny value head is capped dense
    total = sum(m.numel() for m in mask.values())
    assert abs(kept(mask) - 0.5 * total) <= len(mask)


# ---- mask transfer -------------------------------------------------------------------------------
def test_transfer_applies_another_chains_ticket_mask(ppo: Chain, tmp_path: Path) -> None:
    source = ppo.mask(1, "ticket")
    cfg = make_cfg(tmp_path, "ppo", seed=1, transfer_from=str(ppo.paths.chain))
    chain = run(cfg)
    assert chain.spy.calls == [(0, "ticket"), (1, "ticket"), (1, "transfer")]
    mask = chain.mask(1, "transfer")
    assert same_mask(mask, source)
    learn = chain.spy.learns[(1, "transfer")]
    assert same_mask(learn.mask, source)
    assert_starts_from(learn.params, chain.rewound, source)  # this chain's own rewound weights
    assert not same_mask(chain.mask(1, "ticket"), source)  # seed 1 found a ticket of its own
    variants = [(int(r["level"]), r["variant"]) for r in chain.rows()]
    assert variants == [(0, "ticket"), (1, "ticket"), (1, "transfer")]


def test_transfer_between_different_shapes_is_refused_before_anything_is_written(
    ppo: Chain, tmp_path: Path
) -> None:
    root = tmp_path / "results"
    cfg = make_cfg(root, "ppo", net_arch=[8, 8], seed=1, transfer_from=str(ppo.paths.chain))
    spy = make_spy(cfg)
    with pytest.raises(ConfigError, match="transfer_from"):
        Runner(cfg, spy).run()
    assert spy.calls == []
    assert not root.exists() or not any(root.rglob("*"))


def test_seed_for_uses_every_character_and_keeps_short_parts_stable() -> None:
    seeds = {c: seed_for(0, 1, c) for c in CONTROLS}
    assert len(set(seeds.values())) == len(CONTROLS)  # "random_mask" and "random_reinit" share "rand"
    assert seed_for(0, "evaluation") != seed_for(0, "eval")
    # Ints and strings of at most 4 bytes map as before the fix: evaluation episodes are unchanged.
    assert seed_for(0, "eval") == 368908628 and seed_for(3, "eval") == 123997150
    assert seed_for(0, 1) == 1817441349
