"""Weights & Biases mirror of the local result files (never the only copy).

One W&B run per chain and variant, named ``<experiment>/<variant>/s<seed>``: ``group`` = the
experiment, ``job_type`` = the variant (the ticket is ``ticket``), tags ``algo:``/``env:`` (or
``model:``/``data:``), ``variant:``, ``scope:`` and ``retrain:``. ``wandb.config`` holds only the
chosen task's config (:mod:`rl_tickets.task_sections`) plus ``chain_hash`` and ``results`` (the chain
directory). Every metric has one W&B name: evaluations go under SB3 ``EvalCallback``'s names
(``eval/mean_reward``, ``eval/mean_ep_length``; the spread as ``eval/std_reward``), so dashboards built
for SB3 work, while ``eval_curve.csv`` keeps its own columns. Levels rewind ``num_timesteps``, and W&B
drops a ``step=`` lower than the run's current one, so nothing is logged with ``step=``: per-level
values use ``level`` as their x-axis and curves a cumulative ``global_step`` (``define_metric``); each
curve row also carries its ``level`` and ``level_step`` (the level's own step counter, the ``step`` of
``eval_curve.csv``), so a panel can put levels on one axis. With
``logger.artifacts=true`` each finished level's model and mask are logged as a versioned artifact
(aliased ``level-N``), offline too. wandb is imported only when used.

Each run has a deterministic id (chain hash, seed, variant, name) and is resumed, so every job that
trains a chain's variant, also a second process sharing the chain or a later extension, logs into
the same run. An unreachable server costs at most 20 s per process (:mod:`rl_tickets.tracking.outage`), after
which runs go offline into ``ROOT/wandb/offline-run-*``, where ``wandb sync`` finds them. An empty
``WANDB_MODE`` counts as unset (wandb itself crashes on it). A run ends with the job's exit code, so
an interrupted or failed job is not recorded as finished.
"""

from __future__ import annotations

import hashlib
import netrc
import numbers
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from rl_tickets.chain.provenance import provenance
from rl_tickets.config import Config, LoggerConfig, display_name
from rl_tickets.task_sections import for_task
from rl_tickets.tracking.outage import PROCESS, Outage, server_url

if TYPE_CHECKING:
    from rl_tickets.chain.store import ChainPaths

# Our evaluation keys -> their one W&B name (SB3 EvalCallback's where it has one). The episode-length
# names cover what a trainer may record; a row without one simply has no length.
WANDB_NAMES = {
    "eval/return_mean": "eval/mean_reward",
    "eval/return_std": "eval/std_reward",
    "eval/ep_length_mean": "eval/mean_ep_length",
    "eval/length_mean": "eval/mean_ep_length",
}
# Files of a level directory that make up its artifact (whichever exist: RL or supervised).
ARTIFACT_FILES = ("model.zip", "model_vecnormalize.pkl", "model.pt", "mask.pt", "metrics.json")


@dataclass(frozen=True)
class RunInfo:
    """What a job's W&B runs are called, tagged and given as config.

    :param group: the experiment's display name (W&B group, first part of every run name).
    :param seed: the chain's seed (last part of every run name).
    :param chain_hash: the chain directory's hash (artifact names; also in ``config``).
    :param config: ``wandb.config``.
    :param tags: tags shared by the job's runs (each run adds ``variant:<variant>``).
    :param level_dir: where a finished (level, variant) lives, for artifacts; ``None``: no artifacts.
    """

    group: str
    seed: int
    chain_hash: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    level_dir: Callable[[int, str], Path] | None = None

    def run_name(self, variant: str) -> str:
        """``<experiment>/<variant>/s<seed>``, e.g. ``ppo_cartpole/ticket/s0``."""
        return f"{self.group}/{variant}/s{self.seed}"

    def run_id(self, variant: str) -> str:
        """The W&B run id of a variant: the same for every job of this chain, seed, variant and name.

        :param variant: ticket or a control name.
        """
        name = hashlib.sha256(self.group.encode()).hexdigest()[:6]
        return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{self.chain_hash or 'chain'}-s{self.seed}-{variant}-{name}")


def job_tags(cfg: Config) -> tuple[str, ...]:
    """Tags of a job's runs: what was trained on what, the pruning scope and the retraining mode.

    :param cfg: the job config.
    """
    learner = (
        (f"model:{cfg.model.name}", f"data:{cfg.data.name}")
        if cfg.task == "supervised"
        else (f"algo:{cfg.algo.name}", f"env:{cfg.env.name}")
    )
    # W&B refuses tags longer than 64 characters.
    return tuple(t[:64] for t in (*learner, f"scope:{cfg.prune.scope}", f"retrain:{cfg.retrain.mode}"))


def run_info(cfg: Config, paths: ChainPaths) -> RunInfo:
    """Names, tags and config of a job's W&B runs.

    :param cfg: the job config.
    :param paths: the chain's directories (the hash and results path go into the config).
    """
    chain_hash = paths.chain.parent.name
    config = {
        **for_task(asdict(cfg), cfg.task),
        "chain_hash": chain_hash,
        "results": str(paths.chain.resolve()),
        "provenance": provenance(),  # versions, git commit, Python, CPU and GPU of this run
    }
    return RunInfo(display_name(cfg), cfg.seed, chain_hash, config, job_tags(cfg), paths.level)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a number W&B should chart: NumPy scalars count, booleans do not.

    :param value: a row's value.
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def wandb_row(row: dict[str, Any]) -> dict[str, Any]:
    """The numeric values of a curve row under their one W&B name (see :data:`WANDB_NAMES`).

    :param row: a curve row (``step`` and ``level`` are the caller's axes, not metrics).
    """
    return {
        WANDB_NAMES.get(key, key): float(value)
        for key, value in row.items()
        if key not in ("step", "level") and is_number(value)
    }


def has_api_key() -> bool:
    """Whether W&B credentials exist (``WANDB_API_KEY`` or a netrc entry for the W&B host), without a
    network call or a prompt."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class WandbMirror:
    """Lazily opens one W&B run per variant; :meth:`close` finishes them all (call it in ``finally``)."""

    def __init__(
        self, settings: LoggerConfig, info: RunInfo, directory: Path, outage: Outage = PROCESS
    ) -> None:
        """Remember how to open runs; nothing is opened until something is logged.

        :param settings: mode (offline/online/disabled), project, entity, init timeout, artifacts.
        :param info: run names, tags and config (:func:`run_info`).
        :param directory: where W&B writes its files (``<dir>/wandb``).
        :param outage: which servers this process found down (shared by the process's jobs).
        """
        self.settings, self.info, self.directory, self.outage = settings, info, directory, outage
        self.mode = settings.mode
        self.runs: dict[str, Any] = {}

    def _go_offline(self, why: str) -> None:
        """Say why (one line), then log offline from here on."""
        print(
            f"wandb: {why}; logging offline instead (`wandb sync {self.directory}/wandb/offline-run-*` later)",
            file=sys.stderr,
        )
        self.mode = "offline"

    def _open(self, variant: str) -> Any:
        """Open (or return) the run of ``variant``, falling back to offline if online fails."""
        if variant in self.runs:
            return self.runs[variant]
        import wandb

        self.directory.mkdir(parents=True, exist_ok=True)
        if os.environ.get("WANDB_MODE") == "":  # wandb fails on an empty mode; unset is what was meant
            del os.environ["WANDB_MODE"]
        url = server_url()
        if self.mode == "online" and not has_api_key():
            self._go_offline("no API key (run `wandb login` or set WANDB_API_KEY)")
        elif self.mode == "online" and url in self.outage.down:
            self._go_offline(f"the server {url} failed earlier in this process")
        elif self.mode == "online" and not self.outage.reachable(url):
            self._go_offline(f"the server {url} does not answer")
        kwargs = dict(
            project=self.settings.project,
            entity=self.settings.entity,
            group=self.info.group,
            job_type=variant,
            name=self.info.run_name(variant),
            tags=[*self.info.tags, f"variant:{variant}"[:64]],
            config=self.info.config,
            dir=str(self.directory),
            reinit="create_new",
            id=self.info.run_id(variant),
            resume="allow",
        )
        timeout = self.outage.init_timeout(self.settings.init_timeout)
        before, started = set(self.directory.glob("wandb/run-*")), time.monotonic()
        try:
            run = wandb.init(mode=self.mode, settings=wandb.Settings(init_timeout=timeout), **kwargs)
        except Exception as error:  # wandb raises several types (CommError, UsageError, timeouts)
            if self.mode != "online":
                raise
            self.outage.failed(url, time.monotonic() - started)
            # The failed attempt leaves a run-* directory that `wandb sync .../offline-run-*` would skip
            # and that holds nothing the offline run below does not.
            for stray in set(self.directory.glob("wandb/run-*")) - before:
                shutil.rmtree(stray, ignore_errors=True)
            self._go_offline(f"cannot open a run on the server {url} ({type(error).__name__})")
            # W&B's service keeps the failed run's id "in use". With no run open, restart the service;
            # else (the server went down between two variants) the offline run takes a suffixed id.
            if self.runs:
                kwargs["id"] = f"{kwargs['id']}-offline"
            else:
                wandb.teardown()
            run = wandb.init(mode="offline", **kwargs)
        run.define_metric("level")
        run.define_metric("level/*", step_metric="level")
        run.define_metric("global_step")
        run.define_metric("level_step")
        # stability/*: the instability analysis logs one row per pair with global_step = the rewind step k.
        for prefix in ("train/*", "rollout/*", "eval/*", "time/*", "val/*", "stability/*"):
            run.define_metric(prefix, step_metric="global_step")
        self.runs[variant] = run
        return run

    def level(self, variant: str, row: dict[str, Any]) -> None:
        """Log one row of levels.csv against the ``level`` axis.

        :param variant: ticket or a control name.
        :param row: the levels.csv row (numbers only are sent).
        """
        if self.mode == "disabled":
            return
        values = {f"level/{k}": v for k, v in row.items() if is_number(v) and k != "level"}
        run = self._open(variant)
        run.log({"level": row["level"], **values})
        if self.settings.artifacts and self.info.level_dir is not None:
            self._log_artifact(run, variant, row)

    def _log_artifact(self, run: Any, variant: str, row: dict[str, Any]) -> None:
        """Log a finished level's model and mask as a new version of the variant's artifact.

        A failure only costs the W&B copy (the files stay on disk), so it is one line, not a crash.
        """
        import wandb

        assert self.info.level_dir is not None
        level = int(row["level"])
        directory = self.info.level_dir(level, variant)
        files = [directory / name for name in ARTIFACT_FILES if (directory / name).is_file()]
        if not files:
            return
        # Artifact names allow letters, digits, '-', '_' and '.' only.
        stem = f"{self.info.group}-{self.info.chain_hash[:8]}-s{self.info.seed}-{variant}"
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
        metadata = {k: v for k, v in row.items() if isinstance(v, int | float | str)}
        artifact = wandb.Artifact(name, type="model", metadata={**metadata, "directory": str(directory)})
        for path in files:
            artifact.add_file(str(path), name=path.name)
        try:
            run.log_artifact(artifact, aliases=[f"level-{level}"])
        except Exception as error:  # wandb raises many types; the local files are the real copy
            print(f"wandb: could not log artifact {name} ({type(error).__name__}: {error})", file=sys.stderr)

    def curve(self, variant: str, offset: int, start_step: int, row: dict[str, Any]) -> None:
        """Log a training/eval curve point against the cumulative ``global_step`` axis, with its level
        and the level's own step (``level_step``) for panels that overlay levels.

        :param variant: ticket or a control name.
        :param offset: steps trained by this variant in earlier levels.
        :param start_step: the step counter at which this level started.
        :param row: ``{"step": s, "level": L, "<metric>": v, ...}`` (``level`` may be absent).
        """
        if self.mode == "disabled":
            return
        step = int(row.get("step", start_step))
        axes = {"global_step": offset + step - start_step, "level_step": step}
        if "level" in row:
            axes["level"] = int(row["level"])
        self._open(variant).log({**axes, **wandb_row(row)})

    def close(self, exit_code: int = 0) -> None:
        """Finish every open run.

        :param exit_code: the job's exit status: non-zero marks the runs failed (130/143: interrupted).
        """
        for run in self.runs.values():
            run.finish(exit_code=exit_code)
        self.runs.clear()
