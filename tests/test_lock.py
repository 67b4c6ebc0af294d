"""The shared-file-system lock: mutual exclusion across processes, stale takeovers, ownership checks."""

import dataclasses
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rl_tickets.chain.lock import (
    BOOT_ID,
    HOST,
    LOCK_NAME,
    LockNesting,
    LockTimeout,
    Owner,
    acquire,
    holds,
    is_held_by,
    locked,
    read_owner,
)

REPO = Path(__file__).resolve().parents[1]

# One contender: takes the lock (tiny heartbeat, stale after STALE s), marks its critical section in a
# shared file, holds it a while, then prints what on_wait was told.
WORKER = """
import sys, time
from pathlib import Path
from rl_tickets.chain.lock import locked
root, marks, name, hold = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
lines = []
with locked(root, on_wait=lines.append, heartbeat_s=0.05, stale_s=3.0, poll_s=0.01, report_s=0.1):
    with open(marks, "a") as out:
        out.write(f"start {name}\\n")
    time.sleep(hold)
    with open(marks, "a") as out:
        out.write(f"end {name}\\n")
print("\\n".join(lines), flush=True)
"""


def contender(root: Path, marks: Path, name: str, hold: float) -> subprocess.Popen[str]:
    """Start one WORKER process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", WORKER, str(root), str(marks), name, str(hold)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str]) -> str:
    """Wait for a contender; return what it printed."""
    out, _ = process.communicate(timeout=20)
    assert process.returncode == 0
    return out


def sections(marks: Path) -> list[str]:
    """The contenders' names in the order they held the lock, checking that no two sections overlap."""
    lines = marks.read_text().splitlines()
    assert len(lines) % 2 == 0
    names = []
    for start, end in zip(lines[::2], lines[1::2]):
        assert start.startswith("start ") and end == "end " + start[len("start ") :], lines
        names.append(start[len("start ") :])
    return names


def plant(root: Path, host: str = HOST, pid: int = 1, boot_id: str = BOOT_ID, age: float = 0.0) -> Path:
    """Write someone else's lock record into ``root``, its heartbeat ``age`` seconds old."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    record = {"host": host, "pid": pid, "boot_id": boot_id, "token": "theirs", "acquired": time.time() - age}
    path.write_text(json.dumps(record))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def dead_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_second_process_waits_for_the_first(tmp_path: Path) -> None:
    root, marks = tmp_path / "chain", tmp_path / "marks"
    first = contender(root, marks, "first", 0.6)
    deadline = time.monotonic() + 10
    while read_owner(root) is None:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.01)
    holder = read_owner(root)
    assert holder is not None and holder.pid == first.pid
    second = contender(root, marks, "second", 0.0)
    assert finish(first) == "\n"  # the first never waited
    told = finish(second).splitlines()
    assert sections(marks) == ["first", "second"]
    assert told[0].startswith(f"waiting for the lock on {root} held by {HOST}:{first.pid} since ")
    assert told[0].endswith("(0 s so far)") and len(told) >= 2  # and again every report_s
    assert list(root.iterdir()) == []  # released, no temporary files left


def test_lock_of_a_dead_process_is_taken_over_at_once(tmp_path: Path) -> None:
    root = tmp_path / "chain"
    pid = dead_pid()
    plant(root, pid=pid)
    told: list[str] = []
    start = time.monotonic()
    with locked(root, on_wait=told.append, stale_s=60, poll_s=0.01) as lock:
        assert time.monotonic() - start < 1.0
        assert read_owner(root) == lock.owner and lock.owner.pid == os.getpid()
    assert any(
        f"took over the lock on {root} held by {HOST}:{pid}" in line and "is gone" in line for line in told
    )
    assert list(root.iterdir()) == []


def test_lock_from_before_a_reboot_is_taken_over(tmp_path: Path) -> None:
    root = tmp_path / "chain"
    plant(root, pid=os.getppid(), boot_id="another-boot")  # the pid is alive, but not the same process
    told: list[str] = []
    with locked(root, on_wait=told.append, stale_s=60, timeout_s=2):
        pass
    assert any("rebooted" in line for line in told)


def test_old_heartbeat_from_another_host_is_taken_over(tmp_path: Path) -> None:
    root = tmp_path / "chain"
    plant(root, host="elsewhere.example", age=100)
    with locked(root, stale_s=60, timeout_s=1, poll_s=0.01) as lock:
        assert read_owner(root) == lock.owner
    plant(root, host="elsewhere.example")  # fresh now: stale once its heartbeat is stale_s old
    start = time.monotonic()
    with locked(root, heartbeat_s=0.05, stale_s=0.4, poll_s=0.01, timeout_s=5) as lock:
        assert 0.35 < time.monotonic() - start < 3
        assert read_owner(root) == lock.owner
    assert list(root.iterdir()) == []


def test_fresh_lock_of_another_host_is_not_taken_over(tmp_path: Path) -> None:
    root = tmp_path / "chain"
    path = plant(root, host="elsewhere.example", pid=os.getpid())
    before = path.read_text()
    with pytest.raises(LockTimeout, match=r"gave up after .* held by elsewhere\.example:"):
        acquire(root, stale_s=60, poll_s=0.01, timeout_s=0.3, on_wait=lambda line: None)
    assert path.read_text() == before
    assert sorted(p.name for p in root.iterdir()) == [LOCK_NAME]  # no temporary files left either


def test_an_unreadable_lock_file_only_goes_stale_by_age(tmp_path: Path) -> None:
    root = tmp_path / "chain"
    root.mkdir()
    (root / LOCK_NAME).write_text("")  # as the old flock scheme left it
    with pytest.raises(LockTimeout, match="unreadable"):
        acquire(root, stale_s=60, poll_s=0.01, timeout_s=0.2, on_wait=lambda line: None)
    os.utime(root / LOCK_NAME, (time.time() - 100, time.time() - 100))
    with locked(root, stale_s=60, timeout_s=1):
        pass
    assert list(root.iterdir()) == []


def test_is_held_by_names_one_acquisition(tmp_path: Path) -> None:
    root = tmp_path / "chain"
    with locked(root) as lock:
        owner = pickle.loads(pickle.dumps(lock.owner))  # as handed to a worker process
        assert is_held_by(root, owner) and lock.is_held() and holds(root)
        assert not is_held_by(root, dataclasses.replace(owner, token="another"))
        ask = "import sys, json; from pathlib import Path; "
        ask += "from rl_tickets.chain.lock import Owner, is_held_by; "
        ask += "print(is_held_by(Path(sys.argv[1]), Owner(**json.loads(sys.argv[2]))))"
        worker = subprocess.run(
            [sys.executable, "-c", ask, str(root), json.dumps(dataclasses.asdict(owner))],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            check=True,
        )
        assert worker.stdout.strip() == "True"
    assert not is_held_by(root, owner) and not holds(root) and read_owner(root) is None
    # The same acquisition by a process that has exited no longer holds it, even before a takeover.
    gone = Owner(HOST, dead_pid(), BOOT_ID, "gone")
    plant(root, pid=gone.pid).write_text(json.dumps({**dataclasses.asdict(gone), "acquired": 0}))
    assert read_owner(root) == gone and not is_held_by(root, gone)


def test_release_keeps_a_lock_taken_over_by_someone_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "chain"
    lock = acquire(root, heartbeat_s=0.02, stale_s=5)
    assert not lock.lost
    with caplog.at_level(logging.ERROR, logger="rl_tickets.chain.lock"):
        plant(root, host="elsewhere.example")  # as if we had stalled and been taken over
        deadline = time.monotonic() + 5
        while not lock.lost:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        lock.release()
    assert not lock.is_held() and not holds(root)
    theirs = read_owner(root)
    assert theirs is not None and theirs.host == "elsewhere.example"
    assert sum("lost the lock on" in r.getMessage() for r in caplog.records) == 1
    assert sorted(p.name for p in root.iterdir()) == [LOCK_NAME]


def test_racing_takeovers_of_one_stale_lock(tmp_path: Path) -> None:
    root, marks = tmp_path / "chain", tmp_path / "marks"
    plant(root, pid=dead_pid())
    racers = [contender(root, marks, f"racer{i}", 0.15) for i in range(4)]
    told = [finish(racer) for racer in racers]
    assert sorted(sections(marks)) == [f"racer{i}" for i in range(4)]  # each once, never two at a time
    assert sum(out.count("took over") for out in told) == 1
    assert list(root.iterdir()) == []


def test_nesting_in_one_thread_is_refused_other_threads_wait(tmp_path: Path) -> None:
    root = tmp_path / "chain"
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            acquire(root, poll_s=0.01, timeout_s=0.2, on_wait=lambda line: None)
        except BaseException as error:  # noqa: BLE001 (handed to the test thread)
            errors.append(error)

    with locked(root):
        with pytest.raises(LockNesting, match="already holds"):
            acquire(root)
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(errors) == 1 and isinstance(errors[0], LockTimeout)
    with locked(root):  # free again
        pass


def test_stale_must_exceed_heartbeat(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must exceed"):
        acquire(tmp_path, heartbeat_s=10, stale_s=5)
