"""Rewinding through the real runner and SB3 trainer: a level restarted at step k continues the dense
run's schedules exactly, starts from the saved weights times its mask, and restores exactly what the
config says (optimizer state, replay buffer, VecNormalize statistics)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import load_from_pkl, load_from_zip_file
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from tiny import tiny_config

from rl_tickets.chain.runner import Runner
from rl_tickets.chain.store import ChainPaths
from rl_tickets.config import (
    Config,
    PruneConfig,
    RewindConfig,
)
from rl_tickets.rl.trainer import SB3Trainer
from rl_tickets.seeds import seed_for
from rl_tickets.sparsity.masks import load_mask, online_name

PPO_STEPS, PPO_ENVS = 32, 2  # one rollout = 64 environment steps
PPO_HYPERPARAMS: dict[str, Any] = {
    "n_steps": PPO_STEPS,
    "batch_size": 32,
    "n_epochs": 2,
    "learning_rate": {"schedule": "linear", "start": 1.0e-3},
    "clip_range": {"schedule": "linear", "start": 0.2},
}
DQN_TRAIN_FREQ, DQN_LEARNING_STARTS = 16, 32
DQN_HYPERPARAMS: dict[str, Any] = {
    "learning_starts": DQN_LEARNING_STARTS,
    "train_freq": DQN_TRAIN_FREQ,
    "gradient_steps": 1,
    "target_update_interval": 32,
    "batch_size": 16,
    "buffer_size": 1_000,
    "exploration_fraction": 1.0,  # epsilon decays over the whole budget: every step has its own value
    "learning_rate": {"schedule": "linear", "start": 2.0e-3},
}


def make_cfg(
    root: Path,
    algo: str = "ppo",
    timesteps: int = 320,
    step: int = 128,
    normalize: bool = False,
    **rewind: str,
) -> Config:
    """A tiny validated config: one pruned level rewound to ``step``.

    :param root: results root.
    :param algo: ppo or dqn (on CartPole).
    :param timesteps: the dense budget.
    :param step: rewind.step.
    :param normalize: wrap the env in VecNormalize.
    :param rewind: other rewind fields (optimizer, replay_buffer).
    """
    hyperparams = PPO_HYPERPARAMS if algo == "ppo" else DQN_HYPERPARAMS
    return tiny_config(
        root,
        algo,
        hyperparams,
        timesteps,
        RewindConfig(step=step, **rewind),
        PruneConfig(levels=1, rate=0.5),
        n_envs=PPO_ENVS if algo == "ppo" else 1,
        normalize=normalize,
    )


def make_trainer(cfg: Config) -> SB3Trainer:
    """The SB3 trainer exactly as the job builds it.

    :param cfg: the config.
    """
    return SB3Trainer(
        cfg.algo, cfg.env, cfg.train.timesteps, cfg.eval, cfg.device, seed_for(cfg.seed, "eval")
    )


@dataclass
class Learn:
    """What one ``learn()`` call (one level) started from and what its updates saw."""

    entry: dict[str, Any]
    updates: list[dict[str, Any]] = field(default_factory=list)
    exit: dict[str, Any] = field(default_factory=dict)
    weights_after_update: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


def _normalizer_stats(model: BaseAlgorithm) -> dict[str, np.ndarray] | None:
    """Copies of the model's VecNormalize observation statistics, or None."""
    normalizer = model.get_vec_normalize_env()
    if normalizer is None:
        return None
    rms = normalizer.obs_rms
    return {"mean": rms.mean.copy(), "var": rms.var.copy(), "count": np.array(rms.count)}


def _entry_state(model: BaseAlgorithm) -> dict[str, Any]:
    """The training state a level starts ``learn()`` with (after loading, masking, restoring)."""
    state: dict[str, Any] = {
        "num_timesteps": model.num_timesteps,
        "params": {n: p.detach().clone() for n, p in model.policy.named_parameters()},
        "optimizer": copy.deepcopy(model.policy.optimizer.state_dict()["state"]),
        "vecnormalize": _normalizer_stats(model),
    }
    if hasattr(model, "replay_buffer"):
        state["learning_starts"] = model.learning_starts
        state["replay_size"] = model.replay_buffer.size()
        state["replay_obs"] = model.replay_buffer.observations[: model.replay_buffer.size()].copy()
    return state


def _update_values(model: BaseAlgorithm) -> dict[str, Any]:
    """The schedule values one ``train()`` call used (read right after it ran)."""
    progress = model._current_progress_remaining
    values: dict[str, Any] = {
        "step": model.num_timesteps,
        "progress": progress,
        "lr": model.policy.optimizer.param_groups[0]["lr"],
    }
    if isinstance(model, PPO):
        values["clip_range"] = model.clip_range(progress)
    if isinstance(model, DQN):
        values["exploration_rate"] = model.exploration_rate
    return values


@pytest.fixture
def learns(monkeypatch: pytest.MonkeyPatch) -> list[Learn]:
    """Record every ``learn()`` (entry state, per-update schedule values, exit state) of PPO and DQN."""
    recorded: list[Learn] = []
    for cls in (PPO, DQN):

        def learn(self: BaseAlgorithm, *args: Any, _original: Any = cls.learn, **kwargs: Any) -> Any:
            recorded.append(Learn(entry=_entry_state(self)))
            result = _original(self, *args, **kwargs)
            recorded[-1].exit = {"vecnormalize": _normalizer_stats(self)}
            if hasattr(self, "replay_buffer"):
                recorded[-1].exit["replay_obs"] = self.replay_buffer.observations.copy()
            return result

        def train(self: BaseAlgorithm, *args: Any, _original: Any = cls.train, **kwargs: Any) -> None:
            _original(self, *args, **kwargs)
            recorded[-1].updates.append(_update_values(self))
            recorded[-1].weights_after_update[self.num_timesteps] = {
                n: p.detach().clone() for n, p in self.policy.named_parameters()
            }

        monkeypatch.setattr(cls, "learn", learn)
        monkeypatch.setattr(cls, "train", train)
    return recorded


def run_chain(cfg: Config, learns: list[Learn]) -> tuple[ChainPaths, Learn, Learn]:
    """Run dense level 0 and one rewound level; return the paths and both levels' records."""
    Runner(cfg, make_trainer(cfg)).run()
    assert len(learns) == 2, "expected exactly one learn() per level"
    return ChainPaths.of(cfg), learns[0], learns[1]


def metrics(paths: ChainPaths, level: int) -> dict[str, Any]:
    """A finished ticket level's metrics.json."""
    return json.loads((paths.level(level, "ticket") / "metrics.json").read_text())


def test_ppo_rewound_level_continues_the_lr_and_clip_schedules(tmp_path: Path, learns: list[Learn]) -> None:
    k, rollout = 128, PPO_STEPS * PPO_ENVS
    cfg = make_cfg(tmp_path, "ppo", timesteps=320, step=k)
    paths, dense, level = run_chain(cfg, learns)
    assert k % rollout == 0
    # The snapshot is the state at k, and the level starts there.
    data, _, _ = load_from_zip_file(paths.level(0, "ticket") / "rewind.zip")
    assert data["num_timesteps"] == k
    # Taken after the update at k (at the next rollout start), not before it.
    _, saved, _ = load_from_zip_file(paths.level(0, "ticket") / "rewind.zip", device="cpu")
    after_k = dense.weights_after_update[k]
    assert all(torch.equal(saved["policy"][n], after_k[n]) for n in after_k)
    assert metrics(paths, 0)["extra"]["snapshot_step"] == k
    assert level.entry["num_timesteps"] == k
    assert metrics(paths, 1)["extra"]["start_step"] == k
    assert metrics(paths, 1)["timesteps"] == cfg.train.timesteps - k
    # Dense updates happen after every rollout; the level's updates are the dense run's last ones.
    assert [u["step"] for u in dense.updates] == list(range(rollout, cfg.train.timesteps + 1, rollout))
    assert [u["step"] for u in level.updates] == list(range(k + rollout, cfg.train.timesteps + 1, rollout))
    by_step = {u["step"]: u for u in dense.updates}
    for update in level.updates:
        assert update == by_step[update["step"]]  # progress, lr and clip range: exactly equal
    first = level.updates[0]
    # Not a constant: the schedule had moved on by k (a level restarting its schedule would fail here).
    assert first["lr"] < dense.updates[0]["lr"] and first["clip_range"] < dense.updates[0]["clip_range"]
    assert first["lr"] == pytest.approx(1e-3 * (1 - first["step"] / cfg.train.timesteps), rel=1e-12)


def test_dqn_rewound_level_continues_the_exploration_and_lr_schedules(
    tmp_path: Path, learns: list[Learn]
) -> None:
    k = 160
    cfg = make_cfg(tmp_path, "dqn", timesteps=320, step=k)
    paths, dense, level = run_chain(cfg, learns)
    assert k % DQN_TRAIN_FREQ == 0
    assert level.entry["num_timesteps"] == k
    _, saved, _ = load_from_zip_file(paths.level(0, "ticket") / "rewind.zip", device="cpu")
    after_k = dense.weights_after_update[k]
    assert all(torch.equal(saved["policy"][n], after_k[n]) for n in after_k)
    # The empty replay buffer makes the level wait learning_starts again, counted from k.
    assert level.entry["replay_size"] == 0
    assert level.entry["learning_starts"] == k + DQN_LEARNING_STARTS
    assert metrics(paths, 1)["extra"]["learning_starts"] == k + DQN_LEARNING_STARTS
    assert metrics(paths, 0)["extra"]["learning_starts"] == DQN_LEARNING_STARTS
    assert level.updates and level.updates[0]["step"] > k + DQN_LEARNING_STARTS
    assert all(u["step"] > k + DQN_LEARNING_STARTS for u in level.updates)
    by_step = {u["step"]: u for u in dense.updates}
    for update in level.updates:
        assert update == by_step[update["step"]]  # progress, lr and epsilon: exactly equal
    first = level.updates[0]
    assert first["exploration_rate"] < dense.updates[0]["exploration_rate"]
    assert first["lr"] < dense.updates[0]["lr"]


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_rewound_level_starts_from_the_snapshot_times_its_mask_with_fresh_optimizer(
    algo: str, tmp_path: Path, learns: list[Learn]
) -> None:
    k = 128
    cfg = make_cfg(tmp_path, algo, timesteps=256, step=k)
    paths, dense, level = run_chain(cfg, learns)
    _, saved, _ = load_from_zip_file(paths.level(0, "ticket") / "rewind.zip", device="cpu")
    mask = load_mask(paths.level(1, "ticket") / "mask.pt")
    assert 0.45 < sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values()) < 0.55
    start = level.entry["params"]
    assert start.keys() == saved["policy"].keys() - {n for n in saved["policy"] if n.endswith("_mask")}
    masked = 0
    for name, value in start.items():
        expected = saved["policy"][name]
        if online_name(name) in mask:
            expected = expected * mask[online_name(name)]
            masked += 1
        assert torch.equal(value, expected), name  # targets (DQN) carry the mask too
    assert masked >= len(mask)
    # The snapshot is not the initialisation: weights moved by step k.
    _, initial, _ = load_from_zip_file(paths.level(0, "ticket") / "init.zip", device="cpu")
    assert any(not torch.equal(initial["policy"][n], saved["policy"][n]) for n in mask)
    # Default: fresh optimizer state at the start of the level, though the snapshot had Adam moments.
    assert saved["policy.optimizer"]["state"], "the snapshot at k should hold Adam moments"
    assert level.entry["optimizer"] == {}
    assert metrics(paths, 1)["plan"]["restore_optimizer"] is False
    assert dense.entry["optimizer"] == {}


def test_rewind_optimizer_restore_loads_the_snapshots_adam_moments(
    tmp_path: Path, learns: list[Learn]
) -> None:
    cfg = make_cfg(tmp_path, "ppo", timesteps=256, step=128, optimizer="restore")
    paths, _, level = run_chain(cfg, learns)
    _, saved, _ = load_from_zip_file(paths.level(0, "ticket") / "rewind.zip", device="cpu")
    expected = saved["policy.optimizer"]["state"]
    restored = level.entry["optimizer"]
    assert expected and restored.keys() == expected.keys()
    # The optimizer's parameter order is the state_dict's without the mask buffers.
    names = [n for n in saved["policy"] if not n.endswith("_mask")]
    mask = load_mask(paths.level(1, "ticket") / "mask.pt")
    for index, moments in expected.items():
        keep = mask.get(names[index])
        for key, value in moments.items():
            value = torch.as_tensor(value)
            if keep is not None and value.shape == keep.shape:
                value = value * keep  # zeroed where the level's mask prunes (pruned weights have no state)
            assert torch.equal(torch.as_tensor(restored[index][key]), value), (index, key)
    assert metrics(paths, 1)["plan"]["restore_optimizer"] is True


def test_rewind_replay_buffer_restore_loads_the_dense_transitions_at_k(
    tmp_path: Path, learns: list[Learn]
) -> None:
    k = 160
    cfg = make_cfg(tmp_path, "dqn", timesteps=320, step=k, replay_buffer="restore")
    paths, dense, level = run_chain(cfg, learns)
    replay = paths.level(0, "ticket") / "rewind_replay.pkl"
    assert replay.exists()
    assert load_from_pkl(replay).size() == k
    # The level starts with exactly the dense run's first k transitions, and need not wait again.
    assert level.entry["replay_size"] == k
    assert np.array_equal(level.entry["replay_obs"], dense.exit["replay_obs"][:k])
    assert level.entry["learning_starts"] == DQN_LEARNING_STARTS
    assert metrics(paths, 1)["extra"]["learning_starts"] == DQN_LEARNING_STARTS
    assert level.updates[0]["step"] == k + DQN_TRAIN_FREQ


def _load_stats(path: Path) -> dict[str, np.ndarray]:
    """Observation statistics of a saved VecNormalize."""
    normalizer = VecNormalize.load(str(path), DummyVecEnv([lambda: gym.make("CartPole-v1")]))
    rms = normalizer.obs_rms
    return {"mean": rms.mean, "var": rms.var, "count": np.array(rms.count)}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """Exact equality of two statistics dicts."""
    return a.keys() == b.keys() and all(np.array_equal(a[key], b[key]) for key in a)


def test_vecnormalize_statistics_start_from_the_snapshot_and_are_saved_per_level(
    tmp_path: Path, learns: list[Learn]
) -> None:
    k = 128
    cfg = make_cfg(tmp_path, "ppo", timesteps=256, step=k, normalize=True)
    paths, dense, level = run_chain(cfg, learns)
    dense_dir, level_dir = paths.level(0, "ticket"), paths.level(1, "ticket")
    for name in ("init", "rewind", "model"):
        assert (dense_dir / f"{name}_vecnormalize.pkl").exists()
    snapshot = _load_stats(dense_dir / "rewind_vecnormalize.pkl")
    assert float(snapshot["count"]) > k  # statistics of k steps (plus resets), not fresh ones
    assert _same(level.entry["vecnormalize"], snapshot)
    # The level saves its own statistics beside its model: the ones it ended with.
    own = _load_stats(level_dir / "model_vecnormalize.pkl")
    assert _same(own, level.exit["vecnormalize"])
    assert float(own["count"]) > float(snapshot["count"])
    assert not _same(own, _load_stats(dense_dir / "model_vecnormalize.pkl"))
    assert _same(_load_stats(dense_dir / "model_vecnormalize.pkl"), dense.exit["vecnormalize"])
