"""Finished levels are verified before they are trusted: a damaged one (file deleted, truncated or
edited) is moved aside with one line and trained again with everything built on it; legacy levels (an
empty COMPLETE) stay trusted; levels.csv is current after every level; identity refusals say what differs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from test_runner import Killed, all_masks, spy, tiny_cfg, tree
from tiny import levels_without_time

from rl_tickets.chain.manifest import MARKER, REJECTED, problem, write_complete
from rl_tickets.chain.runner import Runner
from rl_tickets.chain.store import ChainPaths
from rl_tickets.cli.resume import resuming_line
from rl_tickets.config import ConfigError

EVERYTHING = [(0, "ticket"), (1, "ticket"), (1, "reinit"), (2, "ticket"), (2, "reinit")]


def damage(path: Path, how: str) -> None:
    """Delete, truncate or edit one byte of a file."""
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


def test_manifest_lists_every_file_and_catches_each_kind_of_damage(tmp_path: Path) -> None:
    level = tmp_path / "level"
    (level / "sub").mkdir(parents=True)
    (level / "a.bin").write_bytes(b"abc" * 100)
    (level / "sub" / "b.txt").write_text("hello")
    write_complete(level)
    record = json.loads((level / MARKER).read_text())
    assert sorted(record["files"]) == ["a.bin", "sub/b.txt"] and record["upstream"] is None
    assert problem(level) is None
    for how, words in [("edit", "sha256 differs"), ("truncate", "bytes"), ("delete", "missing")]:
        broken = tmp_path / how
        shutil.copytree(level, broken)
        damage(broken / "a.bin", how)
        assert words in (problem(broken) or ""), how
    (level / MARKER).write_text("")  # written before manifests: trusted as it is
    (level / "a.bin").unlink()
    assert problem(level) is None


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted chain (2 levels, ticket + reinit), never damaged: what every repair must equal."""
    root = tmp_path_factory.mktemp("reference")
    cfg = tiny_cfg(root, levels=2, controls=["reinit"])
    Runner(cfg, spy(cfg)).run()
    return root


@pytest.mark.parametrize(
    ("level", "variant", "name", "how", "retrained"),
    [
        (0, "ticket", "metrics.json", "edit", EVERYTHING),
        (1, "ticket", "model.zip", "delete", EVERYTHING[1:]),
        (2, "ticket", "mask.pt", "truncate", EVERYTHING[3:]),
        (1, "reinit", "model.zip", "edit", [(1, "reinit")]),
    ],
    ids=["dense-edited", "ticket1-model-deleted", "ticket2-mask-truncated", "control-edited"],
)
def test_a_damaged_level_is_moved_aside_and_retrained_with_what_depends_on_it(
    reference: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    level: int,
    variant: str,
    name: str,
    how: str,
    retrained: list[tuple[int, str]],
) -> None:
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    cfg = tiny_cfg(tmp_path, levels=2, controls=["reinit"])
    paths = ChainPaths.of(cfg)
    damaged = paths.level(level, variant)
    damage(damaged / name, how)

    rerun = spy(cfg)
    with caplog.at_level(logging.WARNING, logger="rl_tickets.chain.manifest"):
        Runner(cfg, rerun).run()
    assert rerun.calls == retrained
    # One line per level moved aside: the damaged one, then each level built on it (stale).
    lines = [r.getMessage() for r in caplog.records if "failed verification" in r.getMessage()]
    assert lines[0].startswith(f"rl-tickets: level {level} {variant} failed verification: {name}")
    assert len(lines) == len(retrained) and all("built from" in line for line in lines[1:])
    (aside,) = damaged.parent.glob(f"{variant}.corrupt-*")
    assert (aside / REJECTED).exists() and not (aside / MARKER).exists()
    # Repaired, the chain equals the one that was never damaged (CPU runs are deterministic).
    ref = ChainPaths.of(tiny_cfg(reference, levels=2, controls=["reinit"]))
    assert levels_without_time(paths.chain / "levels.csv") == levels_without_time(ref.chain / "levels.csv")
    ours, theirs = all_masks(paths, 2), all_masks(ref, 2)
    assert all(torch.equal(ours[lv][n], theirs[lv][n]) for lv in ours for n in ours[lv])
    # And a second rerun trusts everything: nothing trained, nothing moved.
    again = spy(cfg)
    Runner(cfg, again).run()
    assert again.calls == []
    assert len(list(damaged.parent.glob(f"{variant}.corrupt-*"))) == 1


def test_levels_without_a_manifest_stay_trusted(reference: Path, tmp_path: Path) -> None:
    """Results written before manifests (an empty COMPLETE) are trusted as they are: nothing retrains."""
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    for marker in tmp_path.rglob(MARKER):
        marker.write_text("")
    cfg = tiny_cfg(tmp_path, levels=2, controls=["reinit"])
    before = tree(tmp_path)
    again = spy(cfg)
    Runner(cfg, again).run()
    assert again.calls == []
    changed = {k for k, v in tree(tmp_path).items() if before.get(k) != v}
    assert changed == {
        str(ChainPaths.of(cfg).chain.relative_to(tmp_path) / "meta.json")
    }  # it records the root


def test_levels_csv_is_current_after_every_level(tmp_path: Path) -> None:
    """A chain killed during level 2 already has the rows of levels 0 and 1 (and their layers)."""
    cfg = tiny_cfg(tmp_path, levels=3)
    with pytest.raises(Killed):
        Runner(cfg, spy(cfg, kill_at=2)).run()
    chain = ChainPaths.of(cfg).chain
    assert [row["level"] for row in levels_without_time(chain / "levels.csv")] == ["0", "1"]
    assert {line.split(",")[0] for line in (chain / "layers.csv").read_text().splitlines()[1:]} == {"0", "1"}


def test_an_identity_refusal_names_the_keys_that_differ_and_both_values(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path)
    chain = ChainPaths.of(cfg).chain
    chain.mkdir(parents=True)
    recorded = {"algo.name": "dqn", "prune.rate": 0.5, "seed": 0, "task": "rl"}
    (chain / "identity.json").write_text(json.dumps(recorded))
    with pytest.raises(ConfigError) as refused:
        Runner(cfg, spy(cfg)).run()
    message = str(refused.value)
    assert 'algo.name: recorded "dqn", now "ppo"' in message
    assert "prune.rate: recorded 0.5, now the default" in message
    assert "\n" not in message


def test_the_report_warns_and_skips_only_what_is_damaged(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """rl-tickets-report: a missing model is noticed and only its level left out; an edited identity.json
    is named (its numbers still reported)."""
    from rl_tickets.report.loading import load_chain
    from rl_tickets.report.masks import mask_levels

    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    paths = ChainPaths.of(tiny_cfg(tmp_path, levels=2, controls=["reinit"]))
    (paths.level(2, "ticket") / "model.zip").unlink()
    identity = json.loads((paths.chain / "identity.json").read_text())
    (paths.chain / "identity.json").write_text(json.dumps({**identity, "prune.rate": 0.5}))

    chain = load_chain(paths.chain)
    assert chain is not None
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == 2
    assert "identity.json hashes to" in notes[0] and str(paths.chain) in notes[0]
    assert (
        notes[1].startswith("rl-tickets-report: skipping level 2 ticket")
        and "model.zip is missing" in notes[1]
    )
    kept = list(zip(chain.levels["level"], chain.levels["variant"]))
    assert kept == [(0, "ticket"), (1, "ticket"), (1, "reinit"), (2, "reinit")]
    assert (
        set(chain.layers["level"]) == {0, 1, 2}
        and not ((chain.layers["level"] == 2) & (chain.layers["variant"] == "ticket")).any()
    )
    assert mask_levels(chain) == [1]


def test_export_refuses_a_damaged_level(reference: Path, tmp_path: Path) -> None:
    from rl_tickets.export import ExportError
    from rl_tickets.export.level import read_level

    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    level = ChainPaths.of(tiny_cfg(tmp_path, levels=2, controls=["reinit"])).level(1, "ticket")
    assert read_level(level).algo == "ppo"
    damage(level / "model.zip", "edit")
    with pytest.raises(ExportError, match="failed verification: model.zip changed"):
        read_level(level)


def _recompute(directory: Path, paths: ChainPaths, level: int) -> None:
    """Recompute a level's manifest after an edit (what someone crafting a folder would do)."""
    write_complete(directory, paths.level(level - 1, "ticket") if level else None)


def _garbage_model(directory: Path) -> None:
    (directory / "model.zip").write_bytes(b"not a zip")
    (directory / MARKER).write_text("")  # written before manifests: trusted as it is


def _float_mask(directory: Path) -> None:
    torch.save(
        {n: m.float() for n, m in torch.load(directory / "mask.pt", weights_only=True).items()},
        directory / "mask.pt",
    )


def _wrong_shape_mask(directory: Path) -> None:
    mask = torch.load(directory / "mask.pt", weights_only=True)
    name = next(iter(mask))
    mask[name] = torch.ones(3, 3, dtype=torch.bool)
    torch.save(mask, directory / "mask.pt")


@pytest.mark.parametrize(
    ("edit", "legacy", "reason"),
    [
        (_garbage_model, True, "model.zip: not a readable zip"),
        (_float_mask, False, "mask.pt holds a torch.float32 mask for"),
        (_wrong_shape_mask, False, "mask.pt has shape (3, 3) for"),
    ],
    ids=["legacy-model-not-a-zip", "mask-of-floats", "mask-of-other-shapes"],
)
def test_a_level_that_does_not_load_or_match_is_moved_aside_and_retrained(
    reference: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, edit: Any, legacy: bool, reason: str
) -> None:
    """Never a stuck chain: a level whose files pass their manifest (recomputed, or a legacy empty one)
    but do not load or do not fit the network is treated like a damaged one; the rerun after trusts all."""
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    cfg = tiny_cfg(tmp_path, levels=2, controls=["reinit"])
    paths = ChainPaths.of(cfg)
    level = paths.level(1, "ticket")
    edit(level)
    if not legacy:
        _recompute(level, paths, 1)
    seen: list[str | None] = []
    rerun = spy(cfg)
    with caplog.at_level(logging.WARNING, logger="rl_tickets.chain.manifest"):
        Runner(cfg, rerun, on_verified=lambda: seen.append(resuming_line(cfg))).run()
    assert rerun.calls == EVERYTHING[1:]
    lines = [r.getMessage() for r in caplog.records if "failed verification" in r.getMessage()]
    assert lines[0].startswith(f"rl-tickets: level 1 ticket failed verification: {reason}")
    # Said after the damaged level was moved aside: where the run really resumes, not "all done".
    assert seen == ["resuming at level 1 (level 0 done)"]
    again = spy(cfg)
    Runner(cfg, again).run()
    assert again.calls == []


def test_a_truncated_identity_is_one_line(reference: Path, tmp_path: Path) -> None:
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    cfg = tiny_cfg(tmp_path, levels=2, controls=["reinit"])
    record = ChainPaths.of(cfg).chain / "identity.json"
    record.write_text(record.read_text()[:20])
    with pytest.raises(ConfigError) as refused:
        Runner(cfg, spy(cfg)).run()
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{record} is unreadable (")
    assert "restore it, or move the directory away" in message


def test_the_report_skips_every_level_built_on_a_retrained_one_and_a_damaged_dense_level(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rl_tickets.report.loading import load_chain

    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    paths = ChainPaths.of(tiny_cfg(tmp_path, levels=2, controls=["reinit"]))
    # Level 1's ticket "retrained": a new manifest. Level 2's ticket was built from the old one (stale),
    # and the controls at levels 1 and 2 from tickets that are not theirs any more.
    metrics = paths.level(1, "ticket") / "metrics.json"
    metrics.write_text(metrics.read_text() + " ")
    _recompute(paths.level(1, "ticket"), paths, 1)
    chain = load_chain(paths.chain)
    assert chain is not None
    kept = list(zip(chain.levels["level"], chain.levels["variant"]))
    assert kept == [(0, "ticket"), (1, "ticket")]
    notes = capsys.readouterr().err.splitlines()
    assert any(
        "skipping level 2 reinit" in n and "built on level 2 ticket, which was retrained" in n for n in notes
    )
    # A dense level whose model does not load (a legacy marker) is named and left out. (meta.json names
    # the dense directory the reference run wrote: this copy's is the one to read.)
    meta = json.loads((paths.chain / "meta.json").read_text())
    (paths.chain / "meta.json").write_text(json.dumps({**meta, "dense_dir": str(paths.dense)}))
    _garbage_model(paths.level(0, "ticket"))
    load_chain(paths.chain)
    assert any(
        "skipping level 0 ticket" in n and "not a readable zip" in n
        for n in capsys.readouterr().err.splitlines()
    )


def test_meta_records_each_run_and_never_claims_settings_levels_were_not_run_with(
    reference: Path, tmp_path: Path
) -> None:
    """A rerun with eval.episodes=20 trains nothing: every level still says 1, meta.json says which run
    used what, with the versions and machine of each."""
    from dataclasses import replace

    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
    cfg = tiny_cfg(tmp_path, levels=2, controls=["reinit"])
    later = replace(cfg, eval=replace(cfg.eval, episodes=20))
    Runner(later, spy(later)).run()
    paths = ChainPaths.of(cfg)
    meta = json.loads((paths.chain / "meta.json").read_text())
    assert (
        "eval" not in meta["config"] and "workers" not in meta["config"] and "controls" not in meta["config"]
    )
    assert [run["settings"]["eval"]["episodes"] for run in meta["runs"]] == [1, 20]
    assert all(run["settings"]["controls"] == ["reinit"] for run in meta["runs"])
    newest = meta["runs"][-1]
    assert set(newest["versions"]) == {"rl_tickets", "torch", "stable_baselines3", "gymnasium", "numpy"}
    assert newest["versions"]["torch"] == torch.__version__ and newest["python"] and newest["cpu"]
    for level, variant in EVERYTHING:
        record = json.loads((paths.level(level, variant) / "metrics.json").read_text())
        assert record["eval"]["episodes"] == 1 and record["extra"]["eval_episodes"] == 1
