"""Pruned weights have no gradient: zero before gradient clipping and every optimizer step, and zero
optimizer state at pruned positions (in memory, in a saved model.zip, and after a restored optimizer).

SB3 clips the gradient norm between ``backward()`` and ``optimizer.step()`` (PPO, A2C, DQN); SAC and TD3
do not clip. Every algorithm is trained for a tiny budget with its update machinery brought forward,
and the number of clipping calls and optimizer steps is asserted, so the zero checks are not vacuous.
A control removes the gradient hooks and shows that clipping then sees pruned gradients.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import pytest
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import load_from_zip_file
from tiny import ALGOS, CLASSES, ENVS
from torch import nn

from rl_tickets.config import AlgoConfig, EnvConfig, EvalConfig, TrainConfig
from rl_tickets.level import LevelPlan
from rl_tickets.rl.envs import make_env
from rl_tickets.rl.policies import POLICIES, policy_optimizers
from rl_tickets.rl.trainer import SB3Trainer
from rl_tickets.sparsity.masks import (
    attach_masks,
    enforce_after_steps,
    prunable_names,
    set_gradient_tap,
    set_masks,
)
from rl_tickets.sparsity.moments import SECOND_MOMENT_FLOOR, SECOND_MOMENTS
from rl_tickets.supervised.networks import Networks
from rl_tickets.timing import Stopwatch

torch.set_num_threads(1)

HYPERPARAMS: dict[str, dict[str, Any]] = {
    "ppo": dict(n_steps=64, batch_size=32, n_epochs=2),
    "a2c": dict(n_steps=8),
    "dqn": dict(learning_starts=64, train_freq=4, batch_size=32, buffer_size=1_000),
    "sac": dict(learning_starts=64, batch_size=32, buffer_size=1_000),
    "td3": dict(learning_starts=64, batch_size=32, buffer_size=1_000),
}
BUDGETS = {"ppo": 256, "a2c": 256, "dqn": 400, "sac": 160, "td3": 160}
CLIPPING = {"ppo", "a2c", "dqn"}  # the algorithms whose train() calls clip_grad_norm_
# State tensors that must be exactly 0 at pruned positions (second moments may sit at the floor).
FIRST_MOMENTS = ("exp_avg", "momentum_buffer", "grad_avg")


def make_model(algo: str, seed: int = 0) -> BaseAlgorithm:
    """A small masked agent whose updates start within the tiny budget."""
    return CLASSES[algo](
        POLICIES[algo],
        ENVS[algo],
        seed=seed,
        device="cpu",
        policy_kwargs=dict(net_arch=[32, 32]),
        **HYPERPARAMS[algo],
    )


def half_mask(module: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """About half of every prunable online weight kept, at random."""
    generator = torch.Generator().manual_seed(seed)
    named = dict(module.named_parameters())
    return {n: torch.rand(named[n].shape, generator=generator) < 0.5 for n in prunable_names(module)}


def all_optimizers(model: BaseAlgorithm) -> list[torch.optim.Optimizer]:
    """The policy's optimizers and SAC's entropy-coefficient optimizer."""
    extra = getattr(model, "ent_coef_optimizer", None)
    return policy_optimizers(model.policy) + ([extra] if extra is not None else [])


def masked_in(model: BaseAlgorithm, mask: dict[str, torch.Tensor]) -> dict[int, tuple[str, torch.Tensor]]:
    """id(parameter) -> (name, pruned positions) for every masked online parameter."""
    named = dict(model.policy.named_parameters())
    return {id(named[n]): (n, ~keep) for n, keep in mask.items()}


@dataclass
class Audit:
    """Pruned-gradient entries seen at each clipping call and at each optimizer step."""

    clip_calls: int = 0
    clip_leaks: int = 0
    steps: int = 0
    step_leaks: int = 0
    live_grads: int = 0
    seen: set[str] = field(default_factory=set)


@contextmanager
def audited(model: BaseAlgorithm, mask: dict[str, torch.Tensor]) -> Iterator[Audit]:
    """Count nonzero gradients at pruned positions when SB3 clips and before every optimizer step."""
    audit, pruned = Audit(), masked_in(model, mask)

    def leaks(params: Any) -> int:
        total = 0
        for p in params:
            if id(p) in pruned and p.grad is not None:
                name, dead = pruned[id(p)]
                total += int(p.grad[dead].count_nonzero())
                audit.live_grads += int(p.grad[~dead].count_nonzero())
                audit.seen.add(name)
        return total

    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(parameters: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        parameters = list(parameters)
        audit.clip_calls += 1
        audit.clip_leaks += leaks(parameters)
        return real_clip(parameters, *args, **kwargs)

    def before_step(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        audit.steps += 1
        audit.step_leaks += leaks(p for group in optimizer.param_groups for p in group["params"])

    handles = [o.register_step_pre_hook(before_step) for o in all_optimizers(model)]
    torch.nn.utils.clip_grad_norm_ = clip  # SB3 calls it as th.nn.utils.clip_grad_norm_ at run time
    try:
        yield audit
    finally:
        torch.nn.utils.clip_grad_norm_ = real_clip
        for handle in handles:
            handle.remove()


def state_leaks(state: dict[str, Any], dead: torch.Tensor) -> tuple[int, float, int]:
    """(nonzero first-moment entries, largest second moment, moment entries checked) at pruned positions."""
    first = [state[k] for k in FIRST_MOMENTS if k in state]
    second = [state[k] for k in SECOND_MOMENTS if k in state]
    nonzero = sum(int(t[dead].count_nonzero()) for t in first)
    largest = max((float(t[dead].max()) for t in second if dead.any()), default=0.0)
    return nonzero, largest, int(dead.sum()) * (len(first) + len(second))


def check_optimizer_state(model: BaseAlgorithm, mask: dict[str, torch.Tensor]) -> int:
    """Assert zero first moments and floored second moments at pruned positions; return entries checked."""
    pruned, checked = masked_in(model, mask), 0
    for optimizer in policy_optimizers(model.policy):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in pruned or p not in optimizer.state:
                    continue
                name, dead = pruned[id(p)]
                nonzero, largest, count = state_leaks(optimizer.state[p], dead)
                assert nonzero == 0, f"{name}: {nonzero} nonzero first-moment entries at pruned positions"
                assert largest <= SECOND_MOMENT_FLOOR, f"{name}: second moment {largest} above the floor"
                checked += count
    return checked


def trained(algo: str) -> tuple[BaseAlgorithm, dict[str, torch.Tensor], Audit]:
    """A masked agent trained for the tiny budget under audit."""
    model = make_model(algo)
    mask = half_mask(model.policy)
    set_masks(model.policy, mask)
    with audited(model, mask) as audit:
        model.learn(BUDGETS[algo])
    return model, mask, audit


@pytest.fixture(scope="module", params=ALGOS)
def run(request: pytest.FixtureRequest) -> tuple[str, BaseAlgorithm, dict[str, torch.Tensor], Audit]:
    """Each algorithm trained once for the tests below."""
    return (request.param, *trained(request.param))


def test_pruned_gradients_are_zero_at_clipping_and_at_every_optimizer_step(run: tuple) -> None:
    algo, model, mask, audit = run
    assert audit.steps > 0 and model._n_updates > 0
    assert audit.live_grads > 0  # live weights did get gradients: the zeros below are the masking
    assert audit.seen == set(mask)  # every masked tensor reached an optimizer with a gradient
    assert audit.step_leaks == 0
    if algo in CLIPPING:
        assert audit.clip_calls > 0 and audit.clip_leaks == 0
    else:
        assert audit.clip_calls == 0


def test_adam_moments_at_pruned_positions_stay_zero_in_memory_and_in_the_saved_zip(
    run: tuple, tmp_path: Path
) -> None:
    algo, model, mask, _ = run
    assert check_optimizer_state(model, mask) > 0
    path = tmp_path / "model.zip"
    model.save(path)
    _, saved, _ = load_from_zip_file(path, device="cpu")
    named_ids = {id(p): n for n, p in model.policy.named_parameters()}
    checked = 0
    for key, state_dict in saved.items():
        if not key.endswith("optimizer") or key == "ent_coef_optimizer":
            continue
        live = reduce(getattr, key.split("."), model)
        order = [p for group in live.param_groups for p in group["params"]]
        for index, state in state_dict["state"].items():
            name = named_ids.get(id(order[index]))
            if name not in mask:
                continue
            nonzero, largest, count = state_leaks(state, ~mask[name])
            assert nonzero == 0 and largest <= SECOND_MOMENT_FLOOR, f"{key}/{name} in model.zip"
            checked += count
    assert checked > 0


def test_without_the_gradient_hooks_clipping_sees_pruned_gradients() -> None:
    """The control: the same PPO run with the hooks removed leaks pruned gradients into clipping."""
    model = make_model("ppo")
    mask = half_mask(model.policy)
    set_masks(model.policy, mask)
    for handle in model.policy._grad_masks._handles.values():
        handle.remove()
    with audited(model, mask) as audit:
        model.learn(BUDGETS["ppo"])
    assert audit.clip_calls > 0 and audit.clip_leaks > 0 and audit.step_leaks > 0


def test_a_restored_optimizer_is_zeroed_at_pruned_positions_when_the_level_loads(tmp_path: Path) -> None:
    """rewind.optimizer=restore: a dense run's moments are nonzero everywhere; the pruned level's are not."""
    algo = AlgoConfig(name="ppo", hyperparams=HYPERPARAMS["ppo"], policy_kwargs={"net_arch": [16]})
    env_cfg = EnvConfig(name="cartpole", id="CartPole-v1")
    trainer = SB3Trainer(algo, env_cfg, 256, EvalConfig(episodes=1, every=0), "cpu", eval_seed=7)
    dense_dir = tmp_path / "dense"
    dense_dir.mkdir()
    trainer.train(LevelPlan(start=None, steps=256, mask=None, seed=0), dense_dir)
    start = dense_dir / "model.zip"
    _, saved, _ = load_from_zip_file(start, device="cpu")
    assert all(
        int(s["exp_avg"].count_nonzero()) == s["exp_avg"].numel()
        for s in saved["policy.optimizer"]["state"].values()
        if s["exp_avg"].dim() == 2
    )
    mask = {
        n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.5
        for n, p in trainer.load_params(start).items()
        if n in trainer.prunable(trainer.load_params(start), False)
    }
    env = make_env(env_cfg, seed=1)
    try:
        for restore in (True, False):
            plan = LevelPlan(start=start, steps=64, mask=mask, seed=1, restore_optimizer=restore)
            model = trainer._start(plan, env, tmp_path, Stopwatch())
            states = model.policy.optimizer.state
            if restore:
                assert check_optimizer_state(model, mask) > 0
                named = dict(model.policy.named_parameters())
                # Live positions keep the restored moments.
                assert all(
                    int(states[named[n]]["exp_avg"][keep].count_nonzero()) == int(keep.sum())
                    for n, keep in mask.items()
                )
            else:
                assert len(states) == 0
    finally:
        env.close()


def test_the_supervised_trainer_masks_gradients_and_restored_moments(tmp_path: Path) -> None:
    nets = Networks("lenet_300_100", (1, 28, 28), 10, TrainConfig(), torch.device("cpu"), "synthetic")
    model, optimizer, _, _ = nets.start(LevelPlan(start=None, steps=1, mask=None, seed=0))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    path = tmp_path / "dense.pt"
    nets.save(path, model, optimizer, 1, 1.0, 0)
    mask = {
        n: torch.rand(p.shape, generator=torch.Generator().manual_seed(2)) < 0.3
        for n, p in model.named_parameters()
        if n.endswith("weight")
    }
    plan = LevelPlan(start=path, steps=1, mask=mask, seed=1, restore_optimizer=True)
    model, optimizer, _, _ = nets.start(plan)
    named = dict(model.named_parameters())
    for name, keep in mask.items():
        state = optimizer.state[named[name]]
        assert (
            int(state["exp_avg"][~keep].count_nonzero()) == 0
            and float(state["exp_avg_sq"][~keep].max()) == 0.0
        )
        assert int(state["exp_avg"][keep].count_nonzero()) > 0
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert all(int(named[n].grad[~keep].count_nonzero()) == 0 for n, keep in mask.items())
    assert all(int(named[n].grad[keep].count_nonzero()) > 0 for n, keep in mask.items())


def tiny_net() -> tuple[nn.Module, torch.optim.Optimizer, dict[str, torch.Tensor]]:
    """A two-layer network with masks attached, half of each weight pruned, and Adam enforced."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    attach_masks(net)
    mask = half_mask(net)
    set_masks(net, mask)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.1)
    enforce_after_steps(net, [optimizer])
    return net, optimizer, mask


def test_the_gradient_tap_sees_the_dense_gradient_before_it_is_masked() -> None:
    net, _, mask = tiny_net()
    tapped: dict[str, torch.Tensor] = {}
    set_gradient_tap(net, lambda name, grad: tapped.__setitem__(name, grad.clone()))
    net(torch.randn(5, 6)).pow(2).sum().backward()
    named = dict(net.named_parameters())
    assert set(tapped) == set(named)  # weights and (unpruned) biases alike
    for name, keep in mask.items():
        assert int(tapped[name][~keep].count_nonzero()) > 0  # the dense gradient, pruned entries included
        assert torch.equal(named[name].grad, tapped[name] * keep)  # then masked in place
    set_gradient_tap(net, None)
    tapped.clear()
    net(torch.randn(5, 6)).pow(2).sum().backward()
    assert tapped == {} and len(net._grad_masks._handles) == len(mask)  # the biases' hooks are gone


def test_dense_layers_get_no_gradient_hook_and_masks_changed_in_place_are_followed() -> None:
    net, _, mask = tiny_net()
    assert len(net._grad_masks._handles) == len(mask)
    set_masks(net, {})  # dense again: no hooks, nothing to pay per backward
    assert net._grad_masks._handles == {}
    set_masks(net, mask)
    net(torch.randn(5, 6)).sum().backward()
    named = dict(net.named_parameters())
    assert all(int(named[n].grad[~k].count_nonzero()) == 0 for n, k in mask.items())


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_of_a_masked_policy_mask_their_own_gradients(how: str) -> None:
    """Parameters drop their hooks when copied or pickled; the copy installs its own (before any forward:
    SB3 keeps the last action distribution, a non-leaf tensor that deepcopy refuses)."""
    model = make_model("ppo")
    mask = half_mask(model.policy)
    set_masks(model.policy, mask)
    copied = copy.deepcopy(model.policy) if how == "deepcopy" else pickle.loads(pickle.dumps(model.policy))
    for policy in (copied, model.policy):
        policy.optimizer.zero_grad()
        _, values, log_prob = policy(torch.randn(7, 4))
        (values.sum() + log_prob.sum()).backward()
        named = dict(policy.named_parameters())
        assert all(int(named[n].grad[~k].count_nonzero()) == 0 for n, k in mask.items())
        assert sum(int(named[n].grad[k].count_nonzero()) for n, k in mask.items()) > 0
    assert copied._mask_enforcers[0].optimizer is copied.optimizer
