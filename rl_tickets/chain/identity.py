"""Which settings decide a result, and the directory names derived from them.

A chain's directory is a hash of the settings that change what its levels train (OpenLTH's rule),
with values equal to the schema defaults left out: adding a knob with a no-op default never
orphans old results. Levels, controls, evaluation, logging, device, root, name and threads are not
identity. The dense level 0 has a smaller identity (no pruning or retraining keys), so chains that
differ only there share it. Hashes are over canonical JSON, never ``str(dataclass)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from typing import Any

from rl_tickets.config import Config, resolved_end_fraction

# Identity keys per task; each is a dotted section of Config (a whole section or a single field).
RL_DENSE_KEYS = (
    "task",
    "algo",
    "env.id",
    "env.n_envs",
    "env.normalize",
    "env.normalize_kwargs",
    "env.wrapper",
    "env.make_kwargs",
    "train.timesteps",
    "rewind",
)
SUPERVISED_DENSE_KEYS = (
    "task",
    "model",
    "data.name",
    "train.iterations",
    "train.batch_size",
    "train.lr",
    "train.optimizer",
    "rewind",
)
CHAIN_EXTRA_KEYS = ("prune", "retrain")
# rewind.auto is resolved to rewind.step before anything is hashed (a chain chosen that way is the
# chain with that step written out); it is listed so that a stray value can never split a hash.
NOT_IDENTITY = {"prune.levels", "rewind.auto"}


# Always recorded, even when equal to a schema default, so a hash never depends on what the
# schema's defaults happen to be for *what* is trained. prune.min_layer_density came with engine
# version 2 and is recorded always, so changing its default later moves chains to new directories.
ALWAYS = {"task", "algo.name", "env.id", "model.name", "data.name", "seed", "prune.min_layer_density"}

# What a pruned level trains, beyond its settings: the engine's rules, recorded in every *chain*
# identity (never the dense one, so dense levels stay shared across versions). Raise it when a change
# makes the same settings train something else, so old and new pruned levels are never mixed.
# 1 (unrecorded): pruned weights' gradients reached gradient clipping; global ranking could empty a layer.
# 2: pruned gradients are zeroed before clipping and every optimizer step; prune.min_layer_density.
ENGINE_VERSION = 2


def flat_config(cfg: Config) -> dict[str, Any]:
    """The config as ``{"section.field": value}`` (dict-valued fields such as hyperparams stay whole).

    :param cfg: the job config.
    """
    flat: dict[str, Any] = {}
    for key, value in asdict(cfg).items():
        if isinstance(value, dict) and key in {f for f in Config.__dataclass_fields__} and key != "controls":
            for sub, sub_value in value.items():
                flat[f"{key}.{sub}"] = sub_value
        else:
            flat[key] = value
    return flat


def _identity(cfg: Config, keys: tuple[str, ...], with_seed: bool) -> dict[str, Any]:
    """The values of the selected dotted keys that differ from the schema defaults (or are ALWAYS)."""
    flat, defaults = flat_config(cfg), flat_config(Config())
    # prune.end_fraction's default depends on the schedule (None in the schema): hash the value it
    # resolves to, left out when it equals that schedule's own default, so an explicit gradual 0.8
    # and the implicit one hash as they always did.
    flat["prune.end_fraction"] = resolved_end_fraction(cfg.prune)
    defaults["prune.end_fraction"] = resolved_end_fraction(replace(cfg.prune, end_fraction=None))
    selected = [
        k for k in flat if any(k == s or k.startswith(s + ".") for s in keys) and k not in NOT_IDENTITY
    ]
    out = {k: flat[k] for k in selected if k in ALWAYS or flat[k] != defaults[k]}
    if with_seed:
        out["seed"] = cfg.seed
    return out


def dense_keys(cfg: Config) -> tuple[str, ...]:
    """The identity keys of the dense level 0 for this task.

    :param cfg: the job config.
    """
    return SUPERVISED_DENSE_KEYS if cfg.task == "supervised" else RL_DENSE_KEYS


def dense_identity(cfg: Config) -> dict[str, Any]:
    """Identity of the dense run (level 0 and its snapshots), seed included.

    :param cfg: the job config.
    """
    return _identity(cfg, dense_keys(cfg), with_seed=True)


def chain_identity(cfg: Config) -> dict[str, Any]:
    """Identity of a pruning chain, seed and :data:`ENGINE_VERSION` included.

    :param cfg: the job config.
    """
    return {
        **_identity(cfg, dense_keys(cfg) + CHAIN_EXTRA_KEYS, with_seed=True),
        "engine_version": ENGINE_VERSION,
    }


def digest(identity: dict[str, Any], exclude_seed: bool = True) -> str:
    """Short sha256 of canonical JSON of ``identity`` (seed excluded: seeds are subdirectories).

    :param identity: from :func:`dense_identity` or :func:`chain_identity`.
    :param exclude_seed: leave ``seed`` out of the hash.
    """
    body = {k: v for k, v in identity.items() if not (exclude_seed and k == "seed")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
