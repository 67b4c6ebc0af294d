"""A chain's tables and record: levels.csv, layers.csv (rebuilt from the finished levels) and meta.json."""

from __future__ import annotations

import json
from typing import Any

from rl_tickets.chain.context import ChainContext
from rl_tickets.chain.provenance import chain_config, run_record, runs_so_far, with_run
from rl_tickets.chain.store import TICKET, TRANSFER, finished_variants, is_complete, write_atomic, write_csv
from rl_tickets.config import CHOICES, SPARSE_TRAINING, display_name
from rl_tickets.sparsity.masks import layer_densities, load_mask

VARIANT_ORDER = (TICKET, *CHOICES["controls"], TRANSFER, "gradual", *SPARSE_TRAINING)
# levels.csv's time column (the rest of the breakdown is in metrics.json and goes to W&B).
TIME_COLUMNS = ("train_s",)
# Roles of meta.json's ``roles`` (decided by module identity in rl/roles.py), in column order: each role
# a chain has gets a ``<role>_density`` column in levels.csv (DQN: ``q_density`` only; supervised: none).
ROLE_ORDER = ("actor", "critic", "shared", "q", "other")


def chain_roles(chain: ChainContext) -> dict[str, str]:
    """``{parameter: role}`` from the chain's meta.json (written before any table); empty without roles.

    :param chain: the chain.
    """
    try:
        meta = json.loads((chain.paths.chain / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {str(k): str(v) for k, v in (meta.get("roles") or {}).items()}


def role_densities(mask: dict[str, Any], roles: dict[str, str]) -> dict[str, float]:
    """``<role>_density`` per role present in ``mask``: kept over total of that role's mask entries.

    :param mask: a level's mask (bool tensors by parameter name).
    :param roles: ``{parameter: role}``.
    """
    kept: dict[str, int] = {}
    total: dict[str, int] = {}
    for name, m in mask.items():
        if name in roles:
            kept[roles[name]] = kept.get(roles[name], 0) + int(m.sum())
            total[roles[name]] = total.get(roles[name], 0) + m.numel()
    return {f"{role}_density": kept[role] / total[role] for role in total if total[role]}


def level_row(chain: ChainContext, level: int, variant: str) -> dict[str, Any]:
    """A finished level's row: its levels.csv columns plus the whole time breakdown and steps/s
    (levels.csv keeps only ``train_s`` of those; the mirrors and the progress line get all).

    :param chain: the chain.
    :param level: level number.
    :param variant: the variant.
    """
    record = chain.metrics(level, variant)
    row = {k: record[k] for k in ("level", "variant", "density", *chain.trainer.columns) if k in record}
    row.update(record.get("time", {}))
    if record.get("steps_per_s") is not None:
        row["steps_per_s"] = record["steps_per_s"]
    return row


def write_tables(chain: ChainContext) -> None:
    """Rebuild levels.csv and layers.csv from the finished levels on disk.

    :param chain: the chain.
    """
    rows, layer_rows = [], []
    roles = chain_roles(chain)
    found = [(0, TICKET), *finished_variants(chain.paths.chain)]
    found.sort(key=lambda lv: (lv[0], VARIANT_ORDER.index(lv[1]) if lv[1] in VARIANT_ORDER else 99, lv[1]))
    for level, variant in found:
        directory = chain.paths.level(level, variant)
        if not is_complete(directory):
            continue
        mask = load_mask(directory / "mask.pt")
        layers = layer_densities(mask)
        # A layer with no live weight cuts the network in two (see prune.min_layer_density): say which.
        empty = ";".join(layer for layer, _, layer_density in layers if layer_density == 0)
        rows.append(
            {**level_row(chain, level, variant), **role_densities(mask, roles), "empty_layers": empty}
        )
        for layer, numel, layer_density in layers:
            layer_rows.append(
                {
                    "level": level,
                    "variant": variant,
                    "layer": layer,
                    "numel": numel,
                    "density": layer_density,
                    "role": roles.get(layer, ""),
                    "empty": int(layer_density == 0),
                }
            )
    role_columns = [f"{r}_density" for r in ROLE_ORDER if r in set(roles.values())]
    write_csv(
        chain.paths.chain / "levels.csv",
        rows,
        ["level", "variant", "density", *chain.trainer.columns, *TIME_COLUMNS, *role_columns, "empty_layers"],
    )
    write_csv(
        chain.paths.chain / "layers.csv",
        layer_rows,
        ["level", "variant", "layer", "numel", "density", "role", "empty"],
    )


def write_meta(chain: ChainContext) -> None:
    """meta.json: what the report needs to group and label this chain.

    :param chain: the chain.
    """
    cfg, trainer = chain.cfg, chain.trainer
    meta = {
        "name": display_name(cfg),
        "task": cfg.task,
        "seed": cfg.seed,
        "metric": trainer.metric,
        "unit": trainer.unit,
        "algo": cfg.algo.name if cfg.task == "rl" else None,
        "env": cfg.env.name if cfg.task == "rl" else cfg.data.name,
        "model": cfg.model.name if cfg.task == "supervised" else None,
        "dense_dir": str(chain.paths.dense),
        # The chain's config; settings that are not identity belong to each run (levels may come from
        # runs with other ones): ``runs`` lists them with the versions and machine of every run.
        "config": chain_config(cfg),
        "runs": with_run(runs_so_far(chain.paths.chain / "meta.json"), run_record(cfg)),
        **trainer.describe(),
    }
    write_atomic(chain.paths.chain / "meta.json", json.dumps(meta, indent=2, default=str))
