"""One protocol, two clients: :mod:`.sb3` (RL agents) and :mod:`.supervised` (MLP/CNN classifiers).

The runner decides *what* a level starts from (a checkpoint, a mask, optional parameter overrides,
a step counter) and a trainer decides *how* to load, train, evaluate and save in its own format.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from rl_tickets.sparsity.dynamic import DynamicSchedule
from rl_tickets.sparsity.masks import Mask

# Called during training with (step, cumulative metrics) so the runner can mirror curves.
CurveSink = Callable[[dict[str, Any]], None]
# Gradual pruning: given the step and the current prunable weights, return a new mask or None.
MaskSchedule = Callable[[int, dict[str, torch.Tensor]], Mask | None]


@dataclass
class LevelPlan:
    """Everything a trainer needs to train one level of one variant.

    :param start: checkpoint to load, or None to build a fresh network from ``seed``.
    :param steps: steps to train in this level (env steps or iterations).
    :param mask: the mask to apply before training (online names; targets follow).
    :param seed: seed for everything random in this level.
    :param start_step: set the step counter to this before training (schedules continue from it);
        None keeps the checkpoint's own counter.
    :param params: online parameter overrides applied after loading (controls); targets re-synced.
    :param constant_lr: fine-tuning: train at this constant learning rate, the other schedules held
        constant too (each trainer says at which values).
    :param hold_step: fine-tuning: the rewind point k, where schedules held "at k" take their value.
    :param restore_optimizer: keep the checkpoint's optimizer moments (else fresh).
    :param restore_replay_buffer: load the checkpoint's replay buffer (else empty, and training
        waits ``learning_starts`` steps again).
    :param width_scale: shrink hidden widths and CNN channels by this factor (small_dense control;
        fresh nets only).
    :param snapshot_step: while training, save the full training state at this step (dense run).
    :param snapshot_steps: also save the full training state at each of these steps (the instability
        analysis's dense run), as :func:`snapshot_file` names them.
    :param mask_schedule: called periodically to update the mask during training (gradual pruning).
    :param mask_schedule_every: period of ``mask_schedule`` in steps.
    :param sparse: sparse training (static, SET, RigL): updated by the trainer while it trains, then
        holding the final mask and the log of every update; ``mask`` is its initial random mask.
    :param record: extra facts for the level's metrics.json (e.g. a control's construction seed).
    """

    start: Path | None
    steps: int
    mask: Mask | None
    seed: int
    start_step: int | None = None
    params: dict[str, torch.Tensor] | None = None
    constant_lr: float | None = None
    hold_step: int = 0
    restore_optimizer: bool = False
    restore_replay_buffer: bool = False
    width_scale: float = 1.0
    snapshot_step: int | None = None
    snapshot_steps: tuple[int, ...] = ()
    mask_schedule: MaskSchedule | None = None
    mask_schedule_every: int = 0
    sparse: DynamicSchedule | None = None
    record: dict[str, Any] = field(default_factory=dict)


def snapshot_file(out: Path, step: int, suffix: str) -> Path:
    """Where a run saves its training state at ``step`` of :attr:`LevelPlan.snapshot_steps`.

    :param out: the run's directory.
    :param step: the requested step (an RL snapshot is taken at the first rollout start at or after it).
    :param suffix: the trainer's checkpoint suffix (``.zip``, ``.pt``).
    """
    return out / f"snapshot_{step:09d}{suffix}"


@dataclass
class LevelOutcome:
    """What a trained level reports back.

    :param metrics: one row of levels.csv (without level/variant/density).
    :param curve: evaluation curve rows (step, metrics) for eval_curve.csv.
    :param mask: the final mask (differs from the plan's under gradual pruning).
    :param extra: facts to record in the level's metrics.json (e.g. the effective learning_starts).
    :param time: seconds spent training, evaluating and saving (``train_s``, ``eval_s``, ``save_s``);
        the runner adds ``prune_s`` and ``total_s``.
    """

    metrics: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)
    mask: Mask | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    time: dict[str, float] = field(default_factory=dict)


def bisect_scale(count: Callable[[float], int], n_weights: int, rounds: int = 20) -> float:
    """The width factor in (0, 1] whose network has about ``n_weights`` weights (small_dense control).

    :param count: counted weights of the network built with a given width factor (increasing).
    :param n_weights: target count (the ticket's kept weights).
    :param rounds: bisection rounds.
    """
    low, high = 0.0, 1.0
    for _ in range(rounds):
        mid = (low + high) / 2
        low, high = (mid, high) if count(mid) < n_weights else (low, mid)
    return min((low, high), key=lambda s: abs(count(s) - n_weights) if s > 0 else math.inf)


class Trainer(Protocol):
    """The interface the runner drives; see :class:`~rl_tickets.rl.trainer.SB3Trainer`."""

    unit: str  # "timesteps" or "iterations": the unit of steps, budgets and rewind.step
    budget: int  # steps in a full (dense) training run
    metric: str  # the headline metric column (eval_return_mean, test_accuracy)
    columns: tuple[str, ...]  # metric columns of levels.csv, in order
    checkpoint_name: str  # file name of a level's final model inside its directory

    def train(self, plan: LevelPlan, out: Path, curve_sink: CurveSink | None = None) -> LevelOutcome:
        """Train one level per ``plan``, writing its checkpoint(s) into ``out``."""
        ...

    def snapshot_path(self, out: Path, step: int) -> Path:
        """Where a dense run saved its training state at ``step`` (step 0: the initialisation)."""
        ...

    def load_params(self, checkpoint: Path) -> dict[str, torch.Tensor]:
        """All online parameters of a checkpoint, on the CPU, keyed by name."""
        ...

    def fresh_params(self, seed: int, width_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """All online parameters of a freshly initialised network."""
        ...

    def prunable(self, params: dict[str, torch.Tensor], include_biases: bool) -> list[str]:
        """Names among ``params`` that masks cover (weights of Linear/Conv2d, optionally biases)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Facts for meta.json: input layers, actor/critic layers, observation names."""
        ...

    def evaluate_params(self, params: dict[str, torch.Tensor], mask: Mask, start: Path | None) -> float:
        """The headline metric of an untrained network with these parameters and mask (supermasks)."""
        ...

    def untrained_row(self, mean: float, std: float, best: float) -> dict[str, Any]:
        """levels.csv metrics of an untrained level from the mean, spread and best of its draws."""
        ...
