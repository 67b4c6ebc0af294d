"""Nothing outlives its parent: a SIGKILLed ``rl-tickets`` leaves no worker behind, a dead worker's level
is trained again in a fresh worker (a second death stops the run in one line), a level is published
only under its chain's lock, a waiting run says for which lock, and no temporary file survives a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tiny import tiny_config, tiny_ppo_args

from rl_tickets.chain.lock import Owner, locked
from rl_tickets.chain.runner import Runner
from rl_tickets.chain.store import COMPLETE, ChainPaths, PublishRefused, is_complete
from rl_tickets.chain.workers import Task, WorkerDied, WorkerPool
from rl_tickets.cli.resume import stopped_line
from rl_tickets.config import Config, PruneConfig, RewindConfig
from rl_tickets.trainers import build_trainer

REPO = Path(__file__).resolve().parents[1]
# workers=2 on a tiny PPO chain whose levels last a few seconds each (the kill lands in level 1).
WORKERS = ["logger.mode=disabled", *tiny_ppo_args(4096, 3), "controls=[reinit]", "workers=2"]


def children_of(pids: set[int]) -> set[int]:
    """Every live process below ``pids`` (children, grandchildren, ...), read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), set(pids)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def mentioning(text: str) -> set[int]:
    """Live processes whose command line contains ``text``."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.add(int(entry.name))
        except OSError:
            continue
    return {pid for pid in found if alive(pid) and pid != os.getpid()}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_sigkilled_parent_leaves_no_process_alive_after_10_s(tmp_path: Path) -> None:
    root = tmp_path / "results"
    process = subprocess.Popen(
        [sys.executable, "-m", "rl_tickets", f"root={root}", *WORKERS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 240
    # A pruned level being written means the pool's workers are training.
    while not list(root.glob("chains/*/seed_0/level_01/*.partial")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.02)
    descendants = children_of({process.pid})
    assert len(descendants) >= 2, descendants  # the two workers (spawned: no Manager, no fork server)
    process.kill()
    process.wait()
    deadline = time.monotonic() + 10
    while (
        left := {p for p in descendants if alive(p)} | mentioning(str(root))
    ) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, [(p, Path(f"/proc/{p}/cmdline").read_bytes()) for p in left if alive(p)]


def test_the_parent_watch_ends_a_worker_whose_parent_is_gone() -> None:
    """The fallback to PR_SET_PDEATHSIG: a worker told its parent is another process exits within seconds."""
    code = "from rl_tickets.chain.workers import _watch; _watch(-1)"
    done = subprocess.run([sys.executable, "-c", code], timeout=30, cwd=REPO)
    assert done.returncode == 1


def _die_once(marks: Path, key: tuple[int, str], outbox: Any) -> int:
    """A job that kills its own worker the first time it runs a key (and only that key, ``(2, "b")``)."""
    mark = marks / f"{key[0]}{key[1]}"
    if key == (2, "b") and not mark.exists():
        mark.write_text("")
        os.kill(os.getpid(), signal.SIGKILL)
    outbox.put(key)
    return key[0] * 2


def _always_die(key: tuple[int, str], outbox: Any) -> int:
    """A job whose worker always dies."""
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


def test_a_dead_workers_level_is_trained_again_in_a_fresh_worker(tmp_path: Path) -> None:
    from functools import partial

    tasks = [Task((1, "a")), Task((2, "b"), after=((1, "a"),)), Task((3, "c"), after=((2, "b"),))]
    done: list[tuple[tuple[int, str], int]] = []
    lines: list[str] = []
    with WorkerPool(2, threads=1, say=lines.append) as pool:
        first = {w.process.pid for w in pool._workers}
        pool.run(
            tasks,
            partial(_die_once, tmp_path),
            on_message=lambda m: None,
            on_done=lambda k, v: done.append((k, v)),
        )
        assert {w.process.pid for w in pool._workers} != first  # one worker was replaced
        workers = [w.process for w in pool._workers]
    assert done == [((1, "a"), 2), ((2, "b"), 4), ((3, "c"), 6)]
    assert lines == [
        "rl-tickets: a worker process died (killed by SIGKILL) while training level 2 b; "
        "training it again in a fresh worker"
    ]
    assert not any(p.is_alive() for p in workers)  # the pool stopped its workers on leaving


def test_a_level_whose_worker_dies_twice_stops_the_run_in_one_line(tmp_path: Path) -> None:
    lines: list[str] = []
    with WorkerPool(1, threads=1, say=lines.append) as pool:
        with pytest.raises(WorkerDied) as died:
            pool.run([Task((4, "reinit"))], _always_die, on_message=lambda m: None, on_done=lambda k, v: None)
    assert len(lines) == 1 and "level 4 reinit; training it again" in lines[0]
    cfg = Config(root=str(tmp_path))
    line = stopped_line(cfg, str(died.value), ["root=x", "workers=2"])
    assert line == (
        "rl-tickets: error: a worker process died (killed by SIGKILL) while training level 4 reinit, twice; "
        "nothing finished yet; resume with: rl-tickets root=x workers=2"
    )


def tiny(root: Path, **changes: Any) -> Config:
    """A tiny PPO chain of one pruned level."""
    hyper = {"n_steps": 64, "batch_size": 32, "n_epochs": 1}
    return tiny_config(
        root, "ppo", hyper, 128, RewindConfig(), PruneConfig(levels=1), net_arch=[8], **changes
    )


def test_a_level_is_published_only_while_its_lock_is_held(tmp_path: Path) -> None:
    """A worker whose parent lost the chain's lock (or died) leaves its level unpublished."""
    cfg = tiny(tmp_path)
    runner = Runner(cfg, build_trainer(cfg))
    runner.holdings.owners[runner.paths.dense] = Owner(
        "elsewhere", 1, "boot", "token"
    )  # not the lock's holder
    with pytest.raises(
        PublishRefused, match="level 0 ticket was not moved into place: this run no longer holds"
    ):
        runner.train_variant(0, "ticket")
    level = runner.paths.level(0, "ticket")
    assert not level.exists() and (level.with_name("ticket.partial") / COMPLETE).is_file()


def test_a_waiting_run_says_which_lock_and_the_run_leaves_no_temporary_file(tmp_path: Path) -> None:
    cfg = tiny(tmp_path / "results")
    paths = ChainPaths.of(cfg)
    lines: list[str] = []
    runner = Runner(cfg, build_trainer(cfg), say=lines.append)
    with locked(paths.chain):  # another job holds the chain
        worker = threading.Thread(target=runner.run)
        worker.start()
        deadline = time.monotonic() + 60
        while not lines and time.monotonic() < deadline:
            time.sleep(0.05)
    worker.join(120)
    assert lines and lines[0].startswith(f"waiting for the lock on {paths.chain} held by ")
    assert lines[0].endswith("(0 s so far)")
    assert is_complete(paths.level(1, "ticket"))
    # A writer killed between writing and renaming left temporaries: the next run removes them.
    planted = [
        paths.chain / "levels.csv.999999.1.tmp",
        paths.chain / "level_01" / "ticket" / "COMPLETE.9.9.tmp",
    ]
    for path in planted:
        path.write_text("half")
    Runner(cfg, build_trainer(cfg)).run()
    assert not list(cfg_root(cfg).rglob("*.tmp")) and not list(cfg_root(cfg).rglob(".lock*"))


def cfg_root(cfg: Config) -> Path:
    """The results root of a config."""
    return Path(cfg.root)


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_line(tmp_path: Path) -> None:
    """A run killed while holding the chain's lock leaves its lock file; the next run takes it over at
    once (its owner is provably dead on this host) and says so."""
    import json

    from rl_tickets.chain.lock import BOOT_ID, HOST, LOCK_NAME

    cfg = tiny(tmp_path / "results")
    paths = ChainPaths.of(cfg)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    paths.chain.mkdir(parents=True)
    record = {
        "host": HOST,
        "pid": int(dead.stdout),
        "boot_id": BOOT_ID,
        "token": "killed",
        "acquired": time.time(),
    }
    (paths.chain / LOCK_NAME).write_text(json.dumps(record))
    lines: list[str] = []
    Runner(cfg, build_trainer(cfg), say=lines.append).run()
    assert is_complete(paths.level(1, "ticket"))
    assert any(
        line.startswith(f"took over the lock on {paths.chain} held by {HOST}:{int(dead.stdout)}")
        and line.endswith(f"process {int(dead.stdout)} is gone")
        for line in lines
    ), lines
    assert not (paths.chain / LOCK_NAME).exists()
