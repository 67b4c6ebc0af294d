"""Learning curves: per level and variant, a metric against training steps, mean and 95% CI over seeds.

Two sources per level directory (``ROOT/chains/<hash>/seed_<s>/level_NN/<variant>/``; level 0 lives in
the chain's dense directory, ``meta.json``'s ``dense_dir``):

- ``eval``: ``eval_curve.csv``, the deterministic evaluation return (RL) or the test accuracy (supervised);
- ``train``: SB3's ``progress.csv`` ``rollout/ep_rew_mean`` (the mean return of recent training episodes),
  or the supervised training loss from ``eval_curve.csv``.

The x axis is the level's own step counter (environment steps, or iterations), so a level rewound to
step k starts at k. Seeds are put on one grid (their union of steps, or an even grid when that is
long) by linear interpolation inside each seed's own range, never beyond it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rl_tickets.report import aggregates
from rl_tickets.report.records import TICKET, Experiment, level_dirs, read_csv, variant_order, warn

CURVE_COLUMNS = ["source", "level", "variant", "density", "step", "n", "mean", "ci_low", "ci_high", "metric"]
# Beyond this many distinct steps (e.g. SB3 logging every rollout), seeds meet on an even grid.
MAX_POINTS = 200


@dataclass(frozen=True)
class CurveSource:
    """Where one kind of curve lives in a level directory.

    :param name: ``eval`` or ``train`` (the CSV's ``source`` column).
    :param file: the CSV in the level directory.
    :param x: its step column.
    :param y: its metric column.
    :param label: the y axis label.
    """

    name: str
    file: str
    x: str
    y: str
    label: str


RL_SOURCES = (
    CurveSource("eval", "eval_curve.csv", "step", "eval/return_mean", "evaluation return (deterministic)"),
    CurveSource(
        "train", "progress.csv", "time/total_timesteps", "rollout/ep_rew_mean", "training episode return"
    ),
)
SUPERVISED_SOURCES = (
    CurveSource("eval", "eval_curve.csv", "step", "test/accuracy", "test accuracy"),
    CurveSource("train", "eval_curve.csv", "step", "train/loss", "training loss"),
)


def level_densities(per_seed: pd.DataFrame) -> dict[int, float]:
    """Mean density per level: the ticket's, else (a gradual run) the level's variants' mean.

    :param per_seed: :func:`rl_tickets.report.tables.per_seed_table` output.
    """
    tickets = per_seed[per_seed["variant"] == TICKET].groupby("level")["density"].mean()
    every = per_seed.groupby("level")["density"].mean()
    return {int(level): float(tickets.get(level, every[level])) for level in every.index}


def step_unit(exp: Experiment) -> str:
    """The x axis label: environment steps (RL) or iterations (supervised)."""
    return "iterations" if exp.is_supervised else "environment steps"


def sources_of(exp: Experiment) -> tuple[CurveSource, ...]:
    """The curve sources of an experiment's task."""
    return SUPERVISED_SOURCES if exp.is_supervised else RL_SOURCES


def _series(directory: Path, source: CurveSource) -> pd.Series | None:
    """One seed's curve: metric indexed by step (a step logged twice keeps its last value)."""
    df = read_csv(directory / source.file)
    if df.empty or not {source.x, source.y} <= set(df.columns):
        return None
    xy = pd.DataFrame(
        {"x": pd.to_numeric(df[source.x], errors="coerce"), "y": pd.to_numeric(df[source.y], errors="coerce")}
    ).dropna()
    if xy.empty:
        return None
    return xy.drop_duplicates("x", keep="last").set_index("x")["y"].sort_index()


def _grid(curves: Sequence[pd.Series]) -> np.ndarray:
    """The steps seeds are compared at: their union, or an even grid over it when that is too long."""
    steps = np.unique(np.concatenate([c.index.to_numpy(float) for c in curves]))
    return steps if steps.size <= MAX_POINTS else np.linspace(steps[0], steps[-1], MAX_POINTS)


def _on_grid(curve: pd.Series, grid: np.ndarray) -> np.ndarray:
    """A seed's curve interpolated onto ``grid``, NaN outside its own steps."""
    x, y = curve.index.to_numpy(float), curve.to_numpy(float)
    values = np.interp(grid, x, y)
    return np.where((grid >= x[0]) & (grid <= x[-1]), values, np.nan)


def aggregate(curves: Sequence[pd.Series], n_resamples: int, seed: int = 0) -> pd.DataFrame:
    """Mean and 95% bootstrap CI of the mean over seeds at each step.

    :param curves: one curve per seed.
    :param n_resamples: bootstrap resamples.
    :param seed: seed of the resampling.
    :return: columns ``step, n, mean, ci_low, ci_high``.
    """
    grid = _grid(curves)
    runs = np.stack([_on_grid(c, grid) for c in curves])
    low, high = aggregates.mean_band(runs, n_resamples, seed=seed)
    # Every grid step lies inside at least one seed's range, so no column is all-NaN.
    return pd.DataFrame(
        {
            "step": grid,
            "n": np.sum(np.isfinite(runs), axis=0),
            "mean": np.nanmean(runs, axis=0),
            "ci_low": low,
            "ci_high": high,
        }
    )


def curve_table(exp: Experiment, densities: dict[int, float], n_resamples: int = 2000) -> pd.DataFrame:
    """Every curve of an experiment, aggregated over seeds per source, level and variant.

    :param exp: the experiment.
    :param densities: mean ticket density per level (the panel titles; from levels.csv).
    :param n_resamples: bootstrap resamples per curve.
    :return: columns :data:`CURVE_COLUMNS`; empty if no level directory holds a curve.
    """
    dirs_by_seed = {chain.seed: level_dirs(chain) for chain in exp.chains}
    keys = {key for dirs in dirs_by_seed.values() for key in dirs}
    order = {v: i for i, v in enumerate(variant_order(v for _, v in keys))}
    frames = []
    for source in sources_of(exp):
        for level, variant in sorted(keys, key=lambda k: (k[0], order[k[1]])):
            curves = [
                series
                for dirs in dirs_by_seed.values()
                if (level, variant) in dirs
                and (series := _series(dirs[(level, variant)], source)) is not None
            ]
            if not curves:
                continue
            frame = aggregate(curves, n_resamples)
            frames.append(
                frame.assign(
                    source=source.name,
                    level=level,
                    variant=variant,
                    density=densities.get(level, np.nan),
                    metric=source.y,
                )
            )
    if not frames:
        if keys:
            warn(
                f"{exp.label}: no eval_curve.csv or progress.csv in its level directories; no learning curves"
            )
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CURVE_COLUMNS]
