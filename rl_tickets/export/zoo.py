"""An exported level as one rl-baselines3-zoo run, so the zoo's own scripts read it without rl_tickets.

``rl-tickets-export LEVEL --out OUT --zoo DIR`` adds ``DIR/<algo>/<Env>_<n>/`` (n = the zoo's next run
id for that environment, as its ``train.py`` numbers runs):

- ``<Env>.zip``: the export's plain SB3 ``model.zip`` (SB3's own policy class, no mask buffers);
- ``<Env>/config.yml``: what ``enjoy`` reads (``normalize``, ``env_kwargs``) plus the run's budget;
- ``<Env>/vecnormalize.pkl``: the level's VecNormalize statistics, when the env was normalised;
- ``evaluations.npz``: the level's evaluations in SB3 ``EvalCallback``'s format (``all_plots``);
- ``<i>.monitor.csv``: the level's SB3 Monitor files, one per training sub-env (``plot_train``);
- ``rl_tickets.json``: which level this is (source directory, level, variant, seed, density).

``enjoy`` plays ``<Env>.zip`` in a venv with only ``rl_zoo3`` (and ``requests``); the plot scripts need
``seaborn``. The zoo treats every ``<Env>_<n>`` under one folder as a seed of one experiment, so put
each level (or variant) in its own folder and compare them with ``all_plots -f DIR_A DIR_B``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from rl_tickets.config import EnvConfig, TrainConfig
from rl_tickets.export.level import ExportError

ZOO_NOTE = "rl_tickets.json"


def zoo_env_name(env_id: str) -> str:
    """The zoo's directory name of a Gymnasium id: ``/`` becomes ``-``; of ``module:Id``, the ``Id``.

    Same rule as ``huggingface_sb3.EnvironmentName``, which ``rl_zoo3`` uses for its paths.

    :param env_id: the Gymnasium id, e.g. ``CartPole-v1`` or ``ALE/Pong-v5``.
    """
    name = env_id.replace("/", "-")
    return name.split(":")[1] if name.count(":") == 1 else name


def next_run_id(algo_dir: Path, env_name: str) -> int:
    """One more than the largest ``<env_name>_<n>`` under ``algo_dir`` (1 for the first run).

    :param algo_dir: ``DIR/<algo>``.
    :param env_name: the zoo's environment name.
    """
    pattern = re.compile(rf"{re.escape(env_name)}_(\d+)")
    ids = [int(m.group(1)) for p in algo_dir.glob(f"{env_name}_*") if (m := pattern.fullmatch(p.name))]
    return max(ids, default=0) + 1


def zoo_config(identity: dict[str, Any], normalized: bool) -> dict[str, Any]:
    """The run's ``config.yml``: the keys ``enjoy`` acts on, and the budget for the reader.

    :param identity: the level's identity.json (values equal to the schema defaults are absent).
    :param normalized: whether the level has VecNormalize statistics.
    """
    cnn = "features_extractor_class" in identity.get("algo.policy_kwargs", {})
    config: dict[str, Any] = {
        "normalize": normalized,
        "n_envs": int(identity.get("env.n_envs", EnvConfig.n_envs)),
        "n_timesteps": int(identity.get("train.timesteps", TrainConfig.timesteps)),
        "policy": "CnnPolicy" if cnn else "MlpPolicy",
    }
    if identity.get("env.make_kwargs"):
        config["env_kwargs"] = dict(identity["env.make_kwargs"])
    return config


def level_facts(level_dir: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """Which level a run is: its source directory, level number, variant, seed and density.

    :param level_dir: a finished ``.../seed_<s>/level_NN/<variant>`` directory.
    :param identity: its chain's (or dense run's) identity.json.
    """
    metrics = json.loads((level_dir / "metrics.json").read_text())
    return {
        "source": str(level_dir.resolve()),
        "level": int(level_dir.parent.name.removeprefix("level_")),
        "variant": level_dir.name,
        "seed": identity.get("seed"),
        "density": metrics.get("density"),
    }


def add_to_zoo(level_dir: Path, export_dir: Path, zoo: Path, algo: str, env_id: str) -> Path:
    """Lay an exported level out as a new run ``zoo/<algo>/<Env>_<n>/`` (see the module doc).

    :param level_dir: the finished level that was exported.
    :param export_dir: the export's output (holds ``model.zip`` and, if normalised, ``vecnormalize.pkl``).
    :param zoo: the zoo's log folder (``-f`` of its scripts); created if needed.
    :param algo: ``ppo``, ``a2c``, ``dqn``, ``sac`` or ``td3``.
    :param env_id: the Gymnasium id.
    :return: the run directory.
    """
    model = export_dir / "model.zip"
    if not model.is_file():
        raise ExportError(
            f"--zoo needs a plain SB3 model.zip, and {level_dir}'s policy names rl_tickets classes "
            "(e.g. the MinAtar CNN), so none was written; actor.pt in the export is the portable form"
        )
    env_name = zoo_env_name(env_id)
    algo_dir = zoo / algo
    algo_dir.mkdir(parents=True, exist_ok=True)
    # mkdir without exist_ok claims the id: two exports into one folder never share a run directory.
    while True:
        run = algo_dir / f"{env_name}_{next_run_id(algo_dir, env_name)}"
        try:
            run.mkdir()
            break
        except FileExistsError:
            continue
    stats = run / env_name
    stats.mkdir()
    shutil.copyfile(model, run / f"{env_name}.zip")
    normalized = (export_dir / "vecnormalize.pkl").is_file()
    if normalized:
        shutil.copyfile(export_dir / "vecnormalize.pkl", stats / "vecnormalize.pkl")
    identity = json.loads((level_dir.parent.parent / "identity.json").read_text())
    (stats / "config.yml").write_text(yaml.safe_dump(zoo_config(identity, normalized), sort_keys=True))
    for name in ("evaluations.npz", *sorted(p.name for p in level_dir.glob("*.monitor.csv"))):
        if (level_dir / name).is_file():
            shutil.copyfile(level_dir / name, run / name)
    (run / ZOO_NOTE).write_text(json.dumps(level_facts(level_dir, identity), indent=2) + "\n")
    return run
