"""Every bad input is refused before anything trains: exit 2, one line on stderr, nothing under the
results root but Hydra's own directory; Hydra's own errors too; ``prune.overrides`` as the README
writes it works; OS errors the user can fix are one line."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rl_tickets.__main__ import main
from rl_tickets.cli import command_line, preflight
from rl_tickets.cli.stops import os_error_line

TINY = ["logger.mode=disabled", "train.timesteps=512", "eval.episodes=1"]

BAD = [
    (["seed=-1"], "seed=-1 must lie in [0, 2147483647]"),
    (["env.n_envs=0"], "env.n_envs=0 must be >= 1"),
    (["threads=-1"], "threads=-1 must be >= 0"),
    (["algo.hyperparams.n_steps=0"], "algo.hyperparams.n_steps=0 must lie in [1, 1e7]"),
    (
        ["algo.hyperparams.n_steps=1", "env.n_envs=1"],
        "algo=ppo cannot be built with algo.hyperparams.n_steps=1, env.n_envs=1",
    ),
    (["algo.hyperparams.batch_size=1"], "algo=ppo cannot be built with algo.hyperparams.batch_size=1"),
    (["algo.hyperparams.learning_rate=nan"], "algo.hyperparams.learning_rate=nan must be a finite number"),
    (["name="], "name= is empty"),
    (["name=" + "x" * 5000], "name has 5000 characters"),
    (["name=a/b"], "may not contain '/'"),
    (["name=.."], "may not contain '/'"),
    (["+unknown_key=1"], "unknown key(s) unknown_key"),
    (["experiment=does_not_exist"], "experiment=does_not_exist is not a preset; choose one of: gmp_a2c"),
    (['prune.exclude=["("]'], "prune.exclude: '(' is not a valid regular expression"),
    (["prune.exclude=[.*]"], "excludes every prunable layer; nothing is left to prune"),
    (
        ["prune.exclude=[nothing]"],
        "prune.exclude: 'nothing' matches no prunable layer of ppo_cartpole; they are: ",
    ),
    (["prune.overrides={nothing: 0.1}"], "prune.overrides: 'nothing' matches no prunable layer"),
    (["algo=dqn", "env=pendulum"], "needs a discrete action space but env=pendulum (Pendulum-v1) has Box"),
    (["algo=dqn", "env=pendulum"], "; use ppo, a2c, sac or td3"),
    (["algo=sac", "env=cartpole"], "; use ppo, a2c or dqn"),
    # Hydra's own errors: one line too
    (
        ["prune.rate=abc"],
        "Error merging override prune.rate=abc; Value 'abc' of type 'str' could not be converted",
    ),
    (["unknown_key=1"], "Could not override 'unknown_key'. Key 'unknown_key' not in 'Config'"),
    (["algo=foo"], "Could not find 'algo/foo'; Available options in 'algo': a2c, dqn, ppo, sac, td3"),
    (["prune.exclude=[("], "no viable alternative at input '[('"),
]
if not torch.cuda.is_available():
    BAD.append((["device=cuda"], "device=cuda but this machine has"))


def refused(
    root: Path, argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> str:
    """Run the console entry in-process; assert exit 2 and one stderr line; return that line."""
    monkeypatch.setattr(sys, "argv", ["rl-tickets", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("rl-tickets: error: ")
    return lines[0]


def nothing_written(root: Path) -> bool:
    """Nothing under root except (possibly) Hydra's own directory."""
    return not root.exists() or {p.name for p in root.iterdir()} <= {"hydra"}


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[" ".join(o)[:40] for o, _ in BAD])
def test_bad_input_is_one_line_exit_2_before_training(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    overrides: list[str],
    message: str,
) -> None:
    root = tmp_path / "results"
    line = refused(root, [f"root={root}", *TINY, *overrides], capsys, monkeypatch)
    assert message in line
    assert "Traceback" not in line
    assert nothing_written(root)


@pytest.mark.parametrize(
    ("below", "message"),
    [(None, "root= is empty"), ("file", "is a file, not a directory"), ("file/sub", "cannot be created")],
    ids=["empty", "a-file", "below-a-file"],
)
def test_a_root_that_cannot_hold_results_is_refused_before_hydra_writes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    below: str | None,
    message: str,
) -> None:
    (tmp_path / "file").write_text("")
    root = "" if below is None else str(tmp_path / below)
    line = refused(tmp_path, [f"root={root}", *TINY], capsys, monkeypatch)
    assert message in line
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_a_read_only_root_is_named_as_such(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """(Simulated: tests may run as root, who can write anywhere but on a read-only file system.)"""
    monkeypatch.setattr(preflight.os, "access", lambda path, mode: False)
    monkeypatch.setattr(preflight.os, "statvfs", lambda path: SimpleNamespace(f_flag=os.ST_RDONLY))
    with pytest.raises(preflight.ConfigError, match=r"is not writable \(read-only file system: "):
        preflight.check_root(str(tmp_path / "results"))


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (errno.ENOSPC, "free some space"),
        (errno.EROFS, "writable file system"),
        (errno.EACCES, "you can write to"),
        (errno.ENOTDIR, "is a file"),
    ],
)
def test_os_errors_the_user_can_fix_are_one_line(code: int, advice: str) -> None:
    line = os_error_line(OSError(code, os.strerror(code), "/results/level_01/ticket.partial/model.zip"))
    assert line is not None and "\n" not in line
    assert line.startswith(f"rl-tickets: error: {os.strerror(code)}: /results/") and advice in line
    assert os_error_line(OSError(errno.ENOENT, "No such file")) is None  # a bug, not the user's: traceback


def test_a_full_disk_mid_run_is_one_line_and_leaves_nothing_marked_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while a level is saved: one line, exit 2, and the level stays a .partial (a rerun retrains it)."""
    from rl_tickets.chain import levels

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "mask.pt")

    monkeypatch.setattr(levels, "save_mask", full)
    root = tmp_path / "results"
    line = refused(
        root, [f"root={root}", *TINY, "algo.hyperparams.n_steps=32", "prune.levels=0"], capsys, monkeypatch
    )
    assert "No space left on device" in line and "free some space" in line
    assert not list(root.rglob("COMPLETE")) and list(root.rglob("ticket.partial"))


def test_prune_overrides_as_the_readme_writes_it_merges_into_the_presets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert command_line.rewrite(["prune.overrides={a: 0.1}", "+prune.overrides={b: 0.2}", "x=1"]) == [
        "++prune.overrides={a: 0.1}",
        "++prune.overrides={b: 0.2}",
        "x=1",
    ]
    for preset, expected in [
        ([], "  overrides:\n    action_net: 0.1\n"),
        (["experiment=lth_lenet_mnist5k"], "    action_net: 0.1\n"),
    ]:
        monkeypatch.setattr(
            sys, "argv", ["rl-tickets", *preset, "prune.overrides={action_net: 0.1}", "--cfg", "job"]
        )
        with _no_exit():
            main()
        shown = capsys.readouterr().out
        assert expected in shown
        if preset:  # the preset's own pattern stays beside the new one
            assert "^classifier\\.4\\.weight$: 0.1" in shown


class _no_exit:
    """A context that lets ``main()`` return or exit 0 (``--cfg`` prints and exits)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, value: BaseException | None, tb: object) -> bool:
        return kind is SystemExit and getattr(value, "code", 0) in (0, None)


def test_hydra_full_error_keeps_hydras_own_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """With HYDRA_FULL_ERROR=1 (the user's choice) Hydra's error propagates unchanged."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["rl-tickets", "logger.mode=disabled", "algo=foo"])
    with pytest.raises(Exception, match="Could not find 'algo/foo'"):
        main()
