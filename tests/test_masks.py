"""The mask invariant: a pruned weight is exactly 0.0 at every forward pass, online and target.

Checked for PPO, A2C, DQN, SAC and TD3 with budgets small enough for CI but large enough that
gradient steps and target updates really happen (asserted), plus the controls that show the checks
can fail: without the optimizer post-step hook, or with gradient masking alone, pruned weights come
back. Also: masks survive ``save``/``load`` in a fresh process, live in ``state_dict``, follow to the
target networks, reject bad input, and the global top-k agrees with ``torch.nn.utils.prune``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from tiny import ALGOS, CLASSES, ENVS
from torch import nn
from torch.nn.utils import prune as torch_prune

from rl_tickets.rl.envs import MinAtarCNN
from rl_tickets.rl.policies import POLICIES, policy_optimizers
from rl_tickets.sparsity.masks import (
    density,
    is_target,
    online_name,
    prunable_names,
    read_mask,
    set_masks,
)
from rl_tickets.sparsity.pruning import PruneSpec, next_mask

torch.set_num_threads(1)  # tiny networks on a shared 2-core machine: one thread is fastest

# Small budgets with the update machinery brought forward so updates and target updates happen.
HYPERPARAMS: dict[str, dict[str, Any]] = {
    "ppo": dict(n_steps=64, batch_size=32, n_epochs=2),
    "a2c": dict(n_steps=8),
    "dqn": dict(
        learning_starts=64, train_freq=4, target_update_interval=100, batch_size=32, buffer_size=1_000
    ),
    "sac": dict(learning_starts=64, batch_size=32, buffer_size=1_000),
    "td3": dict(learning_starts=64, batch_size=32, buffer_size=1_000),
}
BUDGETS = {"ppo": 256, "a2c": 256, "dqn": 400, "sac": 160, "td3": 160}
TARGETS = {
    "ppo": (),
    "a2c": (),
    "dqn": ("q_net_target",),
    "sac": ("critic_target",),
    "td3": ("actor_target", "critic_target"),
}


def make_model(algo: str, seed: int = 0) -> BaseAlgorithm:
    """A small masked agent with the algorithm's update schedule brought within a tiny budget.

    :param algo: one of :data:`ALGOS`.
    :param seed: SB3 seed.
    """
    return CLASSES[algo](
        POLICIES[algo],
        ENVS[algo],
        seed=seed,
        device="cpu",
        policy_kwargs=dict(net_arch=[32, 32]),
        **HYPERPARAMS[algo],
    )


def random_mask(module: nn.Module, keep: float = 0.5, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random mask keeping about ``keep`` of every prunable online weight.

    :param module: a policy with attached masks.
    :param keep: probability that a weight survives.
    :param seed: random seed.
    """
    generator = torch.Generator().manual_seed(seed)
    named = dict(module.named_parameters())
    return {n: torch.rand(named[n].shape, generator=generator) < keep for n in prunable_names(module)}


def masked_modules(module: nn.Module) -> dict[str, nn.Module]:
    """Every submodule with a ``weight_mask`` buffer (online and target), by module name.

    :param module: a policy.
    """
    return {name: sub for name, sub in module.named_modules() if hasattr(sub, "weight_mask")}


def pruned_nonzero(module: nn.Module) -> dict[str, int]:
    """Per masked module, how many weights are pruned by its mask yet nonzero (empty dict: invariant holds).

    :param module: a policy.
    """
    out = {}
    for name, sub in masked_modules(module).items():
        dead = ~sub.weight_mask.bool()
        count = int((sub.weight.detach()[dead] != 0).sum())
        if count:
            out[name] = count
    return out


class ForwardWatch:
    """Forward pre-hooks on every masked module recording pruned-but-nonzero weights at each forward."""

    def __init__(self, module: nn.Module) -> None:
        """Hook every masked module of ``module``.

        :param module: a policy.
        """
        self.calls: dict[str, int] = {}
        self.violations: dict[str, int] = {}
        self.handles = [
            sub.register_forward_pre_hook(self._hook(name)) for name, sub in masked_modules(module).items()
        ]

    def _hook(self, name: str) -> Any:
        """The pre-hook for the module called ``name``."""

        def check(sub: nn.Module, _args: Any) -> None:
            with torch.no_grad():
                self.calls[name] = self.calls.get(name, 0) + 1
                leaked = int((sub.weight * ~sub.weight_mask.bool()).count_nonzero())
                if leaked:
                    self.violations[name] = self.violations.get(name, 0) + 1

        return check

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()


@contextmanager
def watching(module: nn.Module) -> Iterator[ForwardWatch]:
    """Watch every forward pass of ``module``'s masked layers for the duration of the block.

    :param module: a policy.
    """
    watch = ForwardWatch(module)
    try:
        yield watch
    finally:
        watch.remove()


def target_params(model: BaseAlgorithm) -> dict[str, torch.Tensor]:
    """Copies of every target-network parameter.

    :param model: an agent.
    """
    return {n: p.detach().clone() for n, p in model.policy.named_parameters() if is_target(n)}


def drop_enforcement(model: BaseAlgorithm) -> None:
    """Remove everything that keeps pruned weights at zero (the control that must break the invariant):
    the post-step hooks that re-zero them, the gradient hooks that zero their gradients, and the
    enforcers that zero optimizer state when masks change.

    :param model: an agent built with a masked policy.
    """
    optimizers = policy_optimizers(model.policy)
    assert optimizers and all(o._optimizer_step_post_hooks for o in optimizers)
    for optimizer in optimizers:
        optimizer._optimizer_step_post_hooks.clear()
    gradients = model.policy.__dict__.pop("_grad_masks")
    for handle in gradients._handles.values():
        handle.remove()
    model.policy.__dict__["_mask_enforcers"] = []


def train_masked(
    algo: str, enforce: bool = True
) -> tuple[BaseAlgorithm, dict[str, torch.Tensor], ForwardWatch, dict[str, torch.Tensor]]:
    """Build, mask ~50% at random, learn the tiny budget while watching every forward.

    :param algo: one of :data:`ALGOS`.
    :param enforce: keep the post-step re-zeroing hooks (False: the control).
    :return: the model, its mask, the forward watch, and target parameters before training.
    """
    model = make_model(algo)
    mask = random_mask(model.policy)
    set_masks(model.policy, mask)
    if not enforce:
        drop_enforcement(model)
    before = target_params(model)
    with watching(model.policy) as watch:
        model.learn(BUDGETS[algo])
    return model, mask, watch, before


@pytest.mark.parametrize("algo", ALGOS)
def test_pruned_weights_stay_exactly_zero_online_and_target(algo: str) -> None:
    model, mask, watch, before = train_masked(algo)
    assert model._n_updates > 0, "no gradient update happened: raise the budget or lower learning_starts"
    current = read_mask(model.policy)
    assert current.keys() == mask.keys() and all(torch.equal(current[n], mask[n]) for n in mask)
    assert 0.4 < density(mask) < 0.6
    # Every masked module, targets included, ran forward passes and never saw a pruned nonzero weight.
    modules = masked_modules(model.policy)
    targets = [n for n in modules if n.startswith(TARGETS[algo])] if TARGETS[algo] else []
    assert len(targets) == sum(1 for n in modules if is_target(n + ".weight"))
    assert all(watch.calls.get(n, 0) > 0 for n in targets), "target networks were never used"
    assert watch.violations == {}
    assert pruned_nonzero(model.policy) == {}
    # Biases are not pruned; online weights that are kept did move.
    online = dict(model.policy.named_parameters())
    assert all(bool((online[n][mask[n]] != 0).any()) for n in mask)
    if targets:
        after = target_params(model)
        changed = [n for n in before if not torch.equal(before[n], after[n])]
        assert changed, "target networks never updated: lower target_update_interval/learning_starts"
        # Target masks are the online masks.
        for name, sub in modules.items():
            if is_target(name + ".weight"):
                assert torch.equal(sub.weight_mask.bool(), mask[online_name(name + ".weight")])


@pytest.mark.parametrize("algo", ALGOS)
def test_without_the_enforcement_hook_pruned_weights_come_back(algo: str) -> None:
    """Control: the checks above can fail; the optimizer post-step hook is what keeps the zeros."""
    model, _, watch, _ = train_masked(algo, enforce=False)
    assert model._n_updates > 0
    leaked = pruned_nonzero(model.policy)
    assert leaked and watch.violations
    if TARGETS[algo]:
        # ...and the leak reaches the target networks through polyak updates / hard copies.
        assert any(n.startswith(TARGETS[algo]) for n in leaked)


class TinyImages(gym.Env):
    """Random 2x6x6 float "images" in [0, 1], random rewards, 16-step episodes: just enough for a CNN agent.

    :param discrete: a Discrete(3) action space (DQN) instead of a Box(2) one (SAC, TD3).
    """

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


def twin_of(policy: nn.Module, name: str) -> nn.Module:
    """The online layer a layer mirrors: itself when online, the same path under the online root for a target."""
    for target, online in (
        ("q_net_target.", "q_net."),
        ("critic_target.", "critic."),
        ("actor_target.", "actor."),
    ):
        if (name + ".").startswith(target):
            return policy.get_submodule(online + name[len(target) :])
    return policy.get_submodule(name)


@pytest.mark.parametrize(
    "algo,share", [("sac", True), ("sac", False), ("td3", True), ("td3", False), ("dqn", None)]
)
def test_cnn_targets_carry_their_online_modules_masks(algo: str, share: bool | None) -> None:
    """Targets take the mask of the *module* they mirror, a shared features extractor included.

    With ``share_features_extractor=True`` the critic's extractor *is* the actor's, listed once, under the
    actor's name, while ``critic_target`` builds an extractor of its own: a target mask looked up by name
    (``critic.features_extractor...``) found nothing and left that extractor dense.
    """
    kwargs: dict[str, Any] = {
        "features_extractor_class": MinAtarCNN,
        "features_extractor_kwargs": {"features_dim": 16},
        "net_arch": [16],
    }
    if share is not None:
        kwargs["share_features_extractor"] = share
    updates = dict(learning_starts=32, train_freq=1, gradient_steps=1, batch_size=16, buffer_size=200)
    if algo == "dqn":
        updates |= dict(train_freq=4, target_update_interval=8)
    model = CLASSES[algo](
        POLICIES[algo],
        TinyImages(discrete=algo == "dqn"),
        seed=0,
        device="cpu",
        policy_kwargs=kwargs,
        **updates,
    )
    mask = random_mask(model.policy)
    assert any("features_extractor.cnn.0" in n for n in mask)
    set_masks(model.policy, mask)
    before = target_params(model)
    model.learn(96)
    assert model._n_updates >= 16, "too few gradient updates for the test to mean anything"
    after = target_params(model)
    assert any(not torch.equal(before[n], after[n]) for n in before), "targets never updated"
    policy = model.policy
    extractors = [n for n in masked_modules(policy) if is_target(n + ".") and "features_extractor" in n]
    assert extractors, "no target features extractor to check"
    for name, layer in masked_modules(policy).items():
        keep = twin_of(policy, name).weight_mask.bool()
        assert not bool(keep.all()), f"{name} mirrors an unpruned layer"
        assert torch.equal(layer.weight_mask.bool(), keep), name
        assert int((layer.weight.detach()[~keep] != 0).sum()) == 0, name


@pytest.mark.parametrize("enforce", [False, True])
def test_masking_gradients_alone_lets_adam_revive_pruned_weights(enforce: bool) -> None:
    """Adam's stale moments move a weight whose gradient is exactly zero; the enforcement stops it (zeroed
    moments at pruned positions when the mask is set, and the post-step hook)."""
    model = make_model("ppo")
    model.learn(128)  # dense training: Adam moments are nonzero for every weight
    if not enforce:
        drop_enforcement(model)  # before set_masks, which would also zero the moments at pruned positions
    mask = random_mask(model.policy)
    set_masks(model.policy, mask)
    assert pruned_nonzero(model.policy) == {}
    named = dict(model.policy.named_parameters())
    handles = [named[n].register_hook(lambda grad, m=m: grad * m) for n, m in mask.items()]
    gradients_seen: list[float] = []
    probe_name = next(iter(mask))

    def probe(grad: torch.Tensor) -> None:
        gradients_seen.append(float(grad[~mask[probe_name]].abs().sum()))

    handles.append(named[probe_name].register_hook(probe))
    try:
        model.learn(128, reset_num_timesteps=False)
    finally:
        for handle in handles:
            handle.remove()
    assert model._n_updates > 0
    # The hooks run in registration order: our probe sees the gradient after the mask hook zeroed it.
    assert gradients_seen and max(gradients_seen) == 0.0
    if enforce:
        assert pruned_nonzero(model.policy) == {}
    else:
        assert pruned_nonzero(model.policy), "gradient masking alone kept the zeros: Adam was not the risk"


LOAD_SCRIPT = """
import json, sys
import gymnasium as gym
import torch
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3

report = {}
for job in json.loads(sys.argv[1]):
    cls = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC, "td3": TD3}[job["algo"]]
    model = cls.load(job["path"], env=gym.make(job["env"]), device="cpu")
    torch.save(model.policy.state_dict(), job["out"] + ".loaded.pt")
    # Keep training the loaded agent: loading must not bring pruned weights back either.
    model.learn(job["steps"], reset_num_timesteps=False)
    leaked = {}
    for name, sub in model.policy.named_modules():
        if hasattr(sub, "weight_mask"):
            count = int((sub.weight.detach()[~sub.weight_mask.bool()] != 0).sum())
            if count:
                leaked[name] = count
    masks = {k: v for k, v in model.policy.state_dict().items() if k.endswith("_mask")}
    torch.save(masks, job["out"] + ".after.pt")
    report[job["algo"]] = {
        "leaked": leaked,
        "n_updates": model._n_updates,
        "module": type(model.policy).__module__,
    }
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Train and save one masked agent per algorithm, then load them all in ONE fresh Python process.

    :return: per algorithm: the saved state, mask, update count, and what the fresh process saw.
    """
    root = tmp_path_factory.mktemp("reload")
    jobs, saved = [], {}
    for algo in ALGOS:
        model = make_model(algo)
        mask = random_mask(model.policy, seed=1)
        set_masks(model.policy, mask)
        model.learn(BUDGETS[algo])
        path = root / f"{algo}.zip"
        model.save(path)
        state = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
        saved[algo] = {"state": state, "mask": mask, "n_updates": model._n_updates, "out": root / algo}
        jobs.append(
            {
                "algo": algo,
                "path": str(path),
                "env": ENVS[algo],
                "steps": BUDGETS[algo],
                "out": str(root / algo),
            }
        )
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for algo in ALGOS:
        saved[algo]["report"] = report[algo]
    return saved


@pytest.mark.parametrize("algo", ALGOS)
def test_save_load_in_a_fresh_process_keeps_masks_and_zeros(
    algo: str, reloaded: dict[str, dict[str, Any]]
) -> None:
    record = reloaded[algo]
    saved, mask, report = record["state"], record["mask"], record["report"]
    assert report["module"] == "rl_tickets.rl.policies"
    loaded = torch.load(Path(str(record["out"]) + ".loaded.pt"), weights_only=True)
    # Identical state, mask buffers included (online and target), hence identical exact zeros.
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    for name in mask:
        assert torch.equal(loaded[name + "_mask"].bool(), mask[name])
        assert int((loaded[name][~mask[name]] != 0).sum()) == 0
    for name in loaded:
        if name.endswith("weight_mask") and is_target(name):
            assert torch.equal(loaded[name].bool(), mask[online_name(name[: -len("_mask")])])
    # Training on after the load keeps the masks and the zeros, online and target.
    assert report["n_updates"] > record["n_updates"]
    assert report["leaked"] == {}
    after = torch.load(Path(str(record["out"]) + ".after.pt"), weights_only=True)
    for name in mask:
        assert torch.equal(after[name + "_mask"].bool(), mask[name])


@pytest.mark.parametrize("algo", ALGOS)
def test_mask_buffers_are_in_state_dict_and_follow_to_targets(algo: str) -> None:
    model = make_model(algo)
    names = prunable_names(model.policy)
    state = model.policy.state_dict()
    all_weights = [n for n, p in model.policy.named_parameters() if n.endswith("weight") and p.dim() > 1]
    # Every Linear weight, online and target, has its mask buffer registered at construction.
    assert all_weights and all(n + "_mask" in state for n in all_weights)
    assert all(not is_target(n) for n in names)
    targets = [n for n in all_weights if is_target(n)]
    assert bool(targets) == bool(TARGETS[algo])
    assert {online_name(n) for n in targets} <= set(names)
    mask = random_mask(model.policy, seed=2)
    set_masks(model.policy, mask)
    state = model.policy.state_dict()
    for name in all_weights:
        expected = mask[online_name(name)]
        assert torch.equal(state[name + "_mask"].bool(), expected)
        assert int((state[name][~expected] != 0).sum()) == 0
    # Names missing from a mask are reset to dense, targets included.
    first = names[0]
    set_masks(model.policy, {first: mask[first]})
    state = model.policy.state_dict()
    for name in all_weights:
        if online_name(name) == first:
            assert torch.equal(state[name + "_mask"].bool(), mask[first])
        else:
            assert bool(state[name + "_mask"].all())


def test_set_masks_rejects_unknown_names_and_wrong_shapes() -> None:
    model = make_model("dqn")
    names = prunable_names(model.policy)
    shape = dict(model.policy.named_parameters())[names[0]].shape
    with pytest.raises(KeyError, match="not in the network"):
        set_masks(model.policy, {"q_net.q_net.99.weight": torch.ones(shape, dtype=torch.bool)})
    target_name = next(n for n, _ in model.policy.named_parameters() if is_target(n))
    with pytest.raises(KeyError, match="not in the network"):
        set_masks(model.policy, {target_name: torch.ones(shape, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        set_masks(model.policy, {names[0]: torch.ones(shape[0] + 1, shape[1], dtype=torch.bool)})


def _torch_global_l1(tensors: dict[str, torch.Tensor], amounts: list[float]) -> dict[str, torch.Tensor]:
    """``torch.nn.utils.prune.global_unstructured`` L1 applied level after level to copies of ``tensors``."""
    modules = {}
    for name, value in tensors.items():
        layer = nn.Linear(value.shape[1], value.shape[0], bias=False)
        with torch.no_grad():
            layer.weight.copy_(value)
        modules[name] = layer
    for amount in amounts:
        torch_prune.global_unstructured(
            [(m, "weight") for m in modules.values()],
            pruning_method=torch_prune.L1Unstructured,
            amount=amount,
        )
    return {name: m.weight_mask.bool() for name, m in modules.items()}


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.9])
def test_global_magnitude_matches_torch_prune(rate: float) -> None:
    generator = torch.Generator().manual_seed(3)
    # Different scales per tensor so a per-layer rule would choose differently from a global one.
    tensors = {
        "a.weight": torch.randn(32, 8, generator=generator) * 0.1,
        "b.weight": torch.randn(16, 32, generator=generator),
        "c.weight": torch.randn(2, 16, generator=generator) * 3.0,
    }
    spec = PruneSpec(rate=rate, scope="global")
    ours = {n: torch.ones_like(t, dtype=torch.bool) for n, t in tensors.items()}
    for level in (1, 2):
        ours = next_mask(spec, tensors, tensors, ours)
        theirs = _torch_global_l1(tensors, [rate] * level)
        for name in tensors:
            assert int(ours[name].sum()) == int(theirs[name].sum())
            assert torch.equal(ours[name], theirs[name])
    # Pooled ranking: the layer scaled by 0.1 loses more than its share.
    assert ours["a.weight"].float().mean() < ours["c.weight"].float().mean()


def test_global_magnitude_with_ties_keeps_torch_prunes_count() -> None:
    tensors = {"a.weight": torch.ones(8, 8), "b.weight": torch.full((4, 8), 2.0)}
    tensors["a.weight"][0, :4] = 0.5
    ours = next_mask(
        PruneSpec(rate=0.3),
        tensors,
        tensors,
        {n: torch.ones_like(t, dtype=torch.bool) for n, t in tensors.items()},
    )
    theirs = _torch_global_l1(tensors, [0.3])
    assert sum(int(m.sum()) for m in ours.values()) == sum(int(m.sum()) for m in theirs.values())
    # The unique smallest entries go first in both.
    assert not ours["a.weight"][0, :4].any() and not theirs["a.weight"][0, :4].any()


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.3, 0.5])
def test_layer_magnitude_matches_torch_prune_including_half_ties(rate: float) -> None:
    """Per-tensor L1 pruning vs ``torch.nn.utils.prune.l1_unstructured``; sizes make rate * n end in .5."""
    generator = torch.Generator().manual_seed(4)
    tensors = {
        "a.weight": torch.randn(3, 5, generator=generator),
        "b.weight": torch.randn(5, 23, generator=generator),
    }
    ours = next_mask(
        PruneSpec(rate=rate, scope="layer"),
        tensors,
        tensors,
        {n: torch.ones_like(t, dtype=torch.bool) for n, t in tensors.items()},
    )
    for name, value in tensors.items():
        layer = nn.Linear(value.shape[1], value.shape[0], bias=False)
        with torch.no_grad():
            layer.weight.copy_(value)
        torch_prune.l1_unstructured(layer, "weight", amount=rate)
        assert torch.equal(ours[name], layer.weight_mask.bool()), name
