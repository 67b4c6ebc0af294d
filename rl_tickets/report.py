"""``rl-tickets-report ROOT``: tables, plots and mask analysis for every experiment under a results root.

Reads what the runner writes (``ROOT/chains/<chain_hash>/seed_<s>/{meta.json, levels.csv,
layers.csv, level_NN/<variant>/mask.pt}``), groups chains into experiments by
``meta["name"]`` (and by chain hash when one name covers several configs), and writes per
experiment, under ``--out`` (default ``ROOT/report``):

- ``summary.csv`` / ``summary.md``: per (level, variant) the mean density, n seeds, mean, IQM
  and 95% bootstrap CI of the metric; ``verdicts.csv`` and a verdict table in ``summary.md``:
  does the ticket beat each control (Yu et al. 2020), does it match the dense network
  (Frankle & Carbin 2019), from paired per-seed differences (see :mod:`rl_tickets.stats`);
- ``per_seed.csv``: the raw values the tables are computed from;
- ``return_vs_density.png`` (``accuracy_vs_density.png`` for supervised runs);
- ``masks.md`` + ``layer_density.png``: per-layer density per level, surviving input
  dimensions (Vischer et al. 2022's "minimal task representations"), mask overlap (Jaccard)
  across seeds and across levels, actor vs critic density;

and ``index.md`` listing the experiments. Any chain may be incomplete: missing levels,
controls, masks or files are skipped with a note, never an error.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from rl_tickets import stats
from rl_tickets.mask_analysis import analyse_masks, has_mask_plot, masks_markdown, plot_masks
from rl_tickets.report_format import fmt_density, fmt_num, md_table, percent_formatter
from rl_tickets.results import DENSE, TICKET, Experiment, discover, variant_order, warn

# Five seeds at least: below that a verdict rests on too little (and the sign-flip test needs six).
DEFAULT_MIN_SEEDS = 5


@dataclass(frozen=True)
class ReportOptions:
    """Knobs of the report.

    :param min_seeds: fewer paired seeds than this gives "not enough seeds".
    :param tolerance: relative non-inferiority margin for "matches dense" (fraction of the dense mean).
    :param n_resamples: bootstrap resamples of the descriptive CIs.
    :param alpha: two-sided level of the verdict tests.
    :param test: ``t`` (paired t-test) or ``signflip`` (exact sign-flip permutation test).
    :param holm: Holm-adjust p-values within each question of an experiment.
    """

    min_seeds: int = DEFAULT_MIN_SEEDS
    tolerance: float = stats.DEFAULT_TOLERANCE
    n_resamples: int = stats.DEFAULT_N_RESAMPLES
    alpha: float = stats.DEFAULT_ALPHA
    test: str = "t"
    holm: bool = False


def per_seed_table(exp: Experiment) -> pd.DataFrame:
    """One row per (seed, level, variant) with ``density`` and ``value`` (the metric).

    A level logged twice (e.g. a resumed run appending) keeps its last row.

    :param exp: the experiment.
    :return: columns ``seed, level, variant, density, value, secondary`` (``secondary``: the
        experiment's second metric, e.g. the final test accuracy; NaN where there is none).
    """
    frames = []
    for chain in exp.chains:
        df = chain.levels
        if df.empty or not {"level", "variant"}.issubset(df.columns):
            continue
        if exp.metric not in df.columns:
            warn(f"{chain.path}: levels.csv has no column {exp.metric!r}; skipping its metrics")
            continue
        rows = pd.DataFrame(
            {
                "seed": chain.seed,
                "level": pd.to_numeric(df["level"], errors="coerce"),
                "variant": df["variant"].astype(str),
                "density": pd.to_numeric(df.get("density", np.nan), errors="coerce"),
                "value": pd.to_numeric(df[exp.metric], errors="coerce"),
                "secondary": pd.to_numeric(df.get(exp.secondary or "", np.nan), errors="coerce"),
            }
        )
        frames.append(rows.dropna(subset=["level"]))
    if not frames:
        return pd.DataFrame(columns=["seed", "level", "variant", "density", "value", "secondary"])
    table = pd.concat(frames, ignore_index=True)
    table["level"] = table["level"].astype(int)
    table = table.drop_duplicates(subset=["seed", "level", "variant"], keep="last")
    return table.sort_values(["level", "variant", "seed"], ignore_index=True)


def summary_table(per_seed: pd.DataFrame, n_resamples: int = stats.DEFAULT_N_RESAMPLES) -> pd.DataFrame:
    """Per (level, variant): mean density, n seeds, mean, std, IQM and 95% bootstrap CI.

    :param per_seed: output of :func:`per_seed_table`.
    :param n_resamples: bootstrap resamples.
    :return: columns ``level, variant, density, n, mean, std, iqm, ci_low, ci_high, secondary_mean``.
    """
    columns = [
        "level",
        "variant",
        "density",
        "n",
        "mean",
        "std",
        "iqm",
        "ci_low",
        "ci_high",
        "secondary_mean",
    ]
    rows = []
    order = {v: i for i, v in enumerate(variant_order(per_seed["variant"]))}
    for (level, variant), group in per_seed.groupby(["level", "variant"], sort=False):
        summary = stats.summarise(group["value"], n_resamples=n_resamples)
        secondary = pd.to_numeric(group.get("secondary", pd.Series(dtype=float)), errors="coerce")
        rows.append(
            {
                "level": level,
                "variant": variant,
                "density": group["density"].mean(),
                **summary,
                "secondary_mean": float(secondary.mean()) if secondary.notna().any() else float("nan"),
            }
        )
    table = pd.DataFrame(rows, columns=columns)
    table["_order"] = table["variant"].map(order)
    return table.sort_values(["level", "_order"], ignore_index=True).drop(columns="_order")


def _per_seed_values(per_seed: pd.DataFrame, level: int, variant: str, seeds: Sequence[int]) -> np.ndarray:
    """The metric at (level, variant) for each seed in ``seeds``, NaN where missing."""
    rows = per_seed[(per_seed["level"] == level) & (per_seed["variant"] == variant)]
    by_seed = dict(zip(rows["seed"], rows["value"]))
    return np.array([by_seed.get(s, np.nan) for s in seeds], dtype=float)


def verdict_table(per_seed: pd.DataFrame, options: ReportOptions | None = None) -> pd.DataFrame:
    """Paired verdicts per pruned level: ticket vs dense (level-0 ticket) and vs each control.

    With ``options.holm`` the p-values of each question ("matches dense?" over the levels; "beats
    <control>?" over levels and controls) are Holm-adjusted within the experiment before the verdict.

    :param per_seed: output of :func:`per_seed_table`.
    :param options: test, alpha, minimum seeds, tolerance and Holm correction.
    :return: columns ``level, density, comparison, question, test, n, diff_mean, ci_low, ci_high,
        margin, p_value, p_below, p_value_holm, p_below_holm, verdict``; the ``*_holm`` columns are
        filled only with ``options.holm``; ``comparison`` is ``"dense"`` or a control name.
    """
    options = options or ReportOptions()
    columns = [
        "level", "density", "comparison", "question", "test", "n", "diff_mean",
        "ci_low", "ci_high", "margin", "p_value", "p_below", "p_value_holm", "p_below_holm", "verdict",
    ]  # fmt: skip
    seeds = sorted(per_seed["seed"].unique())
    tickets = per_seed[(per_seed["variant"] == TICKET) & (per_seed["level"] > 0)]
    rows = []
    for level in sorted(tickets["level"].unique()):
        ticket = _per_seed_values(per_seed, level, TICKET, seeds)
        density = tickets.loc[tickets["level"] == level, "density"].mean()
        at_level = per_seed[per_seed["level"] == level]["variant"]
        controls = [v for v in variant_order(at_level) if v != TICKET]
        comparisons = [(DENSE, "matches", _per_seed_values(per_seed, 0, TICKET, seeds))]
        comparisons += [(c, "beats", _per_seed_values(per_seed, level, c, seeds)) for c in controls]
        for name, question, other in comparisons:
            result = stats.paired_verdict(
                ticket,
                other,
                options.min_seeds,
                question=question,
                tolerance=options.tolerance,
                alpha=options.alpha,
                test=options.test,
            )
            rows.append(
                {
                    "level": level,
                    "density": density,
                    "comparison": name,
                    "question": question,
                    "test": result.test,
                    "n": result.n,
                    "diff_mean": result.diff_mean,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                    "margin": result.margin,
                    "p_value": result.p_value,
                    "p_below": result.p_below,
                    "p_value_holm": float("nan"),
                    "p_below_holm": float("nan"),
                    "verdict": result.verdict,
                }
            )
    table = pd.DataFrame(rows, columns=columns)
    if options.holm and not table.empty:
        _apply_holm(table, options)
    return table


def _apply_holm(table: pd.DataFrame, options: ReportOptions) -> None:
    """Holm-adjust p-values within each question and recompute the verdicts from them (in place).

    "matches dense?" has two one-sided tests per level (matches, below dense): each is its own family.
    """
    for question in ("matches", "beats"):
        rows = table.index[(table["question"] == question) & table["p_value"].notna()]
        if rows.empty:
            continue
        table.loc[rows, "p_value_holm"] = stats.holm(table.loc[rows, "p_value"].to_numpy(float))
        if question == "matches":
            table.loc[rows, "p_below_holm"] = stats.holm(table.loc[rows, "p_below"].to_numpy(float))
        for i in rows:
            p = table.at[i, "p_value_holm"]
            table.at[i, "verdict"] = (
                stats.beats_verdict(table.at[i, "diff_mean"], p, options.alpha)
                if question == "beats"
                else stats.matches_verdict(p, table.at[i, "p_below_holm"], options.alpha)
            )


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


def fmt_p(p: float) -> str:
    """A p-value with two significant digits, ``<0.0001`` below that."""
    return "<0.0001" if p < 1e-4 else f"{p:.2g}"


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
        f"- fewer than {min_n} paired seeds: *not enough seeds*.\n",
    ]
    if verdicts.empty:
        out.append("No pruned levels yet.\n")
    else:
        comparisons = [DENSE] + [c for c in variant_order(verdicts["comparison"]) if c != DENSE]
        headers = ["level", "density"] + [
            "matches dense?" if c == DENSE else f"beats {c}?" for c in comparisons
        ]
        rows = []
        for level, group in verdicts.groupby("level"):
            cells = {r["comparison"]: verdict_cell(r) for _, r in group.iterrows()}
            rows.append(
                [level, fmt_density(group["density"].iloc[0])] + [cells.get(c, "–") for c in comparisons]
            )
        out.append(md_table(headers, rows))
    out.append(f"![{exp.metric} vs density]({plot_name(exp)})\n")
    return "\n".join(out)


def learner_of(meta: dict[str, Any]) -> str:
    """``algo: ppo`` for RL chains, ``model: lenet_300_100`` for supervised ones."""
    if meta.get("task") == "supervised":
        return f"model: {meta.get('model') or '?'}"
    return f"algo: {meta.get('algo') or '?'}"


def plot_name(exp: Experiment) -> str:
    """``accuracy_vs_density.png`` for supervised experiments, ``return_vs_density.png`` otherwise."""
    return "accuracy_vs_density.png" if exp.is_supervised else "return_vs_density.png"


def _percent_axis(ax: Any, densities: Sequence[float], max_ticks: int = 8) -> None:
    """Log-scale density axis, 100% at the left, ticks at the measured densities in percent."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = sorted({float(d) for d in densities if np.isfinite(d) and d > 0}, reverse=True)
    # Every k-th level keeps 20 levels of IMP readable; the sparsest level is always labelled.
    step = max(1, -(-len(ticks) // max_ticks))
    shown = ticks[::step] + ([ticks[-1]] if ticks and (len(ticks) - 1) % step else [])
    ax.xaxis.set_major_locator(FixedLocator(shown))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(percent_formatter())


def plot_metric_vs_density(summary: pd.DataFrame, path: Path, ylabel: str, title: str) -> None:
    """Mean metric vs density, one line per variant with its CI band, the dense level as a band.

    :param summary: output of :func:`summary_table`.
    :param path: PNG to write.
    :param ylabel: y axis label (the metric).
    :param title: figure title.
    """
    # A bare Figure (no pyplot) keeps no global state and needs no backend switch.
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    dense = summary[(summary["level"] == 0) & (summary["variant"] == TICKET)]
    if not dense.empty:
        d = dense.iloc[0]
        if np.isfinite(d["ci_low"]):
            ax.axhspan(d["ci_low"], d["ci_high"], color="0.5", alpha=0.2, lw=0)
        ax.axhline(d["mean"], color="0.4", ls="--", lw=1, label="dense (level 0)")
    for variant in variant_order(summary["variant"]):
        rows = summary[(summary["variant"] == variant) & (summary["density"] > 0)].sort_values("density")
        if rows.empty:
            continue
        (line,) = ax.plot(rows["density"], rows["mean"], marker="o", ms=3, label=variant)
        ok = np.isfinite(rows["ci_low"].to_numpy(float))
        if ok.any():
            ax.fill_between(
                rows["density"][ok],
                rows["ci_low"][ok],
                rows["ci_high"][ok],
                color=line.get_color(),
                alpha=0.2,
            )
    _percent_axis(ax, summary["density"])
    ax.set_xlabel("density (fraction of weights kept, log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)


def safe_name(label: str) -> str:
    """A directory name for an experiment label (no separators or shell-hostile characters)."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", label).strip("._") or "experiment"


def write_experiment(exp: Experiment, out_dir: Path, options: ReportOptions) -> dict[str, Any]:
    """Write every file of one experiment and return its line for ``index.md``.

    :param exp: the experiment.
    :param out_dir: ``<out>/<label>``, created if needed.
    :param options: report options.
    :return: fields for the index.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    per_seed = per_seed_table(exp)
    summary = summary_table(per_seed, options.n_resamples)
    verdicts = verdict_table(per_seed, options)
    per_seed.to_csv(out_dir / "per_seed.csv", index=False)
    summary.to_csv(out_dir / "summary.csv", index=False)
    verdicts.to_csv(out_dir / "verdicts.csv", index=False)
    (out_dir / "summary.md").write_text(summary_markdown(exp, summary, verdicts, options))
    if not summary.empty:
        title = f"{exp.label} ({learner_of(exp.meta).split(': ')[1]}, {exp.meta.get('env', '?')})"
        plot_metric_vs_density(summary, out_dir / plot_name(exp), exp.metric, title)
    analysis = analyse_masks(exp)
    (out_dir / "masks.md").write_text(masks_markdown(exp, analysis))
    if has_mask_plot(analysis):
        plot_masks(analysis, out_dir / "layer_density.png", exp.label)
    tickets = per_seed[per_seed["variant"] == TICKET]
    return {
        "label": exp.label,
        "dir": out_dir.name,
        "task": exp.meta.get("task", "?"),
        "algo": exp.meta.get("algo") or exp.meta.get("model") or "?",
        "env": exp.meta.get("env", "?"),
        "metric": exp.metric,
        "seeds": len(exp.chains),
        "max_level": int(tickets["level"].max()) if not tickets.empty else None,
        "min_density": float(tickets["density"].min()) if not tickets.empty else float("nan"),
    }


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


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``rl-tickets-report``."""
    parser = argparse.ArgumentParser(
        prog="rl-tickets-report",
        description="Tables, plots and mask analysis for every experiment under a results root.",
    )
    parser.add_argument("root", type=Path, help="results root (holds chains/)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: ROOT/report)")
    parser.add_argument(
        "--min-seeds",
        type=int,
        default=DEFAULT_MIN_SEEDS,
        help=f"paired seeds needed for a verdict (default: {DEFAULT_MIN_SEEDS}; the sign-flip test needs 6 at alpha 0.05)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=stats.DEFAULT_TOLERANCE,
        help=f"'matches dense' non-inferiority margin as a fraction of the dense mean (default: {stats.DEFAULT_TOLERANCE})",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=stats.DEFAULT_ALPHA,
        help=f"two-sided level of the verdict tests (default: {stats.DEFAULT_ALPHA})",
    )
    parser.add_argument(
        "--test",
        choices=stats.TESTS,
        default="t",
        help="paired t-test (default) or exact sign-flip permutation test",
    )
    parser.add_argument(
        "--holm",
        action="store_true",
        help="Holm-correct the p-values within each question across an experiment's levels and controls",
    )
    parser.add_argument(
        "--n-resamples", type=int, default=stats.DEFAULT_N_RESAMPLES, help="bootstrap resamples"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rl-tickets-report``.

    :param argv: command-line arguments (default: ``sys.argv[1:]``).
    :return: 0 on success, 2 if ROOT is missing or holds no chains.
    """
    args = build_parser().parse_args(argv)
    root: Path = args.root
    if not root.is_dir():
        print(f"rl-tickets-report: results root {root} does not exist", file=sys.stderr)
        return 2
    experiments = discover(root)
    if not experiments:
        print(f"rl-tickets-report: no chains with a meta.json under {root / 'chains'}", file=sys.stderr)
        return 2
    if not 0.0 < args.alpha < 1.0:
        print(
            f"rl-tickets-report: --alpha={args.alpha} must lie strictly between 0 and 1 (e.g. 0.05)",
            file=sys.stderr,
        )
        return 2
    if args.tolerance < 0:
        print(
            f"rl-tickets-report: --tolerance={args.tolerance} must be >= 0 (e.g. 0.05 accepts a 5% loss)",
            file=sys.stderr,
        )
        return 2
    options = ReportOptions(
        args.min_seeds, args.tolerance, args.n_resamples, args.alpha, args.test, args.holm
    )
    out: Path = args.out if args.out is not None else root / "report"
    entries = [write_experiment(exp, out / safe_name(exp.label), options) for exp in experiments]
    (out / "index.md").write_text(index_markdown(entries, root))
    print(f"rl-tickets-report: wrote {len(entries)} experiment(s) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
