"""rl-tickets-export: plain SB3 round trips without rl_tickets, compact equality, sparse round trips, errors.

Levels are tiny agents trained in-process (``learn(64)``, 8-16 unit layers) and written in the runner's
layout; one chain comes from the real runner. The forms are then loaded in a subprocess where
``import rl_tickets`` fails (``python -I`` from outside the checkout, the checkout off ``sys.path`` and a
meta-path hook refusing the package), which must act exactly like the masked agent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize
from tiny import ENVS, tiny_config

from rl_tickets.chain.runner import Runner
from rl_tickets.config import EnvConfig, PruneConfig, RewindConfig
from rl_tickets.export import ExportError, export_level
from rl_tickets.export.cli import main
from rl_tickets.export.compact import head_outputs
from rl_tickets.export.level import plain_state
from rl_tickets.export.measure import observations, unit_actions
from rl_tickets.export.plain import zip_mentions_package
from rl_tickets.export.sparse import dense_state, load_sparse
from rl_tickets.rl.agents import ALGOS
from rl_tickets.rl.checkpoints import save_state, sidecar
from rl_tickets.rl.envs import FEATURE_EXTRACTORS, MinAtarCNN, make_env
from rl_tickets.rl.policies import POLICIES
from rl_tickets.rl.trainer import SB3Trainer
from rl_tickets.seeds import seed_for
from rl_tickets.sparsity.masks import Mask, read_mask, save_mask, set_masks

REPO = Path(__file__).resolve().parents[1]
CALLS = 5  # timed calls per form in tests: the numbers are not asserted, only their presence
N_OBS = 1000

MaskEdit = Callable[[Mask], None]


def _hyperparams(algo: str) -> dict[str, Any]:
    """Tiny budgets: one 64-step rollout on-policy; updates from the first step off-policy."""
    if algo in ("ppo", "a2c"):
        return {"n_steps": 64} if algo == "a2c" else {"n_steps": 64, "batch_size": 32, "n_epochs": 1}
    return {"buffer_size": 256, "learning_starts": 0, "train_freq": 8, "gradient_steps": 2}


def random_mask(density: float, seed: int = 0) -> MaskEdit:
    """Keep each weight with probability ``density``."""

    def edit(mask: Mask) -> None:
        generator = torch.Generator().manual_seed(seed)
        for m in mask.values():
            m.copy_(torch.rand(m.shape, generator=generator) < density)

    return edit


def write_level(
    root: Path,
    algo: str,
    edit: MaskEdit,
    net_arch: Any = (16, 16),
    normalize: bool = False,
    env: Any = None,
    policy_kwargs: dict[str, Any] | None = None,
) -> tuple[Path, BaseAlgorithm]:
    """Train a tiny masked agent and write it as ``ROOT/chains/x/seed_0/level_01/ticket``.

    Biases are set to random positive values so that a constant unit's ``act(b)`` is not zero and
    folding it really changes the readers' biases.
    """
    env_id = ENVS[algo] if env is None else env.envs[0].spec.id
    venv = env if env is not None else make_vec_env(ENVS[algo], n_envs=1, seed=0)
    if normalize:
        venv = VecNormalize(venv)
    kwargs = {
        "net_arch": list(net_arch) if not isinstance(net_arch, dict) else net_arch,
        **(policy_kwargs or {}),
    }
    # What a results folder records of this config (the export rebuilds the zip's pickled entries from it;
    # taken before SB3 adds classes to the dict, as A2C does with its optimizer).
    recorded_kwargs = {
        k: next(name for name, cls in FEATURE_EXTRACTORS.items() if cls is v) if isinstance(v, type) else v
        for k, v in kwargs.items()
    }
    model = ALGOS[algo](
        POLICIES[algo], venv, seed=0, device="cpu", policy_kwargs=kwargs, **_hyperparams(algo)
    )
    model.learn(64)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.policy.named_parameters():
            if name.endswith("bias"):
                param.copy_(torch.rand(param.shape, generator=generator) * 0.5 + 0.1)
    mask = read_mask(model.policy)
    edit(mask)
    set_masks(model.policy, mask)
    seed_dir = root / "chains" / "abcdef012345" / "seed_0"
    level = seed_dir / "level_01" / "ticket"
    level.mkdir(parents=True)
    identity = {
        "task": "rl",
        "algo.name": algo,
        "algo.hyperparams": _hyperparams(algo),
        "algo.policy_kwargs": recorded_kwargs,
        "env.id": env_id,
        "env.normalize": normalize,
        "env.wrapper": "channels_first_float" if env_id.startswith("MinAtar/") else None,
    }
    (seed_dir / "identity.json").write_text(json.dumps(identity))
    save_state(model, level / "model.zip", with_replay=False)
    save_mask(mask, level / "mask.pt")
    (level / "metrics.json").write_text("{}")
    (level / "COMPLETE").write_text("")
    return level, model


def level_observations(model: BaseAlgorithm, n: int = 256) -> np.ndarray:
    """Raw observations for the agent (before any VecNormalize)."""
    return observations(model.observation_space, n, seed=3).numpy()


def normalised(level: Path, obs: np.ndarray, env_id: str) -> np.ndarray:
    """Observations as the level's agent sees them (through its VecNormalize statistics, if any)."""
    stats = sidecar(level / "model.zip", "vecnormalize")
    if not stats.exists():
        return obs
    return VecNormalize.load(str(stats), make_vec_env(env_id, n_envs=1)).normalize_obs(obs)


def compact_diff(level: Path, out: Path, algo: str) -> tuple[float, dict[str, list[int]]]:
    """Largest output difference of compact.zip against the masked level on 1,000 observations."""
    masked = ALGOS[algo].load(level / "model.zip", device="cpu")
    small = ALGOS[algo].load(out / "compact.zip", device="cpu")
    obs = observations(masked.observation_space, N_OBS, seed=5)
    actions = unit_actions(masked.action_space, N_OBS, seed=6)
    first = head_outputs(masked.policy, algo, obs, actions)
    second = head_outputs(small.policy, algo, obs, actions)
    diff = max(float((a - b).abs().max()) for a, b in zip(first, second))
    return diff, json.loads((out / "export.json").read_text())["compact"]["widths_after"]


# --- rl_tickets-free loading -------------------------------------------------------------------------


def readme_recipe() -> str:
    """The README's recipe (the deterministic actor from sparse.pt, torch alone), verbatim."""
    section = (REPO / "README.md").read_text().split("## Using a ticket outside rl_tickets", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    return code.split("# The whole SB3 policy", 1)[0]


# The checking script: this prelude, the README's recipe, then PLAIN_BODY.
PLAIN_PRELUDE = '''
import sys

REPO = sys.argv[3]
sys.path = [p for p in sys.path if p and not p.startswith(REPO)]


class NoRlTickets:
    """Meta-path hook: the package is not installed here."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "rl_tickets":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


sys.meta_path.insert(0, NoRlTickets())
try:
    import rl_tickets  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("rl_tickets is importable: the check would prove nothing")

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
'''

PLAIN_BODY = """

results = {}
for case in json.loads(Path(sys.argv[1]).read_text()):
    out, obs = Path(case["out"]), np.load(case["obs"])
    cls = getattr(stable_baselines3, case["algo"].upper())
    light = {"buffer_size": 1} if case["algo"] in ("dqn", "sac", "td3") else {}
    row = {}
    try:  # the level's own zip pickles rl_tickets' policy class: it must fail here
        cls.load(case["level"], device="cpu", **light)
        row["raw_level_failed"] = False
    except ModuleNotFoundError:
        row["raw_level_failed"] = True
    if (out / "vecnormalize.pkl").exists():
        venv = DummyVecEnv([lambda: gym.make(case["env"])])
        obs = VecNormalize.load(str(out / "vecnormalize.pkl"), venv).normalize_obs(obs)
    if (out / "model.zip").exists():
        row["model"] = cls.load(out / "model.zip", device="cpu", **light).predict(obs, deterministic=True)[0]
        row["compact"] = cls.load(out / "compact.zip", device="cpu", **light).predict(obs, deterministic=True)[0]
        blob = torch.load(out / "sparse.pt", weights_only=True)
        state = {
            k: (v.to_dense() if v.layout != torch.strided else v).reshape(blob["shapes"][k])
            for k, v in blob["state_dict"].items()
        }
        kwargs = {"net_arch": blob["net_arch"]}
        if blob["activation_fn"]:
            kwargs["activation_fn"] = getattr(torch.nn, blob["activation_fn"])
        rebuilt = cls("MlpPolicy", case["env"], policy_kwargs=kwargs, device="cpu", **light)
        rebuilt.policy.load_state_dict(state)
        row["rebuilt"] = rebuilt.predict(obs, deterministic=True)[0]
        # the README's advice for raw level zips: SB3 skips the class it cannot unpickle, masks are extra keys
        raw = cls("MlpPolicy", case["env"], policy_kwargs=kwargs, device="cpu", **light)
        raw.set_parameters(case["level"], exact_match=False, device="cpu")
        row["set_parameters"] = raw.predict(obs, deterministic=True)[0]
    x = torch.as_tensor(obs, dtype=torch.float32)
    with torch.no_grad():
        row["actor"] = torch.jit.load(str(out / "actor.pt"))(x).numpy()
        row["recipe"] = sparse_actor(out / "sparse.pt")(x).numpy()
    results[case["name"]] = {k: np.asarray(v).tolist() for k, v in row.items()}
results["_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "rl_tickets")
Path(sys.argv[2]).write_text(json.dumps(results))
"""


def run_without_rl_tickets(cases: list[dict[str, Any]], workdir: Path) -> dict[str, Any]:
    """Load every exported form in a fresh interpreter that cannot import rl_tickets."""
    script, manifest, result = workdir / "check.py", workdir / "cases.json", workdir / "result.json"
    script.write_text(PLAIN_PRELUDE + readme_recipe() + PLAIN_BODY)
    manifest.write_text(json.dumps(cases))
    done = subprocess.run(
        [sys.executable, "-I", str(script), str(manifest), str(result), str(REPO)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(result.read_text())


def _runner_levels(root: Path) -> tuple[Path, Path]:
    """A real PPO chain with VecNormalize from the runner; returns its dense level 0 and level 1 tickets."""
    hyperparams = {"n_steps": 64, "batch_size": 32, "n_epochs": 1}
    cfg = tiny_config(
        root, "ppo", hyperparams, 128, RewindConfig(), PruneConfig(levels=1, rate=0.5), normalize=True
    )
    trainer = SB3Trainer(
        cfg.algo, cfg.env, cfg.train.timesteps, cfg.eval, cfg.device, seed_for(cfg.seed, "eval")
    )
    chain = Runner(cfg, trainer).run()
    return next(root.glob("dense/*/seed_0/level_00/ticket")), chain / "level_01" / "ticket"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every algorithm (plus VecNormalize, the runner's own layout and the MinAtar CNN) exported and
    loaded without rl_tickets; maps a case name to its reference actions and the subprocess's."""
    base = tmp_path_factory.mktemp("export")
    cases, reference = [], {}
    levels: list[tuple[str, str, Path, BaseAlgorithm | None]] = []
    for algo in ENVS:
        level, model = write_level(base / algo, algo, random_mask(0.3))
        levels.append((algo, algo, level, model))
    level, model = write_level(base / "dqn_vecnormalize", "dqn", random_mask(0.3), normalize=True)
    levels.append(("dqn_vecnormalize", "dqn", level, model))
    dense, ticket = _runner_levels(base / "runner")
    levels += [("ppo_runner_dense", "ppo", dense, None), ("ppo_runner", "ppo", ticket, None)]
    minatar = EnvConfig(name="minatar_breakout", id="MinAtar/Breakout-v1", wrapper="channels_first_float")
    level, model = write_level(
        base / "minatar",
        "dqn",
        random_mask(0.1),
        net_arch=[],
        env=make_env(minatar, seed=0),
        policy_kwargs={"features_extractor_class": MinAtarCNN},
    )
    levels.append(("minatar", "dqn", level, model))
    for name, algo, level, _ in levels:
        out = base / f"{name}_out"
        export_level(level, out, calls=CALLS)
        masked = ALGOS[algo].load(level / "model.zip", device="cpu")
        obs = level_observations(masked)
        np.save(base / f"{name}_obs.npy", obs)
        env_id = json.loads((level.parents[1] / "identity.json").read_text())["env.id"]
        cases.append(
            {
                "name": name,
                "algo": algo,
                "env": env_id,
                "level": str(level / "model.zip"),
                "out": str(out),
                "obs": str(base / f"{name}_obs.npy"),
            }
        )
        reference[name] = masked.predict(normalised(level, obs, env_id), deterministic=True)[0]
    return {"base": base, "reference": reference, "loaded": run_without_rl_tickets(cases, base)}


CASES = [*ENVS, "dqn_vecnormalize", "ppo_runner_dense", "ppo_runner"]


def test_the_subprocess_really_lacks_rl_tickets(exported: dict[str, Any]) -> None:
    assert exported["loaded"]["_modules"] == []
    # negative control: there, the levels' own zips do not load (they pickle rl_tickets' policy class)
    assert all(exported["loaded"][name]["raw_level_failed"] for name in [*CASES, "minatar"])


@pytest.mark.parametrize("name", CASES)
def test_plain_model_acts_identically_without_rl_tickets(exported: dict[str, Any], name: str) -> None:
    loaded, expected = exported["loaded"][name], exported["reference"][name]
    np.testing.assert_array_equal(np.asarray(loaded["model"]), expected)
    assert zip_mentions_package(exported["base"] / f"{name}_out" / "model.zip") == []


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("form", ["compact", "rebuilt", "set_parameters", "actor", "recipe"])
def test_compact_sparse_and_torchscript_act_like_the_level_without_rl_tickets(
    exported: dict[str, Any], name: str, form: str
) -> None:
    got, expected = np.asarray(exported["loaded"][name][form]), exported["reference"][name]
    if expected.dtype.kind in "iu":
        np.testing.assert_array_equal(got.reshape(expected.shape), expected)
    else:
        np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=1e-5, rtol=0)


def test_minatar_cnn_ships_as_torchscript_and_sparse(exported: dict[str, Any]) -> None:
    out = exported["base"] / "minatar_out"
    record = json.loads((out / "export.json").read_text())
    assert not (out / "model.zip").exists() and not (out / "compact.zip").exists()
    assert any("TorchScript" in note for note in record["notes"])
    loaded, expected = exported["loaded"]["minatar"], exported["reference"]["minatar"]
    np.testing.assert_array_equal(np.asarray(loaded["actor"]), expected)
    np.testing.assert_array_equal(np.asarray(loaded["recipe"]), expected)


def test_record_has_sizes_counts_and_latencies(exported: dict[str, Any]) -> None:
    out = exported["base"] / "dqn_out"
    record = json.loads((out / "export.json").read_text())
    assert record["files"]["compact.zip"] < record["files"]["model.zip"]
    for name, size in record["files"].items():
        assert size == (out / name).stat().st_size
    assert record["parameters"]["policy"]["compact"] < record["parameters"]["policy"]["dense"]
    assert record["weights_bytes"]["compact"] < record["weights_bytes"]["dense"]
    for batch in ("batch_1", "batch_256"):
        assert set(record["latency_ms"][batch]) == {"dense", "compact", "sparse"}
        assert all(ms > 0 for ms in record["latency_ms"][batch].values())
    assert "fresh" in record["compact"]["optimizer"]


# --- compact equality on constructed dead units -------------------------------------------------------


def _kill(mask: Mask, name: str, rows: Sequence[int] = (), cols: Sequence[int] = ()) -> None:
    """Prune whole rows (a unit's inputs) or columns (a unit's outputs) of one weight."""
    for row in rows:
        mask[name][row] = False
    for col in cols:
        mask[name][:, col] = False


def test_compact_dead_units_in_a_middle_layer_cascade(tmp_path: Path) -> None:
    def edit(mask: Mask) -> None:
        _kill(mask, "mlp_extractor.policy_net.2.weight", rows=[3])  # middle unit 3: no inputs (constant)
        _kill(mask, "mlp_extractor.policy_net.4.weight", cols=[5])  # middle unit 5: no outputs
        # first-layer unit 2 feeds only middle unit 5: dead once unit 5 is gone (the second pass)
        col = mask["mlp_extractor.policy_net.2.weight"][:, 2]
        col[:] = False
        col[5] = True

    level, _ = write_level(tmp_path, "ppo", edit, net_arch=[8, 8, 8])
    export_level(level, tmp_path / "out", calls=CALLS)
    diff, widths = compact_diff(level, tmp_path / "out", "ppo")
    assert widths == {"pi": [7, 6, 8], "vf": [8, 8, 8]}
    assert diff < 1e-5


def test_compact_folds_a_constant_unit_into_both_heads(tmp_path: Path) -> None:
    def edit(mask: Mask) -> None:
        _kill(mask, "actor.latent_pi.2.weight", rows=[4])  # feeds mu and log_std with act(b) only

    level, model = write_level(tmp_path, "sac", edit, net_arch=[8, 8])
    assert model.policy.actor.latent_pi[2].bias[4] != 0
    export_level(level, tmp_path / "out", calls=CALLS)
    diff, widths = compact_diff(level, tmp_path / "out", "sac")
    assert widths["pi"] == [8, 7]
    assert diff < 1e-5


def test_compact_twin_critics_keep_the_union_of_live_units(tmp_path: Path) -> None:
    def edit(mask: Mask) -> None:
        _kill(mask, "critic.qf0.0.weight", rows=[1, 2])  # unit 1 dead in both critics, unit 2 only in qf0
        _kill(mask, "critic.qf1.0.weight", rows=[1])
        _kill(mask, "critic.qf1.2.weight", cols=[6])  # unit 6 dead in qf1 only
        _kill(mask, "critic.qf0.2.weight", cols=[7])  # unit 7 dead in both
        _kill(mask, "critic.qf1.2.weight", cols=[7])

    level, _ = write_level(tmp_path, "td3", edit, net_arch=[8, 8])
    export_level(level, tmp_path / "out", calls=CALLS)
    diff, widths = compact_diff(level, tmp_path / "out", "td3")
    assert widths["qf"] == [6, 8]
    assert widths["pi"] == [8, 8]
    assert diff < 1e-5


def test_compact_with_vecnormalize_and_sac_targets(tmp_path: Path) -> None:
    level, model = write_level(tmp_path, "sac", random_mask(0.3), normalize=True)
    export_level(level, tmp_path / "out", calls=CALLS)
    assert (tmp_path / "out" / "vecnormalize.pkl").exists()
    diff, widths = compact_diff(level, tmp_path / "out", "sac")
    assert diff < 1e-5
    assert sum(widths["qf"]) < 32 and sum(widths["pi"]) < 32
    # targets follow the online selection, so the compact zip loads with SB3's strict shapes
    online = dict(model.policy.named_parameters())
    assert not torch.equal(online["critic.qf0.0.weight"], online["critic_target.qf0.0.weight"])


# --- sparse -------------------------------------------------------------------------------------------


def test_sparse_round_trip(tmp_path: Path) -> None:
    level, model = write_level(tmp_path, "dqn", random_mask(0.2))
    export_level(level, tmp_path / "out", calls=CALLS)
    content = load_sparse(tmp_path / "out" / "sparse.pt")
    state = plain_state(dict(model.policy.state_dict()))
    assert content["state_dict"]["q_net.q_net.0.weight"].layout == torch.sparse_csr
    assert int(content["state_dict"]["q_net.q_net.0.weight"].values().numel()) == int(
        (state["q_net.q_net.0.weight"] != 0).sum()
    )
    back = dense_state(content)
    assert back.keys() == state.keys()
    for name, tensor in state.items():
        assert torch.equal(back[name], tensor), name


# --- user errors --------------------------------------------------------------------------------------


def _main_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("rl-tickets-export: error:")
    return err


def test_user_errors_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    level, _ = write_level(tmp_path / "r", "ppo", random_mask(0.5), net_arch=[4])
    assert "not a directory" in _main_error([str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys)
    assert "not a level directory" in _main_error([str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    (level / "COMPLETE").unlink()
    assert "not a finished level" in _main_error([str(level), "--out", str(tmp_path / "o")], capsys)
    (level / "COMPLETE").write_text("")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert "exists" in _main_error([str(level), "--out", str(busy)], capsys)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "o").exists()


def test_a_failure_half_way_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    level, _ = write_level(tmp_path / "r", "ppo", random_mask(0.5), net_arch=[4])

    def boom(*_args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("rl_tickets.export.bundle.write_sparse", boom)
    with pytest.raises(OSError):
        export_level(level, tmp_path / "out", calls=CALLS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_supervised_levels_are_refused(tmp_path: Path) -> None:
    level, _ = write_level(tmp_path, "ppo", random_mask(0.5), net_arch=[4])
    (level.parents[1] / "identity.json").write_text(json.dumps({"task": "supervised", "model.name": "lenet"}))
    with pytest.raises(ExportError, match="supervised"):
        export_level(level, tmp_path / "out")
