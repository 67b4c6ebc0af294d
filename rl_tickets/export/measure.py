"""Sizes and CPU latencies of the exported forms, measured side by side."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Mapping

import gymnasium as gym
import numpy as np
import torch
from torch import nn

WARMUP = 20


def state_bytes(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of ``torch.save(state)``: the weights alone, without optimizer states or metadata.

    :param state: tensors by name (dense or sparse).
    """
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return buffer.getbuffer().nbytes


def observations(space: gym.spaces.Box, n: int, seed: int) -> torch.Tensor:
    """``n`` observations sampled from the space (normal draws where it is unbounded).

    :param space: a Box observation space.
    :param n: batch size.
    :param seed: the space's sampling seed.
    """
    space.seed(seed)
    return torch.as_tensor(np.stack([space.sample() for _ in range(n)]), dtype=torch.float32)


def unit_actions(space: gym.Space, n: int, seed: int) -> torch.Tensor:
    """``n`` actions uniform in [-1, 1] (SB3's critics read actions rescaled to that range).

    :param space: the action space (its flat size is used; a Discrete space gives one column).
    :param n: batch size.
    :param seed: random seed.
    """
    size = int(np.prod(space.shape)) if space.shape else 1
    return torch.rand(n, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def median_latency_ms(forms: Mapping[str, nn.Module], batch: torch.Tensor, calls: int) -> dict[str, float]:
    """Median wall time of one forward pass per form, in milliseconds.

    The forms run interleaved (call i of every form, then call i + 1, in a rotating order), so load
    from other processes on the machine hits all forms alike; medians ignore the occasional preempted
    call.

    :param forms: name -> module taking ``batch``.
    :param batch: the input batch.
    :param calls: timed calls per form (after a warm-up).
    """
    times: dict[str, list[float]] = {name: [] for name in forms}
    names = list(forms)
    for i in range(WARMUP + calls):
        # Rotate who goes first, so no form always runs right after another one warmed the caches.
        for name in names[i % len(names) :] + names[: i % len(names)]:
            module = forms[name]
            start = time.perf_counter()
            module(batch)
            elapsed = time.perf_counter() - start
            if i >= WARMUP:
                times[name].append(elapsed)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}
