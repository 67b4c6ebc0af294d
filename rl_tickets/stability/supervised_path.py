"""The line between two supervised copies: test error and test loss at every alpha (Frankle et al. 2020).

One network is built once; at each alpha its parameters are overwritten with the interpolated ones and
the mask is applied, then the whole test split is evaluated in chunks on the trainer's device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rl_tickets.sparsity.masks import Mask, set_masks
from rl_tickets.stability.interpolation import interpolate
from rl_tickets.stability.points import PathPoint
from rl_tickets.supervised.steps import evaluate
from rl_tickets.supervised.trainer import SupervisedTrainer


class SupervisedPath:
    """Evaluates paths between copies trained by one :class:`SupervisedTrainer`."""

    metric = "test_error"
    higher_is_better = False

    def __init__(self, trainer: SupervisedTrainer) -> None:
        """:param trainer: the analysis's trainer (its network and data on its device)."""
        self.trainer = trainer
        self.settings: dict[str, Any] = {"split": "test", "test_size": len(trainer.data.test)}

    @torch.no_grad()
    def points(self, a: Path, b: Path, mask: Mask | None, alphas: list[float]) -> list[PathPoint]:
        """Test error and loss at every alpha.

        :param a: the first copy's ``model.pt``.
        :param b: the second copy's.
        :param mask: the pair's mask (None: dense).
        :param alphas: interpolation weights.
        """
        params_a, params_b = self.trainer.load_params(a), self.trainer.load_params(b)
        model = self.trainer.nets.build(0, 1.0)
        named = dict(model.named_parameters())
        out = []
        for alpha in alphas:
            for name, value in interpolate(params_a, params_b, alpha).items():
                named[name].copy_(value.to(named[name].device))
            if mask is not None:
                set_masks(model, mask)
            loss, accuracy = evaluate(model, self.trainer.data.test)
            out.append(PathPoint(alpha, 1.0 - accuracy, 0.0, loss))
        return out
