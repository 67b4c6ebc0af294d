"""From trained weights and the current mask to the next mask.

A criterion only defines a *score* per weight (:data:`SCORES`); everything else is shared: which
tensors are prunable (exclusion patterns), how much each loses (rate, per-layer overrides, ERK), and
selecting the top-k over *live* weights only (a dead weight is never revived by ranking).

**Layer floor.** Global ranking can remove every weight of a layer whose trained weights are small
next to the others' (measured: PPO's ``action_net`` on Acrobot at 8,192 steps per level lost all 192
weights at level 1, 80% overall, and the agent scored -500): the network is then cut in two. With
``min_layer_density`` > 0 every prunable layer keeps at least ``ceil(min_layer_density * numel)`` of
its live weights, its best-scored ones; under global scope the floor is taken *inside* the ranking
(the floors are reserved first, the rest of the level's budget is ranked globally over everything
else), so the overall count stays exact and, where no layer would fall below its floor, the mask is
exactly the plain global top-k. Under layer scope, overrides and ERK a layer keeps
``max(its own count, floor)``. A floor never revives a dead weight, and floors that together exceed a
level's budget (a large floor at high sparsity) win: the level is then denser than its target.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from rl_tickets.sparsity.masks import Mask

ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]

SCORES: dict[str, ScoreFn] = {
    # Frankle & Carbin: keep the largest trained weights.
    "magnitude": lambda final, init, gen: final.abs(),
    # Zhou et al. 2019: keep weights that grew the most in magnitude.
    "magnitude_increase": lambda final, init, gen: final.abs() - init.abs(),
    # Zhou et al. 2019: keep weights that moved the most.
    "movement": lambda final, init, gen: (final - init).abs(),
    # Control: a random mask with the same per-layer counts as the rule would give.
    "random": lambda final, init, gen: torch.rand(final.shape, generator=gen),
}

SCOPES = ("global", "layer")
DISTRIBUTIONS = ("uniform", "erk")


@dataclass(frozen=True)
class PruneSpec:
    """How one pruning step chooses what to remove.

    :param rate: fraction of the *remaining* weights removed per level, in (0, 1).
    :param scope: ``global`` pools all prunable tensors; ``layer`` prunes each at the same rate.
    :param overrides: regex over parameter names -> that tensor's own rate (pruned per layer).
    :param exclude: regexes of parameter names never pruned (and not counted as prunable).
    :param criterion: a key of :data:`SCORES`.
    :param distribution: ``uniform`` or ``erk`` (per-layer densities of Evci et al. 2020).
    :param min_layer_density: every prunable layer keeps at least this fraction of its weights
        (rounded up: any value > 0 keeps at least one); 0 lets a layer be pruned to nothing.
    """

    rate: float = 0.2
    scope: str = "global"
    overrides: Mapping[str, float] = field(default_factory=dict)
    exclude: Sequence[str] = ()
    criterion: str = "magnitude"
    distribution: str = "uniform"
    min_layer_density: float = 0.0


def prunable(names: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """The names not matched by any exclusion regex.

    :param names: candidate parameter names.
    :param exclude: regexes (``re.search``).
    """
    return [n for n in names if not any(re.search(p, n) for p in exclude)]


def layer_rate(name: str, spec: PruneSpec) -> float | None:
    """The override rate for ``name`` (first matching pattern), or None to use the base rate.

    :param name: parameter name.
    :param spec: the pruning settings.
    """
    for pattern, rate in spec.overrides.items():
        if re.search(pattern, name):
            return float(rate)
    return None


def compounded(rate: float, times: int) -> float:
    """Fraction removed by applying ``rate`` ``times`` times: ``1 - (1 - rate) ** times``.

    :param rate: per-application fraction.
    :param times: number of applications (one-shot level n prunes the dense net with times=n).
    """
    # times=1 returns rate itself: 1 - (1 - 0.1) is 0.09999999999999998 in floating point, which
    # would round 0.1 * 15 = 1.5 down to 1 instead of to 2 as round(rate * n) and torch's prune do.
    return rate if times == 1 else 1.0 - (1.0 - rate) ** times


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float) -> dict[str, float]:
    """Per-layer densities of Erdos-Renyi-Kernel (Evci et al. 2020) with overall ``density``.

    A layer's density is proportional to ``sum(shape) / prod(shape)``; layers that would exceed 1
    are kept dense and the scale is solved again over the rest.

    :param shapes: tensor shapes by name (``[out, in]`` or ``[out, in, kh, kw]``).
    :param density: the overall target density in (0, 1].
    """
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    total = sum(numel.values())
    dense: set[str] = set()
    while True:
        budget = density * total - sum(numel[n] for n in dense)
        free = [n for n in shapes if n not in dense]
        weight = sum(raw[n] * numel[n] for n in free)
        scale = budget / weight if weight > 0 else 0.0
        over = [n for n in free if raw[n] * scale > 1.0]
        if not over:
            return {n: 1.0 if n in dense else raw[n] * scale for n in shapes}
        dense.update(over)


def layer_floor(numel: int, min_layer_density: float) -> int:
    """The fewest weights a layer of ``numel`` keeps: ``ceil(min_layer_density * numel)``, 0 for 0.

    :param numel: the layer's size (all its weights, dead ones included).
    :param min_layer_density: the floor as a fraction of the layer.
    """
    # round() first: 0.001 * 3000 is 3.0000000000000004 in floating point, which ceil would make 4.
    return math.ceil(round(min_layer_density * numel, 9)) if min_layer_density > 0 else 0


def _keep_top(scores: torch.Tensor, alive: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Boolean mask keeping the ``n_keep`` highest-scoring live entries (stable tie order)."""
    flat = scores.flatten().double().masked_fill(~alive.flatten(), -math.inf)
    order = torch.sort(flat, descending=True, stable=True).indices
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[order[: max(0, min(n_keep, int(alive.sum())))]] = True
    return keep.view_as(alive)


def _keep_pooled(
    scores: Mapping[str, torch.Tensor], mask: Mask, n_keep: int, floors: Mapping[str, int]
) -> Mask:
    """Top-k over several tensors at once (global scope), each tensor's best ``floors[n]`` reserved first."""
    names = list(scores)
    reserved = {n: _keep_top(scores[n], mask[n], floors[n]) for n in names}
    flat = torch.cat([scores[n].flatten().double() for n in names])
    alive = torch.cat([(mask[n] & ~reserved[n]).flatten() for n in names])
    budget = n_keep - sum(int(r.sum()) for r in reserved.values())
    keep = _keep_top(flat, alive, budget)
    out, start = {}, 0
    for n in names:
        size = mask[n].numel()
        out[n] = keep[start : start + size].view_as(mask[n]) | reserved[n]
        start += size
    return out


def next_mask(
    spec: PruneSpec,
    final: Mapping[str, torch.Tensor],
    initial: Mapping[str, torch.Tensor],
    mask: Mask,
    times: int = 1,
    generator: torch.Generator | None = None,
) -> Mask:
    """Prune ``mask`` once more, ranking the live weights of ``final`` by the spec's criterion.

    :param spec: the pruning settings.
    :param final: trained weights keyed by name (the names of ``mask``).
    :param initial: weights at initialisation (used by the increase/movement criteria).
    :param mask: the current mask; excluded names are returned unchanged.
    :param times: apply the rate this many times at once (one-shot pruning from a dense mask).
    :param generator: random source for the ``random`` criterion.
    """
    if spec.criterion not in SCORES:
        raise ValueError(f"unknown prune.criterion {spec.criterion!r}; choose one of {sorted(SCORES)}")
    generator = generator or torch.Generator().manual_seed(0)
    names = prunable(list(mask), spec.exclude)
    score_fn = SCORES[spec.criterion]
    scores = {n: score_fn(final[n].float(), initial[n].float(), generator) for n in names}
    alive = {n: int(mask[n].sum()) for n in names}
    floors = {n: min(alive[n], layer_floor(mask[n].numel(), spec.min_layer_density)) for n in names}
    new: Mask = {n: m.clone() for n, m in mask.items()}

    if spec.distribution == "erk":
        # ERK fixes each layer's density from the overall target; each layer is then pruned alone.
        current = sum(alive.values()) / sum(mask[n].numel() for n in names)
        target = current * (1.0 - compounded(spec.rate, times))
        densities = erk_densities({n: tuple(mask[n].shape) for n in names}, target)
        for n in names:
            n_keep = max(floors[n], round(densities[n] * mask[n].numel()))
            new[n] = _keep_top(scores[n], mask[n], n_keep)
        return new

    pooled = []
    for n in names:
        own = layer_rate(n, spec)
        if own is None and spec.scope == "global":
            pooled.append(n)
            continue
        rate = compounded(spec.rate if own is None else own, times)
        new[n] = _keep_top(scores[n], mask[n], max(floors[n], alive[n] - round(rate * alive[n])))
    if pooled:
        n_alive = sum(alive[n] for n in pooled)
        n_keep = n_alive - round(compounded(spec.rate, times) * n_alive)
        new.update(_keep_pooled({n: scores[n] for n in pooled}, mask, n_keep, floors))
    return new
