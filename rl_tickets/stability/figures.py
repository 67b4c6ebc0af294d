"""An analysis across its seeds: ``summary.csv``, the two figures and a markdown section.

- ``path.png``: the metric along the line (alpha 0 to 1), one panel per level, one line per rewind step k
  (mean over seeds);
- ``instability.png``: instability against k, one line per level (mean over seeds), every seed as a dot
  and the range over seeds as an error bar, the threshold (mean over seeds) dashed;
- ``summary.csv``: per (level, k) the seeds, mean, sd, min and max of the instability and the share of
  seeds that are stable.

Written by the analysis after each seed (from every seed found on disk) and by ``rl-tickets-report``
(:func:`write_reports`: one folder per analysis, linked from the report's index).
Bare :class:`matplotlib.figure.Figure` objects (no pyplot), saved under a temporary name and renamed,
so seeds finishing at once never leave a half-written figure.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rl_tickets.stability.store import DIRECTORY, INSTABILITY_CSV, STABILITY_CSV, read_json, seed_dirs

SUMMARY_CSV = "summary.csv"
FIGURES = ("path.png", "instability.png")


def read_all(analysis: Path, name: str) -> pd.DataFrame:
    """One table of every seed of an analysis (empty if none has it).

    :param analysis: ``ROOT/stability/<hash>``.
    :param name: ``stability.csv`` or ``instability.csv``.
    """
    frames = [pd.read_csv(d / name) for d in seed_dirs(analysis) if (d / name).is_file()]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summarise(instability: pd.DataFrame) -> pd.DataFrame:
    """Per (level, k): seeds, mean density, and mean, sd, min, max of the instability, share stable.

    :param instability: every seed's instability.csv rows.
    """
    if "barrier" not in instability:  # tables written before the barrier was recorded
        instability = instability.assign(barrier=float("nan"))
    grouped = instability.groupby(["level", "k"], sort=True)
    out = grouped.agg(
        k_fraction=("k_fraction", "first"),
        density=("density", "mean"),
        metric_name=("metric_name", "first"),
        seeds=("seed", "nunique"),
        instability_mean=("instability", "mean"),
        instability_sd=("instability", "std"),
        instability_min=("instability", "min"),
        instability_max=("instability", "max"),
        barrier_mean=("barrier", "mean"),
        threshold_mean=("threshold", "mean"),
        stable_share=("stable", "mean"),
    )
    return out.reset_index()


def _k_label(fraction: float) -> str:
    """A rewind step as a percentage of the budget (``0``, ``0.5%``, ``20%``)."""
    return "0" if fraction == 0 else f"{100 * fraction:.3g}%"


def _save(fig: Figure, path: Path) -> None:
    """Write a figure via a temporary name (concurrent seeds never leave half a PNG)."""
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def plot_paths(points: pd.DataFrame, path: Path, title: str) -> None:
    """The metric along alpha, one panel per level, one line per k (mean over seeds).

    :param points: every seed's stability.csv rows.
    :param path: the PNG to write.
    :param title: the figure's title.
    """
    levels = sorted(points["level"].unique())
    fig = Figure(figsize=(4.2 * len(levels), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(levels), sharey=True, squeeze=False)[0])
    ks = sorted(points["k"].unique())
    colours = matplotlib.colormaps["viridis"](np.linspace(0.05, 0.9, len(ks)))  # early k dark, late k light
    for ax, level in zip(axes, levels, strict=True):
        here = points[points["level"] == level]
        for colour, k in zip(colours, ks, strict=True):
            line = here[here["k"] == k].groupby("alpha")["metric"].mean()
            if line.empty:
                continue
            label = f"k={_k_label(float(here[here['k'] == k]['k_fraction'].iloc[0]))}"
            ax.plot(line.index, line.values, marker="o", ms=3, color=colour, label=label)
        density = float(here["density"].mean())
        ax.set_title(f"level {level} (density {100 * density:.3g}%)")
        ax.set_xlabel("alpha (0: copy a, 1: copy b)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(str(points["metric_name"].iloc[0]) + f" (mean over {points['seed'].nunique()} seeds)")
    axes[-1].legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def plot_instability(instability: pd.DataFrame, path: Path, title: str) -> None:
    """Instability against k: per level the mean over seeds, each seed as a dot, the seed range as a bar.

    :param instability: every seed's instability.csv rows.
    :param path: the PNG to write.
    :param title: the figure's title.
    """
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ks = sorted(instability["k"].unique())
    position = {k: i for i, k in enumerate(ks)}
    levels = sorted(instability["level"].unique())
    for offset, level in zip(np.linspace(-0.15, 0.15, len(levels)), levels, strict=True):
        here = instability[instability["level"] == level]
        stats = here.groupby("k")["instability"].agg(["mean", "min", "max"]).reset_index()
        x = np.array([position[k] for k in stats["k"]]) + offset
        low, high = stats["mean"] - stats["min"], stats["max"] - stats["mean"]
        label = f"level {level} ({100 * float(here['density'].mean()):.3g}%, n={here['seed'].nunique()})"
        drawn = ax.errorbar(x, stats["mean"], yerr=[low, high], marker="o", capsize=3, label=label)
        dots_x = np.array([position[k] for k in here["k"]]) + offset
        ax.scatter(dots_x, here["instability"], s=10, alpha=0.5, color=drawn[0].get_color())
    ax.axhline(
        float(instability["threshold"].mean()), ls="--", color="grey", label="threshold (mean over seeds)"
    )
    ax.set_xticks(
        range(len(ks)),
        [_k_label(float(instability[instability["k"] == k]["k_fraction"].iloc[0])) for k in ks],
    )
    ax.set_xlabel("rewind step k (share of the training budget)")
    ax.set_ylabel(f"instability ({instability['metric_name'].iloc[0]})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    _save(fig, path)


def write_figures(analysis: Path, out: Path | None = None, title: str = "") -> pd.DataFrame:
    """summary.csv and the figures of an analysis, from every seed on disk.

    :param analysis: ``ROOT/stability/<hash>``.
    :param out: where to write them (default: the analysis directory).
    :param title: the figures' title (default: the analysis hash).
    :return: the summary (empty if no pair is finished yet).
    """
    out = out or analysis
    out.mkdir(parents=True, exist_ok=True)
    instability = read_all(analysis, INSTABILITY_CSV)
    if instability.empty:
        return pd.DataFrame()
    summary = summarise(instability)
    summary.to_csv(out / SUMMARY_CSV, index=False)
    title = title or f"instability analysis: {analysis_title(analysis)}"
    plot_paths(read_all(analysis, STABILITY_CSV), out / FIGURES[0], title)
    plot_instability(instability, out / FIGURES[1], title)
    return summary


def summary_markdown(summary: pd.DataFrame, title: str) -> str:
    """A markdown section: the summary table and the figures.

    :param summary: from :func:`summarise`.
    :param title: the section's heading.
    """
    lines = [
        f"## {title}",
        "",
        "Instability (Frankle et al. 2020): the mean of the two copies' metric minus the worst point on the "
        "line between them (for an error: the worst point minus the mean). Stable: at most the threshold. "
        "Barrier: the largest dip below the straight line joining the two ends (0 when the path never dips "
        "below it, however far apart the ends are).",
        "",
        "| level | density | k | k (budget) | seeds | instability mean | sd | min | max | threshold | stable "
        "| barrier mean |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary.itertuples():
        lines.append(
            f"| {row.level} | {100 * row.density:.3g}% | {row.k} | {_k_label(row.k_fraction)} | {row.seeds} | "
            f"{row.instability_mean:.4g} | {row.instability_sd:.3g} | {row.instability_min:.4g} | "
            f"{row.instability_max:.4g} | {row.threshold_mean:.4g} | {100 * row.stable_share:.0f}% | "
            f"{row.barrier_mean:.4g} |"
        )
    lines += [
        "",
        f"![metric along the path]({FIGURES[0]})",
        "",
        f"![instability against k]({FIGURES[1]})",
        "",
    ]
    return "\n".join(lines)


def analysis_title(analysis: Path) -> str:
    """``ppo CartPole-v1`` or ``lenet_300_100 mnist5k``, from the analysis's identity.json.

    :param analysis: ``ROOT/stability/<hash>``.
    """
    seeds = seed_dirs(analysis)
    identity = read_json(seeds[0] / "identity.json") if seeds else None
    if not identity:
        return analysis.name
    if identity.get("task") == "supervised":
        return f"{identity.get('model.name', '?')} {identity.get('data.name', '?')}"
    return f"{identity.get('algo.name', '?')} {identity.get('env.id', '?')}"


def write_reports(root: Path, out: Path) -> str:
    """The report's section for every analysis under ``ROOT/stability``: figures, summary.csv and
    stability.md in ``<out>/stability-<title>-<hash8>/``; returns the lines for the report's index.

    :param root: the results root.
    :param out: the report's directory.
    """
    lines = []
    for analysis in sorted(p for p in (root / DIRECTORY).glob("*") if p.is_dir()):
        title = analysis_title(analysis)
        folder = out / re.sub(r"[^A-Za-z0-9._-]+", "_", f"stability-{title}-{analysis.name[:8]}")
        summary = write_figures(analysis, folder, f"instability analysis: {title}")
        if summary.empty:
            continue
        (folder / "stability.md").write_text(summary_markdown(summary, f"Instability analysis: {title}"))
        seeds = len(seed_dirs(analysis))
        lines.append(f"- [{title}]({folder.name}/stability.md): {seeds} seed(s), `{analysis}`")
    return "\n## Instability analyses\n\n" + "\n".join(lines) + "\n" if lines else ""
