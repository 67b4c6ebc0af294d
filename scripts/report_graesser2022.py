"""Tables behind docs/results/graesser2022.md, from a results root written by scripts/study_graesser2022.sh.

    python scripts/report_graesser2022.py STUDY_ROOT [--out docs/results/graesser2022] [--min-seeds 5]

Writes under ``--out``:
- the standard report with Graesser et al.'s metric (``rl-tickets-report STUDY_ROOT --metric last10``):
  one folder per experiment, ``methods.md`` (every method at equal density, pairwise verdicts) and
  ``methods.png`` (each method's metric against density, 95% intervals);
- ``findings.md``: per algorithm and density, each method's mean ± sd of the metric (last 10% of
  evaluations) and of the final return, then Graesser et al.'s four findings checked on our runs, point by
  point, each with its paired verdicts: is pruning (gradual) best? is RigL close to SET? does ERK beat
  uniform? do sparse networks beat the small dense network?
- ``cost.md``: per algorithm and variant, the runs, the hours they record and the fastest run
  (:func:`cost_markdown`).

Reads finished levels only, so it also works on a study still running (cells then say n < 5).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from rl_tickets.report import main as report_main
from rl_tickets.report.formatting import fmt_density, fmt_num, md_table
from rl_tickets.report.loading import discover
from rl_tickets.report.methods import (
    DENSE,
    dense_line,
    group_bounds,
    group_titles,
    method_table,
    method_verdicts,
)
from rl_tickets.report.records import Experiment
from rl_tickets.report.tables import ReportOptions
from rl_tickets.timing import recorded_seconds

METRIC = "last10"
ORDER = ["ticket/global", "gradual/erk", "static/erk", "set/erk", "rigl/erk", "set/uniform", "small_dense"]
SPARSE = ["static/erk", "set/erk", "rigl/erk", "gradual/erk", "ticket/global"]
# Graesser et al. 2022's findings and the pairs (row, column) of our runs that test each.
FINDINGS = [
    (
        "Pruning (gradual magnitude pruning) is usually best",
        [("gradual/erk", m) for m in ORDER if m != "gradual/erk"],
    ),
    ("RigL performs close to SET", [("rigl/erk", "set/erk")]),
    ("ERK beats uniform per-layer density", [("set/erk", "set/uniform")]),
    (
        "At high sparsity, sparse networks beat a parameter-matched small dense one",
        [(m, "small_dense") for m in SPARSE],
    ),
]


def verdict_text(verdicts: pd.DataFrame, group: str, density: float, a: str, b: str) -> str:
    """The verdict of ``a`` against ``b`` at one density (read from either side of the stored pair)."""
    at = verdicts[(verdicts["group"] == group) & np.isclose(verdicts["density"], density)]
    hit = at[(at["method"] == a) & (at["comparison"] == b)]
    sign = 1.0
    if hit.empty:
        hit, sign = at[(at["method"] == b) & (at["comparison"] == a)], -1.0
    if hit.empty:
        return "–"
    row = hit.iloc[0]
    verdict = (
        {"better": "worse", "worse": "better"}.get(row["verdict"], row["verdict"])
        if sign < 0
        else row["verdict"]
    )
    # The interval shows how much a "no difference" (a difference not detected) leaves open at n seeds.
    low, high = sorted((sign * row["ci_low"], sign * row["ci_high"]))
    return (
        f"{verdict} ({fmt_num(sign * row['diff_mean'], True)}, CI [{fmt_num(low, True)}, "
        f"{fmt_num(high, True)}], n={row['n']})"
    )


def findings_markdown(experiments: list[Experiment], options: ReportOptions) -> str:
    """``findings.md``: method tables per algorithm and density, then the four findings."""
    table = method_table(experiments, METRIC)
    final = method_table(experiments, "final")
    verdicts = method_verdicts(table, options, group_bounds(experiments))
    labels = group_titles(experiments)
    out = [
        "# Graesser et al. 2022 on our runs\n",
        f"Metric: mean return over the last 10% of evaluations (`--metric {METRIC}`), mean ± sd over seeds; "
        "the final return beside it. Verdicts: paired by seed, as in `methods.md`; each pair's mean difference "
        "with its 95% interval: *no difference* means none was detected at these seeds, not that the methods "
        "are equal (the interval says how large a difference remains possible).\n",
    ]
    for group, in_group in table.groupby("group", sort=True):
        out.append(f"## {labels.get(group, group)}\n")
        out.append(dense_line(in_group))
        # The densities where methods meet (an IMP chain's other levels have the ticket alone).
        methods_at = in_group[in_group["method"] != DENSE].groupby("density")["method"].nunique()
        densities = sorted(methods_at.index[methods_at > 1], reverse=True)
        methods = [m for m in ORDER if m in set(in_group["method"])]
        methods += sorted(set(in_group["method"]) - set(methods) - {DENSE})
        rows = []
        for m in methods:
            row = [m]
            for d in densities:
                cell = in_group[(in_group["method"] == m) & np.isclose(in_group["density"], d)]["value"]
                fin = final[
                    (final["group"] == group) & (final["method"] == m) & np.isclose(final["density"], d)
                ]
                row.append(
                    f"{fmt_num(cell.mean())} ± {fmt_num(cell.std())} (final {fmt_num(fin['value'].mean())}, n={len(cell)})"
                    if len(cell)
                    else "–"
                )
            rows.append(row)
        out.append(md_table(["method", *(f"density {fmt_density(d)}" for d in densities)], rows))
        for claim, pairs in FINDINGS:
            out.append(f"### {claim}\n")
            rows = [
                [f"{a} vs {b}", *(verdict_text(verdicts, group, d, a, b) for d in densities)]
                for a, b in pairs
                if {a, b} <= set(in_group["method"])
            ]
            out.append(
                md_table(["pair", *(fmt_density(d) for d in densities)], rows) if rows else "no runs yet\n"
            )
    return "\n".join(out)


def cost_markdown(root: Path) -> str:
    """``cost.md``: per algorithm and variant, the runs, the hours they record (each level's ``total_s``,
    wall time: it includes any time the run shared a core) and the fastest run with its training
    throughput. Each dense level is counted once, however many chains share it.

    :param root: the study's results root.
    """
    levels: list[tuple[str, str, Path]] = []  # (algo, variant, metrics.json)
    dense_levels: dict[Path, str] = {}  # each shared dense level once
    for meta_file in sorted(root.glob("chains/*/seed_*/meta.json")):
        meta = json.loads(meta_file.read_text())
        algo = str(meta.get("algo"))
        levels += [(algo, m.parent.name, m) for m in sorted(meta_file.parent.glob("level_*/*/metrics.json"))]
        dense = Path(str(meta.get("dense_dir", "")))
        for m in (root / "dense" / dense.parent.name / dense.name).glob("level_00/*/metrics.json"):
            dense_levels[m] = algo
    levels += [(algo, DENSE, m) for m, algo in sorted(dense_levels.items())]
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for algo, variant, path in levels:
        record = json.loads(path.read_text())
        seconds = recorded_seconds(record.get("time") or {})
        runs.setdefault((algo, variant), []).append((seconds, record.get("steps_per_s") or 0.0))
    rows, totals = [], {}
    for (algo, variant), found in sorted(runs.items()):
        seconds = [s for s, _ in found]
        fastest = min(found)
        totals[algo] = totals.get(algo, 0.0) + sum(seconds)
        rows.append(
            [algo, variant, len(found), f"{sum(seconds) / 3600:.2f}", f"{np.mean(seconds):.0f}",
             f"{fastest[0]:.0f} ({fastest[1]:.0f} steps/s)"]
        )  # fmt: skip
    rows += [[algo, "all", "", f"{total / 3600:.2f}", "", ""] for algo, total in sorted(totals.items())]
    headers = ["algo", "variant", "runs", "hours recorded", "mean s", "fastest run s (training throughput)"]
    return "# What the study's runs recorded\n\n" + md_table(headers, rows)


def main() -> None:
    """Write the standard report and findings.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/results/graesser2022"))
    parser.add_argument("--min-seeds", type=int, default=5)
    args = parser.parse_args()
    code = report_main(
        [str(args.root), "--out", str(args.out), "--metric", METRIC, "--min-seeds", str(args.min_seeds)]
    )
    if code:  # the report refused its arguments or the root (its one line is printed): so does findings.md
        raise SystemExit(code)
    experiments = discover(args.root)
    options = ReportOptions(min_seeds=args.min_seeds, metric=METRIC)
    (args.out / "findings.md").write_text(findings_markdown(experiments, options))
    (args.out / "cost.md").write_text(cost_markdown(args.root))
    print(f"report_graesser2022: wrote {args.out / 'findings.md'}")


if __name__ == "__main__":
    main()
