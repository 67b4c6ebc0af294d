"""The report's markdown: ``summary.md`` (metric and verdict tables) and ``index.md``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rl_tickets.report import stats
from rl_tickets.report.crossenv import Aggregate
from rl_tickets.report.formatting import fmt_density, fmt_num, fmt_p, md_table, safe_name
from rl_tickets.report.metrics import metric_definition, metric_label
from rl_tickets.report.plots import plot_name
from rl_tickets.report.ranges import metric_bounds
from rl_tickets.report.records import DENSE, Experiment, variant_order
from rl_tickets.report.tables import UNTRAINED_MASKS, ReportOptions


def _evidence_p(row: pd.Series) -> float:
    """The p-value behind a row's verdict: the "below dense" side for that verdict, Holm-adjusted if applied."""
    below = row["verdict"] == stats.BELOW_DENSE
    holm = row["p_below_holm"] if below else row["p_value_holm"]
    return holm if np.isfinite(holm) else (row["p_below"] if below else row["p_value"])


def verdict_cell(row: pd.Series) -> str:
    """``better: +12.3 [+4.5, +20.1], p=0.003 (n=5)``; no p-value without enough seeds. An inconclusive
    "matches dense?" shows both sides: ``inconclusive: -435 [...], p=1, p(below)=0.082 (n=5)``."""
    ci = f" [{fmt_num(row['ci_low'], True)}, {fmt_num(row['ci_high'], True)}]"
    ci = "" if not np.isfinite(row["ci_low"]) else ci
    p = _evidence_p(row)
    p_text = "" if not np.isfinite(p) else f", p={fmt_p(p)}"
    if row["verdict"] == stats.INCONCLUSIVE:
        # Neither side reached alpha/2: the "below dense" side says how close the data came to it.
        below = row["p_below_holm"] if np.isfinite(row["p_below_holm"]) else row["p_below"]
        p_text += f", p(below)={fmt_p(below)}" if np.isfinite(below) else ""
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
    label = metric_label(exp, options.metric)
    out = [
        f"# {exp.label}\n",
        f"- task: {meta.get('task', '?')}, {learner_of(meta)}, {'data' if meta.get('task') == 'supervised' else 'env'}: "
        f"{meta.get('env', '?')}",
        f"- metric (`--metric {options.metric}`): **{label}**: {metric_definition(exp, options.metric)}"
        + (f" (also shown: mean `{exp.secondary}`)" if exp.secondary else "")
        + f"; seeds: {seeds}; chain hash: `{exp.chain_hash}`",
        "- statistics (descriptive): mean, sd and IQM over seeds; 95% percentile-bootstrap CI of the mean over seeds\n",
        f"## {label[0].upper() + label[1:]} by density\n",
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
        f"Metric: **{label}**. Test: **{TEST_NAMES[options.test]}** (*ticket − comparison*, one difference per seed), "
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
        "alpha/2, else *inconclusive*. Each one-sided p-value is the larger of this test's and a "
        "distribution-free bounded-mean test's (valid on capped, tied and two-point returns; "
        "docs/verdicts.md). " + _range_text(metric_bounds(exp.meta)),
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
        headers = ["level", "density"] + [question_header(c) for c in comparisons]
        rows = []
        for level, group in verdicts.groupby("level"):
            cells = {r["comparison"]: verdict_cell(r) for _, r in group.iterrows()}
            rows.append(
                [level, fmt_density(group["density"].iloc[0])] + [cells.get(c, "–") for c in comparisons]
            )
        out.append(md_table(headers, rows))
    out.append(f"![{label} vs density]({plot_name(exp)})\n")
    return "\n".join(out)


def _range_text(bounds: tuple[float, float] | None) -> str:
    """What the bounded test assumed about the metric's range (known, or guessed from the data)."""
    if bounds is None:
        return (
            "The metric's range is not known for this task: the bounded test takes the hull of 0 and the "
            "observed values (a guess), and constant differences give *inconclusive* at any n."
        )
    return (
        f"The metric's range, known for this task: [{fmt_num(bounds[0])}, {fmt_num(bounds[1])}] "
        "(`rl_tickets/report/ranges.py`); values observed outside it widen it."
    )


def question_header(comparison: str) -> str:
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


NORMALISATION_TEXT = {
    "minmax": "min-max: each environment's worst run (any variant, level and seed) is 0, its best is 1",
    "dense": "dense-normalised: each environment's worst run is 0, the dense network's mean (level 0) is 1",
}


def _interval_cell(value: float, low: float, high: float) -> str:
    """``0.812 [0.750, 0.861]`` (3 decimals: normalised scores and probabilities live in [0, 1])."""
    if not np.isfinite(value):
        return "–"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(low) else f"{value:.3f}"


def aggregate_markdown(aggregate: Aggregate, images: Sequence[str]) -> str:
    """The text of a cross-environment aggregate's ``aggregates.md``.

    :param aggregate: a computed :class:`rl_tickets.report.crossenv.Aggregate`.
    :param images: the figures written beside it.
    """
    members = ", ".join(
        f"{e.meta.get('env', '?')} ([{e.label}](../{safe_name(e.label)}/summary.md), {len(e.chains)} seeds)"
        for e in aggregate.experiments
    )
    out = [
        f"# Across environments: {aggregate.label}\n",
        f"- environments: {members}",
        f"- scores: {NORMALISATION_TEXT[aggregate.normalisation]}; metric (`--metric {aggregate.metric}`): "
        + metric_label(aggregate.experiments[0], aggregate.metric),
        "- statistics (Agarwal et al. 2021, rliable's definitions): IQM over every run of every environment; "
        "P(ticket > control) = the chance that a random ticket run beats a random control run on the same "
        "environment, averaged over environments (0.5 = no difference); intervals are 95% stratified-bootstrap "
        "CIs (seeds resampled within each environment). Only levels and variants present on every "
        "environment are compared.\n",
        "## IQM of the normalised score\n",
    ]
    iqm = aggregate.iqm
    if iqm.empty:
        out.append("No level is complete on every environment yet.\n")
        return "\n".join(out)
    variants = variant_order(iqm["variant"])
    rows = []
    for level, group in iqm.groupby("level"):
        cells = {r.variant: _interval_cell(r.iqm, r.ci_low, r.ci_high) for r in group.itertuples()}
        runs = "/".join(str(int(r.n_runs)) for r in group.itertuples())
        rows.append(
            [level, fmt_density(group["density"].iloc[0])] + [cells.get(v, "–") for v in variants] + [runs]
        )
    out.append(md_table(["level", "density", *variants, "runs"], rows))
    poi = aggregate.improvement
    if not poi.empty:
        out.append("## Probability of improvement of the ticket\n")
        controls = variant_order(poi["control"])
        rows = []
        for level, group in poi.groupby("level"):
            cells = {
                r.control: _interval_cell(r.probability, r.ci_low, r.ci_high) for r in group.itertuples()
            }
            rows.append(
                [level, fmt_density(group["density"].iloc[0])] + [cells.get(c, "–") for c in controls]
            )
        out.append(md_table(["level", "density", *[f"P(ticket > {c})" for c in controls]], rows))
    out += [f"![{name[: -len('.png')].replace('_', ' ')}]({name})\n" for name in images]
    out.append("Numbers: `iqm.csv`, `improvement.csv`, `performance_profile.csv`.\n")
    return "\n".join(out)


def aggregates_index(entries: Sequence[tuple[str, str]]) -> str:
    """The cross-environment section of ``index.md``: ``(label, folder)`` per aggregate."""
    if not entries:
        return ""
    lines = [f"- [{label}]({folder}/aggregates.md)" for label, folder in entries]
    return (
        "\n## Across environments\n\nOne protocol on several environments: IQM, probability of "
        "improvement, performance profiles.\n\n" + "\n".join(lines) + "\n"
    )
