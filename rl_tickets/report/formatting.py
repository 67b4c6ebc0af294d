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


def protocol_line(meta: dict[str, Any], seeds: int | str, budget: str | None = None) -> str:
    """The protocol behind a figure in one line: pruning rate and scope, rewind step, budget, seeds.

    E.g. ``20% pruned per level · global scope · rewind to step 0 · 100,000 env steps per level · 5 seeds``.

    :param meta: a chain's meta.json (its ``config`` holds the job's config).
    :param seeds: the seeds behind the figure (a number, or a text such as ``3-5``).
    :param budget: the budget's text instead of this chain's (e.g. budgets differing per environment).
    """
    cfg = meta.get("config") or {}
    prune, rewind, retrain, train = (cfg.get(key) or {} for key in ("prune", "rewind", "retrain", "train"))
    supervised = meta.get("task") == "supervised"
    parts = []
    rate, schedule = prune.get("rate"), prune.get("schedule", "iterative")
    if schedule == "gradual":
        parts.append(f"gradual pruning to {fmt_density(prune.get('final_density', float('nan')))}")
    elif rate is not None:
        parts.append(f"{float(rate):.0%} pruned per level" + (" (one-shot)" if schedule == "oneshot" else ""))
    if prune.get("scope"):
        parts.append(f"{prune['scope']} scope")
    step, mode = int(rewind.get("step", 0) or 0), retrain.get("mode", "rewind")
    parts.append(
        {"finetune": "fine-tuned", "lr_rewind": f"learning rate rewound to step {step:,}"}.get(
            mode, f"rewind to step {step:,}"
        )
    )
    steps = train.get("iterations" if supervised else "timesteps")
    if budget is not None:
        parts.append(budget)
    elif steps is not None:
        parts.append(f"{int(steps):,} {'iterations' if supervised else 'env steps'} per level")
    parts.append(f"{seeds} seed{'' if seeds in (1, '1') else 's'}")
    return " · ".join(parts)


def figure_title(label: str, meta: dict[str, Any], seeds: int) -> str:
    """A figure's heading: the experiment's name (with the learner and environment only when the name
    does not already say them), then the protocol on a second line (:func:`protocol_line`).

    :param label: the experiment's label, e.g. ``ppo_cartpole`` or ``vischer2022``.
    :param meta: a chain's meta.json.
    :param seeds: the seeds behind the figure.
    """
    said = [str(meta.get(k)) for k in ("algo", "model", "env") if meta.get(k)]
    missing = [part for part in said if part.lower() not in label.lower()]
    name = f"{label} ({', '.join(missing)})" if missing else label
    return f"{name}\n{protocol_line(meta, seeds)}"


def heading(title: str, what: str = "", *notes: str) -> str:
    """A figure or panel heading: the title's first line plus ``what``, its other lines, then notes.

    :param title: from :func:`figure_title` (name, newline, protocol) or any one-line title.
    :param what: appended to the name, e.g. ``": per-layer density"``.
    :param notes: further lines (what the band is, which levels are shown).
    """
    name, *rest = title.split("\n")
    return "\n".join([name + what, *rest, *(note for note in notes if note)])
