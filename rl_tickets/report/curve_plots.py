"""Learning-curve figures: one panel per level (density in its title), one line per variant with its
95% CI band over seeds, the dense level 0 as a dashed reference in every pruned panel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rl_tickets.report.curves import CurveSource
from rl_tickets.report.formatting import BAND_NOTE, fmt_density, heading, seeds_label
from rl_tickets.report.records import TICKET, variant_order
from rl_tickets.report.style import figure_legend_outside, variant_style

# More panels than this are unreadable: show level 0 and evenly spaced levels down to the sparsest.
MAX_PANELS = 12
PANEL_COLUMNS = 4


def panel_levels(levels: list[int], max_panels: int = MAX_PANELS) -> list[int]:
    """The levels that get a panel: all of them, or level 0 plus evenly spaced ones ending at the last.

    :param levels: sorted levels with curves.
    :param max_panels: the most panels to draw.
    """
    if len(levels) <= max_panels:
        return levels
    picks = np.linspace(0, len(levels) - 1, max_panels).round().astype(int)
    return [levels[i] for i in sorted(set(picks))]


def _panel_title(level: int, density: float) -> str:
    """``level 3 · density 51.2%`` (level 0: dense)."""
    return "level 0 · dense (100%)" if level == 0 else f"level {level} · density {fmt_density(density)}"


def _markevery(n: int) -> int:
    """Every k-th point gets a marker: about 8 per line, so markers name the line without hiding it."""
    return max(1, n // 8)


def plot_learning_curves(
    curves: pd.DataFrame, source: CurveSource, path: Path, title: str, xlabel: str
) -> bool:
    """Draw one source's learning curves, a panel per level, one legend for all panels (outside them).

    :param curves: :func:`rl_tickets.report.curves.curve_table` output.
    :param source: which curves (``eval`` or ``train``) and the y label.
    :param path: PNG to write.
    :param title: the experiment's title (:func:`~rl_tickets.report.formatting.figure_title`).
    :param xlabel: the step unit (environment steps, iterations).
    :return: whether a figure was written (False when this source has no curves).
    """
    rows = curves[curves["source"] == source.name]
    if rows.empty:
        return False
    all_levels = sorted(int(v) for v in rows["level"].unique())
    levels = panel_levels(all_levels)
    columns = min(PANEL_COLUMNS, len(levels))
    panel_rows = -(-len(levels) // columns)
    fig = Figure(figsize=(3.6 * columns + 2.2, 2.9 * panel_rows + 1.2), layout="constrained")
    axes = fig.subplots(panel_rows, columns, squeeze=False, sharey=True).ravel()
    dense = rows[(rows["level"] == 0) & (rows["variant"] == TICKET)]
    for ax, level in zip(axes, levels):
        at = rows[rows["level"] == level]
        if level > 0 and not dense.empty:
            ax.plot(
                dense["step"],
                dense["mean"],
                ls="--",
                lw=1,
                ms=4,
                markevery=_markevery(len(dense)),
                label=seeds_label("dense (level 0)", dense["n"]),
                **variant_style("dense"),
            )
        for variant in variant_order(at["variant"]):
            line = at[at["variant"] == variant].sort_values("step")
            style = variant_style(variant)
            ax.plot(
                line["step"],
                line["mean"],
                lw=1.4,
                ms=4,
                markevery=_markevery(len(line)),
                label=seeds_label(variant, line["n"]),
                **style,
            )
            ok = np.isfinite(line["ci_low"].to_numpy(float))
            if ok.any():
                ax.fill_between(
                    line["step"][ok],
                    line["ci_low"][ok],
                    line["ci_high"][ok],
                    color=style["color"],
                    alpha=0.2,
                    lw=0,
                )
        ax.set_title(_panel_title(level, float(at["density"].iloc[0])), fontsize="small")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize="x-small")
        ax.xaxis.get_offset_text().set_fontsize("x-small")
    for ax in axes[len(levels) :]:
        ax.set_visible(False)
    for ax in axes[::columns]:
        ax.set_ylabel(source.label, fontsize="small")
    for ax in axes[: len(levels)][-columns:]:
        ax.set_xlabel(xlabel, fontsize="small")
    # n per line can differ between levels (a seed still running): the legend lists each label once.
    figure_legend_outside(fig, axes[: len(levels)], fontsize="x-small")
    shown = "" if levels == all_levels else f"levels shown: {', '.join(map(str, levels))} (all in the CSV)"
    fig.suptitle(heading(title, f": {source.label}", BAND_NOTE, shown), fontsize="medium")
    fig.savefig(path, dpi=110)
    return True
