"""The instability study's own tables (docs/results/stability.md), after ``rl-tickets-report ROOT``.

1. Both arms of each task pooled over their seeds (:func:`arms`): seeds whose analyses chose different
   rewind steps have different chain hashes, and a seed that chose k = 0 shares its k = 0 chain's
   directory, so the report's experiments split both arms; pooled, each arm gets the report's
   ticket-vs-dense tables and verdicts as one experiment (``<out>/<task>_k0_pooled``,
   ``<out>/<task>_auto_k_pooled``).
2. The question of the study: do tickets rewound to the chosen k beat tickets rewound to k = 0? At each
   level, the chosen-k ticket against the k = 0 ticket of the same seed, by the report's paired test
   (``beats``: better / worse / no difference). A seed whose analysis chose k = 0 *is* its k = 0 chain
   and enters with a difference of exactly 0: the question is about the recipe, which chose so.
   Written to ``<out>/<task>_chosen_k_vs_k0.{md,csv}``.
3. Where the instability comes from, per analysis (``<out>/stability_sources.md``): of the pairs over
   the threshold, how many have their worst point at an end of the path (the two copies simply ended
   apart) and how many also have a barrier over the threshold (the path dips below the line joining
   the ends: Frankle et al.'s loss of linear connectivity); also how many paths have a point below both
   ends, and the largest barrier.
4. What the study's trainings cost (``<out>/stability_cost.md``): the seconds each run records
   (``time`` in its ``metrics.json``: its ``total_s``, which holds training, evaluation and saving; one
   process per core, so CPU-hours when no two runs share a core), summed per analysis (its dense runs
   and copies) and per chain (its levels and its dense level 0).

Usage: ``python scripts/report_stability.py ROOT [--out ROOT/report] [--metric final|best|auc]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from rl_tickets.report.cli import write_experiment
from rl_tickets.report.formatting import fmt_density, fmt_num, fmt_p, md_table
from rl_tickets.report.loading import discover
from rl_tickets.report.ranges import metric_bounds
from rl_tickets.report.records import TICKET, Experiment
from rl_tickets.report.tables import ReportOptions, per_seed_table
from rl_tickets.stability.choose import CHOICE_FILE
from rl_tickets.timing import recorded_seconds

AUTO = "_auto_k"


def rewind_step(chain_meta: dict) -> int:
    """The rewind step a chain was trained with (``rewind.step`` in its recorded config)."""
    return int(((chain_meta.get("config") or {}).get("rewind") or {}).get("step") or 0)


def arms(base: str, experiments: list[Experiment]) -> tuple[Experiment, Experiment]:
    """The k = 0 arm and the chosen-k arm of task ``base``, each pooled over its seeds.

    A chain directory is named by its hash, not by ``name=``: a seed whose analysis chose k = 0 runs
    its chosen-k chain in its k = 0 chain's directory, whose ``meta.json`` then carries the later name.
    So the arms are found by what the chains are: the chosen-k arm is every chain with a
    ``rewind_choice.json`` (written by ``rewind.auto``), the k = 0 arm every chain rewound to 0, among
    the experiments named ``base``, ``base_k0`` and ``base_auto_k``.

    :param base: the task's experiment name (``ppo_cartpole``).
    :param experiments: every experiment of the root.
    """
    names = {base, base + "_k0", base + AUTO}
    chains = [c for e in experiments if e.name in names for c in e.chains]
    k0 = {c.seed: c for c in chains if rewind_step(c.meta) == 0}
    chosen = {c.seed: c for c in chains if (c.path / CHOICE_FILE).exists()}

    def pooled(name: str, by_seed: dict) -> Experiment:
        return Experiment(
            label=name, name=name, chain_hash="pooled", chains=[by_seed[s] for s in sorted(by_seed)]
        )

    return pooled(f"{base}_k0_pooled", k0), pooled(f"{base}{AUTO}_pooled", chosen)


def tickets(exp: Experiment, metric: str) -> pd.DataFrame:
    """Ticket rows (seed, level, density, value) of the experiment's chains, one per (seed, level)."""
    rows = per_seed_table(exp, metric) if exp.chains else pd.DataFrame()
    if rows.empty:
        return rows
    rows = rows[(rows["variant"] == TICKET) | (rows["level"] == 0)]
    return rows.drop_duplicates(["seed", "level"], keep="last")


def compare_arms(k0: Experiment, chosen: Experiment, options: ReportOptions) -> pd.DataFrame:
    """Chosen-k against k = 0 tickets, per level, paired by seed (see the module docstring).

    :param k0: the k = 0 arm.
    :param chosen: the chosen-k arm.
    :param options: the report's test options and metric.
    """
    steps = {c.seed: rewind_step(c.meta) for c in chosen.chains}
    mine, theirs = tickets(chosen, options.metric), tickets(k0, options.metric)
    if mine.empty or theirs.empty:
        return pd.DataFrame()
    bounds = metric_bounds(chosen.meta)
    rows = []
    for level, cell in mine[mine["level"] > 0].groupby("level"):
        other = theirs[theirs["level"] == level].set_index("seed")["value"]
        seeds = sorted(set(cell["seed"]) & set(other.index))
        a = cell.set_index("seed").loc[seeds, "value"].to_numpy(float)
        b = other.loc[seeds].to_numpy(float)
        result = options.verdict(a, b, "beats", bounds)
        rows.append(
            {
                "level": int(level),
                "density": float(cell["density"].mean()),
                "n": result.n,
                "k_per_seed": " ".join(f"{s}:{steps.get(s, '?')}" for s in seeds),
                "k0_mean": float(np.mean(b)) if len(b) else np.nan,
                "chosen_mean": float(np.mean(a)) if len(a) else np.nan,
                "diff_mean": result.diff_mean,
                "ci_low": result.ci_low,
                "ci_high": result.ci_high,
                "p_value": result.p_value,
                "verdict": result.verdict,
            }
        )
    return pd.DataFrame(rows)


def comparison_markdown(base: str, table: pd.DataFrame, metric: str) -> str:
    """The comparison as a markdown section."""
    headers = [
        "level",
        "density",
        "seeds",
        "k per seed (seed:k)",
        "k = 0",
        "chosen k",
        "diff",
        "95% CI",
        "p",
        "chosen k is",
    ]
    body = [
        [
            r.level,
            fmt_density(r.density),
            r.n,
            r.k_per_seed,
            fmt_num(r.k0_mean),
            fmt_num(r.chosen_mean),
            fmt_num(r.diff_mean, signed=True),
            f"[{fmt_num(r.ci_low)}, {fmt_num(r.ci_high)}]",
            fmt_p(r.p_value),
            r.verdict,
        ]
        for r in table.itertuples()
    ]
    title = f"## {base}: tickets rewound to the chosen k against k = 0 (metric: {metric})\n\n"
    return title + md_table(headers, body)


def instability_sources(root: Path) -> str:
    """Per analysis: pairs, unstable pairs, and what made them unstable (see the module docstring).

    :param root: the results root (reads ``root/stability/<hash>/seed_*/instability.csv``).
    """
    headers = [
        "analysis", "learner", "pairs", "unstable", "worst point at an end", "barrier over threshold",
        "a point below both ends", "largest barrier",
    ]  # fmt: skip
    rows = []
    for analysis in sorted(p for p in (root / "stability").glob("*") if p.is_dir()):
        frames = [pd.read_csv(f) for f in sorted(analysis.glob("seed_*/instability.csv"))]
        if not frames:
            continue
        pairs = pd.concat(frames, ignore_index=True)
        identity = json.loads(next(analysis.glob("seed_*/identity.json")).read_text())
        learner = identity.get("algo.name") or identity.get("model.name") or identity.get("task")
        where = identity.get("env.id") or identity.get("data.name") or ""
        unstable = pairs[~pairs["stable"].astype(bool)]
        at_end = unstable["worst_alpha"].isin([0.0, 1.0])
        over = unstable["barrier"] > unstable["threshold"]
        rows.append(
            [
                analysis.name,
                f"{learner} {where}".strip(),
                len(pairs),
                len(unstable),
                int(at_end.sum()),
                int(over.sum()),
                int((pairs["worst"] < pairs[["end_a", "end_b"]].min(axis=1)).sum()),
                f"{pairs['barrier'].max():.4g}",
            ]
        )
    return md_table(headers, rows)


def recorded_seconds_of(metrics_files: list[Path]) -> float:
    """The seconds recorded in the ``time`` entries of these ``metrics.json`` files, summed (each
    record's ``total_s`` once, not added to the sections it already contains)."""
    return sum(recorded_seconds(json.loads(path.read_text()).get("time") or {}) for path in metrics_files)


def training_cost(root: Path) -> str:
    """Recorded training time per analysis and per chain, in hours (see the module docstring).

    :param root: the results root.
    """
    rows = []
    for analysis in sorted(p for p in (root / "stability").glob("*") if p.is_dir()):
        runs = sorted(analysis.glob("seed_*/dense/metrics.json")) + sorted(
            analysis.glob("seed_*/k_*/level_*/[ab]/metrics.json")
        )
        if runs:
            rows.append([f"analysis {analysis.name}", len(runs), f"{recorded_seconds_of(runs) / 3600:.2f}"])
    for chain in sorted(p for p in (root / "chains").glob("*") if p.is_dir()):
        runs = sorted(chain.glob("seed_*/level_*/*/metrics.json"))
        names = set()
        for meta_file in sorted(chain.glob("seed_*/meta.json")):
            meta = json.loads(meta_file.read_text())
            names.add(meta.get("name", ""))
            dense = root / "dense" / Path(meta.get("dense_dir", "")).parent.name / meta_file.parent.name
            runs += sorted(dense.glob("level_00/*/metrics.json"))
        if runs:
            label = f"chain {chain.name} ({', '.join(sorted(names))})"
            rows.append([label, len(runs), f"{recorded_seconds_of(runs) / 3600:.2f}"])
    return md_table(["what", "trainings", "hours recorded"], rows)


def main() -> None:
    """Pool the chosen-k arms and compare them with the k = 0 arms."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="default: ROOT/report")
    parser.add_argument("--metric", default="final", choices=["final", "best", "auc"])
    args = parser.parse_args()
    out = args.out or args.root / "report"
    options = ReportOptions(metric=args.metric)
    experiments = discover(args.root)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stability_sources.md").write_text(instability_sources(args.root))
    (out / "stability_cost.md").write_text(training_cost(args.root))
    for base in sorted({e.name[: -len(AUTO)] for e in experiments if e.name.endswith(AUTO)}):
        k0, chosen = arms(base, experiments)
        print(f"{base}: rewind step per seed { ({c.seed: rewind_step(c.meta) for c in chosen.chains}) }")
        for arm in (k0, chosen):
            if arm.chains:
                write_experiment(arm, out / arm.label, options)
                print(f"  {arm.label}: {len(arm.chains)} seeds, {out / arm.label / 'summary.md'}")
        table = compare_arms(k0, chosen, options)
        if table.empty:
            print(f"  {base}: no k = 0 arm to compare with")
            continue
        stem = out / f"{base}_chosen_k_vs_k0"
        table.to_csv(stem.with_suffix(".csv"), index=False)
        stem.with_suffix(".md").write_text(comparison_markdown(base, table, args.metric))
        print(f"  chosen k against k = 0: {stem.with_suffix('.md')}")


if __name__ == "__main__":
    main()
