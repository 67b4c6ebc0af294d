"""Recompute the verdicts of an archived report from its per_seed.csv (when the raw results are gone).

    python scripts/reverdict.py docs/results/study_ppo_cartpole --env CartPole-v1 [--min-seeds 5] [--test t]

Writes ``verdicts.csv`` beside per_seed.csv and prints the verdict table as markdown, with the same
tests, options and cell format as ``rl-tickets-report``, then every cell whose verdict differs from the
``verdicts.csv`` it replaces. ``--env`` gives the bounded test the environment's return range
(``rl_tickets/report/ranges.py``, e.g. CartPole-v1: [0, 500]); ``--bounds LOW HIGH`` states one directly.
Without either the range is guessed from the data, and constant differences are never evidence.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from rl_tickets.report import stats, tables
from rl_tickets.report.formatting import fmt_density, md_table
from rl_tickets.report.markdown import verdict_cell
from rl_tickets.report.ranges import env_bounds
from rl_tickets.report.records import DENSE, variant_order


def changes(before: pd.DataFrame, after: pd.DataFrame) -> list[str]:
    """One line per (level, comparison) whose verdict changed.

    :param before: the verdicts.csv being replaced (may be empty).
    :param after: the recomputed verdicts.
    """
    if before.empty:
        return []
    old = {(int(r.level), r.comparison): r.verdict for r in before.itertuples()}
    lines = []
    for r in after.itertuples():
        previous = old.get((int(r.level), r.comparison))
        if previous is not None and previous != r.verdict:
            lines.append(
                f"- level {r.level} ({fmt_density(r.density)}), {r.comparison}: {previous} -> {r.verdict}"
            )
    return lines


def main() -> None:
    """Recompute, write and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a report folder holding per_seed.csv")
    parser.add_argument("--min-seeds", type=int, default=tables.DEFAULT_MIN_SEEDS)
    parser.add_argument("--tolerance", type=float, default=stats.DEFAULT_TOLERANCE)
    parser.add_argument("--alpha", type=float, default=stats.DEFAULT_ALPHA)
    parser.add_argument("--test", choices=stats.TESTS, default="t")
    parser.add_argument("--holm", action="store_true")
    parser.add_argument("--env", default=None, help="Gymnasium id whose return range bounds the metric")
    parser.add_argument("--bounds", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"))
    args = parser.parse_args()
    bounds = tuple(args.bounds) if args.bounds else (env_bounds(args.env) if args.env else None)
    if args.env and bounds is None:
        parser.error(
            f"--env {args.env}: no known return range (see rl_tickets/report/ranges.py); use --bounds"
        )
    per_seed = pd.read_csv(args.folder / "per_seed.csv")
    options = tables.ReportOptions(
        args.min_seeds, args.tolerance, alpha=args.alpha, test=args.test, holm=args.holm
    )
    before_path = args.folder / "verdicts.csv"
    before = pd.read_csv(before_path) if before_path.is_file() else pd.DataFrame()
    verdicts = tables.verdict_table(per_seed, options, bounds)
    verdicts.to_csv(before_path, index=False)
    comparisons = [DENSE] + [c for c in variant_order(verdicts["comparison"]) if c != DENSE]
    headers = ["level", "density"] + ["matches dense?" if c == DENSE else f"beats {c}?" for c in comparisons]
    rows = []
    for level, group in verdicts.groupby("level"):
        cells = {r["comparison"]: verdict_cell(r) for _, r in group.iterrows()}
        rows.append([level, fmt_density(group["density"].iloc[0])] + [cells.get(c, "–") for c in comparisons])
    print(f"range assumed by the bounded test: {bounds if bounds else 'unknown (guessed from the data)'}\n")
    print(md_table(headers, rows))
    changed = changes(before, verdicts)
    print("changed verdicts:\n" + ("\n".join(changed) if changed else "- none"))


if __name__ == "__main__":
    main()
