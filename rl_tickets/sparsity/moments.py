"""Optimizer state at pruned positions: zero it when masks change, floor exact-zero second moments.

A pruned weight has no gradient (:mod:`rl_tickets.sparsity.masks` zeroes it during backward), so with
its optimizer state at zero Adam's and RMSprop's update there is exactly 0. State restored from a denser
checkpoint (``rewind.optimizer=restore``) or left by a mask that just grew is zeroed by
:func:`zero_pruned_state`, so the moments at pruned positions are 0 from the level's first step on.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

# Second-moment state of Adam/RMSprop. A sparse network leaves many of these exactly 0 (pruned weights
# and units whose inputs are all pruned get no gradient), and CPU sqrt is ~5x slower on exact zeros
# than on normal floats (scripts/bench_optimizer_step.py: 178 vs 32 us for a 256x256 tensor). A floor
# of 1e-30 (sqrt 1e-15, far below Adam's eps 1e-8) keeps every update the same to float precision.
SECOND_MOMENTS = ("exp_avg_sq", "square_avg")
SECOND_MOMENT_FLOOR = 1e-30
# Flooring every step would cost as much as it saves; a floored moment decays by beta2 per step and
# stays a normal float for thousands of steps, so every 64 steps is plenty.
FLOOR_EVERY = 64


def floor_second_moments(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """Raise exact zeros in the optimizer's second moments of ``params`` to a tiny floor (speed only).

    :param optimizer: an Adam/RMSprop-like optimizer.
    :param params: the parameters whose state to touch.
    """
    moments = [
        state[k] for q in params if (state := optimizer.state.get(q)) for k in SECOND_MOMENTS if k in state
    ]
    if moments:
        torch._foreach_clamp_min_(moments, SECOND_MOMENT_FLOOR)


@torch.no_grad()
def zero_pruned_state(
    optimizer: torch.optim.Optimizer, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    """Zero every per-entry state tensor (moments, momentum buffers) of ``optimizer`` where a mask is 0.

    Per-entry state is any tensor of the parameter's shape (Adam's ``exp_avg``/``exp_avg_sq``/
    ``max_exp_avg_sq``, RMSprop's ``square_avg``/``grad_avg``/``momentum_buffer``, SGD's
    ``momentum_buffer``); scalar state such as ``step`` is left alone.

    :param optimizer: an optimizer over (some of) the parameters.
    :param pairs: ``(parameter, mask)`` of the masked parameters; others are skipped.
    """
    tensors, masks = [], []
    for param, mask in pairs:
        state = optimizer.state.get(param)
        converted: dict[torch.dtype, torch.Tensor] = {}  # one conversion per parameter, not per moment
        for value in (state or {}).values():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                if value.dtype not in converted:
                    converted[value.dtype] = mask.to(dtype=value.dtype)
                tensors.append(value)
                masks.append(converted[value.dtype])
    if tensors:
        torch._foreach_mul_(tensors, masks)


@torch.no_grad()
def zero_entries(tensor: torch.Tensor, flat_index: torch.Tensor) -> None:
    """Set the entries of ``tensor`` at row-major flat indices ``flat_index`` to 0, in place, any layout.

    :param tensor: the tensor (a parameter or a state tensor).
    :param flat_index: int64 indices into ``tensor.flatten()``, on ``tensor``'s device.
    """
    tensor[torch.unravel_index(flat_index, tensor.shape)] = 0


def zero_state_entries(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, flat_index: torch.Tensor
) -> None:
    """Zero every per-entry state tensor of ``param`` in ``optimizer`` at the flat indices (a mask update).

    :param optimizer: an optimizer (``param`` need not be one of its parameters).
    :param param: the parameter.
    :param flat_index: int64 indices into ``param.flatten()``, on its device.
    """
    for value in (optimizer.state.get(param) or {}).values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            zero_entries(value, flat_index)
