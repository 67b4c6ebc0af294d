"""A chain's tables and record: levels.csv, layers.csv (rebuilt from the finished levels) and meta.json."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from rl_tickets.chain.context import ChainContext
from rl_tickets.chain.store import TICKET, TRANSFER, finished_variants, is_complete, write_atomic, write_csv
from rl_tickets.config import CHOICES, display_name
from rl_tickets.sparsity.masks import layer_densities, load_mask

VARIANT_ORDER = (TICKET, *CHOICES["controls"], TRANSFER, "gradual")
# levels.csv's time column (the rest of the breakdown is in metrics.json and goes to W&B).
TIME_COLUMNS = ("train_s",)


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
    found = [(0, TICKET), *finished_variants(chain.paths.chain)]
    found.sort(key=lambda lv: (lv[0], VARIANT_ORDER.index(lv[1]) if lv[1] in VARIANT_ORDER else 99, lv[1]))
    for level, variant in found:
        directory = chain.paths.level(level, variant)
        if not is_complete(directory):
            continue
        rows.append(level_row(chain, level, variant))
        for layer, numel, layer_density in layer_densities(load_mask(directory / "mask.pt")):
            layer_rows.append(
                {"level": level, "variant": variant, "layer": layer, "numel": numel, "density": layer_density}
            )
    write_csv(
        chain.paths.chain / "levels.csv",
        rows,
        ["level", "variant", "density", *chain.trainer.columns, *TIME_COLUMNS],
    )
    write_csv(chain.paths.chain / "layers.csv", layer_rows, ["level", "variant", "layer", "numel", "density"])


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
        "config": asdict(cfg),
        **trainer.describe(),
    }
    write_atomic(chain.paths.chain / "meta.json", json.dumps(meta, indent=2, default=str))
