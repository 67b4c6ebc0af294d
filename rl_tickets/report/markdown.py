"""The report's markdown: ``summary.md`` (metric and verdict tables) and ``index.md``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rl_tickets.report import stats
from rl_tickets.report.formatting import fmt_density, fmt_num, fmt_p, md_table
from rl_tickets.report.loading import DENSE, Experiment, variant_order
from rl_tickets.report.plots import plot_name
from rl_tickets.report.tables import UNTRAINED_MASKS, ReportOptions


def _evidence_p(row: pd.Series) -> float:
    """The p-value behind a row's verdict: the "below dense" side for that verdict, Holm-adjusted if applied."""
    below = row["verdict"] == stats.BELOW_DENSE
    holm = row["p_below_holm"] if below else row["p_value_holm"]
    return holm if np.isfinite(holm) else (row["p_below"] if below else row["p_value"])


def verdict_cell(row: pd.Series) -> str:
    """``better: +12.3 [+4.5, +20.1], p=0.003 (n=5)``; no p-value without enough seeds."""
    ci = f" [{fmt_num(row['ci_low'], True)}, {fmt_num(row['ci_high'], True)}]"
    ci = "" if not np.isfinite(row["ci_low"]) else ci
    p = _evidence_p(row)
    p_text = "" if not np.isfinite(p) else f", p={fmt_p(p)}"
    return f"{row['verdict']}: {fmt_num(row['diff_mean'], True)}{ci}{p_text} (n={row['n']})"


TEST_NAMES = {
    "t": "paired t-test on the per-seed differences",
    "signflip": "exact sign-flip permutation test on the per-seed differences",
}


def summary_markdown(
    exp: Experiment, summary: pd.DataFrame, verdicts: pd.DataFrame, options: ReportOptions
) -> str:
    """The text of ``summary.md``: metric table, verdict table, their rules and the plot."""
    meta = exp.meta
    seeds = ", ".join(str(c.seed) for c in exp.chains)
    out = [
        f"# {exp.label}\n",
        f"- task: {meta.get('task', '?')}, {learner_of(meta)}, {'data' if meta.get('task') == 'supervised' else 'env'}: "
        f"{meta.get('env', '?')}",
        f"- metric: `{exp.metric}`"
        + (f" (also shown: mean `{exp.secondary}`)" if exp.secondary else "")
        + f"; seeds: {seeds}; chain hash: `{exp.chain_hash}`",
        "- statistics (descriptive): mean, sd and IQM over seeds; 95% percentile-bootstrap CI of the mean over seeds\n",
        "## Metric by density\n",
    ]
    if summary.empty:
        out.append("No completed levels yet.\n")
        return "\n".join(out)
    rows = [
        [
            r.level,
            r.variant,
            fmt_density(r.density),
            r.n,
            fmt_num(r.mean),
            fmt_num(r.std),
            fmt_num(r.iqm),
            f"[{fmt_num(r.ci_low)}, {fmt_num(r.ci_high)}]",
        ]
        + ([fmt_num(r.secondary_mean)] if exp.secondary else [])
        for r in summary.itertuples()
    ]
    headers = ["level", "variant", "density", "n", "mean", "sd", "IQM", "95% CI"]
    out.append(md_table(headers + ([f"mean {exp.secondary}"] if exp.secondary else []), rows))
    confidence = f"{100 * (1 - options.alpha):g}%"
    min_n = max(options.min_seeds, stats.min_seeds_for(options.test, options.alpha))
    out += [
        "## Verdicts\n",
        f"Test: **{TEST_NAMES[options.test]}** (*ticket − comparison*, one difference per seed), "
        f"alpha = {options.alpha:g}. Each cell: verdict, mean difference, its {confidence} t-interval, "
        "p-value, number of paired seeds n."
        + (
            " p-values are **Holm-adjusted** within each question across this experiment's levels and controls."
            if options.holm
            else " No correction for multiple comparisons (`--holm` applies Holm's)."
        ),
        f"- **matches dense?** (Frankle & Carbin): non-inferiority against the level-0 dense network with margin "
        f'm = {options.tolerance:g} × |dense mean|: *matches* if "mean difference ≤ −m" is rejected one-sided '
        f'at alpha/2 = {options.alpha / 2:g} (p shown), *below dense* if "mean difference ≥ −m" is rejected at '
        "alpha/2, else *inconclusive*. A ticket that clearly beats dense also matches.",
        f'- **beats <control>?** (Yu et al.): two-sided test of "mean difference = 0" at alpha, split into '
        f"its sides: *better* or *worse* (each at most alpha/2 = {options.alpha / 2:g} under the null), "
        "else *no difference*.",
        "- **ticket mask beats random mask without training?** (with the `supermask` and `random_supermask` "
        "controls): the same two-sided test on *supermask − random_supermask*, each seed's value being the "
        "mean over its weight draws, nothing trained.",
        f"- fewer than {min_n} paired seeds: *not enough seeds*.\n",
    ]
    if verdicts.empty:
        out.append("No pruned levels yet.\n")
    else:
        comparisons = [DENSE] + [c for c in variant_order(verdicts["comparison"]) if c != DENSE]
        headers = ["level", "density"] + [_question(c) for c in comparisons]
        rows = []
        for level, group in verdicts.groupby("level"):
            cells = {r["comparison"]: verdict_cell(r) for _, r in group.iterrows()}
            rows.append(
                [level, fmt_density(group["density"].iloc[0])] + [cells.get(c, "–") for c in comparisons]
            )
        out.append(md_table(headers, rows))
    out.append(f"![{exp.metric} vs density]({plot_name(exp)})\n")
    return "\n".join(out)


def _question(comparison: str) -> str:
    """The verdict table's column header of a comparison."""
    if comparison == DENSE:
        return "matches dense?"
    if comparison == UNTRAINED_MASKS:
        return "ticket mask beats random mask without training?"
    return f"beats {comparison}?"


def learner_of(meta: dict[str, Any]) -> str:
    """``algo: ppo`` for RL chains, ``model: lenet_300_100`` for supervised ones."""
    if meta.get("task") == "supervised":
        return f"model: {meta.get('model') or '?'}"
    return f"algo: {meta.get('algo') or '?'}"


def index_markdown(entries: Sequence[dict[str, Any]], root: Path) -> str:
    """The text of ``index.md``: one row per experiment with links to its files."""
    rows = [
        [
            f"[{e['label']}]({e['dir']}/summary.md)",
            e["task"],
            e["algo"],
            e["env"],
            f"`{e['metric']}`",
            e["seeds"],
            "–" if e["max_level"] is None else e["max_level"],
            fmt_density(e["min_density"]),
            f"[masks]({e['dir']}/masks.md)",
        ]
        for e in entries
    ]
    headers = [
        "experiment",
        "task",
        "algo",
        "env",
        "metric",
        "seeds",
        "last level",
        "lowest density",
        "masks",
    ]
    return f"# rl-tickets report\n\nResults root: `{root}`\n\n" + md_table(headers, rows)


def curves_markdown(images: Sequence[str]) -> str:
    """The learning-curves section of ``summary.md`` (the figures written, and the CSV behind them)."""
    if not images:
        return ""
    figures = "\n".join(f"![{name[: -len('.png')].replace('_', ' ')}]({name})" for name in images)
    return (
        "\n## Learning curves\n\nPer level (density in each panel's title), mean over seeds with the 95% "
        "bootstrap CI of the mean; the dashed line is the dense level 0. Numbers: `learning_curves.csv`.\n\n"
        f"{figures}\n"
    )
