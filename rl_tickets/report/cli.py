"""``rl-tickets-report ROOT``: tables, plots and mask analysis for every experiment under a results root.

Reads what the runner writes (``ROOT/chains/<chain_hash>/seed_<s>/{meta.json, levels.csv,
layers.csv, level_NN/<variant>/mask.pt}``), groups chains into experiments by
``meta["name"]`` (and by chain hash when one name covers several configs), and writes per
experiment, under ``--out`` (default ``ROOT/report``):

- ``summary.csv`` / ``summary.md``: per (level, variant) the mean density, n seeds, mean, IQM
  and 95% bootstrap CI of the metric; ``verdicts.csv`` and a verdict table in ``summary.md``:
  does the ticket beat each control (Yu et al. 2020), does it match the dense network
  (Frankle & Carbin 2019), from paired per-seed differences (see :mod:`rl_tickets.report.stats`);
- ``per_seed.csv``: the raw values the tables are computed from;
- ``return_vs_density.png`` (``accuracy_vs_density.png`` for supervised runs);
- ``masks.md`` + ``layer_density.png``: per-layer density per level, surviving input
  dimensions (Vischer et al. 2022's "minimal task representations"), mask overlap (Jaccard)
  across seeds and across levels, actor vs critic density;

where chains share a dense run, ``methods.md`` + ``methods.png`` (+ csvs): every method at equal density
with pairwise verdicts (:mod:`rl_tickets.report.methods`), and ``index.md`` listing the experiments (and
the instability analyses under ``ROOT/stability/``, each in ``stability-<learner>-<hash8>/``:
:func:`rl_tickets.stability.figures.write_reports`). Any chain may
be incomplete: missing levels, controls, masks or files are skipped with a note, never an error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from rl_tickets.chain.store import cannot_create_in, nearest_existing
from rl_tickets.report import stats
from rl_tickets.report.aggregate_plots import plot_improvement, plot_iqm, plot_profiles
from rl_tickets.report.crossenv import NORMALISATIONS, compute, find_aggregates
from rl_tickets.report.curve_plots import plot_learning_curves
from rl_tickets.report.curves import curve_table, level_densities, sources_of, step_unit
from rl_tickets.report.formatting import figure_title, safe_name
from rl_tickets.report.loading import discover
from rl_tickets.report.markdown import (
    aggregate_markdown,
    aggregates_index,
    curves_markdown,
    index_markdown,
    summary_markdown,
)
from rl_tickets.report.masks import analyse_masks, has_mask_plot, masks_markdown
from rl_tickets.report.method_plots import plot_methods
from rl_tickets.report.methods import group_bounds, group_titles, write_methods
from rl_tickets.report.metrics import DEFAULT_METRIC, METRICS, metric_label
from rl_tickets.report.plots import plot_masks, plot_metric_vs_density, plot_name
from rl_tickets.report.ranges import metric_bounds
from rl_tickets.report.records import TICKET, Experiment
from rl_tickets.report.tables import (
    DEFAULT_MIN_SEEDS,
    ReportOptions,
    per_seed_table,
    summary_table,
    verdict_table,
)
from rl_tickets.stability.figures import write_reports

# Learning-curve figures per source (``learning_curves.csv`` holds both).
CURVE_IMAGES = {"eval": "learning_curves.png", "train": "training_curves.png"}


def write_curves(
    exp: Experiment, per_seed: pd.DataFrame, out_dir: Path, title: str, n_resamples: int
) -> list[str]:
    """``learning_curves.csv`` and the figures of an experiment; returns the figure names written.

    :param exp: the experiment.
    :param per_seed: its per-seed table (densities for the panel titles).
    :param out_dir: the experiment's report folder.
    :param title: figure title.
    :param n_resamples: bootstrap resamples per curve point (capped: a band needs fewer than a verdict).
    """
    curves = curve_table(exp, level_densities(per_seed), min(n_resamples, 2000))
    if curves.empty:
        return []
    curves.to_csv(out_dir / "learning_curves.csv", index=False)
    return [
        CURVE_IMAGES[source.name]
        for source in sources_of(exp)
        if plot_learning_curves(curves, source, out_dir / CURVE_IMAGES[source.name], title, step_unit(exp))
    ]


def write_experiment(exp: Experiment, out_dir: Path, options: ReportOptions) -> dict[str, Any]:
    """Write every file of one experiment and return its line for ``index.md``.

    :param exp: the experiment.
    :param out_dir: ``<out>/<label>``, created if needed.
    :param options: report options.
    :return: fields for the index.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    per_seed = per_seed_table(exp, options.metric)
    summary = summary_table(per_seed, options.n_resamples)
    # The metric's known range (CartPole 0-500, accuracy 0-1) makes "matches dense?" valid on tied seeds.
    verdicts = verdict_table(per_seed, options, metric_bounds(exp.meta))
    per_seed.to_csv(out_dir / "per_seed.csv", index=False)
    summary.to_csv(out_dir / "summary.csv", index=False)
    verdicts.to_csv(out_dir / "verdicts.csv", index=False)
    title = figure_title(exp.label, exp.meta, len(exp.chains))  # the name once, then the protocol
    curve_images = write_curves(exp, per_seed, out_dir, title, options.n_resamples)
    (out_dir / "summary.md").write_text(
        summary_markdown(exp, summary, verdicts, options) + curves_markdown(curve_images)
    )
    if not summary.empty:
        label = metric_label(exp, options.metric)
        plot_metric_vs_density(summary, out_dir / plot_name(exp), label, title, per_seed)
    analysis = analyse_masks(exp)
    (out_dir / "masks.md").write_text(masks_markdown(exp, analysis))
    if has_mask_plot(analysis):
        plot_masks(analysis, out_dir / "layer_density.png", title)
    tickets = per_seed[per_seed["variant"] == TICKET]
    return {
        "label": exp.label,
        "dir": out_dir.name,
        "task": exp.meta.get("task", "?"),
        "algo": exp.meta.get("algo") or exp.meta.get("model") or "?",
        "env": exp.meta.get("env", "?"),
        "metric": metric_label(exp, options.metric),
        "seeds": len(exp.chains),
        "max_level": int(tickets["level"].max()) if not tickets.empty else None,
        "min_density": float(tickets["density"].min()) if not tickets.empty else float("nan"),
    }


def write_aggregates(
    experiments: list[Experiment],
    out: Path,
    normalisation: str,
    n_resamples: int,
    metric: str = DEFAULT_METRIC,
) -> list[tuple[str, str]]:
    """Cross-environment aggregates of every protocol run on several environments.

    :param experiments: every experiment of the root.
    :param out: the report folder (each aggregate gets ``<out>/across-<label>/``).
    :param normalisation: ``minmax`` or ``dense``.
    :param n_resamples: stratified-bootstrap resamples.
    :param metric: the per-level metric (``final``, ``best`` or ``auc``).
    :return: ``(label, folder)`` per aggregate, for ``index.md``.
    """
    entries = []
    for aggregate in find_aggregates(experiments):
        compute(aggregate, normalisation, n_resamples, metric)
        folder = out / safe_name(f"across-{aggregate.label}")
        folder.mkdir(parents=True, exist_ok=True)
        aggregate.iqm.to_csv(folder / "iqm.csv", index=False)
        aggregate.improvement.to_csv(folder / "improvement.csv", index=False)
        aggregate.profiles.to_csv(folder / "performance_profile.csv", index=False)
        images = []
        if not aggregate.iqm.empty:
            plot_iqm(aggregate, folder / "iqm.png")
            plot_profiles(aggregate, folder / "performance_profile.png")
            images += ["iqm.png", "performance_profile.png"]
            if plot_improvement(aggregate, folder / "probability_of_improvement.png"):
                images.append("probability_of_improvement.png")
        (folder / "aggregates.md").write_text(aggregate_markdown(aggregate, images))
        entries.append((aggregate.label, folder.name))
    return entries


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``rl-tickets-report``."""
    parser = _OneLineParser(
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
    parser.add_argument(
        "--metric",
        choices=METRICS,
        default=DEFAULT_METRIC,
        help="headline metric per level: final (end-of-level evaluation; default), best (max over the "
        "level's evaluations), auc (area under the evaluation curve / steps; needs >= 2 evaluations) or "
        "last10 (mean of the last 10%% of evaluations, Graesser et al. 2022)",
    )
    parser.add_argument(
        "--normalise",
        choices=NORMALISATIONS,
        default="minmax",
        help="scores across environments: minmax (worst run 0, best 1; default) or dense (worst 0, dense mean 1)",
    )
    return parser


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``prog: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


# --n-resamples: a 95% percentile interval needs its 2.5% tails (at least a few points each); the cap
# keeps one report within memory.
RESAMPLES = (100, 10**7)
SEEDS_MAX = 10**6


def option_problem(args: argparse.Namespace, root: Path) -> str | None:
    """Why the options cannot make a report (one line), or None.

    :param args: the parsed options.
    :param root: the results root.
    """
    if not 2 <= args.min_seeds <= SEEDS_MAX:
        return f"--min-seeds={args.min_seeds} must lie in [2, {SEEDS_MAX}] (a paired test needs two seeds)"
    if not RESAMPLES[0] <= args.n_resamples <= RESAMPLES[1]:
        return f"--n-resamples={args.n_resamples} must lie in [{RESAMPLES[0]}, {RESAMPLES[1]}]"
    if not 0.0 < args.alpha < 1.0:  # also refuses nan
        return f"--alpha={args.alpha} must lie strictly between 0 and 1 (e.g. 0.05)"
    if not 0.0 <= args.tolerance < 1.0:  # also refuses nan and inf
        return f"--tolerance={args.tolerance} must lie in [0, 1) (e.g. 0.05 accepts a 5% loss)"
    out = args.out if args.out is not None else root / "report"
    if any(len(os.fsencode(part)) > 255 for part in out.parts):
        return f"--out={out}: a path component is longer than the 255 bytes file systems take"
    existing = nearest_existing(out)
    if not existing.is_dir():
        return f"--out={out} cannot be a directory: {existing} is a file"
    if (why := cannot_create_in(existing)) is not None:
        return f"--out={out} cannot be created under {existing} ({why})"
    return None


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
    if (problem := option_problem(args, root)) is not None:  # before anything is read or written
        print(f"rl-tickets-report: {problem}", file=sys.stderr)
        return 2
    experiments = discover(root)
    if not experiments:
        print(f"rl-tickets-report: no chains with a meta.json under {root / 'chains'}", file=sys.stderr)
        return 2
    options = ReportOptions(
        args.min_seeds, args.tolerance, args.n_resamples, args.alpha, args.test, args.holm, args.metric
    )
    out: Path = args.out if args.out is not None else root / "report"
    entries = [write_experiment(exp, out / safe_name(exp.label), options) for exp in experiments]
    # Verdict-grade resamples are not needed for the aggregates' bands; cap them to keep reports quick.
    across = write_aggregates(experiments, out, args.normalise, min(args.n_resamples, 5000), args.metric)
    # IMP tickets, gradual pruning, sparse training and small_dense at equal density (shared dense runs).
    label = metric_label(experiments[0], args.metric)
    methods = write_methods(experiments, out, options, label)
    if methods is not None:
        plot_methods(
            methods, out / "methods.png", label, group_titles(experiments), group_bounds(experiments)
        )
    see_methods = "\nMethods at equal density: [methods.md](methods.md)\n" if methods is not None else ""
    stability = write_reports(root, out)  # instability analyses (task=stability), if any
    (out / "index.md").write_text(
        index_markdown(entries, root) + aggregates_index(across) + stability + see_methods
    )
    extra = f" and {len(across)} cross-environment aggregate(s)" if across else ""
    print(f"rl-tickets-report: wrote {len(entries)} experiment(s){extra} to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
