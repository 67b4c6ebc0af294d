"""Feeding and measuring a classifier: endless on-device minibatches and whole-split evaluation."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from rl_tickets.supervised.data import Split

# Evaluation batch: large enough to amortise Python, small enough that Conv-2's first activations
# (chunk x 64 x 32 x 32 floats) stay near 100 MB.
EVAL_CHUNK = 500


def minibatches(
    split: Split, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless minibatches drawn on the split's device: a new permutation each epoch, full batches only.

    Dropping an epoch's last partial batch keeps every step at ``batch_size``; the next epoch's new
    permutation gives the dropped samples their turn.

    :param split: images and labels, already on the training device.
    :param batch_size: samples per batch (capped at the split's size).
    :param generator: a seeded generator on the split's device.
    """
    n = len(split)
    size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator, device=split.y.device)
        for index in order[: n - n % size].split(size):
            yield split.x.index_select(0, index), split.y.index_select(0, index)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, chunk: int = EVAL_CHUNK) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole split, in chunks, without gradients.

    :param model: the classifier (put in eval mode here, back in train mode after).
    :param split: the split, on the model's device.
    :param chunk: samples per forward pass.
    """
    model.eval()
    loss = torch.zeros((), device=split.y.device)
    correct = torch.zeros((), dtype=torch.long, device=split.y.device)
    for start in range(0, len(split), chunk):
        logits = model(split.x[start : start + chunk])
        labels = split.y[start : start + chunk]
        loss += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
    model.train()
    n = max(1, len(split))
    return float(loss) / n, int(correct) / n
