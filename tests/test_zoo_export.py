"""rl-tickets-export --zoo: exported levels laid out as rl-baselines3-zoo runs, and the README's zoo
recipe run as written, with the zoo's own enjoy and plot scripts in interpreters where rl_tickets cannot
be imported (the exported zip needs SB3 alone)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from stable_baselines3 import PPO
from tiny import tiny_config

from rl_tickets.chain.runner import Runner
from rl_tickets.config import EvalConfig, PruneConfig, RewindConfig
from rl_tickets.export.level import ExportError
from rl_tickets.export.zoo import ZOO_NOTE, add_to_zoo, zoo_env_name
from rl_tickets.trainers import build_trainer

REPO = Path(__file__).resolve().parents[1]
ENV = "CartPole-v1"

# Started in every interpreter of the zoo's scripts (PYTHONPATH): rl_tickets is not importable there.
BLOCKER = '''
import sys


class NoRlTickets:
    """Meta-path hook: the package is not installed here."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "rl_tickets":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


sys.meta_path.insert(0, NoRlTickets())
'''
# plot_train only shows its figure: count the lines of each figure instead.
SHOW_COUNTER = """
import runpy, sys
import matplotlib.pyplot as plt
plt.show = lambda *a, **k: print("lines:", [len(plt.figure(n).axes[0].lines) for n in plt.get_figlabels()])
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def readme_blocks() -> tuple[str, str]:
    """The README's two zoo blocks: the export (with rl_tickets) and the zoo's scripts (without)."""
    section = (
        (REPO / "README.md").read_text().split("### Playing and plotting a level with rl-baselines3-zoo")[1]
    )
    blocks = [part.split("```", 1)[0] for part in section.split("```bash\n")[1:3]]
    return blocks[0], blocks[1]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny normalised PPO chain (dense level 0 + level 1) with four evaluations per level."""
    root = tmp_path_factory.mktemp("zoo_chain")
    cfg = tiny_config(
        root,
        "ppo",
        {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
        2048,
        RewindConfig(),
        PruneConfig(levels=1),
        n_envs=2,
        normalize=True,
        eval=EvalConfig(episodes=2, every=512),
    )
    return Runner(cfg, build_trainer(cfg)).run()


def sh(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a bash script (stop at the first failing line) and capture its output."""
    return subprocess.run(
        ["bash", "-euc", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def fill(block: str, values: dict[str, Path]) -> str:
    """The block with its ``NAME=<placeholder path>`` lines set to real paths."""
    lines = block.splitlines()
    return "\n".join(
        f"{line.split('=')[0]}={values[line.split('=')[0]]}" if line.split("=")[0] in values else line
        for line in lines
    )


@pytest.fixture(scope="module")
def recipe(chain: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Both README blocks run as written in a fresh directory (the level paths filled in)."""
    work = tmp_path_factory.mktemp("recipe")
    dense = Path(json.loads((chain / "meta.json").read_text())["dense_dir"]) / "level_00" / "ticket"
    ticket = chain / "level_01" / "ticket"
    export, zoo_scripts = readme_blocks()
    (work / "blocker").mkdir()
    (work / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    base = {**os.environ, "PATH": path, "MPLBACKEND": "Agg", "WANDB_MODE": "disabled"}
    exported = sh(fill(export, {"DENSE": dense, "TICKET": ticket}), work, base)
    assert exported.returncode == 0, exported.stderr[-3000:]
    without = {**base, "PYTHONPATH": str(work / "blocker")}
    zoo = sh(zoo_scripts, work, without)
    assert zoo.returncode == 0, zoo.stderr[-3000:]
    probe = sh("python -c 'import rl_tickets'", work, without)
    return {"work": work, "dense": dense, "ticket": ticket, "zoo": zoo, "probe": probe}


def test_the_zoo_scripts_ran_without_rl_tickets(recipe: dict[str, object]) -> None:
    probe = recipe["probe"]
    assert probe.returncode != 0 and "No module named 'rl_tickets'" in probe.stderr  # type: ignore[attr-defined]


def test_export_lays_out_a_zoo_run(recipe: dict[str, object]) -> None:
    """<algo>/<Env>_1/ holds the plain zip, config.yml and vecnormalize.pkl under <Env>/, the level's
    evaluations.npz and Monitor files, and which level it is."""
    work, ticket = Path(recipe["work"]), Path(recipe["ticket"])  # type: ignore[arg-type]
    run = work / "zoo" / "L3" / "ppo" / f"{ENV}_1"
    assert (run / f"{ENV}.zip").read_bytes() == (work / "exports" / "L3_s0" / "model.zip").read_bytes()
    stats = run / ENV
    assert yaml.safe_load((stats / "config.yml").read_text()) == {
        "normalize": True,
        "n_envs": 2,
        "n_timesteps": 2048,
        "policy": "MlpPolicy",
    }
    assert (stats / "vecnormalize.pkl").read_bytes() == (ticket / "model_vecnormalize.pkl").read_bytes()
    assert (run / "evaluations.npz").read_bytes() == (ticket / "evaluations.npz").read_bytes()
    assert sorted(p.name for p in run.glob("*.monitor.csv")) == ["0.monitor.csv", "1.monitor.csv"]
    assert (run / "0.monitor.csv").read_bytes() == (ticket / "0.monitor.csv").read_bytes()
    facts = json.loads((run / ZOO_NOTE).read_text())
    assert facts["level"] == 1 and facts["variant"] == "ticket" and facts["seed"] == 0
    assert facts["density"] == json.loads((ticket / "metrics.json").read_text())["density"] < 1.0
    PPO.load(run / f"{ENV}.zip", device="cpu")  # SB3's own class: loads without custom objects


def test_enjoy_plays_the_exported_level(recipe: dict[str, object]) -> None:
    out = recipe["zoo"].stdout  # type: ignore[attr-defined]
    assert f"Loading zoo/L3/ppo/{ENV}_1/{ENV}.zip" in out
    episodes = [float(line.split(":")[1]) for line in out.splitlines() if line.startswith("Episode Reward:")]
    assert episodes and all(1 <= r <= 500 for r in episodes)
    assert "Mean reward:" in out


def test_all_plots_reads_each_folder_evaluations(recipe: dict[str, object]) -> None:
    """The -o pickle holds one series per folder with the level's evaluation steps and mean returns."""
    work = Path(recipe["work"])  # type: ignore[arg-type]
    results = pickle.loads((work / "zoo" / "results.pkl").read_bytes())[ENV]
    for label, level in (("dense", Path(recipe["dense"])), ("L3", Path(recipe["ticket"]))):  # type: ignore[arg-type]
        evaluations = np.load(level / "evaluations.npz")
        series = results[f"PPO-{label}"]
        assert series["timesteps"].tolist() == evaluations["timesteps"].tolist() == [512, 1024, 1536, 2048]
        assert series["mean"] == pytest.approx(evaluations["results"].mean(axis=1))


def test_plot_train_draws_one_line_per_run(recipe: dict[str, object], tmp_path: Path) -> None:
    work = Path(recipe["work"])  # type: ignore[arg-type]
    (tmp_path / "count.py").write_text(SHOW_COUNTER)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "count.py"), "rl_zoo3.plots.plot_train"]
        + ["-a", "ppo", "-e", ENV, "-f", "zoo/L3", "-w", "20"],
        cwd=work,
        env={**os.environ, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "lines: [1]" in done.stdout


def test_a_second_export_into_a_folder_is_the_next_run(recipe: dict[str, object], tmp_path: Path) -> None:
    work, ticket = Path(recipe["work"]), Path(recipe["ticket"])  # type: ignore[arg-type]
    zoo = tmp_path / "zoo"
    first = add_to_zoo(ticket, work / "exports" / "L3_s0", zoo, "ppo", ENV)
    second = add_to_zoo(ticket, work / "exports" / "L3_s0", zoo, "ppo", ENV)
    assert (first.name, second.name) == (f"{ENV}_1", f"{ENV}_2")


def test_a_level_without_a_plain_zip_is_refused(recipe: dict[str, object], tmp_path: Path) -> None:
    """MinAtar's CNN is rl_tickets' class, so its export has no model.zip: --zoo says so."""
    (tmp_path / "export").mkdir()
    with pytest.raises(ExportError, match="needs a plain SB3 model.zip"):
        add_to_zoo(Path(recipe["ticket"]), tmp_path / "export", tmp_path / "zoo", "ppo", ENV)  # type: ignore[arg-type]
    assert not (tmp_path / "zoo").exists()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "ALE/Pong-v5", "MinAtar/Breakout-v1", "my_pkg:Env-v0"])
def test_zoo_env_names_follow_the_zoo(env_id: str) -> None:
    from huggingface_sb3 import EnvironmentName

    assert zoo_env_name(env_id) == str(EnvironmentName(env_id))
