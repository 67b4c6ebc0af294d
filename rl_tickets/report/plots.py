"""The report's figures: metric vs density, and the per-layer density profile of the masks.

Every figure is a bare :class:`matplotlib.figure.Figure` (no pyplot): no global state, no backend switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, LogLocator, MaxNLocator, NullLocator

from rl_tickets.report.formatting import BAND_NOTE, heading, percent_formatter, percent_log_y, seeds_label
from rl_tickets.report.masks import MaskAnalysis
from rl_tickets.report.records import TICKET, Experiment, variant_order
from rl_tickets.report.style import (
    DENSE_COLOUR,
    PER_SEED_BELOW,
    ZERO_COLOUR,
    ZERO_MARKER,
    legend_outside,
    log_floor,
    seed_offsets,
    variant_style,
)
from rl_tickets.sparsity.supermask import SUPERMASK_CONTROLS

LEVEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def plot_name(exp: Experiment) -> str:
    """``accuracy_vs_density.png`` for supervised experiments, ``return_vs_density.png`` otherwise."""
    return "accuracy_vs_density.png" if exp.is_supervised else "return_vs_density.png"


def percent_density_axis(ax: Any, densities: Sequence[float], max_ticks: int = 12) -> None:
    """Log-scale density axis, 100% at the left, ticks at the measured densities in percent."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = sorted({float(d) for d in densities if np.isfinite(d) and d > 0}, reverse=True)
    # Every k-th level keeps 20 levels of IMP readable; the sparsest level is always labelled.
    step = max(1, -(-len(ticks) // max_ticks))
    shown = ticks[::step] + ([ticks[-1]] if ticks and (len(ticks) - 1) % step else [])
    ax.xaxis.set_major_locator(FixedLocator(shown))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(percent_formatter())
    if len(shown) > 6:  # many levels: slanted labels stay apart
        ax.tick_params(axis="x", labelrotation=45)


def _per_seed_points(ax: Any, per_seed: pd.DataFrame, variant: str, style: dict[str, str]) -> bool:
    """Every seed's value as a small open marker beside the variant's mean (ties spread sideways).

    :return: whether any point was drawn.
    """
    rows = per_seed[(per_seed["variant"] == variant) & (per_seed["density"] > 0)].dropna(subset=["value"])
    drawn = False
    for _, at in rows.groupby("level"):
        x = float(at["density"].mean()) * seed_offsets(len(at))
        ax.plot(
            x,
            at["value"],
            ls="none",
            marker=style["marker"],
            ms=3.5,
            mfc="none",
            mew=0.8,
            color=style["color"],
            alpha=0.7,
        )
        drawn = True
    return drawn


def plot_metric_vs_density(
    summary: pd.DataFrame, path: Path, ylabel: str, title: str, per_seed: pd.DataFrame | None = None
) -> None:
    """Mean metric vs density, one line per variant with its CI band, the dense level as a band; with
    fewer than 10 seeds, every seed's value as an open marker beside the mean.

    :param summary: output of :func:`summary_table`.
    :param path: PNG to write.
    :param ylabel: y axis label (the metric).
    :param title: figure title (:func:`~rl_tickets.report.formatting.figure_title`: name and protocol).
    :param per_seed: output of :func:`per_seed_table` (the per-seed points); None: no points.
    """
    # A bare Figure (no pyplot) keeps no global state and needs no backend switch.
    fig = Figure(figsize=(8.5, 4.8), layout="constrained")
    ax = fig.subplots()
    dense = summary[(summary["level"] == 0) & (summary["variant"] == TICKET)]
    if not dense.empty:
        d = dense.iloc[0]
        if np.isfinite(d["ci_low"]):
            ax.axhspan(d["ci_low"], d["ci_high"], color=DENSE_COLOUR, alpha=0.15, lw=0)
        ax.axhline(
            d["mean"], color=DENSE_COLOUR, ls="--", lw=1, label=seeds_label("dense (level 0)", [d["n"]])
        )
    few = per_seed is not None and not per_seed.empty and per_seed["seed"].nunique() < PER_SEED_BELOW
    seeded = False
    for variant in variant_order(summary["variant"]):
        rows = summary[(summary["variant"] == variant) & (summary["density"] > 0)].sort_values("density")
        if rows.empty:
            continue
        # Untrained (supermask) variants are dashed: they sit beside the trained ones, not among them.
        untrained = variant in SUPERMASK_CONTROLS
        style = variant_style(variant)
        ax.plot(
            rows["density"],
            rows["mean"],
            ms=5,
            ls="--" if untrained else "-",
            label=seeds_label(f"{variant} (untrained)" if untrained else variant, rows["n"]),
            **style,
        )
        ok = np.isfinite(rows["ci_low"].to_numpy(float))
        if ok.any():
            ax.fill_between(
                rows["density"][ok], rows["ci_low"][ok], rows["ci_high"][ok], color=style["color"], alpha=0.15
            )
        if few:
            assert per_seed is not None
            seeded |= _per_seed_points(ax, per_seed, variant, style)
    if seeded:  # one legend entry says what the open markers are
        ax.plot([], [], ls="none", marker="o", mfc="none", color="0.3", label="one seed (open markers)")
    percent_density_axis(ax, summary["density"])
    ax.set_xlabel("density (fraction of weights kept, log scale)")
    ax.set_ylabel(ylabel)
    single = summary["n"].max() == 1
    note = "n = 1 seed: no interval (run more seeds for a CI)" if single else BAND_NOTE
    fig.suptitle(heading(title, "", note), fontsize="medium")  # spans the legend too: long protocols fit
    ax.grid(alpha=0.3, which="both")
    legend_outside(ax, fontsize="small")
    fig.savefig(path, dpi=120)


def _plot_zeros(ax: Any, x: np.ndarray, y: np.ndarray, floor: float, label: str | None) -> bool:
    """Values of exactly 0 (a layer pruned away) as a distinct marker at the log axis' floor.

    :return: whether any zero was drawn.
    """
    zero = np.isfinite(y) & (y <= 0)
    if zero.any():
        ax.plot(
            x[zero],
            np.full(int(zero.sum()), floor),
            ls="none",
            marker=ZERO_MARKER,
            ms=8,
            mew=2,
            color=ZERO_COLOUR,
            label=label,
            zorder=5,
        )
    return bool(zero.any())


def _floor_axis(ax: Any, floor: float, zeros: bool) -> None:
    """Start the log axis just below ``floor``; when zeros sit there, a dotted line marks the floor."""
    percent_log_y(ax)
    ax.set_ylim(bottom=floor / 1.5)
    bottom, top = ax.get_ylim()
    if top / bottom > 20:  # beyond about a decade labels at every minor tick run into each other
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    if zeros:
        ax.axhline(floor, color=ZERO_COLOUR, lw=0.6, ls=":", zorder=1)


def plot_masks(analysis: MaskAnalysis, path: Path, title: str) -> None:
    """Per-layer density profile (one line per level); actor vs critic density in a second panel.

    Log density axes cannot show 0: a layer pruned away (global ranking can empty one) is drawn at the
    axis floor with its own marker and legend entry, never dropped.

    :param analysis: the mask analysis.
    :param path: PNG to write.
    :param title: figure title (:func:`~rl_tickets.report.formatting.figure_title`: name and protocol).
    """
    has_roles = not analysis.roles.empty
    fig = Figure(figsize=(13 if has_roles else 8.5, 4.8), layout="constrained")
    axes = fig.subplots(1, 2 if has_roles else 1, squeeze=False)[0]
    ld = analysis.layer_density
    layers = list(dict.fromkeys(ld["layer"]))
    levels = sorted(ld["level"].unique())
    ax = axes[0]
    cmap = matplotlib.colormaps["viridis"]  # level 0 dark, the sparsest level yellow
    floor = log_floor(ld["density"])
    # Levels often share a layer's density (an unpruned layer, layer scope): each level's points are
    # dodged sideways and get their own marker, so coinciding lines stay tellable apart.
    width = min(0.3, 0.05 * len(levels))
    zeros = False
    for i, level in enumerate(levels):
        rows = ld[ld["level"] == level].set_index("layer")["density"].reindex(layers).to_numpy(float)
        dodge = (i / max(len(levels) - 1, 1) - 0.5) * width if len(levels) > 1 else 0.0
        x = np.arange(len(layers)) + dodge
        ax.plot(
            x,
            np.where(rows > 0, rows, floor),  # a zero runs down to the floor, where its cross sits
            marker=LEVEL_MARKERS[i % len(LEVEL_MARKERS)],
            ms=4,
            color=cmap(i / max(len(levels) - 1, 1)),
            label=f"L{level}",
        )
        zeros |= _plot_zeros(ax, x, rows, floor, None if zeros else "0% (layer pruned away)")
    ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize="x-small")
    _floor_axis(ax, floor, zeros)
    ax.set_ylabel("density (log scale)")
    seeds = int(analysis.overlap_seeds["n_seeds"].max()) if not analysis.overlap_seeds.empty else 0
    # Under layer scope every layer sits at the level's density by construction: say so, or the flat
    # lines look like a plotting error.
    spread = ld.groupby("level")["density"].agg(lambda d: d.max() - d.min()) if not ld.empty else None
    flat = spread is not None and bool((spread < 1e-3).all())
    notes = [f"per-layer density, mean over n={seeds} seeds" if seeds else "per-layer density"]
    if flat:
        notes.append("every layer at its level's density (layer scope)")
    # The name and protocol span the figure (a panel is too narrow for them); the panel says what it shows.
    fig.suptitle(heading(title, ": masks"), fontsize="medium")
    ax.set_title("\n".join(notes), fontsize="small")
    ax.grid(alpha=0.3, which="both")
    if levels:
        legend_outside(ax, fontsize="x-small", ncol=2 if len(levels) > 8 else 1)
    if has_roles:
        _plot_roles(axes[1], analysis.roles)
    fig.savefig(path, dpi=120)


def _plot_roles(ax: Any, roles: pd.DataFrame) -> None:
    """Actor vs critic density per level (big solid actor markers under small dashed critic ones, so
    both stay visible when they coincide); zeros at the axis floor as in the layer panel."""
    roles = roles.sort_values("level")
    same = np.allclose(roles["actor_density"], roles["critic_density"], rtol=1e-3, equal_nan=True)
    floor = log_floor([*roles["actor_density"], *roles["critic_density"]])
    zeros = False
    for column, label, style in (
        ("actor_density", "actor", {"marker": "o", "ms": 8, "lw": 2.5, "alpha": 0.6, "color": "#1f77b4"}),
        (
            "critic_density",
            "critic (same as actor)" if same else "critic",
            {"marker": "s", "ms": 4, "ls": "--", "color": "#ff7f0e"},
        ),
    ):
        values = roles[column].to_numpy(float)
        ax.plot(
            roles["level"],
            np.where(values > 0, values, floor),
            label=seeds_label(label, roles["n_seeds"]),
            **style,
        )
        zeros |= _plot_zeros(
            ax, roles["level"].to_numpy(float), values, floor, None if zeros else "0% (role pruned away)"
        )
    _floor_axis(ax, floor, zeros)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("level")
    ax.set_ylabel("density (log scale)")
    ax.set_title("actor vs critic", fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    legend_outside(ax, fontsize="small")
