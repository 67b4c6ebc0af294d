"""What an evaluator of a path returns: the metric at one point of the line between two copies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rl_tickets.sparsity.masks import Mask


@dataclass(frozen=True)
class PathPoint:
    """The metric at one interpolation weight.

    :param alpha: weight of the second copy (0: the first copy, 1: the second).
    :param value: the headline metric (RL: mean deterministic return; supervised: test error).
    :param spread: RL: the returns' population sd; supervised: 0.
    :param loss: supervised: mean test cross-entropy; RL: None.
    :param returns: RL: every episode's return, in the order episodes finished; supervised: empty.
    """

    alpha: float
    value: float
    spread: float = 0.0
    loss: float | None = None
    returns: list[float] = field(default_factory=list)


class PathEvaluator(Protocol):
    """Evaluates the line between two copies' final checkpoints (see :mod:`.rl_path`, :mod:`.supervised_path`)."""

    metric: str  # the name of PathPoint.value: eval_return_mean or test_error
    higher_is_better: bool
    settings: dict[str, Any]  # what the points depend on besides the weights (episodes, seeds)

    def points(self, a: Path, b: Path, mask: Mask | None, alphas: list[float]) -> list[PathPoint]:
        """The metric at every alpha, masks applied at every point."""
        ...
