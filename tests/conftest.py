"""Suite-wide settings: no W&B traffic, and one torch thread (tiny nets on a shared 2-core machine run
several times faster single-threaded; spinning threads only contend)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from this checkout, once per test session (no download: the installed
    setuptools builds it); tests/test_install.py installs it, tests/test_packaging.py reads it."""
    out = tmp_path_factory.mktemp("wheel")
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(root)]
    subprocess.run([*command, "-w", str(out)], check=True, cwd=out)
    return next(out.glob("rl_tickets-*.whl"))
