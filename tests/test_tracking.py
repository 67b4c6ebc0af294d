"""The W&B mirror: offline by default, disabled writes nothing, online without a key falls back offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl_tickets.config import LoggerConfig
from rl_tickets.tracking import WandbMirror


def log_one_level(mode: str, root: Path) -> WandbMirror:
    """Open a mirror, log a level row and a curve point for two variants, and close it."""
    mirror = WandbMirror(LoggerConfig(mode=mode, init_timeout=5), "exp", "chain-s0", {"seed": 0}, root)
    try:
        for variant in ("ticket", "reinit"):
            mirror.level(variant, {"level": 1, "variant": variant, "density": 0.8, "eval_return_mean": 100.0})
            mirror.curve(variant, offset=1000, start_step=0, row={"step": 64, "eval/return_mean": 50.0})
    finally:
        mirror.close()
    return mirror


def test_offline_writes_one_run_per_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode needs no account and writes one local run per variant under the root."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    log_one_level("offline", tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    assert all(list(run.glob("*.wandb")) for run in runs)


def test_disabled_writes_nothing(tmp_path: Path) -> None:
    """Disabled mode opens no run and writes no file."""
    mirror = log_one_level("disabled", tmp_path)
    assert mirror.runs == {}
    assert not (tmp_path / "wandb").exists()


def test_online_without_api_key_says_so_and_continues_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No key: one clear line on stderr, then the run is logged offline (never lost)."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    mirror = log_one_level("online", tmp_path)
    assert mirror.mode == "offline"
    lines = [line for line in capsys.readouterr().err.splitlines() if "no API key" in line]
    assert len(lines) == 1
    assert list((tmp_path / "wandb").glob("offline-run-*"))
