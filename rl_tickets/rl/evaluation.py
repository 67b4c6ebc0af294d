"""Deterministic evaluation of SB3 agents on a vector env, the eval curve, and SB3's ``evaluations.npz``.

The ``eval.episodes`` episodes run in one vector env of up to that many sub-environments stepping
together (one batched forward per step instead of one per sub-env step). Sub-env ``i`` is seeded
``seed + i`` at every evaluation, so every evaluation of a level sees the same episodes. Episodes are
counted as SB3's ``evaluate_policy`` counts them with several envs: sub-env ``i`` contributes
``(episodes + i) // n_envs`` episodes, so the short episodes that finish first are not over-represented.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import KVWriter
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, sync_envs_normalization

from rl_tickets.level import CurveSink

# More sub-envs than this buy nothing on a CPU (the env steps are sequential in a DummyVecEnv) and
# cost memory on pixel environments; episodes beyond it queue up per sub-env.
MAX_EVAL_ENVS = 32
EVALUATIONS_FILE = "evaluations.npz"


def eval_env_count(episodes: int) -> int:
    """Sub-environments of the evaluation vector env: one per episode, at most :data:`MAX_EVAL_ENVS`.

    :param episodes: ``eval.episodes``.
    """
    return max(1, min(episodes, MAX_EVAL_ENVS))


def eval_seeds(seed: int, n_envs: int) -> list[int]:
    """The seed each evaluation sub-env is reset with (``VecEnv.seed`` gives sub-env i ``seed + i``).

    :param seed: the evaluation seed.
    :param n_envs: sub-environments.
    """
    return [seed + i for i in range(n_envs)]


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: the step it was taken at and every episode's return and length.

    :param step: the agent's ``num_timesteps`` when evaluated.
    :param returns: one return per episode, in the order episodes finished.
    :param lengths: the matching episode lengths.
    """

    step: int
    returns: list[float]
    lengths: list[int]

    def row(self) -> dict[str, Any]:
        """The eval-curve row: step, mean and population sd of the returns (as ``evaluate_policy``), mean length."""
        return {
            "step": self.step,
            "eval/return_mean": float(np.mean(self.returns)),
            "eval/return_std": float(np.std(self.returns)),
            "eval/ep_length_mean": float(np.mean(self.lengths)),
        }

    def sb3_row(self) -> dict[str, float]:
        """The evaluation under SB3 ``EvalCallback``'s names (what its TensorBoard panels show)."""
        return {
            "eval/mean_reward": float(np.mean(self.returns)),
            "eval/mean_ep_length": float(np.mean(self.lengths)),
        }


def run_episodes(model: BaseAlgorithm, eval_env: VecEnv, episodes: int, seed: int) -> Evaluation:
    """Play ``episodes`` deterministic episodes on ``eval_env`` (re-seeded: the same episodes every time).

    :param model: the agent.
    :param eval_env: the evaluation vector env (any number of sub-envs; VecNormalize statistics are
        copied from the model's training env first).
    :param episodes: how many episodes to count.
    :param seed: sub-env ``i`` is reset with ``seed + i``.
    """
    if isinstance(eval_env, VecNormalize):
        sync_envs_normalization(model.get_env(), eval_env)
    eval_env.seed(seed)
    returns, lengths = evaluate_policy(
        model, eval_env, n_eval_episodes=episodes, deterministic=True, return_episode_rewards=True
    )
    assert isinstance(returns, list) and isinstance(lengths, list)
    return Evaluation(model.num_timesteps, [float(r) for r in returns], [int(n) for n in lengths])


def save_evaluations(path: Path, evaluations: Sequence[Evaluation]) -> None:
    """Write SB3 ``EvalCallback``'s ``evaluations.npz``: ``timesteps`` (n,), ``results`` and
    ``ep_lengths`` (n, episodes), one row per evaluation, so rl-baselines3-zoo's plot scripts read it.

    :param path: the ``.npz`` file.
    :param evaluations: the level's evaluations in order.
    """
    np.savez(
        path,
        timesteps=np.array([e.step for e in evaluations], dtype=np.int64),
        results=np.array([e.returns for e in evaluations], dtype=np.float64),
        ep_lengths=np.array([e.lengths for e in evaluations], dtype=np.int64),
    )


class PeriodicEval(BaseCallback):
    """Evaluate every ``every`` environment steps while training, and once more at the end.

    A periodic evaluation falls due only while the level has steps left to train: one due at or past
    the level's last step would duplicate the final evaluation (SB3 finishes the rollout in progress,
    so e.g. an evaluation due at 50,000 and the final one at 50,176 would both describe the end).

    :param evaluate: plays the evaluation episodes for an agent (timed by the caller).
    :param every: steps between evaluations (0: only the final one).
    :param steps: steps this level trains (its end is the start counter plus this).
    :param sink: receives each evaluation row as it is taken.
    :param writers: SB3 log writers (TensorBoard) that get each evaluation under SB3's names, at once:
        the final evaluation comes after SB3's last logger dump.
    """

    def __init__(
        self,
        evaluate: Callable[[BaseAlgorithm], Evaluation],
        every: int,
        steps: int,
        sink: CurveSink | None,
        writers: Sequence[KVWriter] = (),
    ) -> None:
        super().__init__()
        self.evaluate, self.every, self.steps, self.sink = evaluate, every, steps, sink
        self.writers = tuple(writers)
        self.evaluations: list[Evaluation] = []
        self.last = self.end = 0

    def _on_training_start(self) -> None:
        self.last = self.model.num_timesteps
        self.end = self.last + self.steps

    def _on_step(self) -> bool:
        step = self.model.num_timesteps
        if self.every and step - self.last >= self.every and step < self.end:
            self.last = step
            self.record()
        return True

    def record(self) -> Evaluation:
        """Evaluate now, keep the result and send its row to the sink."""
        evaluation = self.evaluate(self.model)
        self.evaluations.append(evaluation)
        if self.sink:
            self.sink(evaluation.row())
        values = evaluation.sb3_row()
        for writer in self.writers:
            writer.write(values, dict.fromkeys(values), evaluation.step)
        return evaluation

    @property
    def curve(self) -> list[dict[str, Any]]:
        """The eval curve rows (eval_curve.csv)."""
        return [e.row() for e in self.evaluations]
