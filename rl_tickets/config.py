"""Typed configuration: dataclass schemas, their ConfigStore registration, and validation.

Hydra stays at the edge: the entry point composes a :class:`Config` and everything below it takes
these plain dataclasses. Wrong types are rejected by OmegaConf against these schemas; semantic
errors (a rate outside (0, 1), DQN on a continuous action space, ...) are :class:`ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHOICES: dict[str, tuple[str, ...]] = {
    "task": ("rl", "supervised", "stability"),
    "algo.name": ("ppo", "a2c", "dqn", "sac", "td3"),
    "prune.scope": ("global", "layer"),
    "prune.schedule": ("iterative", "oneshot", "gradual", "static", "set", "rigl"),
    "prune.criterion": ("magnitude", "magnitude_increase", "movement", "random"),
    "prune.distribution": ("uniform", "erk"),
    "rewind.optimizer": ("fresh", "restore"),
    "rewind.replay_buffer": ("empty", "restore"),
    "retrain.mode": ("rewind", "finetune", "lr_rewind"),
    "logger.mode": ("offline", "online", "disabled"),
    "objective": ("deepest", "mean"),
    "controls": (
        "reinit",
        "sign_reinit",
        "permute",
        "random_mask",
        "random_reinit",
        "small_dense",
        "supermask",
        "random_supermask",
    ),
    "supermask.weights": ("init", "signed_constant", "shared", "resampled"),
    "supermask.signs": ("ticket", "random"),
    "stability.of": ("rl", "supervised"),
    "stability.masks": ("k0", "per_k"),
    "stability.reference": ("final", "best"),
}

# Sparse training from scratch (static masks, SET, RigL): one run at prune.final_density from the start.
SPARSE_TRAINING = ("static", "set", "rigl")
# Schedules trained as one run (level 1, variant = the schedule's name) instead of a chain of levels.
ONE_RUN_SCHEDULES = ("gradual", *SPARSE_TRAINING)
# prune.end_fraction's published value per schedule (schema default None means this): gradual pruning
# ends at 80% (Zhu & Gupta's setting this suite always had, so gradual hashes are unchanged); SET and
# RigL stop updating masks at 75% (Graesser et al. 2022's gin configs; static has no updates).
END_FRACTION = {"gradual": 0.8, **{s: 0.75 for s in SPARSE_TRAINING}}
DEFAULT_END_FRACTION = 0.8


def resolved_end_fraction(prune: PruneConfig) -> float:
    """``prune.end_fraction``, or the schedule's published value when it is None.

    :param prune: the pruning settings.
    """
    if prune.end_fraction is not None:
        return float(prune.end_fraction)
    return END_FRACTION.get(prune.schedule, DEFAULT_END_FRACTION)


class ConfigError(ValueError):
    """A semantic configuration error a user can fix; its message is one line."""


@dataclass
class AlgoConfig:
    """The SB3 algorithm and its hyperparameters (constructor keyword arguments)."""

    name: str = "ppo"
    hyperparams: dict[str, Any] = field(default_factory=dict)
    policy_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class EnvConfig:
    """A Gymnasium environment and how it is vectorised and wrapped."""

    name: str = "cartpole"
    id: str = "CartPole-v1"
    n_envs: int = 1
    normalize: bool = False
    normalize_kwargs: dict[str, Any] = field(default_factory=dict)
    wrapper: str | None = None
    make_kwargs: dict[str, Any] = field(default_factory=dict)
    observation_names: list[str] | None = None


@dataclass
class ModelConfig:
    """A supervised network (``task=supervised``)."""

    name: str = "lenet_300_100"


@dataclass
class DataConfig:
    """A supervised dataset (``task=supervised``)."""

    name: str = "mnist5k"
    root: str = "data"
    download: bool = False


@dataclass
class PruneConfig:
    """How masks are found, level after level."""

    levels: int = 3
    rate: float = 0.2
    scope: str = "global"
    schedule: str = "iterative"
    criterion: str = "magnitude"
    distribution: str = "uniform"
    overrides: dict[str, float] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)
    biases: bool = False
    # Every prunable layer keeps at least ceil(min_layer_density * its weights), so global ranking never
    # cuts the network in two; 0 allows a layer to be pruned to nothing (rl_tickets/sparsity/pruning.py).
    min_layer_density: float = 0.001
    # Gradual magnitude pruning (Zhu & Gupta 2017), fractions of the training budget.
    final_density: float = 0.1
    start_fraction: float = 0.2
    # None: the schedule's published value (END_FRACTION); see resolved_end_fraction.
    end_fraction: float | None = None
    update_every: int = 1000
    # Sparse training (static, SET, RigL): fraction of each layer's live weights replaced per mask
    # update, cosine-decayed to 0 at end_fraction (Evci et al. 2020; Graesser et al. 2022: 0.1).
    drop_fraction: float = 0.1


@dataclass
class RewindConfig:
    """Where each level restarts from and what training state is restored there."""

    step: int = 0
    optimizer: str = "fresh"
    replay_buffer: str = "empty"
    # Choose ``step`` from the instability analysis of the same settings (``task=stability``): the
    # job resolves it to one integer per seed before anything is hashed (rl_tickets.stability.choose).
    auto: bool = False


@dataclass
class RetrainConfig:
    """How a pruned network is retrained (Renda et al. 2020)."""

    mode: str = "rewind"
    finetune_lr: float = 1e-4


@dataclass
class TrainConfig:
    """Training budget: environment steps (RL) or iterations (supervised)."""

    timesteps: int = 100_000
    iterations: int = 5_000
    batch_size: int = 60
    lr: float = 1.2e-3
    optimizer: str = "adam"


@dataclass
class EvalConfig:
    """Evaluation: deterministic episodes (RL) or validation passes (supervised) every ``every`` steps."""

    episodes: int = 10
    every: int = 10_000


@dataclass
class SupermaskConfig:
    """Untrained evaluation of masks (the ``supermask`` and ``random_supermask`` controls): the weight
    rule (rl_tickets/sparsity/supermask.py), draws and signs of ``resampled``, the values of ``shared``."""

    samples: int = 10
    weights: str = "init"
    signs: str = "ticket"
    shared_values: list[float] = field(default_factory=lambda: [-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])


@dataclass
class StabilityConfig:
    """The instability analysis (``task=stability``; Frankle et al. 2020): two copies trained from the
    state at each rewind step k with different noise, evaluated along the line between them."""

    # The task whose chain is analysed (rl or supervised): ``task`` itself says ``stability``.
    of: str = "rl"
    # Rewind steps k: fractions of the budget (< 1) or whole steps (>= 1).
    steps: list[float] = field(default_factory=lambda: [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2])
    # Chain levels analysed (0 = dense); their masks come from the chain rewound to k=0 (masks=k0).
    levels: list[int] = field(default_factory=lambda: [0, 3])
    # Evenly spaced interpolation points from 0 to 1, both ends included.
    alphas: int = 11
    masks: str = "k0"
    # "Stable": instability at most this fraction of |dense metric| (the report's margin; rewind.auto).
    threshold: float = 0.05
    # The dense metric the threshold is a fraction of: its final evaluation, or (RL) its best evaluation,
    # for agents whose final return is noisy (zoo DQN on CartPole ends some seeds far below its best).
    reference: str = "final"


@dataclass
class LoggerConfig:
    """Weights & Biases mirror of the local files."""

    mode: str = "offline"
    project: str = "rl_tickets"
    entity: str | None = None
    init_timeout: float = 15.0
    # Log each finished level's model and mask as a W&B artifact (a copy; the files stay on disk).
    artifacts: bool = False
    # Also write SB3's TensorBoard events into each RL level's directory (<level>/<variant>/tensorboard).
    tensorboard: bool = False


@dataclass
class Config:
    """The whole job. Identity-relevant parts decide the results directory (see :mod:`identity`)."""

    task: str = "rl"
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    rewind: RewindConfig = field(default_factory=RewindConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    supermask: SupermaskConfig = field(default_factory=SupermaskConfig)
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    controls: list[str] = field(default_factory=list)
    # A chain directory (.../chains/<hash>/seed_<s>) whose ticket masks are applied here, level by level,
    # as the variant "transfer" (mask transfer across seeds, algorithms or environments with equal shapes).
    transfer_from: str | None = None
    seed: int = 0
    root: str = "results"
    device: str = "auto"
    name: str | None = None
    threads: int = 0
    # Local processes training a level's independent variants at once (not identity: results equal workers=1).
    workers: int = 1
    progress: bool = True
    # Load VecNormalize statistics that an older rl_tickets wrote only as SB3's pickle (loading a pickle
    # can run code: only for results folders you trust). Each is converted once to the pickle-free file.
    trust_pickles: bool = False
    # What the job returns to Hydra (sweepers such as Optuna maximise it): the ticket's headline metric
    # at the deepest level ("deepest") or its mean over the pruned levels ("mean"). Not identity.
    objective: str = "deepest"


def register_schemas() -> None:
    """Register :class:`Config` with Hydra's ConfigStore as ``schema`` (the primary config extends it)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="schema", node=Config)


def display_name(cfg: Config) -> str:
    """The experiment's display name: ``name`` if given, else algo_env or model_data.

    :param cfg: the job config.
    """
    if cfg.name:
        return cfg.name
    if learner_task(cfg) == "supervised":
        return f"{cfg.model.name}_{cfg.data.name}"
    return f"{cfg.algo.name}_{cfg.env.name}"


def learner_task(cfg: Config) -> str:
    """The task that trains (rl or supervised): ``task``, or ``stability.of`` under ``task=stability``.

    :param cfg: the job config.
    """
    return cfg.stability.of if cfg.task == "stability" else cfg.task


def _check_choice(key: str, value: str) -> None:
    """Raise ConfigError unless ``value`` is one of the valid choices for ``key``."""
    if value not in CHOICES[key]:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(CHOICES[key])}")


# Controls that need no ticket: the only ones beside a one-run schedule (matched to its target count).
ONE_RUN_CONTROLS = ("small_dense",)


def _validate_one_run(cfg: Config) -> None:
    """The rules of gradual pruning and sparse training (one run at ``prune.final_density``)."""
    p = cfg.prune
    if not 0.0 < p.final_density < 1.0:
        raise ConfigError(f"prune.final_density={p.final_density} must lie strictly between 0 and 1")
    end = resolved_end_fraction(p)
    start = p.start_fraction if p.schedule == "gradual" else 0.0
    if not 0.0 <= start < end <= 1.0:
        what = f"prune.start_fraction={p.start_fraction} and " if p.schedule == "gradual" else ""
        raise ConfigError(f"{what}prune.end_fraction={end} must satisfy 0 <= start < end <= 1")
    if p.update_every <= 0:
        raise ConfigError(f"prune.update_every={p.update_every} must be > 0")
    others = [c for c in cfg.controls if c not in ONE_RUN_CONTROLS]
    if others:
        raise ConfigError(
            f"controls={others} need a ticket; prune.schedule={p.schedule} trains one run and takes "
            f"only {', '.join(ONE_RUN_CONTROLS)} (matched to its weight count)"
        )
    if p.schedule not in SPARSE_TRAINING:
        return
    if not 0.0 <= p.drop_fraction < 1.0:
        raise ConfigError(f"prune.drop_fraction={p.drop_fraction} must lie in [0, 1)")
    if p.criterion != "magnitude" or p.overrides:
        raise ConfigError(
            f"prune.schedule={p.schedule} draws a random mask and drops by magnitude; prune.criterion "
            "must be magnitude and prune.overrides empty (per-layer densities come from prune.distribution)"
        )


def validate(cfg: Config) -> None:
    """Check the semantic rules a schema cannot express; raise :class:`ConfigError` with one line.

    Environment/algorithm compatibility needs the action space and is checked by the RL trainer.

    :param cfg: the composed job config.
    """
    for key in CHOICES:
        if key == "controls":
            continue
        section, _, attr = key.partition(".")
        _check_choice(key, getattr(getattr(cfg, section), attr) if attr else getattr(cfg, section))
    for control in cfg.controls:
        _check_choice("controls", control)
    p = cfg.prune
    if not 0.0 < p.rate < 1.0:
        raise ConfigError(
            f"prune.rate={p.rate} must lie strictly between 0 and 1 (e.g. 0.2 removes 20% per level)"
        )
    if p.levels < 0:
        raise ConfigError(f"prune.levels={p.levels} must be >= 0 (0 trains only the dense network)")
    if not 0.0 <= p.min_layer_density < 1.0:
        raise ConfigError(
            f"prune.min_layer_density={p.min_layer_density} must lie in [0, 1) (0 lets a layer be pruned to nothing)"
        )
    for pattern, rate in p.overrides.items():
        if not 0.0 <= float(rate) < 1.0:
            raise ConfigError(f"prune.overrides[{pattern!r}]={rate} must lie in [0, 1)")
    if p.schedule in ONE_RUN_SCHEDULES:
        _validate_one_run(cfg)
    supervised = learner_task(cfg) == "supervised"
    budget_key = "train.iterations" if supervised else "train.timesteps"
    budget = cfg.train.iterations if supervised else cfg.train.timesteps
    if budget <= 0:
        raise ConfigError(f"{budget_key}={budget} must be > 0")
    if not 0 <= cfg.rewind.step < budget:
        raise ConfigError(
            f"rewind.step={cfg.rewind.step} must lie in [0, {budget_key}={budget}); "
            "it is the step whose weights each level restarts from"
        )
    if cfg.retrain.finetune_lr <= 0:
        raise ConfigError(f"retrain.finetune_lr={cfg.retrain.finetune_lr} must be > 0")
    if cfg.supermask.samples <= 0:
        raise ConfigError(f"supermask.samples={cfg.supermask.samples} must be > 0 (weight draws per level)")
    if not cfg.supermask.shared_values:
        raise ConfigError("supermask.shared_values=[] must hold at least one value (the shared weights w)")
    if not all(abs(float(w)) < float("inf") for w in cfg.supermask.shared_values):  # NaN fails too
        raise ConfigError(f"supermask.shared_values={cfg.supermask.shared_values} must be finite numbers")
    if cfg.eval.episodes <= 0:
        raise ConfigError(f"eval.episodes={cfg.eval.episodes} must be > 0")
    if cfg.eval.every < 0:
        raise ConfigError(
            f"eval.every={cfg.eval.every} must be >= 0 (0 evaluates only at the end of a level)"
        )
    if (
        cfg.transfer_from is not None
        and not (Path(cfg.transfer_from) / "level_01" / "ticket" / "mask.pt").exists()
    ):
        raise ConfigError(
            f"transfer_from={cfg.transfer_from} holds no ticket masks (expected level_01/ticket/mask.pt under "
            "a chain directory such as ROOT/chains/<hash>/seed_0)"
        )
    if cfg.workers < 1:
        raise ConfigError(f"workers={cfg.workers} must be >= 1 (local processes training variants at once)")
    if cfg.device not in ("auto", "cpu") and not cfg.device.startswith("cuda"):
        raise ConfigError(f"device={cfg.device!r} is not valid; choose auto, cpu, cuda or cuda:N")
