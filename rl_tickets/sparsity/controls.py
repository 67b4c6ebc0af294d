"""How a level's starting state is built: the ticket's retraining modes and the controls.

Every control is run against the *ticket's own mask* at that level, so it is parameter-matched:

- ``reinit``: same mask, fresh weights from the network's own initialiser (Frankle & Carbin 2019;
  Yu et al. 2020's parameter-matched random initialisation);
- ``sign_reinit``: same mask, fresh magnitudes with the signs of the ticket's starting weights
  (Zhou et al. 2019);
- ``permute``: same mask, surviving starting weights permuted within each layer (Vischer et al. 2022);
- ``random_mask``: a random mask with the ticket's exact per-layer counts, starting weights
  (OpenLTH's layer-wise random pruning); ``random_reinit``: that random mask with fresh weights;
- ``small_dense``: a dense network with hidden widths and CNN channels shrunk to the ticket's kept
  count (counted as density counts it), trained from its own initialisation for the full budget
  (Graesser et al. 2022).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rl_tickets.sparsity.masks import Mask


@dataclass
class Start:
    """The mask and parameter overrides a variant starts from (None: the ticket's own weights)."""

    mask: Mask | None
    params: dict[str, torch.Tensor] | None = None


@dataclass
class ControlInputs:
    """What every control is built from.

    :param mask: the ticket's mask at this level.
    :param start: the ticket's starting parameters (all online parameters).
    :param fresh: freshly initialised parameters (a new seed), same shapes.
    :param generator: random source for permutations and random masks.
    """

    mask: Mask
    start: dict[str, torch.Tensor]
    fresh: dict[str, torch.Tensor]
    generator: torch.Generator


def _reinit(x: ControlInputs) -> Start:
    return Start(mask=x.mask, params=x.fresh)


def _sign_reinit(x: ControlInputs) -> Start:
    params = dict(x.start)
    for name in x.mask:
        # sign(0) = 0 would kill a weight; take +1 there (such weights are pruned or measure-zero).
        sign = torch.where(x.start[name] >= 0, 1.0, -1.0)
        params[name] = x.fresh[name].abs() * sign
    return Start(mask=x.mask, params=params)


def _permute(x: ControlInputs) -> Start:
    params = dict(x.start)
    for name, keep in x.mask.items():
        values = x.start[name].clone()
        alive = keep.flatten().nonzero().squeeze(1)
        order = alive[torch.randperm(alive.numel(), generator=x.generator)]
        flat = values.flatten()
        flat[alive] = x.start[name].flatten()[order]
        params[name] = flat.view_as(values)
    return Start(mask=x.mask, params=params)


def random_mask_like(mask: Mask, generator: torch.Generator) -> Mask:
    """A uniformly random mask with exactly the same number of kept weights per layer.

    :param mask: the reference mask.
    :param generator: random source.
    """
    out: Mask = {}
    for name, keep in mask.items():
        order = torch.randperm(keep.numel(), generator=generator)
        new = torch.zeros(keep.numel(), dtype=torch.bool)
        new[order[: int(keep.sum())]] = True
        out[name] = new.view_as(keep)
    return out


def _random_mask(x: ControlInputs) -> Start:
    return Start(mask=random_mask_like(x.mask, x.generator))


def _random_reinit(x: ControlInputs) -> Start:
    return Start(mask=random_mask_like(x.mask, x.generator), params=x.fresh)


CONTROLS: dict[str, Callable[[ControlInputs], Start]] = {
    "reinit": _reinit,
    "sign_reinit": _sign_reinit,
    "permute": _permute,
    "random_mask": _random_mask,
    "random_reinit": _random_reinit,
}
# small_dense changes the architecture, so the runner builds it from a width factor instead.
ARCHITECTURE_CONTROLS = ("small_dense",)


def build_control(name: str, inputs: ControlInputs) -> Start:
    """The starting mask and parameters of control ``name``.

    :param name: a key of :data:`CONTROLS`.
    :param inputs: the ticket's mask, starting and fresh parameters, and a generator.
    """
    return CONTROLS[name](inputs)
