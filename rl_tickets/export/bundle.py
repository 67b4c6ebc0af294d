"""Export one finished level: every shippable form, checked against the level's own agent, and a record.

The output directory is written under a temporary name beside it and renamed at the end, so it is
either complete or absent. Every form is checked before the rename: the plain checkpoint must give
the level's outputs bit for bit, the compact and sparse forms within :data:`TOLERANCE`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from torch import nn

from rl_tickets.chain.store import cannot_create_in, nearest_existing
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


def _check_actor(actor: nn.Module, policy: BasePolicy, obs: torch.Tensor) -> None:
    """The dense ops actor must give SB3's ``predict(obs, deterministic=True)``."""
    expected = torch.as_tensor(policy.predict(obs.numpy(), deterministic=True)[0])
    with torch.no_grad():
        got = actor(obs)
    _check("the ops actor", float((got.double() - expected.double()).abs().max()), TOLERANCE)


def check_out(out: Path) -> None:
    """Refuse an output directory that exists with files in it, or that cannot be created.

    :param out: the ``--out`` directory.
    """
    if any(len(os.fsencode(part)) > 255 for part in out.parts):  # (stat would fail on it)
        raise ExportError(f"--out={out}: a path component is longer than the 255 bytes file systems take")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty directory; choose a new --out")
    existing = nearest_existing(out)
    if not existing.is_dir():
        raise ExportError(f"--out={out} cannot be created: {existing} is a file")
    if (why := cannot_create_in(existing)) is not None:
        raise ExportError(f"--out={out} cannot be created under {existing} ({why})")


def _prepare(out: Path) -> Path:
    """Refuse an output directory that cannot take the export; return the temporary directory to write into."""
    check_out(out)
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
    check_out(out)  # before the level is read: a bad --out is one line at once
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


@dataclass
class _Probe:
    """The level's own agent and the inputs every form is checked on."""

    level: Level
    policy: BasePolicy
    obs: torch.Tensor
    actions: torch.Tensor
    reference: list[torch.Tensor]

    @classmethod
    def of(cls, level: Level) -> _Probe:
        """Load the level's agent and compute its outputs on the check inputs."""
        policy = level.agent().policy.eval()
        obs = observations(policy.observation_space, CHECK_OBSERVATIONS, seed=0)
        actions = unit_actions(policy.action_space, CHECK_OBSERVATIONS, seed=1)
        return cls(level, policy, obs, actions, head_outputs(policy, level.algo, obs, actions))

    def diff(self, policy: BasePolicy) -> float:
        """Largest output difference of ``policy`` against the level's agent."""
        return _max_diff(self.reference, head_outputs(policy, self.level.algo, self.obs, self.actions))


# A form of the actor: its ops and the tensors they name.
Form = tuple[list[Op], dict[str, torch.Tensor]]


def _write_plain_forms(probe: _Probe, tmp: Path, record: dict[str, Any]) -> Form | None:
    """model.zip (+ vecnormalize.pkl) and compact.zip; returns the compact form (None if not written)."""
    level = probe.level
    write_plain(level, tmp / "model.zip")
    light = {"buffer_size": 1} if issubclass(level.cls, OffPolicyAlgorithm) else {}
    plain: BaseAlgorithm = level.cls.load(tmp / "model.zip", device="cpu", **light)  # SB3's own load
    record["model_max_abs_diff"] = _check("model.zip", probe.diff(plain.policy), 0.0)
    if level.vecnormalize is not None:
        shutil.copyfile(level.vecnormalize, tmp / "vecnormalize.pkl")
        record["notes"].append(
            "observations are normalised: VecNormalize.load('vecnormalize.pkl', venv), then "
            "training=False and norm_reward=False to act; actor.pt and sparse.pt expect normalised inputs"
        )
    if level.data.get("use_sde"):
        record["notes"].append(
            "compact.zip not written: gSDE's noise matrix depends on the last hidden width"
        )
        return None
    compacted = write_compact(level, probe.policy, tmp / "compact.zip")
    small = compacted.agent.policy.eval()
    record["compact"] = {
        "widths_before": compacted.widths_before,
        "widths_after": compacted.widths_after,
        "max_abs_diff": _check("compact.zip", probe.diff(small), TOLERANCE),
        "optimizer": COMPACT_NOTE,
    }
    return actor_ops(small, level.algo), dict(small.state_dict())


def _write_sparse(
    probe: _Probe, tmp: Path, dense: Form
) -> tuple[list[Op], dict[str, torch.Tensor], dict[str, list[int]]]:
    """sparse.pt, read back the way a user reads it; its actor must match the dense one."""
    ops, state = dense
    write_sparse(
        tmp / "sparse.pt", bundle(probe.level.algo, state, ops, probe.level.data.get("policy_kwargs", {}))
    )
    content = load_sparse(tmp / "sparse.pt")
    with torch.no_grad():
        want = build_actor(_raw(ops), state)(probe.obs)
        got = build_actor(_raw(content["actor"]), content["state_dict"], content["shapes"])(probe.obs)
    _check("sparse.pt", _max_diff([want], [got]), TOLERANCE)
    return content["actor"], content["state_dict"], content["shapes"]


def _write_torchscript(probe: _Probe, tmp: Path, form: Form, dense: nn.Module) -> None:
    """actor.pt: the form's actor as TorchScript, reloaded and compared with the dense actor."""
    torch.jit.script(build_actor(*form)).save(str(tmp / "actor.pt"))
    with torch.no_grad():
        got = torch.jit.load(str(tmp / "actor.pt"))(probe.obs).double()
        _check("actor.pt", _max_diff([got], [dense(probe.obs).double()]), TOLERANCE)


def _export(level: Level, tmp: Path, calls: int) -> dict[str, Any]:
    """Write every form into ``tmp`` and return the record."""
    probe = _Probe.of(level)
    state = plain_state(level.params["policy"])
    forms: dict[str, Form] = {"dense": (actor_ops(probe.policy, level.algo), state)}
    actors = {"dense": build_actor(*forms["dense"])}
    _check_actor(actors["dense"], probe.policy, probe.obs)
    record: dict[str, Any] = {
        "source": str(level.path),
        "algo": level.algo,
        "env_id": level.env_id,
        "notes": [],
    }
    foreign = foreign_keys(level.data)
    if foreign:
        record["notes"].append(
            f"model.zip and compact.zip not written: {', '.join(foreign)} name rl_tickets classes "
            "(e.g. the MinAtar CNN features extractor), so no plain SB3 checkpoint can hold this policy; "
            "actor.pt (TorchScript, torch alone) is the deterministic actor"
        )
    elif (compact_form := _write_plain_forms(probe, tmp, record)) is not None:
        forms["compact"] = compact_form
        actors["compact"] = build_actor(*compact_form)
    sparse_ops, sparse_tensors, shapes = _write_sparse(probe, tmp, forms["dense"])
    actors["sparse"] = build_actor(sparse_ops, sparse_tensors, shapes)
    smallest = "compact" if "compact" in forms else "dense"
    _write_torchscript(probe, tmp, forms[smallest], actors["dense"])

    name = ALGO_NAMES[level.algo]
    loads = {
        "model.zip": f"stable_baselines3.{name}.load('model.zip')",
        "compact.zip": f"stable_baselines3.{name}.load('compact.zip')",
        "sparse.pt": "torch.load('sparse.pt', weights_only=True)  # see the README's recipe",
        "actor.pt": f"torch.jit.load('actor.pt')(obs)  # the {smallest} deterministic actor, torch alone",
    }
    record["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
    record["load"] = {file: how for file, how in loads.items() if file in record["files"]}
    record["parameters"] = {
        "policy": {form: sum(t.numel() for t in tensors.values()) for form, (_, tensors) in forms.items()},
        "actor": {form: actor_parameters(ops, tensors)[0] for form, (ops, tensors) in forms.items()},
    }
    record["parameters"]["policy"]["nonzero"] = sum(int((t != 0).sum()) for t in state.values())
    record["parameters"]["actor"]["nonzero"] = actor_parameters(*forms["dense"])[1]
    record["weights_bytes"] = {form: state_bytes(tensors) for form, (_, tensors) in forms.items()}
    record["weights_bytes"]["sparse"] = state_bytes(sparse_tensors)
    record["latency_ms"] = {
        f"batch_{size}": median_latency_ms(
            actors, observations(probe.policy.observation_space, size, seed=2), calls
        )
        for size in LATENCY_BATCHES
    }
    record["latency"] = {"calls": calls, "torch_threads": torch.get_num_threads(), "statistic": "median"}
    record["onnx"] = "not written: actor.pt is TorchScript; onnx and onnxruntime are optional and not used"
    return record
