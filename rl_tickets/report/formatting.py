"""Number, markdown and axis formatting shared by the report's tables and plots."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter


def fmt_num(x: float, signed: bool = False) -> str:
    """Four significant digits (fits returns of 500 and accuracies of 0.9812); '–' for NaN."""
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def fmt_density(d: float) -> str:
    """A density as a percentage with three significant digits, e.g. ``10.7%``."""
    return "–" if d is None or not np.isfinite(d) else f"{100 * d:.3g}%"


def fmt_p(p: float) -> str:
    """A p-value with two significant digits, ``<0.0001`` below that."""
    return "<0.0001" if p < 1e-4 else f"{p:.2g}"


def safe_name(label: str) -> str:
    """A directory name for an experiment label (no separators or shell-hostile characters)."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", label).strip("._") or "experiment"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (no ``tabulate`` dependency)."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def percent_formatter() -> FuncFormatter:
    """A fresh percent formatter (matplotlib binds a formatter to one axis, so never share one)."""
    return FuncFormatter(lambda x, _: f"{100 * x:.3g}%")


def percent_log_y(ax: Any) -> None:
    """Log-scale y axis labelled in percent (major and minor ticks: one decade often suffices)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(percent_formatter())
    ax.yaxis.set_minor_formatter(percent_formatter())


# What every line and band of the report's seed-aggregated plots is (their titles say it).
BAND_NOTE = "line: mean over n seeds; band: 95% percentile-bootstrap CI of the mean"


def seeds_label(name: str, counts: Iterable[float]) -> str:
    """A legend label stating the number of seeds: ``ticket (n=5)``, ``reinit (n=3-5)`` when it varies.

    With one seed there is no interval; with two, the bootstrap interval of the mean is the range of
    the two seeds: the label says so.

    :param name: the line's name.
    :param counts: seeds behind each point of the line.
    """
    values = sorted({int(c) for c in counts if np.isfinite(c) and c > 0})
    if not values:
        return name
    n = f"n={values[0]}" if len(values) == 1 else f"n={values[0]}-{values[-1]}"
    if values[-1] == 1:
        n += ", no CI"
    elif values[-1] == 2:
        n += ", CI = range"
    return f"{name} ({n})"
