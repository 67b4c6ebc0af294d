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

from rl_tickets.report.formatting import BAND_NOTE, percent_formatter, percent_log_y, seeds_label
from rl_tickets.report.masks import MaskAnalysis
from rl_tickets.report.records import TICKET, Experiment, variant_order
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
        ax.axhline(d["mean"], color="0.4", ls="--", lw=1, label=seeds_label("dense (level 0)", [d["n"]]))
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
            label=seeds_label(f"{variant} (untrained)" if untrained else variant, rows["n"]),
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
    percent_density_axis(ax, summary["density"])
    ax.set_xlabel("density (fraction of weights kept, log scale)")
    ax.set_ylabel(ylabel)
    single = summary["n"].max() == 1
    note = "n = 1 seed: no interval (run more seeds for a CI)" if single else BAND_NOTE
    ax.set_title(f"{title}\n{note}", fontsize="medium")
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
    # Levels often share a layer's density (an unpruned layer, layer scope): each level's points are
    # dodged sideways and get their own marker, so coinciding lines stay tellable apart.
    width = min(0.3, 0.05 * len(levels))
    for i, level in enumerate(levels):
        rows = ld[ld["level"] == level].set_index("layer")["density"].reindex(layers)
        dodge = (i / max(len(levels) - 1, 1) - 0.5) * width if len(levels) > 1 else 0.0
        ax.plot(
            np.arange(len(layers)) + dodge,
            rows.to_numpy(float),
            marker=LEVEL_MARKERS[i % len(LEVEL_MARKERS)],
            ms=4,
            color=cmap(i / max(len(levels) - 1, 1)),
            label=f"L{level}",
        )
    ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize="x-small")
    percent_log_y(ax)
    ax.set_ylabel("density")
    seeds = int(analysis.overlap_seeds["n_seeds"].max()) if not analysis.overlap_seeds.empty else 0
    # Under layer scope every layer sits at the level's density by construction: say so, or the flat
    # lines look like a plotting error.
    spread = ld.groupby("level")["density"].agg(lambda d: d.max() - d.min()) if not ld.empty else None
    flat = spread is not None and bool((spread < 1e-3).all())
    ax.set_title(
        f"{title}: per-layer density"
        + (f" (mean over n={seeds} seeds)" if seeds else "")
        + ("\nevery layer at its level's density (layer scope)" if flat else ""),
        fontsize="medium",
    )
    ax.grid(alpha=0.3, which="both")
    if levels:
        ax.legend(fontsize="x-small", ncol=2)
    if has_roles:
        roles = analysis.roles.sort_values("level")
        ax2 = axes[1]
        same = np.allclose(roles["actor_density"], roles["critic_density"], rtol=1e-3, equal_nan=True)
        # Big solid actor markers under small dashed critic ones: both stay visible when they coincide.
        ax2.plot(
            roles["level"],
            roles["actor_density"],
            marker="o",
            ms=8,
            lw=2.5,
            alpha=0.6,
            label=seeds_label("actor", roles["n_seeds"]),
        )
        ax2.plot(
            roles["level"],
            roles["critic_density"],
            marker="s",
            ms=4,
            ls="--",
            label=seeds_label("critic (same as actor)" if same else "critic", roles["n_seeds"]),
        )
        percent_log_y(ax2)
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_xlabel("level")
        ax2.set_ylabel("density")
        ax2.set_title("actor vs critic")
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize="small")
    fig.savefig(path, dpi=120)
