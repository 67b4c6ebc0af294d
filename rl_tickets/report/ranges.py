"""The range a chain's metric can take, when it is known: the ``bounds`` of the "matches dense?" test.

The bounded-mean test behind "matches dense?" / "below dense" (``docs/verdicts.md``) is valid only
with the metric's true range; without it the report guesses the hull of 0 and the data, and then
never declares a verdict on constant differences. Known ranges:

- supervised accuracy: [0, 1];
- Gymnasium classic control, from the per-step reward range on Gymnasium's environment pages times
  the episode limit (``env.make_kwargs.max_episode_steps`` of the chain's config, else the registered
  limit): CartPole-v1 +1 per step including the last, at most 500 steps: [0, 500]; Acrobot-v1 −1 per
  step until the goal, 0 on it, 500 steps: [−500, 0]; MountainCar-v0 −1 per step, 200 steps:
  [−200, 0]; Pendulum-v1 −(θ² + 0.1 θ̇² + 0.001 u²) per step with |θ| ≤ π, |θ̇| ≤ 8, |u| ≤ 2, 200
  steps: [−3254.7, 0].

Anything else (LunarLander, MinAtar, Atari: no documented bound) gets ``None``: the guessed range.
Returns are evaluated without reward normalisation (``norm_reward=False``), so these are their ranges;
best and auc of a return lie in the same range.
"""

from __future__ import annotations

import math
from typing import Any

# Per-step reward (low, high) and the registered episode limit, by Gymnasium id.
PENDULUM_MAX_COST = math.pi**2 + 0.1 * 8.0**2 + 0.001 * 2.0**2
PER_STEP: dict[str, tuple[float, float, int]] = {
    "CartPole-v1": (0.0, 1.0, 500),
    "CartPole-v0": (0.0, 1.0, 200),
    "Acrobot-v1": (-1.0, 0.0, 500),
    "MountainCar-v0": (-1.0, 0.0, 200),
    "Pendulum-v1": (-PENDULUM_MAX_COST, 0.0, 200),
}
ACCURACY = (0.0, 1.0)


def env_bounds(env_id: str, max_episode_steps: int | None = None) -> tuple[float, float] | None:
    """The return range of a Gymnasium environment this module knows, else ``None``.

    :param env_id: e.g. ``CartPole-v1``.
    :param max_episode_steps: the episode limit when the config changes it.
    """
    if env_id not in PER_STEP:
        return None
    low, high, limit = PER_STEP[env_id]
    steps = int(max_episode_steps) if max_episode_steps else limit
    return low * steps, high * steps


def metric_bounds(meta: dict[str, Any]) -> tuple[float, float] | None:
    """The range of a chain's metric from its ``meta.json`` (task, and the env of its config).

    :param meta: a chain's ``meta.json``.
    :return: ``(low, high)``, or ``None`` when not known.
    """
    if meta.get("task") == "supervised":
        return ACCURACY
    env = (meta.get("config") or {}).get("env") or {}
    if not isinstance(env, dict) or not env.get("id"):
        return None
    steps = (env.get("make_kwargs") or {}).get("max_episode_steps")
    return env_bounds(str(env["id"]), steps)
