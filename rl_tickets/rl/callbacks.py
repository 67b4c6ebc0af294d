"""SB3 callbacks and logger writers a level trains with: the rewind snapshot, gradual mask updates,
and the writer that forwards SB3's log records to the engine's curve sink."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import CSVOutputFormat, KVWriter, Logger, TensorBoardOutputFormat

from rl_tickets.config import ConfigError
from rl_tickets.level import CurveSink, LevelPlan, MaskSchedule, snapshot_file
from rl_tickets.rl.checkpoints import save_state
from rl_tickets.sparsity.masks import online_weights, set_masks
from rl_tickets.timing import Stopwatch


class Snapshot(BaseCallback):
    """Save the full training state at the first rollout start with ``num_timesteps >= step``.

    At rollout start the previous ``train()`` has run, so the state equals what a level restarting
    from here will see (taking it in ``_on_step`` would skip one update).
    """

    def __init__(self, step: int, path: Path, with_replay: bool, watch: Stopwatch) -> None:
        super().__init__()
        self.step, self.path, self.with_replay, self.taken_at = step, path, with_replay, None
        self.watch = watch

    def _on_rollout_start(self) -> None:
        if self.taken_at is None and self.model.num_timesteps >= self.step:
            with self.watch.section("save"):
                save_state(self.model, self.path, self.with_replay)
            self.taken_at = self.model.num_timesteps

    def _on_step(self) -> bool:
        return True


def grid_snapshots(plan: LevelPlan, out: Path, watch: Stopwatch) -> list[Snapshot]:
    """One snapshot per step of ``plan.snapshot_steps`` (the instability analysis's dense run).

    :param plan: the level's plan.
    :param out: the level's directory (files named by :func:`rl_tickets.level.snapshot_file`).
    :param watch: times the saving.
    """
    return [
        Snapshot(k, snapshot_file(out, k, ".zip"), plan.restore_replay_buffer, watch)
        for k in plan.snapshot_steps
    ]


def taken_steps(snapshots: list[Snapshot]) -> dict[str, int]:
    """``{requested step: step taken}`` of several snapshots (metrics.json's ``extra.snapshots``).

    :param snapshots: the callbacks after training; each must have found its rollout start.
    """
    missing = [s.step for s in snapshots if s.taken_at is None]
    if missing:
        raise RuntimeError(f"no rollout started at or after step(s) {missing}: they lie beyond the budget")
    return {str(s.step): int(s.taken_at or 0) for s in snapshots}


class MaskUpdates(BaseCallback):
    """Gradual pruning: every ``every`` steps ask the schedule for a new mask and apply it."""

    def __init__(self, schedule: MaskSchedule, every: int) -> None:
        super().__init__()
        self.schedule, self.every, self.last = schedule, every, -1

    def _on_step(self) -> bool:
        step = self.model.num_timesteps
        if step // self.every != self.last:
            self.last = step // self.every
            policy = self.model.policy
            mask = self.schedule(step, online_weights(policy, include_biases=True))
            if mask is not None:
                set_masks(policy, mask)
        return True


# A level's TensorBoard run directory (logger.tensorboard=true): one run per level and variant.
TENSORBOARD_DIR = "tensorboard"


def check_tensorboard() -> None:
    """Refuse ``logger.tensorboard=true`` before training when the ``tensorboard`` package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError(
            "logger.tensorboard=true needs the tensorboard package: pip install tensorboard "
            "(or rl-tickets[tensorboard])"
        ) from None


def level_logger(out: Path, tensorboard: bool, sink: CurveSink | None) -> tuple[Logger, list[KVWriter]]:
    """SB3's logger for one level: ``progress.csv``, with ``tensorboard`` SB3's TensorBoard events in
    ``out/tensorboard`` (one run directory per level and variant), and the runner's curve sink.

    :param out: the level's (temporary) directory.
    :param tensorboard: also write TensorBoard events (``logger.tensorboard``).
    :param sink: receives every numeric value of each dump (:class:`SinkWriter`), if any.
    :return: the logger (close it when the level ends) and its TensorBoard writers, which also get
        the evaluations (:class:`~rl_tickets.rl.evaluation.PeriodicEval`).
    """
    board: list[KVWriter] = [TensorBoardOutputFormat(str(out / TENSORBOARD_DIR))] if tensorboard else []
    writers = [CSVOutputFormat(str(out / "progress.csv")), *board, *([SinkWriter(sink)] if sink else [])]
    return Logger(str(out), writers), board


def as_number(value: Any) -> float | None:
    """A finite or non-finite scalar as a float, or None for anything that is not a number.

    SB3 logs NumPy scalars (``train/approx_kl`` is an ``np.float32``, which is no ``float``), Python
    numbers and, from some callbacks, 0-d arrays or tensors; all of them are numbers. Booleans are
    flags, not metrics, and strings, videos or histograms are left to the writers that handle them.

    :param value: one value of an SB3 logger dump.
    """
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, np.ndarray | torch.Tensor) and value.ndim == 0:
        return as_number(value.item())
    return None


class SinkWriter(KVWriter):
    """Forward SB3's logger records (rollout/*, train/*, time/*) to the runner's curve sink."""

    def __init__(self, sink: CurveSink) -> None:
        self.sink = sink

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        """Send every numeric value of one dump (NumPy scalars included, see :func:`as_number`).

        :param key_values: the dump's values by key.
        :param key_excluded: per key, the writers SB3 was told to skip (they name SB3's own formats).
        :param step: the agent's ``num_timesteps``.
        """
        numbers = {key: as_number(value) for key, value in key_values.items()}
        self.sink({"step": step, **{key: v for key, v in numbers.items() if v is not None}})

    def close(self) -> None:
        """Nothing to release: the sink belongs to the runner."""
