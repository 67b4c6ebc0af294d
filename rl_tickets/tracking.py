"""Weights & Biases mirror of the local result files (never the only copy).

One W&B run per chain and variant: ``group`` = the experiment, ``job_type`` = the variant (the
ticket is ``ticket``). Levels rewind ``num_timesteps``, and W&B drops a ``step=`` lower than the
run's current one, so nothing is logged with ``step=``: per-level values use ``level`` as their
x-axis and curves a cumulative ``global_step`` (``define_metric``). wandb is imported only when used.
"""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rl_tickets.config import LoggerConfig


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
        self, settings: LoggerConfig, group: str, name: str, config: dict[str, Any], directory: Path
    ) -> None:
        """Remember how to open runs; nothing is opened until something is logged.

        :param settings: mode (offline/online/disabled), project, entity, init timeout.
        :param group: the experiment's display name.
        :param name: a run-name stem (e.g. chain hash and seed).
        :param config: the resolved config, stored in ``wandb.config``.
        :param directory: where W&B writes its files (``<dir>/wandb``).
        """
        self.settings, self.group, self.name, self.config, self.directory = (
            settings,
            group,
            name,
            config,
            directory,
        )
        self.mode = settings.mode
        self.runs: dict[str, Any] = {}

    def _open(self, variant: str) -> Any:
        """Open (or return) the run of ``variant``, falling back to offline if online fails."""
        if variant in self.runs:
            return self.runs[variant]
        import wandb

        self.directory.mkdir(parents=True, exist_ok=True)
        if self.mode == "online" and not has_api_key():
            print(
                "wandb: no API key (run `wandb login` or set WANDB_API_KEY); logging offline instead",
                file=sys.stderr,
            )
            self.mode = "offline"
        kwargs = dict(
            project=self.settings.project,
            entity=self.settings.entity,
            group=self.group,
            job_type=variant,
            name=f"{self.name}-{variant}",
            config=self.config,
            dir=str(self.directory),
            reinit="create_new",
        )
        try:
            run = wandb.init(
                mode=self.mode, settings=wandb.Settings(init_timeout=self.settings.init_timeout), **kwargs
            )
        except Exception as error:  # wandb raises several types (CommError, UsageError, timeouts)
            if self.mode != "online":
                raise
            print(
                f"wandb: cannot reach the server ({type(error).__name__}); logging offline instead",
                file=sys.stderr,
            )
            self.mode = "offline"
            run = wandb.init(mode="offline", **kwargs)
        run.define_metric("level")
        run.define_metric("level/*", step_metric="level")
        run.define_metric("global_step")
        for prefix in ("train/*", "rollout/*", "eval/*", "time/*", "val/*"):
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
        values = {f"level/{k}": v for k, v in row.items() if isinstance(v, int | float) and k != "level"}
        self._open(variant).log({"level": row["level"], **values})

    def curve(self, variant: str, offset: int, start_step: int, row: dict[str, Any]) -> None:
        """Log a training/eval curve point against the cumulative ``global_step`` axis.

        :param variant: ticket or a control name.
        :param offset: steps trained by this variant in earlier levels.
        :param start_step: the step counter at which this level started.
        :param row: ``{"step": s, "<metric>": v, ...}``.
        """
        if self.mode == "disabled":
            return
        step = int(row.get("step", start_step))
        values = {k: v for k, v in row.items() if k != "step"}
        self._open(variant).log({"global_step": offset + step - start_step, **values})

    def close(self) -> None:
        """Finish every open run."""
        for run in self.runs.values():
            run.finish()
        self.runs.clear()
