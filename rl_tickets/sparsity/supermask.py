"""Masks judged without training: weights drawn afresh under a mask, evaluated as they are.

Two controls (Zhou et al. 2019's "supermasks"; Gaier & Ha 2019's weight-agnostic networks):

- ``supermask``: the ticket's mask at a level, ``supermask.samples`` weight draws, no training;
- ``random_supermask``: a random mask with the ticket's exact per-layer counts, the *same* draws
  (draw ``d`` uses one seed for both), so the two are paired draw by draw.

How a draw's weights are made (``supermask.weights``, ``supermask.signs``):

- ``init``: magnitudes from the policy's own initialiser (a fresh network per draw seed); with
  ``signs=ticket`` every masked tensor takes the signs of the ticket's starting weights, with
  ``signs=random`` the fresh weights keep their own signs. Biases and other parameters are the fresh
  network's (SB3 initialises PPO/A2C biases to 0, DQN/SAC/TD3 with PyTorch's default uniform).
- ``shared`` (Gaier & Ha): every surviving weight of the whole network gets one shared magnitude,
  :data:`SHARED_MAGNITUDES` ``[d % 3]`` for draw ``d``, with the ticket's starting signs; biases 0.

Nothing here trains or saves a model: a draw is reproduced from its seed and the level's mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rl_tickets.sparsity.masks import Mask

SUPERMASK_CONTROLS = ("supermask", "random_supermask")
WEIGHTS = ("init", "shared")
SIGNS = ("ticket", "random")
# Gaier & Ha 2019 evaluate each network at the shared weights -2, -1, -0.5, 0.5, 1, 2: the magnitudes,
# with signs taken from the ticket (a sign per connection, as their search found).
SHARED_MAGNITUDES = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class DrawSpec:
    """How supermask weights are drawn.

    :param weights: ``init`` or ``shared``.
    :param signs: ``ticket`` or ``random`` (``shared`` always uses the ticket's signs).
    """

    weights: str = "init"
    signs: str = "ticket"


def signs_of(weights: torch.Tensor) -> torch.Tensor:
    """+1/-1 per entry; a zero counts as +1 (pruned or measure-zero entries never kill a weight).

    :param weights: a tensor.
    """
    return torch.where(weights >= 0, 1.0, -1.0).to(weights.dtype)


def draw_params(
    spec: DrawSpec,
    draw: int,
    mask: Mask,
    start: dict[str, torch.Tensor],
    fresh: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """The online parameters of one draw (the mask is applied by the caller).

    :param spec: weights and signs rule.
    :param draw: the draw's index (picks the shared magnitude).
    :param mask: the mask evaluated (names of masked tensors).
    :param start: the ticket's starting parameters (source of the signs).
    :param fresh: a freshly initialised network from the draw's seed.
    """
    params = {name: value.clone() for name, value in fresh.items()}
    if spec.weights == "shared":
        magnitude = SHARED_MAGNITUDES[draw % len(SHARED_MAGNITUDES)]
        for name in params:
            if name in mask and name.endswith("weight"):
                params[name] = magnitude * signs_of(start[name])
            elif name.endswith("bias"):
                params[name] = torch.zeros_like(params[name])
        return params
    if spec.signs == "ticket":
        for name in mask:
            params[name] = fresh[name].abs() * signs_of(start[name])
    return params


def draw_summary(values: list[float]) -> dict[str, float]:
    """Mean, standard deviation (ddof=0 for one draw, else 1) and maximum across draws.

    :param values: one evaluation per draw.
    """
    tensor = torch.tensor(values, dtype=torch.float64)
    std = float(tensor.std()) if len(values) > 1 else 0.0
    return {"mean": float(tensor.mean()), "std": std, "max": float(tensor.max())}
