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

import math
import os
import re
import typing
from collections.abc import Iterator, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import torch

from rl_tickets.config import Config, ConfigError, display_name
from rl_tickets.level import Trainer
from rl_tickets.sparsity.pruning import prunable

NAME_MAX = 100  # W&B groups take 128 characters; the report names directories after it
SEED_MAX = 2**31 - 1  # numpy, torch and Gymnasium all take seeds up to here
# What each kind of failure to write a directory means for the user.
WHY_NOT_WRITABLE = {True: "read-only file system", False: "permission denied"}


def check_root(root: str) -> None:
    """``root`` is a non-empty path to a writable directory, or one that can be created.

    :param root: the ``root`` setting (relative to the working directory).
    """
    if not root.strip():
        raise ConfigError("root= is empty; give the directory for results, e.g. root=results")
    path = Path(root)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"root={root} is a file, not a directory; choose another root=")
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"root={root} cannot be created: {existing} is a file; choose another root=")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = WHY_NOT_WRITABLE[bool(os.statvfs(existing).f_flag & os.ST_RDONLY)]
        raise ConfigError(f"root={root} is not writable ({why}: {existing}); choose another root=")


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
    check_root(cfg.root)
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
    check_device(cfg.device)


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
    return named


def check_network(cfg: Config, trainer: Trainer) -> None:
    """Build the network once (cheaply) and check the settings that need its layers.

    :param cfg: the validated job config.
    :param trainer: the job's trainer.
    """
    try:
        names = trainer.prunable(trainer.fresh_params(cfg.seed), cfg.prune.biases)
    except (AssertionError, ValueError, TypeError) as error:
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
