"""``methods.png``: every method's metric against density, one panel per dense run (comparison group).

The picture behind ``methods.md`` (Graesser et al. 2022 plot their methods the same way: return against
sparsity, one line per method). Each point is the mean over seeds with a 95% t-interval of that mean; the
dense run is a horizontal line with its own interval. Our own code because no plotting library knows our
table; matplotlib draws it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from rl_tickets.report.methods import DENSE
from rl_tickets.report.plots import percent_density_axis

SUMMARY_COLUMNS = ["group", "method", "density", "n", "mean", "sd", "ci_low", "ci_high"]
MARKERS = "osD^v<>ph*"
SPREAD = 0.012  # relative x offset between methods (a log axis: the same width at every density)


def method_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and 95% t-interval of the mean per (group, method, density) of a method table.

    :param table: rows ``group, method, density, seed, value`` (``report.methods.method_table``).
    :return: :data:`SUMMARY_COLUMNS`; the interval is NaN with fewer than two finite values.
    """
    rows = []
    for (group, method, density), cell in table.groupby(["group", "method", "density"], sort=True):
        values = cell["value"].to_numpy(float)
        values = values[np.isfinite(values)]
        n = len(values)
        mean = float(values.mean()) if n else np.nan
        sd = float(values.std(ddof=1)) if n > 1 else np.nan
        half = float(scipy_stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else np.nan
        rows.append([group, method, float(density), n, mean, sd, mean - half, mean + half])
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def plot_methods(
    table: pd.DataFrame,
    path: Path,
    label: str,
    titles: dict[str, str],
    bounds: dict[str, tuple[float, float] | None] | None = None,
) -> None:
    """Draw ``methods.png``: per group, each sparse method's mean (95% CI) against density, dense as a line.

    :param table: the method table (``report.methods.method_table``).
    :param path: the image to write.
    :param label: what the metric is (the y axis).
    :param titles: group -> panel title (e.g. ``dqn on CartPole-v0``); the group's hash otherwise.
    :param bounds: group -> the metric's known range: intervals are drawn clipped to it (a t-interval
        of capped returns can reach past the cap; the csv keeps it whole).
    """
    summary = method_summary(table)
    for group, known in (bounds or {}).items():
        if known is not None:
            mine = summary["group"] == group
            summary.loc[mine, ["ci_low", "ci_high"]] = summary.loc[mine, ["ci_low", "ci_high"]].clip(*known)
    groups = sorted(summary["group"].unique())
    # One colour and marker per method across every panel.
    names = sorted(set(summary["method"]) - {DENSE})
    styles = {m: (f"C{i % 10}", MARKERS[i % len(MARKERS)]) for i, m in enumerate(names)}
    fig = Figure(figsize=(6.5 * len(groups), 4.6), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, group in zip(axes, groups):
        mine = summary[summary["group"] == group]
        dense = mine[mine["method"] == DENSE]
        if not dense.empty:
            row = dense.iloc[0]
            ax.axhline(row["mean"], color="black", lw=1.2, label=f"dense (n={row['n']})")
            if np.isfinite(row["ci_low"]):
                ax.axhspan(row["ci_low"], row["ci_high"], color="black", alpha=0.08, lw=0)
        sparse = mine[mine["method"] != DENSE]
        n_methods = sparse["method"].nunique()
        for i, (method, at) in enumerate(sparse.groupby("method", sort=True)):
            colour, marker = styles[str(method)]
            at = at.sort_values("density", ascending=False)
            errors = np.vstack([at["mean"] - at["ci_low"], at["ci_high"] - at["mean"]])
            # Methods meet at the same densities: a small sideways offset keeps their bars apart.
            offset = 1 + SPREAD * (i - (n_methods - 1) / 2)
            ax.errorbar(
                at["density"] * offset,
                at["mean"],
                yerr=np.nan_to_num(errors),
                marker=marker,
                color=colour,
                capsize=3,
                lw=1.2,
                label=f"{method} (n={int(at['n'].min())}-{int(at['n'].max())})"
                if at["n"].nunique() > 1
                else f"{method} (n={int(at['n'].iloc[0])})",
            )
        percent_density_axis(ax, sparse["density"].tolist())
        ax.set_xlabel("density (log scale)")
        ax.set_ylabel(label)
        ax.set_title(titles.get(group, f"dense run {group}"), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(
        "methods at equal density (offset sideways): mean over seeds, bars = 95% t-interval of the mean "
        "(clipped to the metric's range where known)",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
