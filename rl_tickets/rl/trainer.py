"""The RL trainer: Stable-Baselines3 agents with mask-aware policies.

Every level loads its starting state from disk (never an in-memory model), applies its mask, and
trains with ``learn(steps, reset_num_timesteps=False)``: with ``num_timesteps == k`` SB3's progress
``1 - num_timesteps / _total_timesteps`` continues the learning-rate, clip-range and exploration
schedules exactly where the dense run was at step k. Building agents lives in
:mod:`rl_tickets.rl.agents`, saving and loading in :mod:`rl_tickets.rl.checkpoints`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from rl_tickets.config import AlgoConfig, EnvConfig, EvalConfig
from rl_tickets.level import CurveSink, LevelOutcome, LevelPlan
from rl_tickets.rl.agents import AgentBuilder
from rl_tickets.rl.callbacks import (
    MaskUpdates,
    Snapshot,
    check_tensorboard,
    grid_snapshots,
    level_logger,
    taken_steps,
)
from rl_tickets.rl.checkpoints import (
    hold_schedules,
    load_agent,
    load_online_params,
    override_params,
    save_state,
    sidecar,
)
from rl_tickets.rl.envs import make_env
from rl_tickets.rl.evaluation import (
    EVALUATIONS_FILE,
    Evaluation,
    PeriodicEval,
    eval_env_count,
    eval_seeds,
    run_episodes,
    save_evaluations,
)
from rl_tickets.rl.mask_updates import SparseTraining
from rl_tickets.rl.roles import describe_policy
from rl_tickets.sparsity.masks import Mask, is_target, prunable_names, read_mask, set_masks
from rl_tickets.timing import Stopwatch


class SB3Trainer:
    """Trains SB3 agents level by level; see :class:`rl_tickets.level.Trainer`."""

    unit = "timesteps"
    metric = "eval_return_mean"
    # eval_return_max is filled for untrained (supermask) rows only: the best draw.
    columns = ("eval_return_mean", "eval_return_std", "timesteps", "eval_return_max")
    checkpoint_name = "model.zip"

    def __init__(
        self,
        algo: AlgoConfig,
        env: EnvConfig,
        timesteps: int,
        evaluation: EvalConfig,
        device: str,
        eval_seed: int,
        clock: Callable[[], float] = time.perf_counter,
        tensorboard: bool = False,
    ) -> None:
        """Check the algorithm against the environment before anything is trained.

        :param algo: algorithm name, hyperparameters and policy kwargs.
        :param env: the environment.
        :param timesteps: the dense training budget.
        :param evaluation: evaluation episodes and frequency.
        :param device: auto, cpu, cuda or cuda:N.
        :param eval_seed: seed of the evaluation env (the same episodes at every evaluation).
        :param clock: times training, evaluation and saving (metrics.json's ``time``).
        :param tensorboard: also write TensorBoard events into each level (:func:`level_logger`).
        """
        self.algo, self.env_cfg, self.budget, self.evaluation = algo, env, timesteps, evaluation
        self.eval_seed, self.clock, self.tensorboard = eval_seed, clock, tensorboard
        if tensorboard:
            check_tensorboard()
        self.agents = AgentBuilder(algo, env, device)
        self.device = self.agents.device

    def _eval_env(self, normalize_from: Path | None) -> VecEnv:
        """The evaluation vector env: one sub-env per episode (capped), seeded from ``eval_seed``.

        :param normalize_from: VecNormalize statistics to start from (synced before each evaluation).
        """
        return make_env(
            self.env_cfg,
            seed=self.eval_seed,
            n_envs=eval_env_count(self.evaluation.episodes),
            normalize_from=normalize_from,
            training=False,
        )

    def evaluate(self, model: BaseAlgorithm, eval_env: VecEnv) -> Evaluation:
        """Deterministic returns of ``eval.episodes`` episodes on the separately seeded eval env.

        :param model: the agent.
        :param eval_env: the evaluation env from :meth:`_eval_env` (re-seeded each time: the same
            episodes every time).
        """
        return run_episodes(model, eval_env, self.evaluation.episodes, self.eval_seed)

    def snapshot_path(self, out: Path, step: int) -> Path:
        """``init.zip`` for step 0, else ``rewind.zip``: the dense run's saved states.

        :param out: the dense run's directory.
        :param step: the rewind step.
        """
        return out / ("init.zip" if step == 0 else "rewind.zip")

    def _start(self, plan: LevelPlan, env: VecEnv, out: Path, watch: Stopwatch) -> BaseAlgorithm:
        """The agent a plan starts from: built fresh (its init saved when the plan snapshots), or loaded;
        then masked, and with fine-tuning's schedules held."""
        if plan.start is None:
            model = self.agents.build(env, plan.seed, plan.width_scale)
            if plan.snapshot_step is not None:
                with watch.section("save"):
                    save_state(model, self.snapshot_path(out, 0), with_replay=False)
        else:
            model = load_agent(self.agents, plan, env)
        if plan.mask is not None:
            set_masks(model.policy, plan.mask)
        if plan.constant_lr is not None:
            hold_schedules(model, plan.constant_lr, plan.hold_step, self.budget)
        return model

    def train(self, plan: LevelPlan, out: Path, curve_sink: CurveSink | None = None) -> LevelOutcome:
        """Train one level; writes ``model.zip`` (+ sidecars) and, for a dense run, its snapshots.

        :param plan: what to start from and how to train.
        :param out: the level's (temporary) directory.
        :param curve_sink: receives training and evaluation rows while training.
        """
        watch = Stopwatch(self.clock)
        start_vecnorm = sidecar(plan.start, "vecnormalize") if plan.start else None
        # SB3's Monitor files (<i>.monitor.csv) in the level directory: rl-baselines3-zoo's plot_train reads them.
        env = make_env(self.env_cfg, seed=plan.seed, normalize_from=start_vecnorm, monitor_dir=out)
        eval_env = self._eval_env(start_vecnorm)

        def evaluate(model: BaseAlgorithm) -> Evaluation:
            with watch.section("eval"):
                return self.evaluate(model, eval_env)

        logger = None
        try:
            model = self._start(plan, env, out, watch)
            logger, board = level_logger(out, self.tensorboard, curve_sink)
            model.set_logger(logger)
            evaluator = PeriodicEval(evaluate, self.evaluation.every, plan.steps, curve_sink, board)
            callbacks: list[BaseCallback] = [evaluator, *(snapshots := grid_snapshots(plan, out, watch))]
            snapshot = None
            if plan.snapshot_step:
                snapshot = Snapshot(
                    plan.snapshot_step,
                    self.snapshot_path(out, plan.snapshot_step),
                    with_replay=plan.restore_replay_buffer,
                    watch=watch,
                )
                callbacks.append(snapshot)
            if plan.mask_schedule is not None:
                callbacks.append(MaskUpdates(plan.mask_schedule, plan.mask_schedule_every))
            if plan.sparse is not None:
                callbacks.append(SparseTraining(plan.sparse, curve_sink))
            first = model.num_timesteps
            # Evaluations and snapshots inside learn() pause the "train" section (see Stopwatch).
            with watch.section("train"):
                model.learn(plan.steps, callback=CallbackList(callbacks), reset_num_timesteps=False)
            final = evaluator.record().row()
            with watch.section("save"):
                save_state(model, out / self.checkpoint_name, with_replay=False)
                save_evaluations(out / EVALUATIONS_FILE, evaluator.evaluations)
            seeds = eval_seeds(self.eval_seed, eval_env.num_envs)
            evaluated = {"eval_episodes": self.evaluation.episodes, "eval_seeds": seeds}
            extra = level_extra(model, plan, first, snapshot, evaluated, snapshots)
            metrics = {
                "eval_return_mean": final["eval/return_mean"],
                "eval_return_std": final["eval/return_std"],
                "timesteps": model.num_timesteps - first,
            }
            mask = read_mask(model.policy) if plan.mask_schedule else None
            return LevelOutcome(
                metrics=metrics,
                curve=evaluator.curve,
                mask=mask,
                extra=extra,
                time=watch.record(("train", "eval", "save")),
            )
        finally:
            if logger is not None:
                logger.close()  # flushes progress.csv and the TensorBoard events before the level is sealed
            env.close()
            eval_env.close()

    @cached_property
    def _online_names(self) -> list[str]:
        """Names of the online policy parameters (targets excluded)."""
        return [n for n, _ in self.agents.reference.policy.named_parameters() if not is_target(n)]

    def load_params(self, checkpoint: Path) -> dict[str, torch.Tensor]:
        """All online policy parameters of a saved agent (CPU).

        :param checkpoint: a model ``.zip``.
        """
        return load_online_params(checkpoint, self._online_names)

    def fresh_params(self, seed: int, width_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """All online parameters of a freshly initialised agent with this seed.

        :param seed: SB3 seed.
        :param width_scale: hidden-width factor.
        """
        policy = self.agents.template(seed, width_scale).policy
        return {n: p.detach().cpu().clone() for n, p in policy.named_parameters() if not is_target(n)}

    def prunable(self, params: dict[str, torch.Tensor], include_biases: bool) -> list[str]:
        """Weights (and optionally biases) of Linear/Conv2d layers, in network order.

        :param params: online parameters by name.
        :param include_biases: include biases.
        """
        return [n for n in prunable_names(self.agents.reference.policy, include_biases) if n in params]

    def describe(self) -> dict[str, Any]:
        """Input layers, layer roles, observation names, weight count and device (meta.json)."""
        facts = describe_policy(self.agents.reference.policy, self.agents.observation_space)
        return {
            **facts,
            "observation_names": self.env_cfg.observation_names,
            "device": str(self.device),  # the device used (device=auto resolves to one)
        }

    def evaluate_params(self, params: dict[str, torch.Tensor], mask: Mask, start: Path | None) -> float:
        """Mean deterministic return of an *untrained* agent with these parameters and this mask.

        Supermask draws: nothing is trained or saved. With VecNormalize the statistics of ``start``
        (the ticket's starting checkpoint) normalise the observations.

        :param params: online parameters by name (targets follow).
        :param mask: the mask applied before evaluating.
        :param start: the checkpoint whose VecNormalize statistics apply, if any.
        """
        vecnorm = sidecar(start, "vecnormalize") if start is not None else None
        env = make_env(self.env_cfg, seed=self.eval_seed, n_envs=1, normalize_from=vecnorm, training=False)
        eval_env = self._eval_env(vecnorm)
        try:
            model = self.agents.build(env, self.eval_seed, light=True)
            override_params(model, params)
            set_masks(model.policy, mask)
            return float(np.mean(self.evaluate(model, eval_env).returns))
        finally:
            env.close()
            eval_env.close()

    def untrained_row(self, mean: float, std: float, best: float) -> dict[str, Any]:
        """The levels.csv metrics of an untrained (supermask) level from its draws.

        :param mean: mean return over draws.
        :param std: standard deviation across draws.
        :param best: the best draw's return.
        """
        return {"eval_return_mean": mean, "eval_return_std": std, "eval_return_max": best, "timesteps": 0}


def level_extra(
    model: BaseAlgorithm,
    plan: LevelPlan,
    first: int,
    snapshot: Snapshot | None,
    evaluation: dict[str, Any],
    snapshots: list[Snapshot] | None = None,
) -> dict[str, Any]:
    """metrics.json's ``extra``: the step range, updates, seeds and where the rewind snapshot was taken.

    :param model: the trained agent.
    :param plan: the level's plan.
    :param first: the step counter the level started at.
    :param snapshot: the rewind snapshot callback of a dense run, if any.
    :param evaluation: ``eval_episodes`` and ``eval_seeds`` of the level's evaluation env.
    :param snapshots: the instability analysis's snapshots (``extra.snapshots``: requested -> taken).
    """
    extra: dict[str, Any] = {
        "start_step": first,
        "end_step": model.num_timesteps,
        "n_updates": int(getattr(model, "_n_updates", 0)),
        "seed": plan.seed,
        **evaluation,
    }
    if isinstance(model, OffPolicyAlgorithm):
        extra["learning_starts"] = int(model.learning_starts)
    if snapshot is not None:
        if snapshot.taken_at is None:
            raise RuntimeError(f"no rollout started at or after rewind.step={plan.snapshot_step}")
        extra["snapshot_step"] = snapshot.taken_at
    if snapshots:
        extra["snapshots"] = taken_steps(snapshots)
    return extra
