"""A non-editable install (the built wheel in a fresh virtual environment) finds its package and configs."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_wheel_install_runs_the_default_job_config_from_another_directory(
    tmp_path: Path, built_wheel: Path
) -> None:
    """Every sub-package and the Hydra configs (conf/ as rl_tickets.conf) ship in the wheel."""
    env_dir = tmp_path / "venv"
    # System site packages provide the dependencies (torch, SB3, Hydra: nothing is downloaded); the
    # venv's own site-packages come first, so rl_tickets is imported from the wheel, not this checkout.
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    wheel = built_wheel
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import rl_tickets; print(rl_tickets.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(env_dir) in where, where
    job = subprocess.run(
        [str(env_dir / "bin" / "rl-tickets"), "--cfg", "job", f"root={tmp_path / 'results'}"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert job.returncode == 0, job.stderr
    assert "algo:\n  name: ppo" in job.stdout and "env:\n  name: cartpole" in job.stdout
