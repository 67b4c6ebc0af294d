"""Methods at equal density: IMP tickets, gradual pruning, sparse training and small_dense side by side.

Experiments of one results root whose chains share their dense run (the same dense directory: same
environment, algorithm, hyperparameters and budget) form one *comparison*. Every level they trained is
a (method, density) cell: the ticket of an iterative chain at each level (``ticket/global``,
``ticket/erk``, ...), the run of a one-run schedule (``gradual/erk``, ``static/erk``, ``set/uniform``,
...), each trained control (``small_dense``, ``random_mask``, ...), and ``dense`` (level 0). Densities
within 5% of each other are one density (an IMP level at 0.8^7 and an ERK mask drawn at 0.8^7 differ
by rounding only; small_dense's integer widths miss its target by up to a few percent on a 64x64 network). At each density every method is paired by seed with dense ("matches dense?") and
with every other method ("better / worse / no difference"), by the same tests as the per-experiment
verdicts (:func:`rl_tickets.report.stats.paired_verdict`, the metric's known range for tied seeds).
A control trained beside several chains at one density (small_dense) keeps its first row per seed.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from rl_tickets.report import stats
from rl_tickets.report.formatting import fmt_density, fmt_num, md_table
from rl_tickets.report.ranges import metric_bounds
from rl_tickets.report.records import TICKET, Experiment
from rl_tickets.report.tables import SUBJECTS, ReportOptions, per_seed_table
from rl_tickets.sparsity.supermask import SUPERMASK_CONTROLS

DENSE = "dense"
# Densities closer than this (relative) are the same density; IMP levels are 25% apart.
SAME_DENSITY = 0.05
TABLE_COLUMNS = ["group", "method", "density", "seed", "value"]
VERDICT_COLUMNS = [
    "group", "density", "method", "comparison", "question", "n", "diff_mean", "ci_low", "ci_high", "p_value",
    "verdict",
]  # fmt: skip


def method_name(exp: Experiment, level: int, variant: str) -> str:
    """The method a level of ``exp`` stands for (see the module docstring).

    :param exp: the experiment.
    :param level: level number.
    :param variant: the level's variant.
    """
    if level == 0:
        return DENSE
    prune = (exp.meta.get("config") or {}).get("prune") or {}
    distribution = str(prune.get("distribution", "uniform"))
    if variant == TICKET:
        return f"{TICKET}/{'erk' if distribution == 'erk' else prune.get('scope', 'global')}"
    if variant in SUBJECTS:
        return f"{variant}/{distribution}"
    return variant


def group_of(exp: Experiment) -> str | None:
    """An experiment's comparison group: the hash of the dense run its chains share (None without one)."""
    dense_dir = exp.meta.get("dense_dir")
    return Path(str(dense_dir)).parent.name if dense_dir else None


def method_table(experiments: list[Experiment], metric: str = "final") -> pd.DataFrame:
    """One row per (comparison group, method, seed, density) over every experiment.

    :param experiments: the root's experiments.
    :param metric: the per-level metric (``final``, ``best``, ``auc``, ``last10``).
    :return: :data:`TABLE_COLUMNS`; ``group`` is the dense directory's hash.
    """
    frames = []
    for exp in experiments:
        group = group_of(exp)
        if group is None:
            continue
        rows = per_seed_table(exp, metric)
        rows = rows[~rows["variant"].isin(SUPERMASK_CONTROLS)]
        if rows.empty:
            continue
        methods = [method_name(exp, int(lv), str(v)) for lv, v in zip(rows["level"], rows["variant"])]
        frames.append(
            pd.DataFrame(
                {
                    "group": group,
                    "method": methods,
                    "density": rows["density"].to_numpy(float),
                    "seed": rows["seed"].to_numpy(),
                    "value": rows["value"].to_numpy(float),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    table["density"] = _bucketed(table["density"].to_numpy(float))
    return table.drop_duplicates(["group", "method", "density", "seed"], keep="first").reset_index(drop=True)


def _bucketed(densities: np.ndarray) -> np.ndarray:
    """Each density replaced by the mean of its run of sorted densities within :data:`SAME_DENSITY`."""
    order = np.argsort(densities)
    out = densities.copy()
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or densities[order[i]] > densities[order[start]] * (1 + SAME_DENSITY):
            members = order[start:i]
            out[members] = densities[members].mean()
            start = i
    return out


def _values(cell: pd.DataFrame, seeds: list[int]) -> np.ndarray:
    """A cell's value per seed (NaN where missing)."""
    by_seed = dict(zip(cell["seed"], cell["value"]))
    return np.array([by_seed.get(s, np.nan) for s in seeds], dtype=float)


def method_verdicts(
    table: pd.DataFrame, options: ReportOptions, bounds: dict[str, tuple[float, float] | None] | None = None
) -> pd.DataFrame:
    """Per group and density: each method against dense, and each pair of methods, paired by seed.

    :param table: output of :func:`method_table`.
    :param options: minimum seeds, tolerance, alpha and test.
    :param bounds: group -> the metric's known range there (:func:`group_bounds`; for "matches dense?" on
        tied seeds). Groups differ: CartPole-v0 caps returns at 200, CartPole-v1 at 500.
    :return: :data:`VERDICT_COLUMNS`; a pair's row reads "``method`` is <verdict> than ``comparison``".
    """
    rows = []
    for group, in_group in table.groupby("group", sort=True):
        group_range = (bounds or {}).get(str(group))
        seeds = sorted(in_group["seed"].unique())
        dense = _values(in_group[in_group["method"] == DENSE], seeds)
        for density, cell in in_group[in_group["method"] != DENSE].groupby("density", sort=True):
            methods = sorted(cell["method"].unique())
            values = {m: _values(cell[cell["method"] == m], seeds) for m in methods}
            pairs = [(m, DENSE, "matches", values[m], dense) for m in methods]
            pairs += [(a, b, "beats", values[a], values[b]) for a, b in itertools.combinations(methods, 2)]
            for method, other, question, mine, theirs in pairs:
                result = options.verdict(mine, theirs, question, group_range)
                rows.append(
                    {
                        "group": group,
                        "density": density,
                        "method": method,
                        "comparison": other,
                        "question": question,
                        "n": result.n,
                        "diff_mean": result.diff_mean,
                        "ci_low": result.ci_low,
                        "ci_high": result.ci_high,
                        "p_value": result.p_value,
                        "verdict": result.verdict,
                    }
                )
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def dense_line(in_group: pd.DataFrame) -> str:
    """``dense: mean ± sd (n=N)`` of one comparison group's dense rows (a markdown line).

    :param in_group: rows of :func:`method_table` for one group.
    """
    dense = in_group[in_group["method"] == DENSE]["value"]
    return f"dense: {fmt_num(dense.mean())} ± {fmt_num(dense.std())} (n={len(dense)})\n"


def methods_markdown(
    table: pd.DataFrame, verdicts: pd.DataFrame, label: str, titles: dict[str, str] | None = None
) -> str:
    """``methods.md``: per group and density, each method's mean ± sd (n), its verdict against dense and
    its pairwise verdicts.

    :param table: output of :func:`method_table`.
    :param verdicts: output of :func:`method_verdicts`.
    :param label: what the metric is.
    :param titles: group -> ``algo on env`` for the headings.
    """
    titles = titles or {}
    out = [
        "# Methods at equal density\n",
        f"Metric: {label}. Rows: methods at one density (within {SAME_DENSITY:.0%}); dense is level 0 of "
        "the same seeds. A pair reads *row* vs *column*: better / worse / no difference (paired by seed).\n",
        "![methods at equal density](methods.png)\n",
    ]
    for group, in_group in table.groupby("group", sort=True):
        title = f" ({titles[group]})" if group in titles else ""
        out.append(f"## Dense run {group}{title}\n")
        out.append(dense_line(in_group))
        for density, cell in in_group[in_group["method"] != DENSE].groupby("density", sort=True):
            methods = sorted(cell["method"].unique())
            mine = verdicts[(verdicts["group"] == group) & np.isclose(verdicts["density"], density)]
            rows = []
            for m in methods:
                values = cell[cell["method"] == m]["value"]
                row = [m, f"{fmt_num(values.mean())} ± {fmt_num(values.std())} (n={len(values)})"]
                for other in [DENSE, *methods]:
                    hit = mine[(mine["method"] == m) & (mine["comparison"] == other)]
                    flip = mine[(mine["method"] == other) & (mine["comparison"] == m)]
                    row.append(_cell(hit, flip))
                rows.append(row)
            out.append(f"### density {fmt_density(density)}\n")
            out.append(md_table(["method", "mean ± sd", "vs dense", *methods], rows))
    return "\n".join(out)


_MIRROR = {stats.BETTER: stats.WORSE, stats.WORSE: stats.BETTER}


def _cell(hit: pd.DataFrame, flip: pd.DataFrame) -> str:
    """A verdict cell read from the row's side (a pair is stored once; its mirror flips the sign)."""
    if not hit.empty:
        row, sign = hit.iloc[0], 1.0
    elif not flip.empty:
        row, sign = flip.iloc[0], -1.0
    else:
        return "–"
    verdict = row["verdict"] if sign > 0 else _MIRROR.get(row["verdict"], row["verdict"])
    return f"{verdict} ({fmt_num(sign * row['diff_mean'], True)}, p={fmt_num(row['p_value'])})"


def group_titles(experiments: list[Experiment]) -> dict[str, str]:
    """Comparison group (the dense run's hash) -> ``algo on env``, for headings and figure panels."""
    out = {}
    for exp in experiments:
        if (group := group_of(exp)) is not None:
            env = ((exp.meta.get("config") or {}).get("env") or {}).get("id")
            out[group] = f"{exp.meta.get('algo')} on {env}"
    return out


def group_bounds(experiments: list[Experiment]) -> dict[str, tuple[float, float] | None]:
    """Comparison group (the dense run's hash) -> its metric's known range (``report.ranges``)."""
    return {group: metric_bounds(exp.meta) for exp in experiments if (group := group_of(exp)) is not None}


def write_methods(
    experiments: list[Experiment], out: Path, options: ReportOptions, label: str
) -> pd.DataFrame | None:
    """Write ``methods.csv``, ``methods_verdicts.csv`` and ``methods.md`` when a dense run is shared by
    at least two methods at some density; else nothing (the report then draws ``methods.png``).

    :param experiments: the root's experiments.
    :param out: the report folder.
    :param options: the report's options (its metric included).
    :param label: what the metric is, for the markdown.
    :return: the method table written, or None when nothing was.
    """
    table = method_table(experiments, options.metric)
    cells = table[table["method"] != DENSE].groupby(["group", "density"])["method"].nunique()
    if cells.empty or cells.max() < 2:
        return None
    verdicts = method_verdicts(table, options, group_bounds(experiments))
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "methods.csv", index=False)
    verdicts.to_csv(out / "methods_verdicts.csv", index=False)
    (out / "methods.md").write_text(methods_markdown(table, verdicts, label, group_titles(experiments)))
    return table
