"""The RL trainer: Stable-Baselines3 agents with mask-aware policies.

Every level loads its starting state from disk (never an in-memory model), applies its mask, and
trains with ``learn(steps, reset_num_timesteps=False)``: with ``num_timesteps == k`` SB3's progress
``1 - num_timesteps / _total_timesteps`` continues the learning-rate, clip-range and exploration
schedules exactly where the dense run was at step k.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import CSVOutputFormat, KVWriter, Logger
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from rl_tickets.config import AlgoConfig, ConfigError, EnvConfig, EvalConfig
from rl_tickets.level import CurveSink, LevelOutcome, LevelPlan, MaskSchedule
from rl_tickets.rl.envs import (
    FEATURE_EXTRACTORS,
    check_wrappers,
    make_env,
    make_single,
    scaled_extractor_kwargs,
)
from rl_tickets.rl.evaluation import (
    EVALUATIONS_FILE,
    Evaluation,
    PeriodicEval,
    eval_env_count,
    eval_seeds,
    run_episodes,
    save_evaluations,
)
from rl_tickets.rl.policies import POLICIES, policy_optimizers
from rl_tickets.sparsity.masks import (
    Mask,
    is_target,
    online_twins,
    online_weights,
    prunable_names,
    read_mask,
    set_masks,
)
from rl_tickets.timing import Stopwatch

ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC, "td3": TD3}
ACTION_SPACES: dict[str, type[gym.Space]] = {
    "dqn": gym.spaces.Discrete,
    "sac": gym.spaces.Box,
    "td3": gym.spaces.Box,
}
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}
NOISES = {"normal": NormalActionNoise, "ornstein_uhlenbeck": OrnsteinUhlenbeckActionNoise}
# SB3's default hidden layers, made explicit when the small_dense control shrinks them.
DEFAULT_NET_ARCH: dict[str, list[int]] = {
    "ppo": [64, 64],
    "a2c": [64, 64],
    "dqn": [64, 64],
    "sac": [256, 256],
    "td3": [400, 300],
}
# Fine-tuning holds every schedule constant, each at a value where the agent still learns: clip ranges
# at the rewind point k (the zoo's linear clip schedules end at 0.0, where PPO's policy stops moving),
# DQN's epsilon at its final value (at k=0 its value is 1.0: a random policy for the whole level).
# "rewind": the schedule's value at step k; "final": its value at the end of training.
FINETUNE_HOLD = {"clip_range": "rewind", "clip_range_vf": "rewind", "exploration_schedule": "final"}
ACTOR_PARTS = ("policy_net", "action_net", "actor.")
CRITIC_PARTS = ("value_net", "critic.")


def fitting_algos(action_space: gym.Space) -> list[str]:
    """The algorithms that can act in ``action_space`` (what an error about a misfit suggests instead).

    :param action_space: the environment's action space.
    """
    return [name for name in ALGOS if isinstance(action_space, ACTION_SPACES.get(name, gym.Space))]


def sidecar(checkpoint: Path, kind: str) -> Path:
    """The file stored beside a model checkpoint: ``X_vecnormalize.pkl`` or ``X_replay.pkl``.

    :param checkpoint: a model ``.zip``.
    :param kind: ``vecnormalize`` or ``replay``.
    """
    return checkpoint.with_name(f"{checkpoint.stem}_{kind}.pkl")


def to_schedule(value: Any) -> Any:
    """Translate a schedule mapping into an SB3 schedule; other values pass through.

    ``{schedule: linear, start: 1e-3, end: 0.0}`` is rl-baselines3-zoo's ``lin_1e-3``.

    :param value: a hyperparameter value from the config.
    """
    if isinstance(value, dict) and "schedule" in value:
        if value["schedule"] == "linear":
            return LinearSchedule(
                float(value["start"]), float(value.get("end", 0.0)), float(value.get("fraction", 1.0))
            )
        if value["schedule"] == "constant":
            return ConstantSchedule(float(value["value"]))
        raise ConfigError(f"schedule {value['schedule']!r} is not valid; choose linear or constant")
    return value


def seed_for(*parts: int | str) -> int:
    """A 31-bit seed derived from ``parts`` (chain seed, level, variant...), stable across runs.

    :param parts: ints or strings identifying the random stream.
    """
    # Every byte of a string counts (SeedSequence takes ints of any size): keeping only the low 32
    # bits kept only the first 4 characters, so "random_mask" and "random_reinit" shared a seed.
    words = [p if isinstance(p, int) else int.from_bytes(p.encode(), "little") for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0] % (2**31 - 1))


def _scaled(net_arch: Any, scale: float) -> Any:
    """``net_arch`` with every hidden width multiplied by ``scale`` (at least 1 unit)."""
    if isinstance(net_arch, dict):
        return {k: _scaled(v, scale) for k, v in net_arch.items()}
    return [max(1, round(int(w) * scale)) for w in net_arch]


class _Snapshot(BaseCallback):
    """Save the full training state at the first rollout start with ``num_timesteps >= step``.

    At rollout start the previous ``train()`` has run, so the state equals what a level restarting
    from here will see (taking it in ``_on_step`` would skip one update).
    """

    def __init__(self, step: int, path: Path, with_replay: bool, watch: Stopwatch) -> None:
        super().__init__()
        self.step, self.path, self.with_replay, self.taken_at = step, path, with_replay, None
        self.watch = watch

    def _on_rollout_start(self) -> None:
        if self.taken_at is None and self.model.num_timesteps >= self.step:
            with self.watch.section("save"):
                save_state(self.model, self.path, self.with_replay)
            self.taken_at = self.model.num_timesteps

    def _on_step(self) -> bool:
        return True


class _MaskUpdates(BaseCallback):
    """Gradual pruning: every ``every`` steps ask the schedule for a new mask and apply it."""

    def __init__(self, schedule: MaskSchedule, every: int) -> None:
        super().__init__()
        self.schedule, self.every, self.last = schedule, every, -1

    def _on_step(self) -> bool:
        step = self.model.num_timesteps
        if step // self.every != self.last:
            self.last = step // self.every
            policy = self.model.policy
            mask = self.schedule(step, online_weights(policy, include_biases=True))
            if mask is not None:
                set_masks(policy, mask)
        return True


class _SinkWriter(KVWriter):
    """Forward SB3's logger records (rollout/*, train/*) to the runner's curve sink."""

    def __init__(self, sink: CurveSink) -> None:
        self.sink = sink

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        """Send the numeric values of one dump."""
        row = {
            k: float(v)
            for k, v in key_values.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.sink({"step": step, **row})


def save_state(model: BaseAlgorithm, path: Path, with_replay: bool) -> None:
    """Save a model with its VecNormalize statistics and, if asked, its replay buffer.

    :param model: the agent.
    :param path: the ``.zip`` to write.
    :param with_replay: also write the replay buffer (off-policy algorithms).
    """
    model.save(path)
    normalizer = model.get_vec_normalize_env()
    if normalizer is not None:
        normalizer.save(str(sidecar(path, "vecnormalize")))
    if with_replay and isinstance(model, OffPolicyAlgorithm):
        model.save_replay_buffer(sidecar(path, "replay"))


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
    ) -> None:
        """Check the algorithm against the environment before anything is trained.

        :param algo: algorithm name, hyperparameters and policy kwargs.
        :param env: the environment.
        :param timesteps: the dense training budget.
        :param evaluation: evaluation episodes and frequency.
        :param device: auto, cpu, cuda or cuda:N.
        :param eval_seed: seed of the evaluation env (the same episodes at every evaluation).
        :param clock: times training, evaluation and saving (metrics.json's ``time``).
        """
        self.algo, self.env_cfg, self.budget, self.evaluation = algo, env, timesteps, evaluation
        self.eval_seed, self.clock = eval_seed, clock
        self.cls = ALGOS[algo.name]
        check_wrappers(env)
        self._check_hyperparams()
        probe = make_single(env)
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()
        wanted = ACTION_SPACES.get(algo.name)
        if wanted is not None and not isinstance(self.action_space, wanted):
            kind = "discrete" if wanted is gym.spaces.Discrete else "continuous (Box)"
            fits = fitting_algos(self.action_space)
            raise ConfigError(
                f"algo={algo.name} needs a {kind} action space but env={env.name} ({env.id}) has "
                f"{self.action_space}; use {', '.join(fits[:-1])} or {fits[-1]}"
            )
        self.device = self._pick_device(device)

    def _check_hyperparams(self) -> None:
        """Reject hyperparameter names the algorithm's constructor does not take."""
        valid = set(inspect.signature(self.cls.__init__).parameters) - {
            "self",
            "policy",
            "env",
            "policy_kwargs",
            "seed",
            "device",
            "_init_setup_model",
        }
        unknown = sorted(set(self.algo.hyperparams) - valid)
        if unknown:
            raise ConfigError(
                f"algo.hyperparams has unknown keys {unknown} for {self.algo.name}; valid: {sorted(valid)}"
            )

    def _pick_device(self, device: str) -> str:
        """SB3's advice: GPU for CNN policies and off-policy agents, CPU for small on-policy MLPs."""
        if device != "auto":
            return device
        cnn = "features_extractor_class" in self.algo.policy_kwargs
        on_policy_mlp = self.algo.name in ("ppo", "a2c") and not cnn
        return "cuda" if torch.cuda.is_available() and not on_policy_mlp else "cpu"

    @property
    def off_policy(self) -> bool:
        """Whether the algorithm keeps a replay buffer."""
        return issubclass(self.cls, OffPolicyAlgorithm)

    def _hyperparams(self, light: bool) -> dict[str, Any]:
        """Constructor kwargs; ``light`` builds only the network (tiny replay buffer)."""
        out = {k: to_schedule(v) for k, v in self.algo.hyperparams.items()}
        noise = out.pop("action_noise", None)
        if noise is not None:
            dim = int(np.prod(self.action_space.shape))
            sigma = float(noise.get("sigma", 0.1))
            out["action_noise"] = NOISES[noise["type"]](np.zeros(dim), sigma * np.ones(dim))
        if light and self.off_policy:
            out["buffer_size"] = 1
        return out

    def _policy_kwargs(self, width_scale: float) -> dict[str, Any]:
        """Policy kwargs with names translated to classes and widths scaled (hidden layers and CNN)."""
        kwargs = dict(self.algo.policy_kwargs)
        if "activation_fn" in kwargs:
            kwargs["activation_fn"] = ACTIVATIONS[kwargs["activation_fn"]]
        extractor = kwargs.get("features_extractor_class")
        if extractor is not None:
            kwargs["features_extractor_class"] = FEATURE_EXTRACTORS[extractor]
        if width_scale != 1.0:
            kwargs["net_arch"] = _scaled(
                kwargs.get("net_arch", DEFAULT_NET_ARCH[self.algo.name]), width_scale
            )
            if extractor is not None:
                kwargs["features_extractor_kwargs"] = scaled_extractor_kwargs(
                    extractor, dict(kwargs.get("features_extractor_kwargs", {})), width_scale
                )
        return kwargs

    def build(
        self, env: VecEnv | gym.Env, seed: int, width_scale: float = 1.0, light: bool = False
    ) -> BaseAlgorithm:
        """A fresh agent with a mask-aware policy.

        :param env: the (vector) environment.
        :param seed: SB3's seed (network init, action sampling).
        :param width_scale: hidden-width factor (small_dense control).
        :param light: skip allocating a real replay buffer (to read weights only).
        """
        return self.cls(
            POLICIES[self.algo.name],
            env,
            seed=seed,
            device=self.device,
            verbose=0,
            policy_kwargs=self._policy_kwargs(width_scale),
            **self._hyperparams(light),
        )

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

    def _load(self, plan: LevelPlan, env: VecEnv) -> BaseAlgorithm:
        """Load the plan's checkpoint and restore exactly what the plan says."""
        assert plan.start is not None
        # The policy class is supplied, not unpickled by its recorded module path, so checkpoints
        # keep loading when the policies module moves.
        policy = {"policy_class": POLICIES[self.algo.name]}
        model = self.cls.load(plan.start, env=env, device=self.device, custom_objects=policy)  # env: a reset
        model.set_random_seed(plan.seed)
        if plan.start_step is not None:
            model.num_timesteps = plan.start_step
        if not plan.restore_optimizer:
            for optimizer in policy_optimizers(model.policy) + [getattr(model, "ent_coef_optimizer", None)]:
                if optimizer is not None:
                    optimizer.state.clear()
        if isinstance(model, OffPolicyAlgorithm):
            replay = sidecar(plan.start, "replay")
            if plan.restore_replay_buffer and replay.exists():
                model.load_replay_buffer(replay)
            else:
                # learning_starts compares with the absolute step counter: wait again from here
                # instead of learning from an empty buffer.
                base = self.algo.hyperparams.get(
                    "learning_starts", inspect.signature(self.cls).parameters["learning_starts"].default
                )
                model.learning_starts = model.num_timesteps + int(base)
        if plan.params:
            self._override(model, plan.params)
        return model

    @staticmethod
    @torch.no_grad()
    def _override(model: BaseAlgorithm, params: dict[str, torch.Tensor]) -> None:
        """Replace online parameters and copy them into the target networks."""
        named = dict(model.policy.named_parameters())
        for name, value in params.items():
            named[name].copy_(value.to(named[name].device))
        for target, online in online_twins(model.policy).items():
            named[target].copy_(named[online])

    def _hold_schedules(self, model: BaseAlgorithm, lr: float, hold_step: int) -> None:
        """Fine-tuning: a constant learning rate; other schedules held per :data:`FINETUNE_HOLD`.

        :param model: the agent about to train.
        :param lr: the constant learning rate.
        :param hold_step: the rewind point k (progress ``1 - k / budget``, as SB3 computes it).
        """
        model.lr_schedule = ConstantSchedule(lr)
        progress = {"rewind": 1.0 - hold_step / self.budget, "final": 0.0}
        for name, at in FINETUNE_HOLD.items():
            schedule = getattr(model, name, None)
            if callable(schedule):
                setattr(model, name, ConstantSchedule(float(schedule(progress[at]))))

    def train(self, plan: LevelPlan, out: Path, curve_sink: CurveSink | None = None) -> LevelOutcome:
        """Train one level; writes ``model.zip`` (+ sidecars) and, for a dense run, its snapshots.

        :param plan: what to start from and how to train.
        :param out: the level's (temporary) directory.
        :param curve_sink: receives training and evaluation rows while training.
        """
        watch = Stopwatch(self.clock)
        start_vecnorm = sidecar(plan.start, "vecnormalize") if plan.start else None
        env = make_env(self.env_cfg, seed=plan.seed, normalize_from=start_vecnorm)
        eval_env = self._eval_env(start_vecnorm)

        def evaluate(model: BaseAlgorithm) -> Evaluation:
            with watch.section("eval"):
                return self.evaluate(model, eval_env)

        try:
            if plan.start is None:
                model = self.build(env, plan.seed, plan.width_scale)
                if plan.snapshot_step is not None:
                    with watch.section("save"):
                        save_state(model, self.snapshot_path(out, 0), with_replay=False)
            else:
                model = self._load(plan, env)
            if plan.mask is not None:
                set_masks(model.policy, plan.mask)
            if plan.constant_lr is not None:
                self._hold_schedules(model, plan.constant_lr, plan.hold_step)
            writers: list[KVWriter] = [CSVOutputFormat(str(out / "progress.csv"))]
            if curve_sink:
                writers.append(_SinkWriter(curve_sink))
            model.set_logger(Logger(str(out), writers))
            evaluator = PeriodicEval(evaluate, self.evaluation.every, plan.steps, curve_sink)
            callbacks: list[BaseCallback] = [evaluator]
            snapshot = None
            if plan.snapshot_step:
                snapshot = _Snapshot(
                    plan.snapshot_step,
                    self.snapshot_path(out, plan.snapshot_step),
                    with_replay=plan.restore_replay_buffer,
                    watch=watch,
                )
                callbacks.append(snapshot)
            if plan.mask_schedule is not None:
                callbacks.append(_MaskUpdates(plan.mask_schedule, plan.mask_schedule_every))
            first = model.num_timesteps
            # Evaluations and snapshots inside learn() pause the "train" section (see Stopwatch).
            with watch.section("train"):
                model.learn(plan.steps, callback=CallbackList(callbacks), reset_num_timesteps=False)
            final = evaluator.record().row()
            with watch.section("save"):
                save_state(model, out / self.checkpoint_name, with_replay=False)
                save_evaluations(out / EVALUATIONS_FILE, evaluator.evaluations)
            extra: dict[str, Any] = {
                "start_step": first,
                "end_step": model.num_timesteps,
                "n_updates": int(getattr(model, "_n_updates", 0)),
                "seed": plan.seed,
                "eval_episodes": self.evaluation.episodes,
                "eval_seeds": eval_seeds(self.eval_seed, eval_env.num_envs),
            }
            if isinstance(model, OffPolicyAlgorithm):
                extra["learning_starts"] = int(model.learning_starts)
            if snapshot is not None:
                if snapshot.taken_at is None:
                    raise RuntimeError(f"no rollout started at or after rewind.step={plan.snapshot_step}")
                extra["snapshot_step"] = snapshot.taken_at
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
            env.close()
            eval_env.close()

    def _template(self, seed: int, width_scale: float = 1.0) -> BaseAlgorithm:
        """A light agent on a single env, only to read freshly initialised weights."""
        env = make_env(self.env_cfg, seed=seed)
        try:
            return self.build(env, seed, width_scale, light=True)
        finally:
            env.close()

    @cached_property
    def _reference(self) -> BaseAlgorithm:
        """One light agent built once, to read layer names and shapes (not rebuilt per call)."""
        return self._template(0)

    @cached_property
    def _online_names(self) -> list[str]:
        """Names of the online policy parameters (targets excluded)."""
        return [n for n, _ in self._reference.policy.named_parameters() if not is_target(n)]

    def load_params(self, checkpoint: Path) -> dict[str, torch.Tensor]:
        """All online policy parameters of a saved agent (CPU).

        :param checkpoint: a model ``.zip``.
        """
        _, params, _ = load_from_zip_file(checkpoint, device="cpu")
        state = params["policy"]
        return {n: state[n].detach().clone() for n in self._online_names}

    def fresh_params(self, seed: int, width_scale: float = 1.0) -> dict[str, torch.Tensor]:
        """All online parameters of a freshly initialised agent with this seed.

        :param seed: SB3 seed.
        :param width_scale: hidden-width factor.
        """
        policy = self._template(seed, width_scale).policy
        return {n: p.detach().cpu().clone() for n, p in policy.named_parameters() if not is_target(n)}

    def prunable(self, params: dict[str, torch.Tensor], include_biases: bool) -> list[str]:
        """Weights (and optionally biases) of Linear/Conv2d layers, in network order.

        :param params: online parameters by name.
        :param include_biases: include biases.
        """
        return [n for n in prunable_names(self._reference.policy, include_biases) if n in params]

    def describe(self) -> dict[str, Any]:
        """Input layers (weights reading the observation directly), actor/critic layers, obs names."""
        policy = self._reference.policy
        names = prunable_names(policy)
        obs_dim = int(np.prod(self.observation_space.shape))
        extractor_params = any("features_extractor" in n for n, _ in policy.named_parameters())
        weights = dict(policy.named_parameters())
        inputs = [
            n
            for n in names
            if n.endswith(".0.weight") and weights[n].dim() == 2 and weights[n].shape[1] == obs_dim
        ]
        two_roles = self.algo.name != "dqn"
        return {
            "input_layers": [] if extractor_params else inputs,
            "actor_layers": [n for n in names if two_roles and any(p in n for p in ACTOR_PARTS)],
            "critic_layers": [n for n in names if two_roles and any(p in n for p in CRITIC_PARTS)],
            "observation_names": self.env_cfg.observation_names,
            "weights_total": sum(weights[n].numel() for n in names),
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
            model = self.build(env, self.eval_seed, light=True)
            self._override(model, params)
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
