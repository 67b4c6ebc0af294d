"""The real command line: an end-to-end run in a subprocess, a rerun that trains nothing, bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from stable_baselines3 import PPO
from tiny import tiny_ppo_args

from rl_tickets.__main__ import main
from rl_tickets.sparsity.masks import load_mask

TINY_PPO = tiny_ppo_args(2048, 1, n_epochs=2, episodes=2, every=1024)


def cli(root: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m rl_tickets root=<root> ...`` and capture its output."""
    environment = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rl_tickets", f"root={root}", *overrides],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def test_end_to_end_run_then_rerun_trains_nothing(tmp_path: Path) -> None:
    """The default job shape (PPO CartPole + zoo settings) at a tiny budget, logged offline to W&B."""
    first = cli(tmp_path, *TINY_PPO)
    assert first.returncode == 0, first.stderr[-2000:]
    chains = list((tmp_path / "chains").glob("*/seed_0"))
    assert len(chains) == 1
    chain = chains[0]
    rows = list(csv.DictReader(open(chain / "levels.csv")))
    assert [r["level"] for r in rows] == ["0", "1"]
    assert float(rows[1]["density"]) == pytest.approx(0.8, abs=1e-3)
    assert int(rows[0]["timesteps"]) == 2048
    # The zoo's n_steps is overridden from the command line (user overrides win).
    meta = (chain / "meta.json").read_text()
    assert '"n_steps": 64' in meta
    # The saved model opens with plain SB3 and has exact zeros where its mask says.
    model = PPO.load(chain / "level_01" / "ticket" / "model.zip", device="cpu")
    mask = load_mask(chain / "level_01" / "ticket" / "mask.pt")
    params = dict(model.policy.named_parameters())
    for name, keep in mask.items():
        assert torch.all(params[name][~keep] == 0.0)
    # W&B wrote an offline run under the root, and Hydra's run files live under the root too.
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert (tmp_path / "hydra").is_dir()
    # Piped, the table keeps its path whole on one line and shows the sd over evaluation episodes.
    lines = first.stdout.splitlines()
    assert str(chain / "levels.csv") in lines
    assert lines[lines.index(str(chain / "levels.csv")) + 1].split() == [
        "level", "variant", "density", "eval_return_mean", "sd"
    ]  # fmt: skip
    # Progress and results also went through logging into Hydra's log file, named after the app.
    (log_file,) = (tmp_path / "hydra" / "runs").glob("*/rl-tickets.log")
    logged = log_file.read_text()
    assert "level 1/1 ticket" in logged and f"results: {chain}" in logged

    stamp = (chain / "level_01" / "ticket" / "model.zip").stat().st_mtime_ns
    second = cli(tmp_path, *TINY_PPO, "logger.mode=disabled")
    assert second.returncode == 0, second.stderr[-2000:]
    assert (chain / "level_01" / "ticket" / "model.zip").stat().st_mtime_ns == stamp
    assert list(csv.DictReader(open(chain / "levels.csv"))) == rows


BAD_INPUT = [
    (["algo=dqn", "env=pendulum"], "needs a discrete action space"),
    (["algo=td3", "env=cartpole"], "needs a continuous (Box) action space"),
    (["algo=sac", "env=cartpole"], "needs a continuous (Box) action space"),
    (["prune.rate=1.5"], "prune.rate=1.5 must lie strictly between 0 and 1"),
    (["prune.rate=0"], "prune.rate=0.0 must lie strictly between 0 and 1"),
    (["prune.levels=-1"], "prune.levels=-1 must be >= 0"),
    (["rewind.step=100000"], "rewind.step=100000 must lie in [0, train.timesteps=100000)"),
    (["prune.scope=neither"], "prune.scope='neither' is not valid; choose one of: global, layer"),
    (["+algo.hyperparams.bogus=1"], "algo.hyperparams has unknown keys ['bogus']"),
]


def test_bad_input_exits_2_with_one_line_in_a_real_process(tmp_path: Path) -> None:
    """Through the console entry in a subprocess: exit code 2, one stderr line, nothing written."""
    root = tmp_path / "results"
    result = cli(root, "logger.mode=disabled", "algo=dqn", "env=pendulum")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "rl-tickets: error: algo=dqn needs a discrete action space"
    )
    assert not root.exists()


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUT, ids=[" ".join(o) for o, _ in BAD_INPUT])
def test_bad_input_one_line_nonzero_nothing_written(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    message: str,
) -> None:
    """Semantic errors through the same Hydra entry in-process: one clear line, exit 2, nothing written."""
    root = tmp_path / "results"
    monkeypatch.setattr(sys, "argv", ["rl-tickets", f"root={root}", "logger.mode=disabled", *overrides])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rl-tickets: error: ")
    assert message in lines[0]
    assert not root.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [(["algo=foo"], "Could not find 'algo/foo'"), (["prune.rate=abc"], "prune.rate")],
)
def test_hydra_rejects_unknown_options_and_wrong_types(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    """Unknown group options and wrongly typed values are Hydra's own errors (naming the choices)."""
    result = cli(tmp_path / "results", "logger.mode=disabled", *overrides)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "results" / "chains").exists()


@pytest.mark.parametrize(
    ("task", "shown", "hidden"),
    [
        ("rl", ["algo:", "env:", "zoo:", "  timesteps:"], ["model:", "data:", "  iterations:", "  lr:"]),
        (
            "supervised",
            ["model:", "data:", "  iterations:", "  lr:"],
            ["algo:", "env:", "zoo:", "  timesteps:"],
        ),
    ],
)
def test_help_names_the_app_and_shows_only_the_task(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    task: str,
    shown: list[str],
    hidden: list[str],
) -> None:
    """``--help`` is titled rl-tickets (not Hydra's ``__main__``) and lists only the chosen task's groups and keys."""
    monkeypatch.setattr(sys, "argv", ["rl-tickets", f"task={task}", "--help"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code in (0, None)
    text = capsys.readouterr().out
    assert text.startswith("rl-tickets: ") and "__main__" not in text
    lines = text.splitlines()  # top-level keys and groups at column 0, train.* indented by two
    for key in shown:
        assert any(line.startswith(key) for line in lines), key
    for key in hidden:
        assert not any(line.startswith(key) for line in lines), key
