"""The valid range of every number a job takes, with the caps on resources stated once.

Every numeric key of the schema (found by walking :class:`rl_tickets.config.Config`, so a new knob is
covered) must be finite and inside its range in :data:`KEYS`; a key missing from the table gets
:data:`FALLBACK`. Stable-Baselines3's hyperparameters have their own table (:data:`HYPERPARAMS`: the
meaning each has in SB3's constructors), applied to plain numbers and to the start and end of
schedules. Caps bound what one job may ask for: more than any published experiment needs, far less
than what makes a job run for ever or exhaust memory. ``workers`` and ``threads`` are not refused when
large: the job lowers them to the cores it may use, with a line.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

from rl_tickets.config import Config, ConfigError

TIMESTEPS_MAX = 10**10  # environment steps of one level: 100x the longest Atari runs (1e8)
ITERATIONS_MAX = 10**9
EVAL_EPISODES_MAX = 1000  # per evaluation; published protocols use 10-100
LEVELS_MAX = 100  # 0.8^100 = 2e-10 of the weights: nothing is left long before
SAMPLES_MAX = 1000
N_ENVS_MAX = 1024
WIDTH_MAX = 2**16  # units of one hidden layer
SEED_MAX = 2**31 - 1  # numpy, torch and Gymnasium all take seeds up to here


@dataclass(frozen=True)
class Range:
    """A closed (or half-open) interval of valid values; None: unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.high_open and value == self.high))

    def closed(self) -> Range:
        """The same range with both ends included (a schedule may end at its open bound, e.g. lr 0)."""
        return Range(self.low, self.high)

    def describe(self) -> str:
        """``must lie in (0, 1]``, ``must be >= 1``, ``must be > 0``."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"must lie in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"
        if self.low is not None:
            return f"must be {'>' if self.low_open else '>='} {_fmt(self.low)}"
        if self.high is not None:
            return f"must be {'<' if self.high_open else '<='} {_fmt(self.high)}"
        return "must be a finite number"


def _fmt(value: float) -> str:
    """A bound as the user would write it (1e10 rather than 10000000000)."""
    if isinstance(value, int) and abs(value) >= 10**6:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"


POSITIVE, FRACTION, OPEN_FRACTION = Range(0, None, low_open=True), Range(0, 1), Range(0, 1, True, True)
# Every numeric key of the schema and its valid values.
KEYS: dict[str, Range] = {
    "env.n_envs": Range(1, N_ENVS_MAX),
    "prune.levels": Range(0, LEVELS_MAX),
    "prune.rate": OPEN_FRACTION,
    "prune.min_layer_density": Range(0, 1, high_open=True),
    "prune.final_density": OPEN_FRACTION,
    "prune.start_fraction": FRACTION,
    "prune.end_fraction": FRACTION,
    "prune.update_every": Range(1, TIMESTEPS_MAX),
    "prune.drop_fraction": FRACTION,
    "rewind.step": Range(0, TIMESTEPS_MAX),
    "retrain.finetune_lr": Range(0, 10, low_open=True),
    "train.timesteps": Range(1, TIMESTEPS_MAX),
    "train.iterations": Range(1, ITERATIONS_MAX),
    "train.batch_size": Range(1, 10**6),
    "train.lr": Range(0, 10, low_open=True),
    "eval.episodes": Range(1, EVAL_EPISODES_MAX),
    "eval.every": Range(0, TIMESTEPS_MAX),
    "supermask.samples": Range(1, SAMPLES_MAX),
    "stability.alphas": Range(2, 1001),
    "stability.threshold": Range(0, None),
    "logger.init_timeout": Range(0, 3600, low_open=True),
    "seed": Range(0, SEED_MAX),
    "threads": Range(0, None),  # large values are lowered to the cores (rl_tickets.cli.resources)
    "workers": Range(1, None),
}
FALLBACK = Range(0, 10**12)  # a numeric key added without a row here: non-negative and finite

# Stable-Baselines3 hyperparameters (algo.hyperparams.<key>) and the values SB3 gives them a meaning for.
HYPERPARAMS: dict[str, Range] = {
    "learning_rate": Range(0, 10, low_open=True),
    "gamma": FRACTION,
    "gae_lambda": FRACTION,
    "clip_range": Range(0, 10, low_open=True),
    "clip_range_vf": Range(0, 10, low_open=True),
    "ent_coef": Range(0, 10),
    "vf_coef": Range(0, 10),
    "max_grad_norm": Range(0, 10**6, low_open=True),
    "n_steps": Range(1, 10**7),
    "batch_size": Range(1, 10**7),
    "n_epochs": Range(1, 10**4),
    "target_kl": Range(0, 10, low_open=True),
    "buffer_size": Range(1, 10**9),
    "learning_starts": Range(0, TIMESTEPS_MAX),
    "tau": FRACTION,
    "train_freq": Range(1, TIMESTEPS_MAX),
    "gradient_steps": Range(-1, 10**5),  # -1: as many as environment steps; 0 is refused below
    "target_update_interval": Range(1, TIMESTEPS_MAX),
    "exploration_fraction": FRACTION,
    "exploration_initial_eps": FRACTION,
    "exploration_final_eps": FRACTION,
    "policy_delay": Range(1, 10**4),
    "target_policy_noise": Range(0, 10),
    "target_noise_clip": Range(0, 10),
    "sde_sample_freq": Range(-1, 10**7),
    "rms_prop_eps": Range(0, 1, low_open=True),
    "stats_window_size": Range(1, 10**6),
}
# Hyperparameters that also take SB3's strings ("auto", "auto_0.1").
AUTO = {"ent_coef", "target_entropy"}
NORMALIZE: dict[str, Range] = {
    "gamma": FRACTION,
    "clip_obs": Range(0, 10**6, low_open=True),
    "clip_reward": Range(0, 10**6, low_open=True),
    "epsilon": Range(0, 1, low_open=True),
}
NORMALIZE_FLAGS = {"norm_obs", "norm_reward", "norm_obs_keys", "training"}


def numeric_keys(schema: type = Config, prefix: str = "") -> Iterator[tuple[str, type]]:
    """Every int or float field of the schema (optional ones too), as (dotted key, type).

    :param schema: a dataclass.
    :param prefix: the dotted path of ``schema`` (recursion).
    """
    hints = typing.get_type_hints(schema)
    for spec in fields(schema):
        kind = hints[spec.name]
        if is_dataclass(kind):
            yield from numeric_keys(kind, f"{prefix}{spec.name}.")  # type: ignore[arg-type]
            continue
        optional = typing.get_origin(kind) in (typing.Union, types.UnionType)  # X | None
        options = [t for t in typing.get_args(kind) if t is not type(None)] if optional else [kind]
        if len(options) == 1 and options[0] in (int, float):
            yield f"{prefix}{spec.name}", options[0]


def value_of(cfg: Config, key: str) -> Any:
    """The value of a dotted key.

    :param cfg: the config.
    :param key: e.g. ``prune.rate``.
    """
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_number(key: str, value: Any, valid: Range) -> None:
    """Refuse a value that is not a finite number inside ``valid``, naming the key.

    :param key: the dotted key (as the user writes it).
    :param value: its value.
    :param valid: the range.
    """
    if not _is_number(value):
        raise ConfigError(f"{key}={value!r} must be a number")
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value} must be a finite number")
    if value not in valid:
        raise ConfigError(f"{key}={value} {valid.describe()}")


def check_ranges(cfg: Config) -> None:
    """Every numeric key of the schema is finite and inside its range (:data:`KEYS`).

    :param cfg: the composed config.
    """
    for key, _ in numeric_keys():
        value = value_of(cfg, key)
        if value is not None:
            check_number(key, value, KEYS.get(key, FALLBACK))


def _check_hyperparam(key: str, value: Any, valid: Range) -> None:
    """One hyperparameter: a number, a schedule mapping, or SB3's own strings where it takes them."""
    name = key.rsplit(".", 1)[-1]
    if isinstance(value, str) and name in AUTO:
        auto = value.removeprefix("auto").removeprefix("_")
        if value == "auto" or (value.startswith("auto_") and _finite_float(auto) not in (None, 0.0)):
            return
    if isinstance(value, Mapping) and "schedule" in value:
        for end in ("start", "end", "value"):
            if end in value:
                check_number(f"{key}.{end}", value[end], valid if end != "end" else valid.closed())
        if "fraction" in value:
            check_number(f"{key}.fraction", value["fraction"], Range(0, 1, low_open=True))
        return
    if name == "train_freq" and isinstance(value, list | tuple) and len(value) == 2:
        value = value[0]  # [n, "step" | "episode"]
    if name == "gradient_steps" and value == 0:
        raise ConfigError(f"{key}=0 would never train; use >= 1 (or -1: one per environment step)")
    check_number(key, value, valid)


def _finite_float(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def check_hyperparams(hyperparams: Mapping[str, Any]) -> None:
    """Every SB3 hyperparameter of :data:`HYPERPARAMS` inside its range; the rest finite where numbers.

    :param hyperparams: ``algo.hyperparams``.
    """
    for name, value in hyperparams.items():
        key = f"algo.hyperparams.{name}"
        if name in HYPERPARAMS:
            _check_hyperparam(key, value, HYPERPARAMS[name])
        elif name == "action_noise" and isinstance(value, Mapping):
            check_number(f"{key}.sigma", value.get("sigma", 0.1), Range(0, 10**3))
        else:
            for where, number in finite_numbers(value, key):
                check_number(where, number, Range())


def finite_numbers(value: Any, key: str) -> Iterator[tuple[str, float]]:
    """Every number inside a (nested) value, with its dotted key.

    :param value: a number, mapping or list.
    :param key: its dotted key.
    """
    if _is_number(value):
        yield key, value
    elif isinstance(value, Mapping):
        for sub, item in value.items():
            yield from finite_numbers(item, f"{key}.{sub}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from finite_numbers(item, f"{key}[{index}]")


def check_widths(net_arch: Any, key: str = "algo.policy_kwargs.net_arch") -> None:
    """``net_arch`` is a list of hidden widths (whole numbers in [1, 65536]), or a dict of such lists.

    :param net_arch: the setting.
    :param key: its dotted key.
    """
    if isinstance(net_arch, Mapping):
        for part, widths in net_arch.items():
            check_widths(widths, f"{key}.{part}")
        return
    if not isinstance(net_arch, list | tuple):
        raise ConfigError(f"{key}={net_arch!r} must be a list of layer widths, e.g. [64, 64]")
    for width in net_arch:
        if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= WIDTH_MAX:
            raise ConfigError(
                f"{key}={list(net_arch)}: every width must be a whole number in [1, {WIDTH_MAX}] ({width!r} is not)"
            )


def check_normalize(kwargs: Mapping[str, Any]) -> None:
    """``env.normalize_kwargs``: VecNormalize's own arguments, each in its range.

    :param kwargs: the setting.
    """
    for name, value in kwargs.items():
        key = f"env.normalize_kwargs.{name}"
        if name in NORMALIZE:
            check_number(key, value, NORMALIZE[name])
        elif name not in NORMALIZE_FLAGS:
            valid = ", ".join(sorted([*NORMALIZE, *NORMALIZE_FLAGS]))
            raise ConfigError(f"{key} is not an argument of VecNormalize; valid: {valid}")


def lower_to_cores(cfg: Config, cores: int) -> tuple[Config, list[str]]:
    """``workers`` and ``threads`` bounded by the cores this process may use, with a line for each lowered.

    :param cfg: the job config.
    :param cores: the cores this process may run on (``os.sched_getaffinity``, which SLURM sets).
    """
    lines, changes = [], {}
    for key, value in (("workers", cfg.workers), ("threads", cfg.threads)):
        if value > cores:
            changes[key] = cores
            lines.append(
                f"{key}={value} lowered to {cores}: this process may use {cores} cores (os.sched_getaffinity)"
            )
    return (replace(cfg, **changes) if changes else cfg), lines
