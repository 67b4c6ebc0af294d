"""What produced a run: package versions, the git commit when run from a checkout, Python and hardware.

Recorded in meta.json's per-run history (:func:`run_record`) and in the W&B config, so a result can
be traced to the code and the machine behind it (RL runs are chaotic: the same seed gives other
returns on another machine). The settings that are not identity (evaluation, controls, workers,
threads, device, logging) are per run too: a chain's levels may have been trained by several runs
with different ones, so meta.json keeps them per run, never as a property of the chain, and each
level's metrics.json records what it was evaluated with.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from rl_tickets.config import Config

PACKAGES = {
    "rl_tickets": "rl-tickets",
    "torch": "torch",
    "stable_baselines3": "stable-baselines3",
    "gymnasium": "gymnasium",
    "numpy": "numpy",
}
# Settings that do not decide what a level trains: they belong to a run, not to the chain.
PER_RUN = (
    "eval",
    "controls",
    "workers",
    "threads",
    "device",
    "logger",
    "progress",
    "supermask",
    "transfer_from",
    "trust_pickles",
    "objective",
)
HISTORY = 100  # runs kept in meta.json


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


CHECKOUT = Path(__file__).resolve().parents[2]  # above the package: a checkout's root (editable install)


def git_commit(where: Path = CHECKOUT) -> str | None:
    """The checkout's commit (with ``+dirty`` when files differ from it), or None outside a checkout.

    :param where: the directory above the package (a checkout's root when installed in editable mode).
    """
    if not (where / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if commit and dirty else (commit or None)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def provenance() -> dict[str, Any]:
    """Versions, commit, Python, CPU and GPU of this process (computed once)."""
    return {
        "versions": {name: _version(dist) for name, dist in PACKAGES.items()},
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_settings(cfg: Config) -> dict[str, Any]:
    """The settings of this run that are not identity (:data:`PER_RUN`).

    :param cfg: the job config.
    """
    values = asdict(cfg)
    return {key: values[key] for key in PER_RUN if key in values}


def chain_config(cfg: Config) -> dict[str, Any]:
    """The config as meta.json records it for the chain: without the per-run settings.

    :param cfg: the job config.
    """
    return {key: value for key, value in asdict(cfg).items() if key not in PER_RUN}


def run_record(cfg: Config) -> dict[str, Any]:
    """One entry of meta.json's ``runs``: when first seen, with which per-run settings, on what.

    :param cfg: the job config.
    """
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"started": started, "settings": run_settings(cfg), **provenance()}


def with_run(runs: list[dict[str, Any]], record: dict[str, Any]) -> list[dict[str, Any]]:
    """``runs`` with ``record`` appended, unless the last run had the same settings on the same code and
    machine (a rerun that changes nothing leaves meta.json as it was; ``started`` is when it was first seen).

    :param runs: the history so far.
    :param record: this run's :func:`run_record`.
    """

    def same(run: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in run.items() if k != "started"}

    return (
        runs
        if runs and same(runs[-1]) == same(json.loads(json.dumps(record, default=str)))
        else [*runs, record]
    )


def runs_so_far(meta_path: Path) -> list[dict[str, Any]]:
    """The ``runs`` history of an existing meta.json (empty if there is none, or it is unreadable).

    :param meta_path: a chain's meta.json.
    """
    try:
        runs = json.loads(meta_path.read_text()).get("runs")
    except (OSError, ValueError, AttributeError):
        return []
    return [r for r in runs if isinstance(r, dict)][-(HISTORY - 1) :] if isinstance(runs, list) else []
