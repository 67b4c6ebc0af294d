"""How the report's figures look, in one place: one colour and one marker per variant in every figure,
legends outside the data, per-seed points while seeds are few, and zeros on a log axis.

A variant keeps its colour and marker in every figure of every report (``ticket`` is always blue
circles), so a reader can match lines across figures and papers. Variants not listed get a colour
and marker from a spare set, chosen by a stable hash of the name (the same in every run).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

# Colours from matplotlib's tab10/tab20 (colour-blind-safer than the default cycle's order), fixed
# per variant; grey is kept for the dense reference.
VARIANT_STYLES: dict[str, tuple[str, str]] = {
    "ticket": ("#1f77b4", "o"),
    "reinit": ("#ff7f0e", "s"),
    "random_mask": ("#d62728", "^"),
    "random_reinit": ("#9467bd", "v"),
    "permute": ("#2ca02c", "D"),
    "sign_reinit": ("#8c564b", "P"),
    "small_dense": ("#bcbd22", "X"),
    "supermask": ("#17becf", "h"),
    "random_supermask": ("#e377c2", "p"),
    "transfer": ("#393b79", "<"),
    "gradual": ("#8c6d31", ">"),
}
DENSE_COLOUR = "0.35"
DENSE_MARKER = "*"
SPARE_COLOURS = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d")
SPARE_MARKERS = ("d", "H", "8", "1", "2", "3", "4", "+")
# Below this many seeds, every seed's value is drawn beside the mean (a mean of 3 hides its spread).
PER_SEED_BELOW = 10
# Marker drawn for a value of exactly 0 on a log axis (a layer pruned away), at the axis floor.
ZERO_MARKER = "x"
ZERO_COLOUR = "#d62728"


def variant_style(variant: str) -> dict[str, str]:
    """``color`` and ``marker`` of a variant, the same in every figure.

    :param variant: ``ticket``, a control, ``transfer``, ``gradual``, ``dense`` or any other name.
    """
    if variant == "dense":
        return {"color": DENSE_COLOUR, "marker": DENSE_MARKER}
    if variant in VARIANT_STYLES:
        colour, marker = VARIANT_STYLES[variant]
    else:
        index = zlib.crc32(variant.encode())
        colour, marker = SPARE_COLOURS[index % len(SPARE_COLOURS)], SPARE_MARKERS[index % len(SPARE_MARKERS)]
    return {"color": colour, "marker": marker}


def legend_outside(ax: Any, **kwargs: Any) -> Any:
    """The axes' legend to the right of the axes, top-aligned, never over the data.

    :param ax: a matplotlib Axes (the figure should use the constrained layout, which makes room).
    :param kwargs: passed to ``ax.legend`` (e.g. ``fontsize``).
    """
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def figure_legend_outside(fig: Any, axes: Iterable[Any], **kwargs: Any) -> Any:
    """One legend for all panels of a figure, right of the panels (entries with the same label once).

    :param fig: a matplotlib Figure with the constrained layout.
    :param axes: the panels whose entries are collected.
    :param kwargs: passed to ``fig.legend``.
    """
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if not handles:
        return None
    return fig.legend(list(handles.values()), list(handles), loc="outside right upper", **kwargs)


def seed_offsets(n: int, spread: float = 0.04) -> np.ndarray:
    """Small, symmetric log-x offsets (factors) for n seeds' points, so tied values stay countable.

    :param n: points at one x position.
    :param spread: the total spread in decades.
    """
    if n <= 1:
        return np.ones(max(n, 0))
    return 10 ** np.linspace(-spread / 2, spread / 2, n)


def log_floor(values: Iterable[float]) -> float:
    """Where exact zeros go on a log axis: a factor 2 below the smallest positive value (1e-3 if none).

    :param values: the plotted values (zeros and NaNs included).
    """
    array = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    positive = array[array > 0]
    return float(positive.min() / 2) if positive.size else 1e-3
