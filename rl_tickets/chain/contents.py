"""What a finished level must hold to be used, beyond its manifest: readable files of the right kind.

A manifest (:mod:`rl_tickets.chain.manifest`) says the files are the ones written; a level written
before manifests (an empty COMPLETE), or whose manifest was recomputed after an edit, needs more: its
``metrics.json`` parses, its ``mask.pt`` holds boolean masks shaped like the network's, its zips are
SB3 checkpoints whose pickled entries rl_tickets rebuilds (:mod:`rl_tickets.rl.safe_load`; nothing is
unpickled to check), its VecNormalize statistics load without pickle. :func:`contents_problem` needs
no trainer (the report and the export use it); :class:`LevelChecker` adds what needs the network: the
checkpoints' parameters and the masks' shapes must be this config's.

VecNormalize statistics that exist only as SB3's pickle (levels written before the pickle-free
``.npz``) are refused in one line naming ``trust_pickles=true``, which converts them once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rl_tickets.chain.context import ChainContext
from rl_tickets.chain.manifest import MARKER, problem, upstream_key
from rl_tickets.chain.plans import transfer_mask, transfer_mask_path
from rl_tickets.chain.store import TICKET
from rl_tickets.chain.untrained import UNTRAINED
from rl_tickets.config import ConfigError, learner_task
from rl_tickets.rl.safe_load import UnreadableCheckpoint, read_archive
from rl_tickets.sparsity.controls import ARCHITECTURE_CONTROLS

STATISTICS = "_vecnormalize"
STATISTICS_KEYS = ("norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon", "ret_mean")
Shapes = dict[str, tuple[int, ...]]


def _first_line(error: BaseException) -> str:
    """An error's first line (or its type)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def mask_problem(path: Path, shapes: Shapes | None = None, exact: bool = True) -> str | None:
    """Why ``mask.pt`` is not a usable mask (boolean tensors, shaped like ``shapes`` when given), or None.

    :param path: a ``mask.pt``.
    :param shapes: shapes by parameter name (None: check the dtype only).
    :param exact: the mask covers exactly these names; else only the names both have must agree (the
        shared dense level's mask is written by whichever chain trained it, with or without biases).
    """
    try:
        mask = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types on a damaged or foreign file
        return f"{path.name} is unreadable ({_first_line(error)})"
    if not isinstance(mask, dict) or not mask:
        return f"{path.name} holds no masks"
    for name, value in mask.items():
        if not isinstance(value, torch.Tensor) or value.dtype != torch.bool:
            kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
            return f"{path.name} holds a {kind} mask for {name} (masks are bool)"
    if shapes is None:
        return None
    if exact and set(mask) != set(shapes):
        extra = sorted(set(mask) ^ set(shapes))
        return f"{path.name} covers other layers than this network's ({', '.join(extra[:3])})"
    for name, shape in shapes.items():
        if name in mask and tuple(mask[name].shape) != shape:
            return f"{path.name} has shape {tuple(mask[name].shape)} for {name}, the network {shape}"
    return None


def statistics_problem(path: Path) -> str | None:
    """Why a pickle-free VecNormalize ``.npz`` does not load, or None.

    :param path: an ``X_vecnormalize.npz``.
    """
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in STATISTICS_KEYS if k not in arrays]
            for key in arrays.files:
                arrays[key]  # reading each array refuses pickled (object) arrays
    except Exception as error:  # numpy raises ValueError, OSError, BadZipFile, ...
        return f"{path.name} is unreadable without pickle ({_first_line(error)})"
    return f"{path.name} lacks {', '.join(missing)}" if missing else None


def contents_problem(directory: Path, shapes: Shapes | None = None, exact: bool = True) -> str | None:
    """Why a finished level's files cannot be used (checked without the network), or None.

    :param directory: a level directory.
    :param shapes: the network's masked shapes, if known (:func:`mask_problem`).
    :param exact: the mask must cover exactly ``shapes`` (:func:`mask_problem`).
    """
    try:
        if not isinstance(json.loads((directory / "metrics.json").read_text()), dict):
            return "metrics.json is not a JSON object"
    except (OSError, ValueError) as error:
        return f"metrics.json is unreadable ({_first_line(error)})"
    if (directory / "mask.pt").exists() and (reason := mask_problem(directory / "mask.pt", shapes, exact)):
        return reason
    for archive in sorted(directory.glob("*.zip")):
        try:
            read_archive(archive)
        except UnreadableCheckpoint as error:
            return f"{archive.name}: {error.reason}"
    for statistics in sorted(directory.glob(f"*{STATISTICS}.npz")):
        if reason := statistics_problem(statistics):
            return reason
    return None


Key = tuple[int, str]


def damaged_levels_of(dirs: dict[Key, Path], resolve: Callable[[Key], Path]) -> dict[Key, str]:
    """(level, variant) -> why, for each finished level that a rerun would not use, without a network.

    The manifest and the contents are checked (masks against the dense level's shapes, except for
    architecture controls, whose networks are narrower); a level built on one that was retrained since
    (its recorded upstream differs) is stale, and so is everything built on a stale level, all the way
    down (a rerun trains them all again). A level that is merely damaged leaves what was built on it
    valid: those were built from it while it was intact.

    :param dirs: the finished (or running) level directories by (level, variant).
    :param resolve: the directory of an upstream key (one not in ``dirs`` may be missing on disk).
    """
    damaged: dict[Key, str] = {}
    stale: set[Key] = set()
    dense_shapes: Shapes | None = None
    for key in sorted(dirs, key=lambda k: (k[0], k[1] != TICKET, k[1])):
        directory = dirs[key]
        if not (directory / MARKER).is_file():
            continue  # still training (or moved aside): not in the tables anyway
        source = upstream_key(*key)
        if source in stale:
            damaged[key] = f"it was built on level {source[0]} {source[1]}, which was retrained since"
            stale.add(key)
            continue
        reason = problem(directory, resolve(source) if source is not None else None)
        if reason is not None and problem(directory) is None:  # only the upstream differs: stale
            damaged[key] = reason
            stale.add(key)
            continue
        shapes = None if key[1] in ARCHITECTURE_CONTROLS else dense_shapes
        reason = reason or contents_problem(directory, shapes, exact=False)  # names both have agree
        if reason is not None:
            damaged[key] = reason
        elif key == (0, TICKET):
            dense = torch.load(directory / "mask.pt", map_location="cpu", weights_only=True)
            dense_shapes = {name: tuple(mask.shape) for name, mask in dense.items()}
    return damaged


def pickled_statistics(directory: Path) -> list[Path]:
    """SB3's ``X_vecnormalize.pkl`` files of a level that have no pickle-free twin (older levels).

    :param directory: a level directory.
    """
    return [p for p in sorted(directory.glob(f"*{STATISTICS}.pkl")) if not p.with_suffix(".npz").exists()]


class LevelChecker:
    """The network-aware check of finished levels for one chain: parameters and masks of this config.

    :param chain: the chain (its trainer builds the reference network, once per width).
    """

    def __init__(self, chain: ChainContext) -> None:
        self.chain = chain
        self._shapes: dict[float, tuple[Shapes, Shapes]] = {}

    def _reference(self, width: float) -> tuple[Shapes, Shapes]:
        """(every online parameter's shape, the masked ones') of this config's network at ``width``."""
        if width not in self._shapes:
            params = self.chain.trainer.fresh_params(self.chain.cfg.seed, width)
            shapes = {n: tuple(p.shape) for n, p in params.items()}
            masked = {n: tuple(m.shape) for n, m in self.chain.dense_mask(width).items()}
            self._shapes[width] = (shapes, masked)
        return self._shapes[width]

    def checkpoints(self, directory: Path, level: int) -> list[Path]:
        """The checkpoints a level holds that later levels load (the dense level's snapshots too).

        :param directory: the level directory.
        :param level: its level number.
        """
        trainer = self.chain.trainer
        found = [] if directory.name in UNTRAINED else [directory / trainer.checkpoint_name]
        if level == 0:
            steps = {0, self.chain.cfg.rewind.step}
            found += [trainer.snapshot_path(directory, step) for step in sorted(steps)]
        return found

    def problem(self, directory: Path) -> str | None:
        """Why a finished level (``.../level_NN/<variant>``) of this chain cannot be used, or None.

        :param directory: the level directory.
        """
        level = int(directory.parent.name.removeprefix("level_"))
        width = self._width(directory)
        shapes, masked = self._reference(width)
        # The shared dense level's mask comes from whichever chain trained it (prune.biases may differ).
        if reason := contents_problem(directory, shapes if level == 0 else masked, exact=level > 0):
            return reason
        for checkpoint in self.checkpoints(directory, level):
            if not checkpoint.exists():
                return f"{checkpoint.name} is missing"
            try:
                params = self.chain.trainer.load_params(checkpoint)
            except Exception as error:  # any failure to read it means the level cannot be used
                return f"{checkpoint.name} is unreadable ({_first_line(error)})"
            wrong = [n for n in shapes if n not in params or tuple(params[n].shape) != shapes[n]]
            if wrong:
                return f"{checkpoint.name} holds another network than this config's ({wrong[0]})"
        return None

    def check(self, directory: Path) -> str | None:
        """:meth:`problem`, after giving RL levels' pickled statistics their pickle-free twin (only with
        ``trust_pickles=true``; else refused in one line).

        :param directory: the level directory.
        """
        cfg = self.chain.cfg
        if learner_task(cfg) == "rl":
            convert_statistics(directory, cfg.trust_pickles, cfg.env)
        return self.problem(directory)

    @staticmethod
    def _width(directory: Path) -> float:
        """The width factor the level's network was built with (small_dense), from metrics.json."""
        try:
            record: dict[str, Any] = json.loads((directory / "metrics.json").read_text())
            return float((record.get("plan") or {}).get("width_scale") or 1.0)
        except (OSError, ValueError, TypeError, AttributeError):
            return 1.0


def convert_statistics(directory: Path, trust: bool, env_cfg: Any) -> None:
    """Give a finished level's pickled VecNormalize statistics their pickle-free twin, or refuse.

    :param directory: a level directory.
    :param trust: the user trusts this results folder (``trust_pickles=true``): unpickle once, convert.
    :param env_cfg: the environment config (to build the vector env SB3's loader needs).
    :raises ConfigError: untrusted pickled statistics (one line naming ``trust_pickles=true``).
    """
    pickled = pickled_statistics(directory)
    if not pickled:
        return
    from rl_tickets.rl.envs import PickledStatistics, convert_pickled  # RL only: SB3 is imported here

    if not trust:
        raise PickledStatistics(pickled[0])
    for path in pickled:
        try:
            convert_pickled(path, env_cfg)
        except Exception as error:  # a trusted pickle that still does not load: damaged
            raise ConfigError(
                f"{path} does not load ({_first_line(error)}); delete its level to retrain it"
            ) from None


def check_transfer(chain: ChainContext) -> None:
    """Every ticket mask of ``transfer_from`` is boolean and shaped like this network's (a float mask
    would give densities its applied mask does not have); refused in one line otherwise.

    :param chain: the chain that applies them.
    """
    shapes = {name: tuple(mask.shape) for name, mask in chain.dense_mask().items()}
    for level in range(1, chain.cfg.prune.levels + 1):
        path = transfer_mask_path(chain, level)
        if path.exists() and (reason := mask_problem(path, shapes)) is not None:
            raise ConfigError(f"transfer_from={chain.cfg.transfer_from}: level {level}: {reason}")
    transfer_mask(chain, 1)  # (its own message for other layers or shapes)
