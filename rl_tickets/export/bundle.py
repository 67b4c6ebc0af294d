"""Export one finished level: every shippable form, checked against the level's own agent, and a record.

The output directory is written under a temporary name beside it and renamed at the end, so it is
either complete or absent. Every form is checked before the rename: the plain checkpoint must give
the level's outputs bit for bit, the compact and sparse forms within :data:`TOLERANCE`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from torch import nn

from rl_tickets.export.actor import Op, actor_ops, actor_parameters, build_actor
from rl_tickets.export.compact import COMPACT_NOTE, head_outputs, write_compact
from rl_tickets.export.level import ExportError, Level, plain_state, read_level
from rl_tickets.export.measure import median_latency_ms, observations, state_bytes, unit_actions
from rl_tickets.export.plain import foreign_keys, write_plain
from rl_tickets.export.sparse import bundle, load_sparse, write_sparse

TOLERANCE = 1e-5
CHECK_OBSERVATIONS = 1000
LATENCY_BATCHES = (1, 256)
ALGO_NAMES = {"ppo": "PPO", "a2c": "A2C", "dqn": "DQN", "sac": "SAC", "td3": "TD3"}


def _max_diff(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
    """Largest absolute difference between matching tensors."""
    return max(float((a - b).abs().max()) for a, b in zip(first, second))


def _raw(ops: list[Op]) -> list[Op]:
    """The ops without a final argmax: compare logits and Q-values, not the ties an argmax may break."""
    return ops[:-1] if ops and ops[-1]["op"] == "argmax" else ops


def _check(name: str, diff: float, tolerance: float) -> float:
    """Fail loudly if a form does not reproduce the level (a bug in the export, not a user error)."""
    if diff > tolerance:
        raise RuntimeError(f"{name} differs from the level's agent by {diff:.3g} (> {tolerance:g})")
    return diff


def _check_plain(
    level: Level, path: Path, reference: list[torch.Tensor], obs: torch.Tensor, actions: torch.Tensor
) -> float:
    """Load the plain zip with SB3's own ``load`` and compare every network output."""
    light = {"buffer_size": 1} if issubclass(level.cls, OffPolicyAlgorithm) else {}
    plain: BaseAlgorithm = level.cls.load(path, device="cpu", **light)
    return _check(
        "model.zip", _max_diff(reference, head_outputs(plain.policy, level.algo, obs, actions)), 0.0
    )


def _check_actor(actor: nn.Module, policy: BasePolicy, obs: torch.Tensor) -> None:
    """The dense ops actor must give SB3's ``predict(obs, deterministic=True)``."""
    expected = torch.as_tensor(policy.predict(obs.numpy(), deterministic=True)[0])
    with torch.no_grad():
        got = actor(obs)
    _check("the ops actor", float((got.double() - expected.double()).abs().max()), TOLERANCE)


def _prepare(out: Path) -> Path:
    """Refuse a non-empty output directory; return the temporary directory to write into."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty directory; choose a new --out")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def export_level(level_dir: Path, out: Path, calls: int = 200) -> dict[str, Any]:
    """Write model.zip (+ vecnormalize.pkl), compact.zip, sparse.pt, actor.pt and export.json.

    :param level_dir: a finished ``level_NN/<variant>`` directory.
    :param out: the directory to create (absent or empty).
    :param calls: timed forward passes per form and batch size.
    :return: the export record (also written as ``export.json``).
    """
    level = read_level(level_dir)
    tmp = _prepare(out)
    try:
        record = _export(level, tmp, calls)
        (tmp / "export.json").write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def _export(level: Level, tmp: Path, calls: int) -> dict[str, Any]:
    """Write every form into ``tmp`` and return the record."""
    policy = level.agent().policy.eval()
    algo, name = level.algo, ALGO_NAMES[level.algo]
    obs = observations(policy.observation_space, CHECK_OBSERVATIONS, seed=0)
    actions = unit_actions(policy.action_space, CHECK_OBSERVATIONS, seed=1)
    reference = head_outputs(policy, algo, obs, actions)
    state = plain_state(level.params["policy"])
    ops = actor_ops(policy, algo)
    dense = build_actor(ops, state)
    _check_actor(dense, policy, obs)
    record: dict[str, Any] = {"source": str(level.path), "algo": algo, "env_id": level.env_id, "notes": []}
    forms: dict[str, nn.Module] = {"dense": dense}
    weights = {"dense": state_bytes(state)}
    parameters = {"policy": {"dense": sum(t.numel() for t in state.values())}, "actor": {}}
    parameters["policy"]["nonzero"] = sum(int((t != 0).sum()) for t in state.values())
    parameters["actor"]["dense"], parameters["actor"]["nonzero"] = actor_parameters(ops, state)
    smallest = (ops, state)

    foreign = foreign_keys(level.data)
    if foreign:
        record["notes"].append(
            f"model.zip and compact.zip not written: {', '.join(foreign)} name rl_tickets classes "
            "(e.g. the MinAtar CNN features extractor), so no plain SB3 checkpoint can hold this policy; "
            "actor.pt (TorchScript, torch alone) is the deterministic actor"
        )
    else:
        write_plain(level, tmp / "model.zip")
        record["model_max_abs_diff"] = _check_plain(level, tmp / "model.zip", reference, obs, actions)
        if level.vecnormalize is not None:
            shutil.copyfile(level.vecnormalize, tmp / "vecnormalize.pkl")
            record["notes"].append(
                "observations are normalised: VecNormalize.load('vecnormalize.pkl', venv), then "
                "training=False and norm_reward=False to act; actor.pt and sparse.pt expect normalised inputs"
            )
    if not foreign and level.data.get("use_sde"):
        record["notes"].append(
            "compact.zip not written: gSDE's noise matrix depends on the last hidden width"
        )
    elif not foreign:
        compacted = write_compact(level, policy, tmp / "compact.zip")
        small = compacted.agent.policy.eval()
        diff = _max_diff(reference, head_outputs(small, algo, obs, actions))
        record["compact"] = {
            "widths_before": compacted.widths_before,
            "widths_after": compacted.widths_after,
            "max_abs_diff": _check("compact.zip", diff, TOLERANCE),
            "optimizer": COMPACT_NOTE,
        }
        compact_state = dict(small.state_dict())
        compact_ops = actor_ops(small, algo)
        forms["compact"] = build_actor(compact_ops, compact_state)
        weights["compact"] = state_bytes(compact_state)
        parameters["policy"]["compact"] = sum(t.numel() for t in compact_state.values())
        parameters["actor"]["compact"] = actor_parameters(compact_ops, compact_state)[0]
        smallest = (compact_ops, compact_state)

    write_sparse(tmp / "sparse.pt", bundle(algo, state, ops, level.data.get("policy_kwargs", {})))
    content = load_sparse(tmp / "sparse.pt")
    forms["sparse"] = build_actor(content["actor"], content["state_dict"], content["shapes"])
    weights["sparse"] = state_bytes(content["state_dict"])
    with torch.no_grad():
        raw_dense = build_actor(_raw(ops), state)(obs)
        raw_sparse = build_actor(_raw(content["actor"]), content["state_dict"], content["shapes"])(obs)
    record["sparse_max_abs_diff"] = _check("sparse.pt", _max_diff([raw_dense], [raw_sparse]), TOLERANCE)

    scripted = torch.jit.script(build_actor(*smallest))
    scripted.save(str(tmp / "actor.pt"))
    with torch.no_grad():
        diff = _max_diff([torch.jit.load(str(tmp / "actor.pt"))(obs).double()], [dense(obs).double()])
    _check("actor.pt", diff, TOLERANCE)

    record["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
    record["load"] = {
        "model.zip": f"stable_baselines3.{name}.load('model.zip')",
        "compact.zip": f"stable_baselines3.{name}.load('compact.zip')",
        "sparse.pt": "torch.load('sparse.pt', weights_only=True)  # see the README's recipe",
        "actor.pt": "torch.jit.load('actor.pt')(obs)  # deterministic action, torch alone",
    }
    record["actor_pt_form"] = "compact" if "compact" in forms else "dense"
    record["parameters"] = parameters
    record["weights_bytes"] = weights
    record["latency_ms"] = {
        f"batch_{size}": median_latency_ms(forms, observations(policy.observation_space, size, seed=2), calls)
        for size in LATENCY_BATCHES
    }
    record["latency"] = {"calls": calls, "torch_threads": torch.get_num_threads(), "statistic": "median"}
    record["onnx"] = (
        "not written: the exporter writes TorchScript (actor.pt); onnx was not installed where it was built"
    )
    return record
