"""Choosing ``n`` entries of a layer without sorting it: the ``n`` extreme scores, or ``n`` at random.

A mask update (SET, RigL) drops about 1% of a 512x512 layer and grows as many: ``torch.topk`` over
the whole layer, ``nonzero`` over ~90% of it and one random draw per free position were most of its
cost. These helpers return exactly what those would (the same set; ties at the boundary in any
order) but touch the whole layer only with cheap elementwise passes:

* :func:`extreme_among`: a threshold read off a strided sample keeps the few entries that can be
  among the ``n`` best, and ``topk`` runs over those. When fewer than ``n`` pass (an unlucky sample),
  the full ``topk`` runs, so the result never depends on the sample, only the time does.
* :func:`random_among`: rejection sampling. ``c`` positions drawn uniformly, those not allowed
  discarded, duplicates merged: by symmetry the distinct survivors are a uniformly random subset of
  the allowed positions given their number, and ``n`` taken at random from them are a uniformly random
  ``n``-subset. When fewer than ``n`` survive, all allowed positions are drawn from instead.

PyTorch has no partial selection by threshold or sparse sampling without replacement, hence our own.
"""

from __future__ import annotations

import math

import torch

# Entries sampled to place the threshold: enough that the estimated quantile is within a few percent.
SAMPLE_SIZE = 16_384


def _margin(n: int) -> float:
    """How many entries to aim to keep above the threshold: twice ``n`` plus a safety margin."""
    return 2 * n + 6 * math.sqrt(n) + 16


def extreme_among(
    values: torch.Tensor, candidates: torch.Tensor, n: int, largest: bool = True
) -> torch.Tensor:
    """Flat indices of the ``n`` largest (or smallest) ``values`` among the ``candidates``.

    The same set as ``topk`` over the candidates' values (see the module docstring for how).

    :param values: a score per entry (any shape, real).
    :param candidates: boolean, same shape: where a choice is allowed.
    :param n: how many to choose (clipped to the number of candidates).
    :param largest: choose the largest values (else the smallest).
    """
    flat, allowed = values.flatten(), candidates.flatten()
    count = int(allowed.sum())
    n = min(n, count)
    if n <= 0:
        return torch.zeros(0, dtype=torch.long)
    if _margin(n) < count / 4:
        # An odd stride: a layer's rows or columns are not sampled in lockstep.
        stride = 2 * (flat.numel() // (2 * SAMPLE_SIZE)) + 1
        sample = flat[::stride][allowed[::stride]]
        rank = math.ceil(sample.numel() * _margin(n) / count)
        if 0 < rank < sample.numel():
            threshold = torch.topk(sample, rank, largest=largest, sorted=False).values
            passing = flat >= threshold.min() if largest else flat <= threshold.max()
            index = (passing & allowed).nonzero().squeeze(1)
            if index.numel() >= n:
                return index[torch.topk(flat[index], n, largest=largest, sorted=False).indices]
    index = allowed.nonzero().squeeze(1)
    return index[torch.topk(flat[index], n, largest=largest, sorted=False).indices]


def random_among(candidates: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Flat indices of ``n`` distinct candidate entries, a uniformly random ``n``-subset.

    :param candidates: boolean (any shape): the allowed entries.
    :param n: how many (clipped to the number of candidates).
    :param generator: random source.
    """
    allowed = candidates.flatten()
    count = int(allowed.sum())
    n = min(n, count)
    if n <= 0:
        return torch.zeros(0, dtype=torch.long)
    # About 10% more distinct survivors than needed expected, plus a margin of several deviations.
    draws = math.ceil((1.1 * n + 6 * math.sqrt(n) + 16) * allowed.numel() / count)
    if draws < allowed.numel() // 4:
        drawn = torch.randint(allowed.numel(), (draws,), generator=generator)
        distinct = torch.unique(drawn[allowed[drawn]])
        if distinct.numel() >= n:
            return distinct[torch.randperm(distinct.numel(), generator=generator)[:n]]
    index = allowed.nonzero().squeeze(1)
    return index[torch.randperm(index.numel(), generator=generator)[:n]]
