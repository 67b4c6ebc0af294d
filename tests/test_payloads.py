"""Reading a results folder never runs code from it: a pickled payload planted in a level's ``model.zip``
(as a new entry of its ``data`` and in place of an existing one), in the dense ``init.zip`` under a
legacy empty COMPLETE, and in the VecNormalize statistics never runs in a rerun that extends the chain
(in this process and in workers), in the report or in the export. The payload does run when SB3 loads
the same file itself, so the test can fail."""

from __future__ import annotations

import base64
import json
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
from stable_baselines3.common.save_util import load_from_zip_file
from tiny import tiny_config

from rl_tickets.chain.manifest import write_complete
from rl_tickets.chain.runner import Runner
from rl_tickets.chain.store import ChainPaths, is_complete
from rl_tickets.config import Config, PruneConfig, RetrainConfig, RewindConfig
from rl_tickets.export import ExportError, export_level
from rl_tickets.report.cli import main as report
from rl_tickets.trainers import build_trainer

HYPER = {"n_steps": 64, "batch_size": 32, "n_epochs": 1}


class Payload:
    """Unpickling this creates ``path`` (a stand-in for any code a crafted pickle runs)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def pickled(marker: Path) -> dict[str, str]:
    """A ``data`` entry as SB3 writes a pickled one, holding the payload."""
    blob = base64.b64encode(cloudpickle.dumps(Payload(marker))).decode()
    return {":type:": "<class 'Payload'>", ":serialized:": blob}


def plant_in_zip(path: Path, key: str, marker: Path) -> None:
    """Put the payload under ``key`` of a zip's ``data`` (a new key, or in place of an existing one)."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(members["data"])
    data[key] = pickled(marker)
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def config(root: Path, mode: str, levels: int = 1, **changes: Any) -> Config:
    """A tiny normalised PPO chain; ``lr_rewind`` loads the previous model.zip, ``rewind`` init.zip."""
    return tiny_config(
        root,
        "ppo",
        HYPER,
        128,
        RewindConfig(),
        PruneConfig(levels=levels),
        net_arch=[8],
        normalize=True,
        retrain=RetrainConfig(mode=mode),
        **changes,
    )


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One finished chain (dense + level 1) per retrain mode."""
    base = tmp_path_factory.mktemp("payloads")
    for mode in ("lr_rewind", "rewind"):
        cfg = config(base / mode, mode)
        Runner(cfg, build_trainer(cfg)).run()
    return {mode: base / mode for mode in ("lr_rewind", "rewind")}


# (case, retrain mode, where, data key or file, legacy empty COMPLETE, the level is refused and retrained)
CASES = [
    ("model.zip, a new key", "lr_rewind", (1, "ticket"), "model.zip:evil", False, True),
    ("model.zip, an existing key", "lr_rewind", (1, "ticket"), "model.zip:lr_schedule", False, False),
    ("model.zip, the policy class", "lr_rewind", (1, "ticket"), "model.zip:policy_class", False, False),
    ("init.zip legacy, a new key", "rewind", (0, "ticket"), "init.zip:evil", True, True),
    ("init.zip legacy, an existing key", "rewind", (0, "ticket"), "init.zip:observation_space", True, False),
    ("statistics pickle", "lr_rewind", (1, "ticket"), "model_vecnormalize.pkl", False, False),
    ("statistics npz", "lr_rewind", (1, "ticket"), "model_vecnormalize.npz", False, True),
]


def plant(level: Path, where: str, marker: Path) -> None:
    """Plant the payload in one file of a level."""
    name, _, key = where.partition(":")
    if key:
        plant_in_zip(level / name, key, marker)
    elif name.endswith(".pkl"):
        (level / name).write_bytes(cloudpickle.dumps(Payload(marker)))
    else:  # an object array in the pickle-free statistics
        with open(level / name, "wb") as handle:
            np.savez(handle, norm_obs=np.array(True), ret_mean=np.array([Payload(marker)], dtype=object))


@pytest.mark.parametrize(
    ("case", "mode", "key", "where", "legacy", "refused"), CASES, ids=[c[0] for c in CASES]
)
def test_a_planted_payload_never_runs(
    chains: dict[str, Path],
    tmp_path: Path,
    case: str,
    mode: str,
    key: tuple[int, str],
    where: str,
    legacy: bool,
    refused: bool,
) -> None:
    root = tmp_path / "results"
    shutil.copytree(chains[mode], root)
    cfg = config(root, mode)
    paths = ChainPaths.of(cfg)
    level = paths.level(*key)
    marker = tmp_path / "PAYLOAD_RAN"
    plant(level, where, marker)
    if legacy:
        (level / "COMPLETE").write_text("")  # written before manifests: trusted as it is
    else:  # the manifest recomputed, as someone crafting the folder would
        write_complete(level, paths.level(0, "ticket") if key[0] else None)

    # The report reads every level (masks, manifests, zips' data as JSON).
    assert report([str(root), "--out", str(tmp_path / "report"), "--n-resamples", "100"]) == 0
    # The export opens the level's checkpoint and agent.
    if key[0] and refused:
        with pytest.raises(ExportError, match="failed verification"):
            export_level(level, tmp_path / "export", calls=1)
    elif key[0]:
        export_level(level, tmp_path / "export", calls=1)
    # A rerun that extends the chain loads the level (workers train the pruned levels in other processes).
    longer = replace(config(root, mode, levels=2), workers=2 if "existing" in case else 1)
    Runner(longer, build_trainer(longer)).run()
    assert not marker.exists(), case
    assert is_complete(paths.level(2, "ticket"))
    moved = list(level.parent.glob(f"{level.name}.corrupt-*"))
    assert bool(moved) == refused, case

    # Not vacuous: SB3's own loader runs the same payload.
    if ":" in where:
        copy = tmp_path / "copy.zip"
        shutil.copyfile((moved[0] if moved else level) / where.partition(":")[0], copy)
        load_from_zip_file(copy, device="cpu")
        assert marker.exists()


def test_statistics_only_as_a_pickle_are_refused_unless_trusted(
    chains: dict[str, Path], tmp_path: Path
) -> None:
    """A level written before pickle-free statistics: one line naming trust_pickles=true; with it, converted."""
    from rl_tickets.config import ConfigError

    root = tmp_path / "results"
    shutil.copytree(chains["lr_rewind"], root)
    cfg = config(root, "lr_rewind", levels=2)
    dense = ChainPaths.of(cfg).level(0, "ticket")
    for npz in dense.glob("*_vecnormalize.npz"):
        npz.unlink()
    (dense / "COMPLETE").write_text("")  # an older rl_tickets: no manifest, no .npz
    with pytest.raises(
        ConfigError, match=r"holds VecNormalize statistics only as a pickle .* trust_pickles=true"
    ):
        Runner(cfg, build_trainer(cfg)).run()
    assert not ChainPaths.of(cfg).level(2, "ticket").exists()
    trusted = replace(cfg, trust_pickles=True)
    Runner(trusted, build_trainer(trusted)).run()
    assert sorted(p.name for p in dense.glob("*_vecnormalize.npz")) == [
        "init_vecnormalize.npz",
        "model_vecnormalize.npz",
    ]
    assert is_complete(ChainPaths.of(cfg).level(2, "ticket"))
