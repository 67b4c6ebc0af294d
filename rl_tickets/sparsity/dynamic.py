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
from typing import Any

import torch
from torch import nn

from rl_tickets.sparsity.masks import Mask, online_twins, set_gradient_tap, set_masks
from rl_tickets.sparsity.moments import zero_pruned_state
from rl_tickets.sparsity.pruning import erk_densities

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


def top_among(scores: torch.Tensor, candidates: torch.Tensor, n: int, largest: bool = True) -> torch.Tensor:
    """Flat indices of the ``n`` best-scoring candidate entries (``largest`` or smallest scores).

    One ``topk`` over the candidates only: a mask update at 512x512 costs milliseconds, not a full sort.

    :param scores: a score per entry (any shape).
    :param candidates: boolean, same shape: where a choice is allowed.
    :param n: how many to choose (at most the number of candidates).
    :param largest: choose the largest scores (else the smallest).
    """
    index = candidates.flatten().nonzero().squeeze(1)
    n = min(n, index.numel())
    if n <= 0:
        return index[:0]
    return index[torch.topk(scores.flatten()[index], n, largest=largest, sorted=False).indices]


def drop_and_grow(
    keep: torch.Tensor,
    weight: torch.Tensor,
    grow_scores: torch.Tensor | None,
    fraction: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
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
    :return: the new mask (same count) and the grown positions (``n`` of them, possibly just dropped).
    """
    live = int(keep.sum())
    n = int(fraction * live) if live < keep.numel() else 0
    grown = torch.zeros(keep.numel(), dtype=torch.bool)
    if n == 0:
        return keep.clone(), grown.view_as(keep)
    flat = keep.flatten().clone()
    flat[top_among(weight.abs(), keep, n, largest=False)] = False
    free = (~flat).nonzero().squeeze(1)
    noise = torch.rand(free.numel(), generator=generator)
    if grow_scores is None:
        grown[free[largest_uniforms(noise, n)]] = True
    else:
        magnitude = grow_scores.detach().flatten()[free].abs().float()
        scores = torch.where(magnitude > 0, magnitude, -noise)
        grown[free[torch.topk(scores, n, sorted=False).indices]] = True
    return (flat | grown).view_as(keep), grown.view_as(keep)


def largest_uniforms(noise: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` largest of ``noise`` (i.i.d. uniform on [0, 1)): ``topk(noise, n)``'s choice.

    SET grows at random among ~90% of a layer: a ``topk`` over all of them is the update's largest cost.
    The ``n`` largest of ``m`` uniforms all exceed ``1 - q`` whenever at least ``n`` do, so a ``topk`` over
    the few above it picks the same entries. ``q`` is chosen so that about ``2n + 6 sqrt(n)`` are expected
    above it: fewer than ``n`` is then a rare event for small ``n`` and, for the hundreds or thousands a
    real layer grows, tens of standard deviations away; when it happens the full ``topk`` runs.

    :param noise: the draws (1-D).
    :param n: how many (at most ``noise.numel()``).
    """
    m = noise.numel()
    expected = n / max(m, 1)
    q = 2 * expected + 6 * (expected / max(m, 1)) ** 0.5
    if q < 0.5:
        above = (noise >= 1.0 - q).nonzero().squeeze(1)
        if above.numel() >= n:
            return above[torch.topk(noise[above], n, sorted=False).indices]
    return torch.topk(noise, n, sorted=False).indices


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
    :param grown: the positions grown by the last update, per updated name.
    """

    method: str
    mask: Mask
    updated: list[str]
    every: int
    end: int
    drop_fraction: float
    seed: int
    log: list[dict[str, Any]] = field(default_factory=list)
    grown: Mask = field(default_factory=dict)
    # Target name -> online name of the network being updated (its structure never changes in a run).
    twins: dict[str, str] | None = None
    last_period: int = field(default=0)
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown sparse-training method {self.method!r}; choose one of {METHODS}")
        self.generator = torch.Generator().manual_seed(self.seed)

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
            new[name], self.grown[name] = drop_and_grow(
                old, weights[name].detach().cpu(), scores, fraction, self.generator
            )
            kept, n = int(old.sum()), int(self.grown[name].sum())
            self.log.append(
                {
                    "step": step,
                    "layer": name,
                    "kept": kept,
                    "dropped": n,
                    "grown": n,
                    "overlap": int((old & new[name]).sum()) / kept if kept else 1.0,
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
    before, old = len(schedule.log), schedule.mask
    params = dict(module.named_parameters())
    new = schedule.update(step, {n: params[n].detach() for n in schedule.updated}, grads)
    set_masks(module, new)
    grown = {n: schedule.grown[n].to(params[n].device) for n in schedule.updated}
    reset = {n: grown[n] | (old[n] & ~new[n]).to(params[n].device) for n in schedule.updated}
    for name, positions in grown.items():
        params[name].masked_fill_(positions, 0.0)
    if schedule.twins is None:
        schedule.twins = online_twins(module)
    for target, online in schedule.twins.items():
        if online in grown:
            params[target].masked_fill_(grown[online], 0.0)
    for optimizer in optimizers:
        # Multiplying by "not reset" zeroes the state of dropped and grown positions, kept ones stay.
        zero_pruned_state(optimizer, [(params[n], ~reset[n]) for n in schedule.updated])
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
