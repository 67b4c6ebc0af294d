"""The instability study's own tables (docs/results/stability.md), after ``rl-tickets-report ROOT``.

1. Each chosen-k arm (``<task>_auto_k``) pooled over its seeds: seeds whose analyses chose different
   rewind steps have different chain hashes, which the report keeps apart; pooled, the arm gets the
   report's ticket-vs-dense tables and verdicts as one experiment (``<out>/<task>_auto_k_pooled``).
2. The question of the study: do tickets rewound to the chosen k beat tickets rewound to k = 0? At each
   level, the chosen-k ticket against the k = 0 ticket of the same seed, by the report's paired test
   (``beats``: better / worse / no difference). A seed whose analysis chose k = 0 *is* its k = 0 chain
   and enters with a difference of exactly 0: the question is about the recipe, which chose so.
   Written to ``<out>/<task>_chosen_k_vs_k0.{md,csv}``.
3. Where the instability comes from, per analysis (``<out>/stability_sources.md``): of the pairs over
   the threshold, how many have their worst point at an end of the path (the two copies simply ended
   apart) and how many also have a barrier over the threshold (the path dips below the line joining
   the ends: Frankle et al.'s loss of linear connectivity).

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

AUTO = "_auto_k"


def rewind_step(chain_meta: dict) -> int:
    """The rewind step a chain was trained with (``rewind.step`` in its recorded config)."""
    return int(((chain_meta.get("config") or {}).get("rewind") or {}).get("step") or 0)


def tickets(experiments: list[Experiment], metric: str) -> pd.DataFrame:
    """Ticket rows (seed, level, density, value) of the experiments' chains, one per (seed, level)."""
    frames = [per_seed_table(exp, metric) for exp in experiments]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if rows.empty:
        return rows
    rows = rows[(rows["variant"] == TICKET) | (rows["level"] == 0)]
    return rows.drop_duplicates(["seed", "level"], keep="last")


def compare_arms(base: str, experiments: list[Experiment], options: ReportOptions) -> pd.DataFrame:
    """Chosen-k against k = 0 tickets of task ``base``, per level, paired by seed.

    :param base: the task's experiment name (``ppo_cartpole``); its arms are ``base`` or ``base_k0``
        (k = 0) and ``base_auto_k``.
    :param experiments: every experiment of the root.
    :param options: the report's test options and metric.
    """
    auto = [e for e in experiments if e.name == base + AUTO]
    k0 = [
        e
        for e in experiments
        if e.name in (base, base + "_k0") and all(rewind_step(c.meta) == 0 for c in e.chains)
    ]
    chosen = {c.seed: rewind_step(c.meta) for e in auto for c in e.chains}
    mine, theirs = tickets(auto, options.metric), tickets(k0, options.metric)
    if mine.empty or theirs.empty:
        return pd.DataFrame()
    bounds = metric_bounds(auto[0].meta)
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
                "k_per_seed": " ".join(f"{s}:{chosen.get(s, '?')}" for s in seeds),
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
    headers = ["analysis", "learner", "pairs", "unstable", "worst point at an end", "barrier over threshold"]
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
            ]
        )
    return md_table(headers, rows)


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
    arms: dict[str, list] = {}
    for exp in experiments:
        if exp.name.endswith(AUTO):
            arms.setdefault(exp.name, []).extend(exp.chains)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stability_sources.md").write_text(instability_sources(args.root))
    for name, chains in sorted(arms.items()):
        steps = {c.seed: json.loads((c.path / CHOICE_FILE).read_text())["rewind.step"] for c in chains}
        print(f"{name}: rewind step per seed {steps}")
        if len({c.chain_hash for c in chains}) > 1:
            ordered = sorted(chains, key=lambda c: c.seed)
            pooled = Experiment(label=f"{name}_pooled", name=name, chain_hash="pooled", chains=ordered)
            write_experiment(pooled, out / f"{name}_pooled", options)
            print(f"  pooled over {len(chains)} seeds: {out / (name + '_pooled') / 'summary.md'}")
        base = name[: -len(AUTO)]
        table = compare_arms(base, experiments, options)
        if table.empty:
            print(f"  {base}: no k = 0 arm to compare with")
            continue
        stem = out / f"{base}_chosen_k_vs_k0"
        table.to_csv(stem.with_suffix(".csv"), index=False)
        stem.with_suffix(".md").write_text(comparison_markdown(base, table, args.metric))
        print(f"  chosen k against k = 0: {stem.with_suffix('.md')}")


if __name__ == "__main__":
    main()
