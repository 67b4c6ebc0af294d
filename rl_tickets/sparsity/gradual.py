"""Gradual magnitude pruning (Zhu & Gupta 2017): one run whose mask grows on a polynomial schedule.

Sparsity at step t rises from 0 at ``begin`` to ``1 - final_density`` at ``end``:
``s_t = s_f * (1 - (1 - (t - begin) / (end - begin)) ** 3)``, updated every ``every`` steps, by
the same shared top-k over live weights as the iterative tickets (Graesser et al. 2022's defaults:
begin at 20% and end at 80% of training).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from rl_tickets.sparsity.masks import Mask, density
from rl_tickets.sparsity.pruning import PruneSpec, next_mask, prunable


def target_density(step: int, begin: int, end: int, final_density: float) -> float:
    """Zhu & Gupta's polynomial schedule as a density.

    :param step: the current training step.
    :param begin: step at which pruning starts (density 1 before it).
    :param end: step at which ``final_density`` is reached (and kept after).
    :param final_density: density at the end, in (0, 1).
    """
    if step <= begin:
        return 1.0
    progress = min(1.0, (step - begin) / max(1, end - begin))
    sparsity = (1.0 - final_density) * (1.0 - (1.0 - progress) ** 3)
    return 1.0 - sparsity


@dataclass
class GradualSchedule:
    """Callable mask schedule for a trainer: ``(step, weights) -> new mask or None``.

    :param spec: scope, distribution, exclusions and criterion (its rate is replaced each update).
    :param names: the prunable names.
    :param final_density: the density reached at ``end``.
    :param begin: first pruning step.
    :param end: last pruning step.
    :param every: update period in steps.

    Criteria that compare with earlier weights (magnitude_increase, movement) compare with the weights
    at the previous mask update (at the first one: the weights of the first call, the run's start).
    """

    spec: PruneSpec
    names: list[str]
    final_density: float
    begin: int
    end: int
    every: int
    mask: Mask | None = field(default=None)
    reference: dict[str, torch.Tensor] | None = field(default=None)
    history: list[tuple[int, float]] = field(default_factory=list)

    def __call__(self, step: int, weights: dict[str, torch.Tensor]) -> Mask | None:
        """Prune the live weights down to the schedule's density at ``step`` (None if unchanged)."""
        cpu = {n: weights[n].detach().cpu().clone() for n in self.names}
        if self.mask is None:
            self.mask = {n: torch.ones_like(weights[n], dtype=torch.bool) for n in self.names}
            self.reference = cpu
        counted = prunable(self.names, self.spec.exclude)
        current = density({n: self.mask[n] for n in counted})
        wanted = target_density(step, self.begin, self.end, self.final_density)
        if wanted >= current - 1e-12:
            return None
        # Per-layer rate overrides describe per-level rates and have no meaning here.
        spec = replace(self.spec, rate=1.0 - wanted / current, overrides={})
        assert self.reference is not None  # set at the first call
        self.mask = next_mask(spec, cpu, self.reference, self.mask)
        self.reference = cpu
        self.history.append((step, density({n: self.mask[n] for n in counted})))
        return self.mask
