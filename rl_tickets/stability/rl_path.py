"""The line between two RL copies: deterministic returns of ``eval.episodes`` episodes at every alpha.

One light agent (no replay buffer) is built once; at each alpha its online parameters are overwritten
with the interpolated ones, the mask is applied, and the episodes run in the same separately seeded
vector env the trainer evaluates with (one sub-env per episode, one batched forward per step for all of
them), so alpha 0 and 1 give exactly each copy's own final evaluation. With VecNormalize, the
observation statistics move along the line with the weights (:func:`interpolate_running_stats`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from rl_tickets.rl.checkpoints import override_params, sidecar
from rl_tickets.rl.envs import make_env
from rl_tickets.rl.evaluation import eval_env_count
from rl_tickets.rl.trainer import SB3Trainer
from rl_tickets.sparsity.masks import Mask, set_masks
from rl_tickets.stability.interpolation import interpolate, interpolate_running_stats
from rl_tickets.stability.points import PathPoint


class RLPath:
    """Evaluates paths between copies trained by one :class:`SB3Trainer`."""

    metric = "eval_return_mean"
    higher_is_better = True

    def __init__(self, trainer: SB3Trainer) -> None:
        """:param trainer: the analysis's trainer (its env, evaluation episodes and seed)."""
        self.trainer = trainer
        self.episodes = trainer.evaluation.episodes
        self.settings: dict[str, Any] = {"episodes": self.episodes, "eval_seed": trainer.eval_seed}

    def _env(self, normalize_from: Path, n_envs: int) -> VecEnv:
        """An evaluation vector env seeded like the trainer's, with one copy's statistics if normalised."""
        return make_env(
            self.trainer.env_cfg,
            seed=self.trainer.eval_seed,
            n_envs=n_envs,
            normalize_from=normalize_from,
            training=False,
        )

    def points(self, a: Path, b: Path, mask: Mask | None, alphas: list[float]) -> list[PathPoint]:
        """Deterministic returns at every alpha.

        :param a: the first copy's ``model.zip``.
        :param b: the second copy's.
        :param mask: the pair's mask (None: dense).
        :param alphas: interpolation weights.
        """
        trainer = self.trainer
        params_a, params_b = trainer.load_params(a), trainer.load_params(b)
        # The agent's own env (the trainer's n_envs, so SB3 sees its usual rollout size); its normaliser is
        # what evaluation copies.
        holder = self._env(sidecar(a, "vecnormalize"), self.trainer.env_cfg.n_envs)
        other = (
            self._env(sidecar(b, "vecnormalize"), self.trainer.env_cfg.n_envs)
            if isinstance(holder, VecNormalize)
            else None
        )
        eval_env = self._env(sidecar(a, "vecnormalize"), eval_env_count(self.episodes))
        try:
            model = trainer.agents.build(holder, trainer.eval_seed, light=True)
            # The first copy's statistics, kept aside: the holder's are replaced at every alpha.
            own = holder.obs_rms if isinstance(holder, VecNormalize) else None
            out = []
            for alpha in alphas:
                override_params(model, interpolate(params_a, params_b, alpha))
                if mask is not None:
                    set_masks(model.policy, mask)
                if isinstance(holder, VecNormalize) and isinstance(other, VecNormalize):
                    holder.obs_rms = interpolate_running_stats(own, other.obs_rms, alpha)
                returns = trainer.evaluate(model, eval_env).returns
                out.append(PathPoint(alpha, float(np.mean(returns)), float(np.std(returns)), None, returns))
            return out
        finally:
            for env in (holder, other, eval_env):
                if env is not None:
                    env.close()
