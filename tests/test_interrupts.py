"""Stopping a real ``rl-tickets`` process: Ctrl-C and SIGTERM end in one line that says what was
interrupted, what is kept and how to resume (exit 130/143, no traceback, W&B run marked as such); the
rerun says where it resumes; SIGKILLs at random moments lose nothing (the rerun equals a run that was
never interrupted)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny import levels_without_time, tiny_ppo_args
from wandb_records import of_type, offline_runs

from rl_tickets.cli.stops import interrupts, raise_pending
from rl_tickets.sparsity.masks import load_mask

TINY = [*tiny_ppo_args(1024, 2), "controls=[reinit]"]


def environment(tmp_path: Path) -> dict[str, str]:
    """W&B offline, its staging and cache under the test's directory."""
    return {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DATA_DIR": str(tmp_path / "wandb_data"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"),
    }


def start(root: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m rl_tickets root=<root> <TINY> <extra>`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "rl_tickets", f"root={root}", *TINY, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def chain_dir(root: Path) -> Path:
    """The one chain under a results root."""
    (chain,) = root.glob("chains/*/seed_0")
    return chain


def masks(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every finished level's mask under a root, by path relative to the root."""
    return {str(p.relative_to(root)): load_mask(p) for p in sorted(root.glob("*/*/seed_0/level_*/*/mask.pt"))}


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_ends_in_one_line_that_says_how_to_resume(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    root = tmp_path / "results"
    env = environment(tmp_path)
    process = start(root, "logger.mode=offline", env=env)
    deadline = time.monotonic() + 120
    while not list(root.glob("chains/*/seed_0/levels.csv")):  # written as soon as level 0 is done
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err[-2000:]
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("rl-tickets:")]
    chain = chain_dir(root)
    pattern = (
        rf"rl-tickets: interrupted \({signum.name}\) (during level (\d) (ticket|reinit)|before level (\d)); "
        rf"levels? 0(\.\.\d)?(; level \d [a-z, ]+)? kept in {re.escape(str(chain))}.*; "
        rf"resume with: rl-tickets root={re.escape(str(root))} "
    )
    assert re.match(pattern, line), line
    assert [row["level"] for row in levels_without_time(chain / "levels.csv")][:1] == ["0"]
    # W&B records the run as interrupted, not as finished with exit code 0.
    exits = [of_type(records, "exit") for records in offline_runs(root)]
    assert exits and all(e and e[0].exit_code == code for e in exits)
    if signum == signal.SIGINT:
        again = start(root, "logger.mode=disabled", env=env)
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, err[-2000:]
        assert re.search(r"^resuming at level [12] \(levels? 0(\.\.1)? done\)$", out, re.M), out


def partials(root: Path) -> set[tuple[Path, int]]:
    """The ``.partial`` level directories under a root, with their creation times.

    The run creates and removes directories while this scans (its write probe, levels renamed into
    place), so a directory vanishing mid-scan restarts the scan instead of failing the test."""
    while True:
        found = set()
        try:
            for path in root.glob("*/*/seed_0/level_*/*.partial"):
                try:
                    found.add((path, path.stat().st_ctime_ns))
                except FileNotFoundError:  # renamed into place meanwhile
                    continue
        except FileNotFoundError:  # a directory glob was listing went away: scan again
            continue
        return found


def run_until_training(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], float]:
    """Start a run; return it once it writes a level (a new ``.partial`` directory) or ends, and the time."""
    stale = partials(root)  # a killed run's leftovers: the new run removes and recreates them
    process = start(root, "logger.mode=disabled", env=env)
    while process.poll() is None and not partials(root) - stale:
        time.sleep(0.005)
    return process, time.monotonic()


def test_sigkills_at_random_moments_lose_nothing(tmp_path: Path) -> None:
    """Five SIGKILLs at random moments of the training of a tiny PPO chain with a control (imports and
    startup excluded, where a kill proves nothing), each followed by a rerun, then a rerun to the end:
    levels.csv (times aside) and every mask equal an uninterrupted run's."""
    env = environment(tmp_path)
    reference = tmp_path / "reference"
    whole, began = run_until_training(reference, env)
    _, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err[-2000:]
    training = time.monotonic() - began

    root = tmp_path / "killed"
    moments = random.Random(0)
    for _ in range(5):
        process, _ = run_until_training(root, env)
        time.sleep(
            moments.uniform(0.02, 0.3) * training
        )  # within about a level: each run gets a little further
        process.kill()
        process.communicate()
    final = start(root, "logger.mode=disabled", env=env)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-2000:]

    assert not list(root.rglob("*.partial")) and not list(root.rglob("*.corrupt-*"))
    ours, theirs = chain_dir(root), chain_dir(reference)
    assert ours.relative_to(root) == theirs.relative_to(reference)
    assert levels_without_time(ours / "levels.csv") == levels_without_time(theirs / "levels.csv")
    assert (ours / "layers.csv").read_text() == (theirs / "layers.csv").read_text()
    mine, expected = masks(root), masks(reference)
    assert mine.keys() == expected.keys() and len(mine) == 5  # dense + 2 levels x (ticket, reinit)
    assert all(torch.equal(mine[k][n], expected[k][n]) for k in mine for n in mine[k])


def test_the_interrupt_line_names_every_level_kept(tmp_path: Path) -> None:
    """Level 1's ticket finished while its control was cut short: both the dense level and that ticket
    are named as kept (not just "level 0")."""
    from rl_tickets.chain.store import COMPLETE, ChainPaths
    from rl_tickets.cli.resume import interrupted_line
    from rl_tickets.config import Config

    cfg = Config(root=str(tmp_path), controls=["reinit"])
    paths = ChainPaths.of(cfg)
    for level, variant in [(0, "ticket"), (1, "ticket")]:
        paths.level(level, variant).mkdir(parents=True)
        (paths.level(level, variant) / COMPLETE).write_text("")
    paths.level(1, "reinit.partial").mkdir(parents=True)
    line = interrupted_line(cfg, "SIGINT", ["root=x"])
    assert line == (
        f"rl-tickets: interrupted (SIGINT) during level 1 reinit; level 0; level 1 ticket kept in {paths.chain} "
        "(the level in progress restarts); resume with: rl-tickets root=x"
    )


def test_a_level_found_on_disk_says_found_not_a_training_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Resumed levels are reported as found (their numbers, no elapsed time or steps/s)."""
    from rl_tickets.cli.job import Progress
    from rl_tickets.config import Config

    progress = Progress(Config(), "eval_return_mean", 1000, live=False)
    row = {"density": 0.8, "eval_return_mean": 500.0, "steps_per_s": 1234.0}
    progress(1, "ticket", row, trained=False)
    progress(2, "ticket", row, trained=True)
    found, trained = capsys.readouterr().out.splitlines()
    assert found == "[ppo_cartpole seed=0] level 1/3 ticket        found: density=0.8000 eval_return_mean=500"
    assert "elapsed" in trained and "1234 steps/s" in trained and "found" not in trained


class _SignalsWhileCollected:
    """An object whose ``__del__`` receives a signal: Python prints "Exception ignored" and goes on."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowing, on purpose
def test_an_interrupt_swallowed_in_a_finalizer_is_raised_again() -> None:
    """W&B's teardown runs weakref callbacks; an interrupt landing there must still stop the job."""
    before = signal.getsignal(signal.SIGINT)
    with interrupts():
        raise_pending()  # nothing pending: nothing raised
        _SignalsWhileCollected()  # collected at once: the KeyboardInterrupt is swallowed
        with pytest.raises(KeyboardInterrupt):
            raise_pending()
        raise_pending()  # raised once only
    assert signal.getsignal(signal.SIGINT) is before
