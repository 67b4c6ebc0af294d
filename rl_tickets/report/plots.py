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
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

from rl_tickets.report.formatting import percent_formatter, percent_log_y
from rl_tickets.report.loading import TICKET, Experiment, variant_order
from rl_tickets.report.masks import MaskAnalysis
from rl_tickets.supermask import SUPERMASK_CONTROLS


def plot_name(exp: Experiment) -> str:
    """``accuracy_vs_density.png`` for supervised experiments, ``return_vs_density.png`` otherwise."""
    return "accuracy_vs_density.png" if exp.is_supervised else "return_vs_density.png"


def _percent_axis(ax: Any, densities: Sequence[float], max_ticks: int = 8) -> None:
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


def plot_metric_vs_density(summary: pd.DataFrame, path: Path, ylabel: str, title: str) -> None:
    """Mean metric vs density, one line per variant with its CI band, the dense level as a band.

    :param summary: output of :func:`summary_table`.
    :param path: PNG to write.
    :param ylabel: y axis label (the metric).
    :param title: figure title.
    """
    # A bare Figure (no pyplot) keeps no global state and needs no backend switch.
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    dense = summary[(summary["level"] == 0) & (summary["variant"] == TICKET)]
    if not dense.empty:
        d = dense.iloc[0]
        if np.isfinite(d["ci_low"]):
            ax.axhspan(d["ci_low"], d["ci_high"], color="0.5", alpha=0.2, lw=0)
        ax.axhline(d["mean"], color="0.4", ls="--", lw=1, label="dense (level 0)")
    for variant in variant_order(summary["variant"]):
        rows = summary[(summary["variant"] == variant) & (summary["density"] > 0)].sort_values("density")
        if rows.empty:
            continue
        # Untrained (supermask) variants are dashed: they sit beside the trained ones, not among them.
        untrained = variant in SUPERMASK_CONTROLS
        (line,) = ax.plot(
            rows["density"],
            rows["mean"],
            marker="o",
            ms=3,
            ls="--" if untrained else "-",
            label=f"{variant} (untrained)" if untrained else variant,
        )
        ok = np.isfinite(rows["ci_low"].to_numpy(float))
        if ok.any():
            ax.fill_between(
                rows["density"][ok],
                rows["ci_low"][ok],
                rows["ci_high"][ok],
                color=line.get_color(),
                alpha=0.2,
            )
    _percent_axis(ax, summary["density"])
    ax.set_xlabel("density (fraction of weights kept, log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)


def plot_masks(analysis: MaskAnalysis, path: Path, title: str) -> None:
    """Per-layer density profile (one line per level); actor vs critic density in a second panel.

    :param analysis: the mask analysis.
    :param path: PNG to write.
    :param title: figure title.
    """
    has_roles = not analysis.roles.empty
    fig = Figure(figsize=(11 if has_roles else 7, 4.5), layout="constrained")
    axes = fig.subplots(1, 2 if has_roles else 1, squeeze=False)[0]
    ld = analysis.layer_density
    layers = list(dict.fromkeys(ld["layer"]))
    levels = sorted(ld["level"].unique())
    ax = axes[0]
    cmap = matplotlib.colormaps["viridis"]  # level 0 dark, the sparsest level yellow
    for i, level in enumerate(levels):
        rows = ld[ld["level"] == level].set_index("layer")["density"].reindex(layers)
        ax.plot(
            range(len(layers)),
            rows.to_numpy(float),
            marker="o",
            ms=3,
            color=cmap(i / max(len(levels) - 1, 1)),
            label=f"L{level}",
        )
    ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize="x-small")
    percent_log_y(ax)
    ax.set_ylabel("density")
    ax.set_title(f"{title}: per-layer density")
    ax.grid(alpha=0.3, which="both")
    if levels:
        ax.legend(fontsize="x-small", ncol=2)
    if has_roles:
        roles = analysis.roles.sort_values("level")
        ax2 = axes[1]
        ax2.plot(roles["level"], roles["actor_density"], marker="o", label="actor")
        ax2.plot(roles["level"], roles["critic_density"], marker="s", label="critic")
        percent_log_y(ax2)
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_xlabel("level")
        ax2.set_ylabel("density")
        ax2.set_title("actor vs critic")
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize="small")
    fig.savefig(path, dpi=120)
