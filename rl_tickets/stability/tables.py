"""A seed's tables, rebuilt from its finished pairs after every pair (like a chain's levels.csv).

- ``stability.csv``: one row per (k, level, alpha): ``seed, level, density, k, k_fraction, alpha,
  metric, metric_name, spread, loss, returns`` (``returns``: every episode's return, space-separated;
  supervised rows have ``loss`` instead).
- ``instability.csv``: one row per (k, level): both ends, their mean, the worst point and where it lies,
  the instability, the barrier (:func:`~rl_tickets.stability.interpolation.barrier`), the dense metric
  it is judged against, the threshold and whether the pair is stable.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from rl_tickets.chain.store import write_csv
from rl_tickets.stability.store import INSTABILITY_CSV, PAIR_RECORD, PATH_RECORD, STABILITY_CSV, read_json

STABILITY_COLUMNS = [
    "seed",
    "level",
    "density",
    "k",
    "k_fraction",
    "alpha",
    "metric",
    "metric_name",
    "spread",
    "loss",
    "returns",
]
INSTABILITY_COLUMNS = [
    "seed",
    "level",
    "density",
    "k",
    "k_fraction",
    "metric_name",
    "end_a",
    "end_b",
    "ends_mean",
    "worst",
    "worst_alpha",
    "instability",
    "barrier",
    "dense_metric",
    "threshold",
    "stable",
]


def threshold_of(fraction: float, dense_metric: float) -> float:
    """The largest instability called stable: ``fraction`` of the dense metric's magnitude.

    :param fraction: ``stability.threshold`` (0.05: the report's non-inferiority margin).
    :param dense_metric: the dense metric of this seed (``stability.reference``: final or best).
    """
    return fraction * abs(dense_metric)


def pair_rows(
    seed: int, budget: int, pair: dict[str, Any], path: dict[str, Any], dense_metric: float, fraction: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One pair's stability.csv rows and its instability.csv row.

    :param seed: the chain seed.
    :param budget: the training budget (for ``k_fraction``).
    :param pair: its pair.json.
    :param path: its path.json.
    :param dense_metric: the dense metric of this seed (``stability.reference``: final or best).
    :param fraction: ``stability.threshold``.
    """
    base = {
        "seed": seed,
        "level": pair["level"],
        "density": pair["density"],
        "k": pair["k"],
        "k_fraction": pair["k"] / budget,
    }
    metric = path["metric"]
    rows = [
        {
            **base,
            "alpha": p["alpha"],
            "metric": p["value"],
            "metric_name": metric,
            "spread": p["spread"],
            "loss": "" if p["loss"] is None else p["loss"],
            "returns": " ".join(f"{r:g}" for r in p["returns"]),
        }
        for p in path["points"]
    ]
    values = [p["value"] for p in path["points"]]
    worst = min(values) if path["higher_is_better"] else max(values)
    threshold = threshold_of(fraction, dense_metric)
    summary = {
        **base,
        "metric_name": metric,
        "end_a": values[0],
        "end_b": values[-1],
        "ends_mean": (values[0] + values[-1]) / 2,
        "worst": worst,
        "worst_alpha": path["worst_alpha"],
        "instability": path["instability"],
        "barrier": path.get("barrier", float("nan")),  # absent from paths evaluated before it existed
        "dense_metric": dense_metric,
        "threshold": threshold,
        "stable": path["instability"] <= threshold,
    }
    return rows, summary


def collect(
    seed_dir: Path, pairs: list[Path], seed: int, budget: int, dense_metric: float, fraction: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of every finished pair whose path is evaluated, in (k, level) order.

    :param seed_dir: the seed's directory.
    :param pairs: its finished pair directories.
    :param seed: the chain seed.
    :param budget: the training budget.
    :param dense_metric: the dense metric of this seed (``stability.reference``: final or best).
    :param fraction: ``stability.threshold``.
    """
    rows: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    for pair_dir in pairs:
        pair, path = read_json(pair_dir / PAIR_RECORD), read_json(pair_dir / PATH_RECORD)
        if pair is None or path is None:
            continue
        pair_rows_, summary = pair_rows(seed, budget, pair, path, dense_metric, fraction)
        rows += pair_rows_
        summaries.append(summary)
    summaries.sort(key=lambda r: (r["k"], r["level"]))
    rows.sort(key=lambda r: (r["k"], r["level"], r["alpha"]))
    return rows, summaries


def write_tables(seed_dir: Path, rows: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> None:
    """Write stability.csv and instability.csv atomically.

    :param seed_dir: the seed's directory.
    :param rows: stability.csv rows.
    :param summaries: instability.csv rows.
    """
    write_csv(seed_dir / STABILITY_CSV, rows, STABILITY_COLUMNS)
    write_csv(seed_dir / INSTABILITY_CSV, summaries, INSTABILITY_COLUMNS)


def console_rows(seed_dir: Path) -> tuple[list[str], list[list[str]]]:
    """The seed's instability.csv as headers and cells for the console table.

    :param seed_dir: the seed's directory.
    """
    with open(seed_dir / INSTABILITY_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    name = rows[0]["metric_name"] if rows else "metric"
    headers = [
        "level",
        "density",
        "k",
        "k/budget",
        f"{name} a",
        "b",
        "worst",
        "at alpha",
        "instability",
        "stable",
    ]
    cells = [
        [
            r["level"],
            f"{float(r['density']):.4f}",
            r["k"],
            f"{float(r['k_fraction']):.2%}",
            *(f"{float(r[c]):.4g}" for c in ("end_a", "end_b", "worst")),
            f"{float(r['worst_alpha']):.2f}",
            f"{float(r['instability']):.4g}",
            "yes" if r["stable"] == "True" else "no",
        ]
        for r in rows
    ]
    return headers, cells
