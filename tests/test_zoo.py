"""conf/zoo equals rl-baselines3-zoo's tuned entries after translation, and stays so.

rl_zoo3 (a dev dependency) ships its ``hyperparams/*.yml`` inside the package; they are read from the
package directory without importing rl_zoo3 (its import pulls optuna, huggingface_hub, moviepy), so
nothing is downloaded. Every ``conf/zoo`` file either names the zoo entry it claims in its header or
says it is not from the zoo.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_config import composed

CLAIM = re.compile(r"rl-baselines3-zoo \(hyperparams/(\w+)\.yml, ([^,)\s]+)")
NOT_FROM_ZOO = "Not from rl-baselines3-zoo"
# The zoo's noise names -> rl_tickets' action_noise types.
NOISES = {"normal": "normal", "ornstein-uhlenbeck": "ornstein_uhlenbeck"}


def zoo_hyperparams() -> Path:
    """rl_zoo3's hyperparams directory (found without importing the package)."""
    spec = importlib.util.find_spec("rl_zoo3")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("rl_zoo3 is not installed: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "hyperparams"


def parse_dict_call(text: str) -> dict[str, Any]:
    """The zoo's ``"dict(net_arch=[256, 256], ...)"`` strings as a dict of literals."""
    call = ast.parse(text, mode="eval").body
    assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "dict", text
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg is not None}


def schedule(value: Any) -> Any:
    """The zoo's ``lin_x`` as rl_tickets' linear schedule; other values unchanged."""
    if isinstance(value, str) and value.startswith("lin_"):
        return {"schedule": "linear", "start": float(value.removeprefix("lin_"))}
    return value


def translate(entry: dict[str, Any]) -> dict[str, Any]:
    """A zoo entry in rl_tickets' keys: budget, envs, normalisation, hyperparameters, policy kwargs."""
    entry = dict(entry)
    assert entry.pop("policy") == "MlpPolicy", "only MLP entries are translated"
    normalize = entry.pop("normalize", False)
    out: dict[str, Any] = {
        "train.timesteps": int(float(entry.pop("n_timesteps"))),
        "env.n_envs": int(entry.pop("n_envs", 1)),
        "env.normalize": bool(normalize),
        "env.normalize_kwargs": parse_dict_call(normalize) if isinstance(normalize, str) else {},
        "algo.policy_kwargs": parse_dict_call(entry.pop("policy_kwargs", "dict()")),
    }
    if "noise_type" in entry:
        entry["action_noise"] = {"type": NOISES[entry.pop("noise_type")], "sigma": entry.pop("noise_std")}
    out["algo.hyperparams"] = {k: schedule(v) for k, v in entry.items()}
    return out


def headers() -> dict[str, str]:
    """The first three lines of every conf/zoo file, by preset name."""
    directory = Path(str(files("rl_tickets.conf").joinpath("zoo")))
    return {
        path.stem: "\n".join(path.read_text().split("\n")[:3]) for path in sorted(directory.glob("*.yaml"))
    }


def claims() -> list[tuple[str, str, str]]:
    """(preset, zoo algo file, zoo env id) for every conf/zoo file claiming the zoo as its source."""
    return [(name, m.group(1), m.group(2)) for name, text in headers().items() if (m := CLAIM.search(text))]


def test_every_zoo_file_names_its_source() -> None:
    for name, text in headers().items():
        assert CLAIM.search(text) or NOT_FROM_ZOO in text, f"conf/zoo/{name}.yaml names no source"
    assert len(claims()) == 15  # the two MinAtar presets say they are not from the zoo


@pytest.mark.parametrize("preset,algo,env_id", claims())
def test_zoo_preset_equals_rl_zoo3s_entry(preset: str, algo: str, env_id: str) -> None:
    entries = yaml.safe_load((zoo_hyperparams() / f"{algo}.yml").read_text())
    assert env_id in entries, f"rl_zoo3's {algo}.yml has no {env_id}"
    expected = translate(entries[env_id])
    algo_name, env_name = preset.split("_", 1)
    cfg = composed(f"algo={algo_name}", f"env={env_name}")
    assert (cfg.algo.name, cfg.env.id) == (algo, env_id)
    actual = {
        "train.timesteps": cfg.train.timesteps,
        "env.n_envs": cfg.env.n_envs,
        "env.normalize": cfg.env.normalize,
        "env.normalize_kwargs": cfg.env.normalize_kwargs,
        "algo.policy_kwargs": cfg.algo.policy_kwargs,
        "algo.hyperparams": cfg.algo.hyperparams,
    }
    assert actual == expected
