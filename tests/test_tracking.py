"""The W&B mirror: offline by default, disabled writes nothing, online without a key falls back offline;
runs are named, tagged and carry only their task's config (read back from the offline files); every
numeric SB3 value arrives, one name per metric, rows tagged with their level; TensorBoard and SB3
Monitor files per level."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from stable_baselines3.common.monitor import load_results
from tiny import tiny_config
from wandb_records import history_rows, of_type, offline_runs

from rl_tickets.chain.store import ChainPaths
from rl_tickets.cli.job import run_job
from rl_tickets.config import Config, ConfigError, EvalConfig, LoggerConfig, PruneConfig, RewindConfig
from rl_tickets.rl.callbacks import TENSORBOARD_DIR, SinkWriter, check_tensorboard
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


def test_each_eval_metric_has_one_wandb_name_and_curve_rows_carry_their_level(
    tmp_path: Path, offline: None
) -> None:
    """An evaluation row reaches W&B under SB3 EvalCallback's names only (never also under ours), NumPy
    scalars included, with its level, the level's own step and the cumulative global_step."""
    mirror = WandbMirror(LoggerConfig(mode="offline"), RunInfo(group="exp", seed=0), tmp_path)
    row = {
        "step": 640,
        "level": 2,
        "eval/return_mean": np.float32(50.0),
        "eval/return_std": 1.5,
        "eval/ep_length_mean": np.int64(50),
        "train/approx_kl": np.float32(0.25),
        "train/flag": True,  # a flag, not a metric
    }
    try:
        mirror.curve("ticket", offset=1000, start_step=512, row=row)
    finally:
        mirror.close()
    ((logged,),) = [history_rows(records) for records in offline_runs(tmp_path)]
    metrics = {k: v for k, v in logged.items() if not k.startswith("_")}
    assert metrics == {
        "global_step": 1128,
        "level_step": 640,
        "level": 2,
        "eval/mean_reward": 50.0,
        "eval/std_reward": 1.5,
        "eval/mean_ep_length": 50.0,
        "train/approx_kl": 0.25,
    }


def test_the_sink_writer_forwards_numpy_scalars_and_drops_flags_and_text() -> None:
    """SB3 logs NumPy scalars (np.float32 is no float): they reach the sink; booleans and strings do not."""
    rows: list[dict[str, object]] = []
    values = {
        "train/approx_kl": np.float32(0.125),
        "train/n_updates": np.int64(7),
        "time/fps": 300,
        "train/clip_range": 0.2,
        "train/tensor": torch.tensor(0.5),
        "train/flag": np.bool_(True),
        "train/bool": False,
        "train/text": "abc",
        "train/vector": np.ones(3),
    }
    SinkWriter(rows.append).write(values, dict.fromkeys(values), step=96)
    assert rows == [
        {
            "step": 96,
            "train/approx_kl": 0.125,
            "train/n_updates": 7.0,
            "time/fps": 300.0,
            "train/clip_range": 0.2,
            "train/tensor": 0.5,
        }
    ]


@pytest.fixture(scope="module")
def logged_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PPO chain (dense level 0 + level 1) trained by the job with W&B offline and TensorBoard on."""
    root = tmp_path_factory.mktemp("logged")
    cfg = tiny_config(
        root,
        "ppo",
        {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
        1024,
        RewindConfig(),
        PruneConfig(levels=1),
        n_envs=2,
        eval=EvalConfig(episodes=2, every=512),
        logger=LoggerConfig(mode="offline", tensorboard=True),
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("WANDB_MODE", raising=False)
        patch.setenv("WANDB_DATA_DIR", str(root / "wandb_data"))
        patch.setenv("WANDB_CACHE_DIR", str(root / "wandb_cache"))
        return run_job(cfg)


def level_dirs(chain: Path) -> dict[int, Path]:
    """The ticket's level directories of a chain (level 0 lives in the shared dense directory)."""
    meta = json.loads((chain / "meta.json").read_text())
    return {0: Path(meta["dense_dir"]) / "level_00" / "ticket", 1: chain / "level_01" / "ticket"}


def eval_curve(directory: Path) -> pd.DataFrame:
    """A level's eval_curve.csv."""
    return pd.read_csv(directory / "eval_curve.csv")


def test_every_numeric_sb3_value_reaches_wandb_with_its_level(logged_chain: Path) -> None:
    """Every column of each level's progress.csv (train/approx_kl included: an np.float32 in SB3) reaches
    the ticket's W&B run, in rows tagged with that level; evaluations arrive under SB3's names only, with
    the values and steps of eval_curve.csv, whose own columns stay as they were."""
    root = logged_chain.parents[2]
    runs = {of_type(records, "run")[0].job_type: history_rows(records) for records in offline_runs(root)}
    assert set(runs) == {"ticket"}
    rows = runs["ticket"]
    for level, directory in level_dirs(logged_chain).items():
        at_level = [row for row in rows if row.get("level") == level and "level_step" in row]
        logged_keys = {key for row in at_level for key in row}
        progress = pd.read_csv(directory / "progress.csv")
        assert "train/approx_kl" in progress.columns
        assert set(progress.columns) <= logged_keys, set(progress.columns) - logged_keys
        kl = [row["train/approx_kl"] for row in at_level if "train/approx_kl" in row]
        assert kl == pytest.approx(progress["train/approx_kl"].dropna().tolist(), rel=1e-6)
        curve = eval_curve(directory)
        assert list(curve.columns) == ["step", "eval/ep_length_mean", "eval/return_mean", "eval/return_std"]
        evaluations = [row for row in at_level if "eval/mean_reward" in row]
        assert [row["level_step"] for row in evaluations] == curve["step"].tolist()
        assert [row["eval/mean_reward"] for row in evaluations] == curve["eval/return_mean"].tolist()
        assert [row["eval/mean_ep_length"] for row in evaluations] == curve["eval/ep_length_mean"].tolist()
    assert not any(key in row for row in rows for key in ("eval/return_mean", "eval/ep_length_mean"))


def test_tensorboard_has_one_run_per_level_with_sb3_and_eval_scalars(logged_chain: Path) -> None:
    """logger.tensorboard=true: SB3's own writer fills <level>/<variant>/tensorboard with the progress.csv
    scalars and each evaluation under SB3's names at its step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for directory in level_dirs(logged_chain).values():
        events = list((directory / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
        assert len(events) == 1
        board = EventAccumulator(str(directory / TENSORBOARD_DIR))
        board.Reload()
        tags = set(board.Tags()["scalars"])
        assert {"train/approx_kl", "rollout/ep_rew_mean", "eval/mean_reward", "eval/mean_ep_length"} <= tags
        curve = eval_curve(directory)
        rewards = board.Scalars("eval/mean_reward")
        assert [e.step for e in rewards] == curve["step"].tolist()
        assert [e.value for e in rewards] == pytest.approx(curve["eval/return_mean"].tolist())


def test_each_level_writes_sb3_monitor_files(logged_chain: Path) -> None:
    """One <i>.monitor.csv per training sub-env in each level directory, as the zoo writes them: every
    finished training episode with its return and length (CartPole: return = length)."""
    for level, directory in level_dirs(logged_chain).items():
        assert sorted(p.name for p in directory.glob("*.monitor.csv")) == ["0.monitor.csv", "1.monitor.csv"]
        episodes = load_results(str(directory))
        assert len(episodes) > 0
        assert (episodes["r"] == episodes["l"]).all()
        trained = json.loads((directory / "metrics.json").read_text())["timesteps"]
        assert episodes["l"].sum() <= trained, level


def test_tensorboard_without_the_package_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        check_tensorboard()


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
