"""Sparse training from scratch: a static random mask, SET (Mocanu et al. 2018) and RigL (Evci et al. 2020).

Every schedule starts from a random mask with fixed per-layer counts (``uniform``: every layer at the
target density; ``erk``: Erdos-Renyi-Kernel densities, shared with the pruning code). SET and RigL
then update it every ``every`` steps until ``end``: each layer drops the fraction ``drop_fraction``
(cosine-decayed to 0 at ``end``, as RigL) of its live weights with the smallest magnitude and grows
as many among the positions inactive after the drop: at random (SET) or where the dense gradient of
the update step's batch is largest (RigL). As in RigL's code, a just-dropped position may be grown
again, and then restarts like any grown one. Per-layer counts never change; grown weights start at 0
and their optimizer state at 0. A layer kept dense (ERK gives small layers density 1) is not updated:
it has no inactive position, and RigL's code would only zero its smallest weights at every update.

The schedule defines *which* positions change; :func:`apply_update` carries a new mask into a network
(online and target twins, every optimizer's state) and works for any ``nn.Module``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from rl_tickets.sparsity.masks import Mask, online_twins, set_gradient_tap, set_masks
from rl_tickets.sparsity.moments import zero_entries, zero_state_entries
from rl_tickets.sparsity.pruning import erk_densities
from rl_tickets.sparsity.selection import extreme_among, random_among

METHODS = ("static", "set", "rigl")
# One mask_updates.csv row per (update, layer).
LOG_COLUMNS = ("step", "layer", "kept", "dropped", "grown", "overlap", "drop_fraction")


def cosine_drop_fraction(step: int, end: int, initial: float) -> float:
    """RigL's drop fraction at ``step``: ``initial * (1 + cos(pi * step / end)) / 2``, 0 after ``end``.

    :param step: the training step of the update.
    :param end: the last update step (the fraction reaches 0 there).
    :param initial: the fraction at step 0.
    """
    if end <= 0 or step > end:
        return 0.0
    return initial * 0.5 * (1.0 + math.cos(math.pi * max(step, 0) / end))


def layer_counts(shapes: Mapping[str, Sequence[int]], density: float, distribution: str) -> dict[str, int]:
    """Weights kept per layer at the overall ``density``: the same density everywhere, or ERK's.

    :param shapes: tensor shapes by name (the counted, prunable tensors).
    :param density: overall target density in (0, 1].
    :param distribution: ``uniform`` or ``erk``.
    """
    if distribution == "erk":
        densities = erk_densities(shapes, density)
    elif distribution == "uniform":
        densities = {n: density for n in shapes}
    else:
        raise ValueError(f"unknown prune.distribution {distribution!r}; choose uniform or erk")
    # At least one weight per layer: a layer with none cuts the network (and its gradient) in two.
    return {n: max(1, min(math.prod(s), round(densities[n] * math.prod(s)))) for n, s in shapes.items()}


def random_mask(
    shapes: Mapping[str, Sequence[int]], counts: Mapping[str, int], generator: torch.Generator
) -> Mask:
    """A uniformly random mask with exactly ``counts[name]`` kept entries per tensor.

    :param shapes: tensor shapes by name.
    :param counts: kept entries per name.
    :param generator: random source.
    """
    mask: Mask = {}
    for name, shape in shapes.items():
        flat = torch.zeros(math.prod(shape), dtype=torch.bool)
        flat[torch.randperm(flat.numel(), generator=generator)[: counts[name]]] = True
        mask[name] = flat.view(*shape)
    return mask


class LayerChange(NamedTuple):
    """One layer's mask update: the new mask and what changed, as flat indices (cheap to apply)."""

    mask: torch.Tensor  # the new boolean mask (the layer's shape, the same count)
    dropped: torch.Tensor  # flat indices dropped (some may be grown again)
    grown_at: torch.Tensor  # flat indices grown
    kept: int  # live weights before (and after) the update

    @property
    def grown(self) -> torch.Tensor:
        """The grown positions as a boolean mask of the layer's shape."""
        grown = torch.zeros(self.mask.numel(), dtype=torch.bool)
        grown[self.grown_at] = True
        return grown.view_as(self.mask)


def drop_and_grow(
    keep: torch.Tensor,
    weight: torch.Tensor,
    grow_scores: torch.Tensor | None,
    fraction: float,
    generator: torch.Generator,
) -> LayerChange:
    """One layer's update: drop the smallest-magnitude live weights, grow as many among the inactive.

    ``n = floor(fraction * live)`` (RigL's count). Growth picks the largest ``grow_scores`` (RigL:
    ``|dense gradient|``) among the positions inactive after the drop, or uniformly random ones when
    ``grow_scores`` is None (SET). Exact zero scores (units that got no gradient) rank below every
    nonzero one and among themselves in a random order, not by position. A dense layer is returned
    unchanged.

    :param keep: the layer's boolean mask.
    :param weight: its current weights (same shape).
    :param grow_scores: growth scores, or None for random growth.
    :param fraction: fraction of the live weights replaced.
    :param generator: random source (SET's growth, tie order).
    :return: the new mask (same count), the dropped and the grown positions (``n`` each; a just-dropped
        position may be grown again).
    """
    live = int(keep.sum())
    n = int(fraction * live) if live < keep.numel() else 0
    none = torch.zeros(0, dtype=torch.long)
    if n == 0:
        return LayerChange(keep.clone(), none, none, live)
    flat = keep.flatten().clone()
    dropped = extreme_among(weight.abs(), keep, n, largest=False)
    flat[dropped] = False
    free = ~flat
    if grow_scores is None:
        grown = random_among(free, n, generator)
    else:
        magnitude = grow_scores.detach().flatten().abs().float()
        signal = free & (magnitude > 0)
        grown = extreme_among(magnitude, signal, n)
        if grown.numel() < n:  # fewer free positions got a gradient than are grown: the rest at random
            grown = torch.cat([grown, random_among(free & ~signal, n - grown.numel(), generator)])
    flat[grown] = True
    return LayerChange(flat.view_as(keep), dropped, grown, live)


@dataclass
class DynamicSchedule:
    """The mask of one sparse-training run and its updates, with their log.

    :param method: ``static``, ``set`` or ``rigl``.
    :param mask: the current mask over the prunable names (excluded names stay all-kept).
    :param updated: the names whose masks change (the counted, prunable tensors).
    :param every: steps between updates.
    :param end: the last step at which the mask may change.
    :param drop_fraction: the fraction at step 0, cosine-decayed to 0 at ``end``.
    :param seed: seeds SET's growth and the tie order.
    :param log: one row per (update, layer): :data:`LOG_COLUMNS`.
    :param changes: the last update's change per updated name.
    """

    method: str
    mask: Mask
    updated: list[str]
    every: int
    end: int
    drop_fraction: float
    seed: int
    log: list[dict[str, Any]] = field(default_factory=list)
    changes: dict[str, LayerChange] = field(default_factory=dict)
    # Target name -> online name of the network being updated (its structure never changes in a run).
    twins: dict[str, str] | None = None
    last_period: int = field(default=0)
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown sparse-training method {self.method!r}; choose one of {METHODS}")
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def grown(self) -> Mask:
        """The positions grown by the last update, per updated name (boolean masks)."""
        return {name: change.grown for name, change in self.changes.items()}

    @property
    def needs_gradient(self) -> bool:
        """RigL grows by the dense gradient; static and SET need none."""
        return self.method == "rigl"

    def due(self, step: int) -> bool:
        """Whether a multiple of ``every`` was reached since the last update, within ``end``.

        Steps advance by ``n_envs`` at a time, so an update is due once per period, at the first step
        at or after ``k * every`` (``k >= 1``).

        :param step: the step counter.
        """
        if self.method == "static" or step > self.end or step // self.every <= self.last_period:
            return False
        return True

    def update(
        self, step: int, weights: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor] | None = None
    ) -> Mask:
        """Drop and grow in every updated layer; log it; return the new mask (also kept as :attr:`mask`).

        :param step: the step counter (decides the drop fraction).
        :param weights: current weights of the updated names (CPU).
        :param grads: RigL: dense gradients of the updated names on the update step's batch.
        """
        if self.needs_gradient and grads is None:
            raise ValueError(
                "RigL grows where the dense gradient is largest: pass the update step's gradients"
            )
        self.last_period = step // self.every
        fraction = cosine_drop_fraction(step, self.end, self.drop_fraction)
        new = {n: m.clone() for n, m in self.mask.items()}
        for name in self.updated:
            old = self.mask[name]
            scores = None if grads is None else grads[name].detach().cpu()
            change = self.changes[name] = drop_and_grow(
                old, weights[name].detach().cpu(), scores, fraction, self.generator
            )
            new[name] = change.mask
            kept, n = change.kept, change.grown_at.numel()
            # Kept through the update: the live weights not dropped, and the dropped ones grown again.
            regrown = int(old.flatten()[change.grown_at].sum())
            self.log.append(
                {
                    "step": step,
                    "layer": name,
                    "kept": kept,
                    "dropped": n,
                    "grown": n,
                    "overlap": (kept - n + regrown) / kept if kept else 1.0,
                    "drop_fraction": fraction,
                }
            )
        self.mask = new
        return new


class DenseGradients:
    """The tap's reader: the first dense gradient of each updated parameter after it was installed.

    SAC's actor loss also reaches the critic's parameters; the critic's own backward runs first, so
    keeping only the first gradient keeps each network's own loss.

    :param names: the updated (online) parameter names.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names = set(names)
        self.grads: dict[str, torch.Tensor] = {}

    def __call__(self, name: str, grad: torch.Tensor) -> None:
        """Record ``|grad|`` of ``name`` unless one was recorded since the tap was installed."""
        if name in self.names and name not in self.grads:
            self.grads[name] = grad.detach().abs().clone()

    @property
    def complete(self) -> bool:
        """Whether every updated parameter has its gradient."""
        return self.names <= set(self.grads)


def summary_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One curve point (W&B) per update: totals over layers and the kept-weighted overlap.

    :param rows: the log rows of one update.
    """
    kept = sum(r["kept"] for r in rows)
    return {
        "step": rows[0]["step"],
        "sparse/dropped": sum(r["dropped"] for r in rows),
        "sparse/grown": sum(r["grown"] for r in rows),
        "sparse/overlap": sum(r["overlap"] * r["kept"] for r in rows) / kept if kept else 1.0,
        "sparse/drop_fraction": rows[0]["drop_fraction"],
    }


@torch.no_grad()
def apply_update(
    module: nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    schedule: DynamicSchedule,
    step: int,
    grads: Mapping[str, torch.Tensor] | None = None,
) -> list[dict[str, Any]]:
    """Update ``module``'s mask by the schedule: online and target twins, weights and optimizer state.

    Dropped weights become 0 (:func:`set_masks`, targets included); grown weights are set to 0 (a
    pruned one already is, by the invariant; a just-dropped one regrown restarts, as in RigL's code),
    and every optimizer's state is zeroed at dropped and grown positions, so a grown weight starts from
    0 with fresh moments. Target twins take the new mask (:func:`set_masks`) and 0 at grown positions
    too, so online and target start every grown weight equal.

    :param module: a network with attached masks (an SB3 policy or a classifier).
    :param optimizers: every optimizer over (parts of) ``module``.
    :param schedule: the run's schedule.
    :param step: the step counter.
    :param grads: RigL's dense gradients by online name.
    :return: the update's log rows.
    """
    before = len(schedule.log)
    params = dict(module.named_parameters())
    new = schedule.update(step, {n: params[n].detach() for n in schedule.updated}, grads)
    set_masks(module, new)
    if schedule.twins is None:
        schedule.twins = online_twins(module)
    targets: dict[str, list[str]] = {}
    for target, online in schedule.twins.items():
        targets.setdefault(online, []).append(target)
    for name in schedule.updated:
        change = schedule.changes[name]
        if not change.grown_at.numel():
            continue
        # Flat indices, not boolean masks: an update touches ~1% of a layer.
        grown = change.grown_at.to(params[name].device)
        for weight in (name, *targets.get(name, ())):
            zero_entries(params[weight], grown)
        # Dropped positions too: set_masks' enforcers zero them already, but a module without
        # enforce_after_steps has none, and indexing ~1% of a layer costs microseconds.
        reset = torch.cat([grown, change.dropped.to(grown.device)])
        for optimizer in optimizers:
            zero_state_entries(optimizer, params[name], reset)
    return schedule.log[before:]


@dataclass
class PendingUpdate:
    """An update step of a plain training loop (the supervised trainer), between its start and its
    optimizer step. Updating after the step, not between backward and step, keeps a dropped weight's
    moments at 0: the step would otherwise write its last gradient into them.

    :param module: the network (masks enforced).
    :param schedule: the run's schedule.
    :param step: the step counter of the update step.
    :param reader: RigL's tapped gradients of this step's batch (None for SET).
    """

    module: nn.Module
    schedule: DynamicSchedule
    step: int
    reader: DenseGradients | None

    def finish(self, optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
        """After the optimizer step: remove the tap, drop and grow (RigL: by the tapped gradients).

        :param optimizer: the network's optimizer.
        :return: the update's log rows.
        """
        grads = None
        if self.reader is not None:
            set_gradient_tap(self.module, None)
            grads = self.reader.grads
        return apply_update(self.module, [optimizer], self.schedule, self.step, grads)


def start_sparse_update(
    module: nn.Module, schedule: DynamicSchedule | None, step: int
) -> PendingUpdate | None:
    """Before a training step's backward: an update if one is due (RigL taps this batch's gradient).

    :param module: the network (masks enforced).
    :param schedule: the run's sparse-training schedule, if any.
    :param step: the step counter.
    :return: the pending update, None when none is due.
    """
    if schedule is None or not schedule.due(step):
        return None
    reader = None
    if schedule.needs_gradient:
        reader = DenseGradients(schedule.updated)
        set_gradient_tap(module, reader)
    return PendingUpdate(module, schedule, step, reader)
