"""Masks judged without training: a mask applied to weights set by a rule, evaluated as they are.

Two controls (Zhou et al. 2019's "supermasks"; Gaier & Ha 2019's weight-agnostic networks):

- ``supermask``: the ticket's mask at a level, evaluated under the rule's weights, no training;
- ``random_supermask``: a random mask with the ticket's exact per-layer counts under the *same* rule
  (for ``init``, the ticket's initial weights at the random positions; for ``resampled``, draw ``d``
  uses one seed for both), so the two are paired evaluation by evaluation.

The weight rules (``supermask.weights``), each named for what it evaluates:

- ``init`` (Zhou et al. 2019): the mask on the ticket's own starting weights, biases as initialised;
  one deterministic evaluation.
- ``signed_constant`` (Zhou et al. 2019's best variant): every kept weight is sign(w0) times its layer's
  initialisation standard deviation (the standard deviation of the ticket's starting weights of that
  layer, pruned entries included); biases as initialised; one evaluation.
- ``shared`` (Gaier & Ha 2019): every kept weight of the network is the same value w, no
  per-connection signs, biases 0; one evaluation per w in ``supermask.shared_values`` (their
  -2, -1, -0.5, 0.5, 1, 2 by default); the level reports the mean and the best over w.
- ``resampled``: fresh magnitudes from the policy's own initialiser (a fresh network per draw seed),
  with the ticket's signs (``signs=ticket``) or their own (``signs=random``), biases as the fresh
  network's, ``supermask.samples`` draws. This was this suite's ``init`` before engine version 2: a
  level recorded then with ``weights: init`` is read as ``resampled`` (:func:`recorded_settings`).

Nothing here trains or saves a model: an evaluation is rebuilt from its seed, the rule and the mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from rl_tickets.sparsity.masks import Mask

SUPERMASK_CONTROLS = ("supermask", "random_supermask")
WEIGHTS = ("init", "signed_constant", "shared", "resampled")
SIGNS = ("ticket", "random")
# Gaier & Ha 2019 evaluate every network at the shared weights -2, -1, -0.5, 0.5, 1, 2.
SHARED_VALUES = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0)
# The settings that decide each rule's evaluations: a finished level is evaluated again only when one
# of its own rule's settings changed (supermask.samples means nothing to ``init``).
RELEVANT: dict[str, tuple[str, ...]] = {
    "init": ("weights",),
    "signed_constant": ("weights",),
    "shared": ("weights", "shared_values"),
    "resampled": ("weights", "samples", "signs"),
}


@dataclass(frozen=True)
class DrawSpec:
    """How supermask weights are set.

    :param weights: a rule of :data:`WEIGHTS`.
    :param signs: ``ticket`` or ``random`` (``resampled`` only).
    :param samples: draws of ``resampled``.
    :param shared_values: the values w of ``shared``.
    """

    weights: str = "init"
    signs: str = "ticket"
    samples: int = 10
    shared_values: tuple[float, ...] = field(default=SHARED_VALUES)


def evaluations(spec: DrawSpec) -> list[dict[str, Any]]:
    """What each evaluation of a level is, in order: ``{"draw": i}`` plus the rule's own label
    (``w`` for ``shared``; ``resampled`` draws get their seed from the caller).

    :param spec: the rule.
    """
    if spec.weights == "shared":
        return [{"draw": i, "w": float(w)} for i, w in enumerate(spec.shared_values)]
    if spec.weights == "resampled":
        return [{"draw": i} for i in range(spec.samples)]
    return [{"draw": 0}]


def signs_of(weights: torch.Tensor) -> torch.Tensor:
    """+1/-1 per entry; a zero counts as +1 (pruned or measure-zero entries never kill a weight).

    :param weights: a tensor.
    """
    return torch.where(weights >= 0, 1.0, -1.0).to(weights.dtype)


def draw_params(
    spec: DrawSpec,
    draw: int,
    mask: Mask,
    start: Mapping[str, torch.Tensor],
    fresh: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The online parameters of one evaluation (the mask is applied by the caller).

    :param spec: the rule.
    :param draw: the evaluation's index (picks w for ``shared``).
    :param mask: the mask evaluated (names of masked tensors).
    :param start: the ticket's starting parameters (its initial weights, the source of signs).
    :param fresh: a freshly initialised network from the draw's seed (``resampled`` only).
    """
    params = {name: value.clone() for name, value in start.items()}
    weights = [name for name in mask if name.endswith("weight")]
    if spec.weights == "init":
        return params
    if spec.weights == "signed_constant":
        for name in weights:
            params[name] = signs_of(start[name]) * start[name].std()
        return params
    if spec.weights == "shared":
        value = float(spec.shared_values[draw])
        for name in params:
            if name in weights:
                params[name] = torch.full_like(params[name], value)
            elif name.endswith("bias"):
                params[name] = torch.zeros_like(params[name])
        return params
    if spec.weights != "resampled":
        raise ValueError(f"unknown supermask.weights={spec.weights!r}; choose one of {', '.join(WEIGHTS)}")
    if fresh is None:
        raise ValueError("supermask.weights=resampled draws fresh weights: pass them")
    params = {name: value.clone() for name, value in fresh.items()}
    if spec.signs == "ticket":
        for name in mask:
            params[name] = fresh[name].abs() * signs_of(start[name])
    return params


def recorded_settings(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """Supermask settings as recorded in a level's metrics.json, in today's names.

    Before engine version 2 (no ``shared_values`` recorded), ``init`` meant fresh magnitudes with the
    ticket's signs, today's ``resampled``; the old ``shared`` (one magnitude with per-connection
    signs) is no rule of today's and reads as ``legacy_shared``, so it is always evaluated again.

    :param recorded: ``extra.supermask`` of a finished untrained level.
    """
    settings = dict(recorded)
    if "shared_values" not in settings:
        settings["weights"] = {"init": "resampled", "shared": "legacy_shared"}.get(
            settings.get("weights"), ""
        )
    return settings


def relevant(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that decide a rule's evaluations (see :data:`RELEVANT`).

    :param settings: supermask settings (today's names).
    """
    keys = RELEVANT.get(str(settings.get("weights")), ("weights",))
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in settings.items() if k in keys}


def draw_summary(values: list[float]) -> dict[str, float]:
    """Mean, standard deviation (0 for one evaluation, else ddof=1) and best across evaluations.

    :param values: one return per evaluation.
    """
    tensor = torch.tensor(values, dtype=torch.float64)
    std = float(tensor.std()) if len(values) > 1 else 0.0
    return {"mean": float(tensor.mean()), "std": std, "max": float(tensor.max())}
