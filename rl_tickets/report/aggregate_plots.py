"""Figures of a cross-environment aggregate: IQM vs density, probability of improvement vs density,
performance profiles at a few levels. Every band is a stratified-bootstrap 95% CI, named in the title."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rl_tickets.report.crossenv import Aggregate
from rl_tickets.report.curve_plots import panel_levels
from rl_tickets.report.formatting import fmt_density, heading, protocol_line
from rl_tickets.report.plots import percent_density_axis
from rl_tickets.report.records import variant_order
from rl_tickets.report.style import figure_legend_outside, legend_outside, variant_style

BOOTSTRAP_NOTE = "band: 95% stratified-bootstrap CI (seeds resampled per environment)"
PROFILE_PANELS = 4


def _score_name(aggregate: Aggregate) -> str:
    """The y label of normalised scores, naming the per-level metric scored (``--metric``)."""
    score = "min-max normalised score" if aggregate.normalisation == "minmax" else "dense-normalised score"
    return f"{score} of the {aggregate.metric} metric"


def _n_label(name: str, n_envs: int, n_runs: int | None = None) -> str:
    """``ticket (3 envs, n=15 runs)``."""
    runs = f", n={n_runs} runs" if n_runs is not None else ""
    return f"{name} ({n_envs} envs{runs})"


def _title(aggregate: Aggregate) -> str:
    """The aggregate's label, then its protocol (shared by its environments; budgets may differ)."""
    first = aggregate.experiments[0].meta
    budgets = sorted(
        {
            int((e.meta.get("config") or {}).get("train", {}).get("timesteps", 0))
            for e in aggregate.experiments
        }
    )
    budget = None
    if len(budgets) > 1:
        budget = f"{budgets[0]:,}-{budgets[-1]:,} env steps per level (per environment)"
    seeds = sorted({len(e.chains) for e in aggregate.experiments})
    seed_text = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    return f"{aggregate.label}\n{protocol_line(first, seed_text, budget)} per environment"


def _band(ax: object, x: pd.Series, low: pd.Series, high: pd.Series, colour: str) -> None:
    """A CI band where the interval is defined."""
    ok = np.isfinite(low.to_numpy(float))
    if ok.any():
        ax.fill_between(x[ok], low[ok], high[ok], color=colour, alpha=0.2, lw=0)  # type: ignore[attr-defined]


def plot_iqm(aggregate: Aggregate, path: Path) -> None:
    """IQM of normalised scores vs density, one line per variant.

    :param aggregate: a computed aggregate.
    :param path: PNG to write.
    """
    fig = Figure(figsize=(9, 4.8), layout="constrained")
    ax = fig.subplots()
    table = aggregate.iqm
    for variant in variant_order(table["variant"]):
        rows = table[(table["variant"] == variant) & (table["level"] > 0)].sort_values("density")
        if rows.empty:
            continue
        style = variant_style(variant)
        label = _n_label(variant, int(rows["n_envs"].max()), int(rows["n_runs"].max()))
        ax.plot(rows["density"], rows["iqm"], ms=5, label=label, **style)
        _band(ax, rows["density"], rows["ci_low"], rows["ci_high"], style["color"])
    dense = table[(table["level"] == 0) & (table["variant"] == "ticket")]
    if not dense.empty:
        d = dense.iloc[0]
        ax.axhspan(d["ci_low"], d["ci_high"], color=variant_style("dense")["color"], alpha=0.15, lw=0)
        ax.axhline(
            d["iqm"],
            color=variant_style("dense")["color"],
            ls="--",
            lw=1,
            label=_n_label("dense (level 0)", d["n_envs"], d["n_runs"]),
        )
    percent_density_axis(ax, table["density"])
    ax.set_xlabel("density (fraction of weights kept, log scale)")
    ax.set_ylabel(textwrap.fill(f"IQM of the {_score_name(aggregate)}", 36))
    fig.suptitle(
        heading(_title(aggregate), "", "line: IQM over all runs of all environments", BOOTSTRAP_NOTE),
        fontsize="medium",
    )
    ax.grid(alpha=0.3, which="both")
    legend_outside(ax, fontsize="small")
    fig.savefig(path, dpi=120)


def plot_improvement(aggregate: Aggregate, path: Path) -> bool:
    """P(ticket > control) vs density, one line per control; 0.5 = no difference.

    :param aggregate: a computed aggregate.
    :param path: PNG to write.
    :return: whether there was anything to draw.
    """
    table = aggregate.improvement
    if table.empty:
        return False
    fig = Figure(figsize=(9, 4.8), layout="constrained")
    ax = fig.subplots()
    for control in variant_order(table["control"]):
        rows = table[table["control"] == control].sort_values("density")
        style = variant_style(control)  # the control's colour: the line is the ticket against it
        ax.plot(
            rows["density"],
            rows["probability"],
            ms=5,
            label=_n_label(f"ticket > {control}", int(rows["n_envs"].max())),
            **style,
        )
        _band(ax, rows["density"], rows["ci_low"], rows["ci_high"], style["color"])
    ax.axhline(0.5, color="0.4", ls=":", lw=1, label="0.5: no difference")
    percent_density_axis(ax, table["density"])
    ax.set_ylim(-0.03, 1.03)  # lines at exactly 0 or 1 stay visible
    ax.set_xlabel("density (fraction of weights kept, log scale)")
    ax.set_ylabel("probability of improvement")
    fig.suptitle(heading(_title(aggregate), ": P(ticket > control)", BOOTSTRAP_NOTE), fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    legend_outside(ax, fontsize="small")
    fig.savefig(path, dpi=120)
    return True


def plot_profiles(aggregate: Aggregate, path: Path) -> None:
    """Performance profiles (fraction of runs above tau) at up to four levels, the deepest included.

    :param aggregate: a computed aggregate.
    :param path: PNG to write.
    """
    table = aggregate.profiles
    levels = panel_levels(sorted(int(v) for v in table["level"].unique() if v > 0), PROFILE_PANELS)
    fig = Figure(figsize=(3.8 * max(len(levels), 1) + 2.4, 4.0), layout="constrained")
    axes = fig.subplots(1, max(len(levels), 1), squeeze=False, sharey=True)[0]
    counts = aggregate.iqm.set_index(["level", "variant"])["n_runs"]
    for ax, level in zip(axes, levels):
        at = table[table["level"] == level]
        for variant in variant_order(at["variant"]):
            rows = at[at["variant"] == variant]
            label = f"{variant} (n={int(counts.get((level, variant), 0))} runs)"
            style = variant_style(variant)
            ax.plot(
                rows["tau"],
                rows["fraction"],
                lw=1.4,
                ms=4,
                markevery=max(1, len(rows) // 8),
                label=label,
                **style,
            )
            _band(ax, rows["tau"], rows["ci_low"], rows["ci_high"], style["color"])
        ax.set_title(f"level {level} · density {fmt_density(float(at['density'].iloc[0]))}", fontsize="small")
        ax.set_xlabel(f"{_score_name(aggregate)} τ", fontsize="small")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of runs with score > τ", fontsize="small")
    figure_legend_outside(fig, axes[: len(levels)], fontsize="x-small")
    fig.suptitle(heading(_title(aggregate), ": performance profiles", BOOTSTRAP_NOTE), fontsize="medium")
    fig.savefig(path, dpi=110)
