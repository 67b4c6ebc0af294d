"""Recompute the verdicts of an archived report from its per_seed.csv (when the raw results are gone).

    python scripts/reverdict.py docs/results/study_ppo_cartpole [--min-seeds 5] [--test t] [--holm]

Writes ``verdicts.csv`` beside per_seed.csv and prints the verdict table as markdown, with the same
tests, options and cell format as ``rl-tickets-report``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from rl_tickets.report import stats, tables
from rl_tickets.report.formatting import fmt_density, md_table
from rl_tickets.report.markdown import verdict_cell
from rl_tickets.report.records import DENSE, variant_order


def main() -> None:
    """Recompute and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a report folder holding per_seed.csv")
    parser.add_argument("--min-seeds", type=int, default=tables.DEFAULT_MIN_SEEDS)
    parser.add_argument("--tolerance", type=float, default=stats.DEFAULT_TOLERANCE)
    parser.add_argument("--alpha", type=float, default=stats.DEFAULT_ALPHA)
    parser.add_argument("--test", choices=stats.TESTS, default="t")
    parser.add_argument("--holm", action="store_true")
    args = parser.parse_args()
    per_seed = pd.read_csv(args.folder / "per_seed.csv")
    options = tables.ReportOptions(
        args.min_seeds, args.tolerance, alpha=args.alpha, test=args.test, holm=args.holm
    )
    verdicts = tables.verdict_table(per_seed, options)
    verdicts.to_csv(args.folder / "verdicts.csv", index=False)
    comparisons = [DENSE] + [c for c in variant_order(verdicts["comparison"]) if c != DENSE]
    headers = ["level", "density"] + ["matches dense?" if c == DENSE else f"beats {c}?" for c in comparisons]
    rows = []
    for level, group in verdicts.groupby("level"):
        cells = {r["comparison"]: verdict_cell(r) for _, r in group.iterrows()}
        rows.append([level, fmt_density(group["density"].iloc[0])] + [cells.get(c, "–") for c in comparisons])
    print(md_table(headers, rows))


if __name__ == "__main__":
    main()
