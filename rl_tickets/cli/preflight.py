"""Everything refused before level 0 trains, each as one :class:`ConfigError` line.

:func:`rl_tickets.config.validate` checks choices and ranges of the pruning schedule; this module adds
what needs more than the schema: the results root (checked by the entry point before Hydra creates
``${root}/hydra``), names, seeds and counts, regular expressions, finite numbers, the device, keys
the schema does not know (``+unknown_key=1``), and, with the trainer built, the network itself: its
prunable layer names (every exclude and override pattern must match one, and something must be left
to prune) and the agent built once, so the library's own checks (SB3's ``n_steps * n_envs > 1``, ...)
fail now, naming the key, instead of after a level of training.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import typing
from collections.abc import Iterator, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import torch

from rl_tickets.chain.store import cannot_create_in, nearest_existing
from rl_tickets.cli.limits import SEED_MAX, check_hyperparams, check_normalize, check_ranges, check_widths
from rl_tickets.config import Config, ConfigError, display_name, learner_task
from rl_tickets.level import Trainer
from rl_tickets.sparsity.pruning import prunable
from rl_tickets.trainers import UserError, build_trainer

NAME_MAX = 100  # W&B groups take 128 characters; the report names directories after it
COMPONENT_MAX = 255  # bytes of one path component on Linux file systems (ext4, XFS, NFS, Lustre)
PATH_MAX = 4095
# What each kind of failure to write a directory means for the user.
WHY_NOT_WRITABLE = {True: "read-only file system", False: "permission denied"}


def check_path(key: str, value: str) -> Path:
    """``value`` can name a file on Linux: no NUL, no component over 255 bytes, not over 4095 in all.

    :param key: the setting, for the message.
    :param value: its value.
    """
    if "\0" in value:
        raise ConfigError(f"{key}= holds a NUL character; give a plain path")
    for part in Path(value).parts:
        if len(os.fsencode(part)) > COMPONENT_MAX:
            raise ConfigError(
                f"{key}: the path component {part[:24]}... has {len(os.fsencode(part))} bytes; "
                f"file systems take at most {COMPONENT_MAX}"
            )
    if len(os.fsencode(os.path.abspath(value))) > PATH_MAX:
        raise ConfigError(f"{key}= is longer than the {PATH_MAX} bytes a path may have")
    return Path(value)


def check_writable(key: str, path: Path) -> None:
    """``path`` is a directory that can be written, or one that can be created (nothing is left behind).

    :param key: the setting, for the message.
    :param path: the directory.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path} is a file, not a directory; choose another {key}=")
    existing = nearest_existing(path)
    if not existing.is_dir():
        raise ConfigError(f"{key}={path} cannot be created: {existing} is a file; choose another {key}=")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = WHY_NOT_WRITABLE[bool(os.statvfs(existing).f_flag & os.ST_RDONLY)]
        raise ConfigError(f"{key}={path} is not writable ({why}: {existing}); choose another {key}=")
    if (why := cannot_create_in(existing)) is not None:
        raise ConfigError(f"{key}={path} cannot be created under {existing} ({why}); choose another {key}=")


def check_root(root: str) -> None:
    """``root`` is a non-empty path to a writable directory, or one that can be created.

    :param root: the ``root`` setting (relative to the working directory).
    """
    if not root.strip():
        raise ConfigError("root= is empty; give the directory for results, e.g. root=results")
    check_writable("root", check_path("root", root))


def check_paths(cfg: Config) -> None:
    """Every path setting can name a file (checked before anything looks at the file system through it).

    :param cfg: the composed job config.
    """
    check_root(cfg.root)
    if cfg.transfer_from is not None:
        check_path("transfer_from", cfg.transfer_from)
        if Path(cfg.transfer_from).is_file():
            raise ConfigError(f"transfer_from={cfg.transfer_from} is a file; give a chain directory")
    if learner_task(cfg) == "supervised":
        data = check_path("data.root", cfg.data.root)
        if data.exists() and not data.is_dir():
            raise ConfigError(
                f"data.root={cfg.data.root} is a file, not a directory; choose another data.root="
            )
        if cfg.data.download:
            check_writable("data.root", data)


def check_name(name: str | None) -> None:
    """``name`` is unset, or a short name without path separators (it names W&B groups and report
    directories).

    :param name: the ``name`` setting.
    """
    if name is None:
        return
    if not name.strip():
        raise ConfigError("name= is empty; leave it out for the default <algo>_<env> (or <model>_<data>)")
    if len(name) > NAME_MAX:
        raise ConfigError(f"name has {len(name)} characters; keep it to {NAME_MAX} or fewer")
    if any(c in name for c in "/\\\0") or name.strip(".") == "":
        raise ConfigError(f"name={name!r} may not contain '/' or '\\' or be dots only (it names directories)")


def _numbers(value: Any, key: str) -> Iterator[tuple[str, float]]:
    """Every float inside a (nested) hyperparameter value, with its dotted key."""
    if isinstance(value, float):
        yield key, value
    elif isinstance(value, Mapping):
        for sub, item in value.items():
            yield from _numbers(item, f"{key}.{sub}")


def check_values(cfg: Config) -> None:
    """Seeds, counts, names, regular expressions and finite numbers: the checks that need no network.

    :param cfg: the composed job config.
    """
    check_paths(cfg)
    check_name(cfg.name)
    if not 0 <= cfg.seed <= SEED_MAX:
        raise ConfigError(f"seed={cfg.seed} must lie in [0, {SEED_MAX}]")
    if cfg.env.n_envs < 1:
        raise ConfigError(f"env.n_envs={cfg.env.n_envs} must be >= 1 (parallel environments)")
    if cfg.threads < 0:
        raise ConfigError(f"threads={cfg.threads} must be >= 0 (0 chooses: 1 for MLPs, all cores for CNNs)")
    patterns = [("prune.exclude", p) for p in cfg.prune.exclude] + [
        ("prune.overrides", p) for p in cfg.prune.overrides
    ]
    for key, pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigError(f"{key}: {pattern!r} is not a valid regular expression ({error})") from None
    numbers = [
        *_numbers(dict(cfg.algo.hyperparams), "algo.hyperparams"),
        ("train.lr", cfg.train.lr),
        ("retrain.finetune_lr", cfg.retrain.finetune_lr),
    ]
    for key, number in numbers:
        if not math.isfinite(number):
            raise ConfigError(f"{key}={number} must be a finite number")
    check_ranges(cfg)
    if learner_task(cfg) == "rl":
        check_algo_keys(cfg.algo.name, cfg.algo.hyperparams)
        check_hyperparams(cfg.algo.hyperparams)
        check_policy_kwargs(cfg.algo.policy_kwargs)
        check_normalize(cfg.env.normalize_kwargs)
    check_device(cfg.device)


def check_algo_keys(algo: str, hyperparams: Mapping[str, Any]) -> None:
    """Every hyperparameter is one the algorithm's constructor takes; one that another algorithm takes
    is refused naming the algorithms it applies to.

    :param algo: ``algo.name``.
    :param hyperparams: ``algo.hyperparams``.
    """
    from rl_tickets.rl.agents import ALGOS  # SB3 is imported for RL jobs only

    taken = {name: set(inspect.signature(cls.__init__).parameters) for name, cls in ALGOS.items()}
    for key in hyperparams:
        if key not in taken[algo]:
            others = [name for name, keys in taken.items() if key in keys]
            if others:
                raise ConfigError(
                    f"algo.hyperparams.{key} applies only to algo={', '.join(others)} (algo={algo} does not take it)"
                )


def check_policy_kwargs(kwargs: Mapping[str, Any]) -> None:
    """``algo.policy_kwargs``: names rl_tickets translates are known, widths are whole and positive.

    :param kwargs: the setting.
    """
    from rl_tickets.rl.agents import ACTIVATIONS  # SB3 is imported for RL jobs only
    from rl_tickets.rl.envs import FEATURE_EXTRACTORS

    for key, known in (("activation_fn", ACTIVATIONS), ("features_extractor_class", FEATURE_EXTRACTORS)):
        if key in kwargs and kwargs[key] not in known:
            raise ConfigError(
                f"algo.policy_kwargs.{key}={kwargs[key]!r} is not valid; choose one of: {', '.join(known)}"
            )
    if "net_arch" in kwargs:
        check_widths(kwargs["net_arch"])


def check_device(device: str) -> None:
    """``device`` names a device this machine has (``auto`` and ``cpu`` always do).

    :param device: auto, cpu, cuda or cuda:N.
    """
    if not device.startswith("cuda"):
        return
    index = device.removeprefix("cuda").removeprefix(":") or "0"
    if not index.isdigit():
        raise ConfigError(f"device={device!r} is not valid; choose auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA device visible"
        raise ConfigError(f"device={device} but this machine has {build}; use device=cpu or device=auto")
    if int(index) >= torch.cuda.device_count():
        raise ConfigError(f"device={device} but this machine has {torch.cuda.device_count()} CUDA device(s)")


def unknown_keys(values: Mapping[str, Any], schema: type = Config, prefix: str = "") -> list[str]:
    """Dotted keys of a composed config that its schema does not have (``+unknown_key=1`` adds them).

    Dict-typed fields (``algo.hyperparams``, ``prune.overrides``, ...) take any key; their contents are
    checked where they are used.

    :param values: the composed config as plain containers.
    :param schema: the dataclass it must follow.
    :param prefix: the dotted path of ``values`` (recursion).
    """
    hints = typing.get_type_hints(schema)
    known = {f.name for f in fields(schema)}
    found = []
    for key, value in values.items():
        if key not in known:
            found.append(f"{prefix}{key}")
        elif is_dataclass(hints[key]) and isinstance(value, Mapping):
            found += unknown_keys(value, hints[key], f"{prefix}{key}.")
    return found


def _with_values(cfg: Config, message: str) -> list[str]:
    """``key=value`` for each setting of the algorithm and env that an error message names."""
    text = message.lower().replace(" ", "_")  # "learning rate" in a message names learning_rate
    named = [f"algo.hyperparams.{k}={v}" for k, v in cfg.algo.hyperparams.items() if k in text]
    if "n_envs" in text:
        named.append(f"env.n_envs={cfg.env.n_envs}")
    named += [f"env.make_kwargs.{k}={v}" for k, v in cfg.env.make_kwargs.items() if k in text]
    return named


def build_checked(cfg: Config) -> Trainer:
    """The job's trainer; a failure to build it from the config (an environment that does not take a
    ``make_kwargs`` key, ...) is one :class:`ConfigError` line naming the settings involved.

    :param cfg: the validated job config.
    """
    try:
        return build_trainer(cfg)
    except (ConfigError, UserError):
        raise
    except Exception as error:  # raised by Gymnasium or SB3 while building from the config
        text = (str(error).strip().splitlines() or [type(error).__name__])[0]
        named = _with_values(cfg, text) or ["these settings"]
        learner = (
            f"algo={cfg.algo.name} env.id={cfg.env.id}" if cfg.task == "rl" else f"model={cfg.model.name}"
        )
        raise ConfigError(f"{learner} cannot be built with {', '.join(named)}: {text}") from None


def check_network(cfg: Config, trainer: Trainer) -> None:
    """Build the network once (cheaply) and check the settings that need its layers.

    :param cfg: the validated job config.
    :param trainer: the job's trainer.
    """
    try:
        names = trainer.prunable(trainer.fresh_params(cfg.seed), cfg.prune.biases)
    except Exception as error:  # building the network from the config failed: the config says why
        text = (str(error).strip().splitlines() or [type(error).__name__])[0]
        named = _with_values(cfg, text) or ["these settings"]
        learner = f"algo={cfg.algo.name}" if cfg.task == "rl" else f"model={cfg.model.name}"
        raise ConfigError(f"{learner} cannot be built with {', '.join(named)}: {text}") from None
    listing = ", ".join(names)
    for key, patterns in (
        ("prune.exclude", list(cfg.prune.exclude)),
        ("prune.overrides", list(cfg.prune.overrides)),
    ):
        for pattern in patterns:
            if not any(re.search(pattern, name) for name in names):
                raise ConfigError(
                    f"{key}: {pattern!r} matches no prunable layer of {display_name(cfg)}; they are: {listing}"
                )
    if not prunable(names, cfg.prune.exclude):
        raise ConfigError(
            f"prune.exclude={list(cfg.prune.exclude)} excludes every prunable layer; nothing is left to prune"
        )
