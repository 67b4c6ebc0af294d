"""The W&B mirror: offline by default, disabled writes nothing, online without a key falls back offline;
runs are named, tagged and carry only their task's config (read back from the offline files)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from wandb_records import history_rows, of_type, offline_runs

from rl_tickets.chain.store import ChainPaths
from rl_tickets.config import Config, LoggerConfig
from rl_tickets.task_sections import OTHER_TASK_KEYS
from rl_tickets.tracking.mirror import RunInfo, WandbMirror, run_info
from rl_tickets.tracking.outage import BUDGET_S, Outage


def log_one_level(mode: str, root: Path, info: RunInfo | None = None, **settings: object) -> WandbMirror:
    """Open a mirror, log a level row and a curve point for two variants, and close it."""
    info = info or RunInfo(group="exp", seed=0, config={"seed": 0})
    mirror = WandbMirror(LoggerConfig(mode=mode, init_timeout=5, **settings), info, root)  # type: ignore[arg-type]
    try:
        for variant in ("ticket", "reinit"):
            mirror.level(variant, {"level": 1, "variant": variant, "density": 0.8, "eval_return_mean": 100.0})
            mirror.curve(variant, offset=1000, start_step=0, row={"step": 64, "eval/return_mean": 50.0})
    finally:
        mirror.close()
    return mirror


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """W&B offline, with its artifact staging and cache inside the test's directory."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))


def test_offline_writes_one_run_per_variant(tmp_path: Path, offline: None) -> None:
    """Offline mode needs no account and writes one local run per variant under the root."""
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
    tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No key: one clear line on stderr, then the run is logged offline (never lost)."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    mirror = log_one_level("online", tmp_path)
    assert mirror.mode == "offline"
    lines = [line for line in capsys.readouterr().err.splitlines() if "no API key" in line]
    assert len(lines) == 1
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("task", ["rl", "supervised"])
def test_offline_run_carries_only_its_task_config_a_name_and_tags(
    tmp_path: Path, offline: None, task: str
) -> None:
    """Read back from the offline files: no key of the other task, the chain hash and results path in the
    config, ``<name>/<variant>/s<seed>`` as the run name, and the tags."""
    cfg = Config(task=task, root=str(tmp_path), seed=3)
    paths = ChainPaths.of(cfg)
    log_one_level("offline", tmp_path, run_info(cfg, paths))
    runs = offline_runs(tmp_path)
    assert len(runs) == 2
    for records in runs:
        (run,) = of_type(records, "run")
        config = {u.key: json.loads(u.value_json) for u in run.config.update if u.key != "_wandb"}
        for key in OTHER_TASK_KEYS[task]:
            section, _, field = key.partition(".")
            assert (section not in config) if not field else (field not in config.get(section, {})), key
        assert config["task"] == task and config["seed"] == 3
        assert config["chain_hash"] == paths.chain.parent.name
        assert config["results"] == str(paths.chain.resolve())
        variant = run.job_type
        assert (
            run.display_name
            == f"{'lenet_300_100_mnist5k' if task == 'supervised' else 'ppo_cartpole'}/{variant}/s3"
        )
        learner = (
            ["model:lenet_300_100", "data:mnist5k"] if task == "supervised" else ["algo:ppo", "env:cartpole"]
        )
        assert list(run.tags) == [*learner, "scope:global", "retrain:rewind", f"variant:{variant}"]
    assert "iterations" in Config().train.__dict__  # the schema itself keeps every key


def test_eval_rows_also_carry_sb3_names(tmp_path: Path, offline: None) -> None:
    """Our eval/return_mean is logged beside SB3 EvalCallback's eval/mean_reward (same value)."""
    log_one_level("offline", tmp_path)
    for records in offline_runs(tmp_path):
        rows = [row for row in history_rows(records) if "eval/return_mean" in row]
        assert rows and all(row["eval/mean_reward"] == row["eval/return_mean"] == 50.0 for row in rows)


def test_artifacts_offline(tmp_path: Path, offline: None) -> None:
    """logger.artifacts=true: each logged level's model and mask become a version of the variant's
    artifact, aliased level-N, written offline."""
    level_dir = tmp_path / "level"
    level_dir.mkdir()
    torch.save({"w": torch.ones(2, dtype=torch.bool)}, level_dir / "mask.pt")
    (level_dir / "model.zip").write_bytes(b"zip")
    info = RunInfo(group="exp", seed=0, chain_hash="abcdef123456", level_dir=lambda level, variant: level_dir)
    log_one_level("offline", tmp_path, info, artifacts=True)
    artifacts = [a for records in offline_runs(tmp_path) for a in of_type(records, "artifact")]
    assert sorted(a.name for a in artifacts) == ["exp-abcdef12-s0-reinit", "exp-abcdef12-s0-ticket"]
    for artifact in artifacts:
        assert "level-1" in artifact.aliases and artifact.type == "model"
        assert sorted(e.path for e in artifact.manifest.contents) == ["mask.pt", "model.zip"]


@pytest.fixture
def hanging_server() -> Iterator[str]:
    """A W&B "server" on 127.0.0.1 that accepts connections and never answers (closed by the test)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)  # the accept loop checks for the end of the test this often
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        done.set()
        thread.join(timeout=5)
        server.close()
        for connection in accepted:
            connection.close()


def test_a_hanging_server_costs_one_bounded_wait_per_process(
    tmp_path: Path,
    offline: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    hanging_server: str,
) -> None:
    """Online against a server that never answers: one short probe, then every run of the process (two
    jobs of a multirun, two variants each) goes offline at once, into ROOT/wandb/offline-run-* (where
    `wandb sync` finds them), with no stray run-* directory."""
    monkeypatch.setenv("WANDB_BASE_URL", hanging_server)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    process = Outage()
    started = time.monotonic()
    for job in range(2):
        info = RunInfo(group="exp", seed=job, chain_hash="abcdef123456", config={"seed": job})
        mirror = WandbMirror(LoggerConfig(mode="online", init_timeout=15), info, tmp_path, outage=process)
        mirror.level("ticket", {"level": 0, "variant": "ticket", "density": 1.0, "eval_return_mean": 1.0})
        mirror.level("reinit", {"level": 1, "variant": "reinit", "density": 0.8, "eval_return_mean": 1.0})
        mirror.close()
        assert mirror.mode == "offline"
    elapsed = time.monotonic() - started
    assert elapsed < BUDGET_S, f"{elapsed:.1f}s"
    assert process.down == {hanging_server}
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("wandb: the server")]
    assert len(notes) == 2 and "does not answer" in notes[0] and "wandb sync" in notes[0]  # one line per job
    assert "failed earlier in this process" in notes[1]
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 4
    assert not list((tmp_path / "wandb").glob("run-*"))


def test_runs_have_deterministic_ids_so_two_processes_share_one_run(tmp_path: Path, offline: None) -> None:
    """Two jobs sharing a chain (or a later extension) log a variant under the same run id (resumed)."""
    info = RunInfo(group="exp", seed=0, chain_hash="abcdef123456")
    log_one_level("offline", tmp_path, info)
    time.sleep(1.1)  # offline directories are named by the second
    log_one_level("offline", tmp_path, info)
    ids = [run.name.rsplit("-", 4)[-4:] for run in (tmp_path / "wandb").glob("offline-run-*")]
    assert len(ids) == 4 and len({"-".join(i) for i in ids}) == 2
    assert info.run_id("ticket") != info.run_id("reinit")
    assert info.run_id("ticket") != RunInfo(group="other", seed=0, chain_hash="abcdef123456").run_id("ticket")


def test_an_empty_wandb_mode_counts_as_unset(
    tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "")
    log_one_level("offline", tmp_path)
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2


def test_an_interrupted_job_finishes_its_runs_with_its_exit_code(tmp_path: Path, offline: None) -> None:
    mirror = WandbMirror(LoggerConfig(mode="offline"), RunInfo(group="exp", seed=0), tmp_path)
    mirror.level("ticket", {"level": 0, "variant": "ticket", "density": 1.0, "eval_return_mean": 1.0})
    mirror.close(exit_code=130)
    ((run,),) = [of_type(records, "exit") for records in offline_runs(tmp_path)]
    assert run.exit_code == 130
