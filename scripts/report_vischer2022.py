"""Tables behind docs/results/vischer2022_cartpole.md, from a results root written by
scripts/study_vischer2022.sh.

    python scripts/report_vischer2022.py STUDY_ROOT [--out docs/results/vischer2022] [--metric final|best|auc]

With ``--metric best`` or ``auc`` (rl_tickets/report/metrics.py; they need the study trained with
``eval.every`` > 0) everything is written under ``OUT/<metric>/`` instead, each return being that metric
of the level's evaluation curve, so the final-return tables stay where they are.

Writes under ``--out``:
- the standard report (``rl-tickets-report STUDY_ROOT --out OUT``): one folder per experiment
  (``vischer2022_cartpole``, ``scope_layer_cartpole``) with summary.md, verdicts, plots and masks.md;
- ``normalised.md``/``.csv``: every variant's return divided by its seed's dense return, mean ± sd over
  seeds, per level (the paper plots normalised performance);
- ``scope.md``/``.csv``: global against layer-wise pruning on the default job (seeds both arms share),
  per level: density, return mean ± sd, and the per-layer density of the action and value heads;
- ``inputs.md``: per level, how many seeds keep each CartPole observation dimension connected in the
  ticket (any surviving outgoing weight in the first layer of the actor or the critic);
- ``supermask.md``: the untrained masks under each of the four weight rules of ``supermask.weights``,
  from ``supermask_rules.csv`` (written by ``--collect-supermask``, once per rule, by
  scripts/study_vischer2022.sh): per rule and level, supermask and random_supermask (mean ± sd over
  seeds of each seed's mean over the rule's evaluations; for ``shared`` also the best w), and the
  paired verdict on supermask - random_supermask.

    python scripts/report_vischer2022.py STUDY_ROOT --collect-supermask OUT/supermask_rules.csv

Reads levels from each level's metrics.json and mask.pt, so it also works on a study still running.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from rl_tickets.report import main as report_main
from rl_tickets.report.formatting import fmt_density, md_table
from rl_tickets.report.metrics import DEFAULT_METRIC, METRICS, RL_CURVE_COLUMN, level_metric
from rl_tickets.report.verdicts import paired_verdict
from rl_tickets.sparsity.supermask import recorded_settings

GLOBAL = "vischer2022_cartpole"
LAYER = "scope_layer_cartpole"
VARIANTS = ("ticket", "permute", "random_mask", "random_reinit")
HEADS = ("action_net.weight", "value_net.weight")
FIRST_LAYERS = ("mlp_extractor.policy_net.0.weight", "mlp_extractor.value_net.0.weight")


def chains_named(root: Path, name: str) -> dict[int, Path]:
    """Seed -> chain directory of every chain whose meta.json carries ``name``."""
    found = {}
    for meta_path in sorted((root / "chains").glob("*/seed_*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("name") == name:
            found[int(meta["seed"])] = meta_path.parent
    return found


def level_rows(chain: Path, seed: int, metric: str = DEFAULT_METRIC) -> list[dict]:
    """One row per finished (level, variant) of a chain, level 0 from its dense directory."""
    meta = json.loads((chain / "meta.json").read_text())
    dirs = [Path(meta["dense_dir"]) / "level_00" / "ticket"] + sorted(chain.glob("level_*/*"))
    rows = []
    for directory in dirs:
        if not (directory / "COMPLETE").exists():
            continue
        metrics = json.loads((directory / "metrics.json").read_text())
        mask = torch.load(directory / "mask.pt", weights_only=True)
        row = {
            "seed": seed,
            "level": metrics["level"],
            "variant": metrics["variant"],
            "density": metrics["density"],
            "return": level_metric(directory, RL_CURVE_COLUMN, metric, metrics["eval_return_mean"]),
        }
        for name in HEADS:
            row[name] = float(mask[name].float().mean()) if name in mask else float("nan")
        alive = torch.zeros(4, dtype=torch.bool)
        for name in FIRST_LAYERS:
            if name in mask:
                alive |= mask[name].any(dim=0)
        row["inputs_alive"] = "".join("1" if a else "0" for a in alive.tolist())
        rows.append(row)
    return rows


def table(root: Path, name: str, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Every finished level of every seed of the experiment ``name``, its ``return`` being ``metric``."""
    rows = [r for seed, chain in chains_named(root, name).items() for r in level_rows(chain, seed, metric)]
    return pd.DataFrame(rows)


def mean_sd(values: pd.Series) -> str:
    """``mean ± sd (n)`` of a column."""
    if values.empty:
        return "–"
    sd = f" ± {values.std(ddof=1):.3g}" if len(values) > 1 else ""
    return f"{values.mean():.3g}{sd} ({len(values)})"


def normalised(df: pd.DataFrame) -> pd.DataFrame:
    """Return over the same seed's dense return, per (level, variant)."""
    dense = df[(df["level"] == 0)].set_index("seed")["return"]
    out = df.copy()
    out["normalised"] = out["return"] / out["seed"].map(dense)
    return out


def normalised_markdown(df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Mean ± sd (n) of normalised return per level and variant."""
    df = normalised(df)
    summary = (
        df.groupby(["level", "variant"])
        .agg(
            density=("density", "mean"),
            mean=("normalised", "mean"),
            sd=("normalised", "std"),
            n=("seed", "count"),
        )
        .reset_index()
    )
    rows = []
    for level, group in df.groupby("level"):
        cells = [mean_sd(group[group["variant"] == v]["normalised"]) for v in VARIANTS]
        rows.append([level, fmt_density(group["density"].mean()), *cells])
    text = md_table(["level", "density", *VARIANTS], rows)
    return text, summary


def scope_markdown(global_df: pd.DataFrame, layer_df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """Global vs layer-wise tickets on the seeds both arms have, per level."""
    seeds = sorted(set(layer_df["seed"]) & set(global_df["seed"]))
    frames = []
    for scope, df in (("global", global_df), ("layer", layer_df)):
        ticket = df[(df["variant"] == "ticket") & df["seed"].isin(seeds)].copy()
        ticket["scope"] = scope
        frames.append(ticket)
    both = pd.concat(frames, ignore_index=True)
    last = int(layer_df["level"].max())
    rows = []
    for level in range(0, last + 1):
        at = both[both["level"] == level]
        cells = [level]
        for scope in ("global", "layer"):
            s = at[at["scope"] == scope]
            cells += [
                fmt_density(s["density"].mean()) if not s.empty else "–",
                mean_sd(s["return"]),
                fmt_density(s["action_net.weight"].mean()) if not s.empty else "–",
                fmt_density(s["value_net.weight"].mean()) if not s.empty else "–",
            ]
        rows.append(cells)
    headers = ["level"] + [
        f"{scope}: {col}"
        for scope in ("global", "layer")
        for col in ("density", "return", "action_net", "value_net")
    ]
    return md_table(headers, rows), both


def inputs_markdown(df: pd.DataFrame, names: list[str]) -> str:
    """Per level: in how many seeds each observation dimension keeps a connection (ticket)."""
    ticket = df[df["variant"] == "ticket"]
    rows = []
    for level, group in ticket.groupby("level"):
        counts = [sum(code[i] == "1" for code in group["inputs_alive"]) for i in range(len(names))]
        rows.append([level, fmt_density(group["density"].mean()), *[f"{c}/{len(group)}" for c in counts]])
    return md_table(["level", "density", *names], rows)


SUPERMASKS = ("supermask", "random_supermask")
RULES = ("init", "signed_constant", "shared", "resampled")
RULE_KEY = ["seed", "level", "variant", "rule"]


def supermask_rows(root: Path) -> pd.DataFrame:
    """The finished untrained levels of the study's chains, labelled with the rule they were evaluated under."""
    rows = []
    for seed, chain in chains_named(root, GLOBAL).items():
        for directory in sorted(chain.glob("level_*/*")):
            if directory.name not in SUPERMASKS or not (directory / "COMPLETE").exists():
                continue
            metrics = json.loads((directory / "metrics.json").read_text())
            settings = recorded_settings(metrics["extra"]["supermask"])
            rows.append(
                {
                    "seed": seed,
                    "level": metrics["level"],
                    "variant": metrics["variant"],
                    "rule": settings["weights"],
                    "density": metrics["density"],
                    "return": metrics["eval_return_mean"],
                    "best": metrics["eval_return_max"],
                    "evaluations": len(metrics["extra"]["draws"]),
                }
            )
    return pd.DataFrame(rows)


def collect_supermask(root: Path, csv_path: Path) -> None:
    """Add the study's current supermask rows to ``csv_path`` (rows of the same seed, level, variant and
    rule are replaced), so that the four rules, evaluated one after another, end up side by side."""
    new = supermask_rows(root)
    if csv_path.exists():
        old = pd.read_csv(csv_path)
        keep = ~old.set_index(RULE_KEY).index.isin(new.set_index(RULE_KEY).index)
        new = pd.concat([old[keep], new], ignore_index=True)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    new.sort_values(["rule", "level", "variant", "seed"]).to_csv(csv_path, index=False)
    print(f"report_vischer2022: {len(new)} supermask rows in {csv_path}")


def supermask_markdown(df: pd.DataFrame) -> str:
    """Per rule and level: supermask and random_supermask over seeds, and their paired verdict."""
    parts = []
    for rule in [r for r in RULES if r in set(df["rule"])]:
        at = df[df["rule"] == rule]
        best = rule == "shared"
        rows = []
        for level, group in at.groupby("level"):
            wide = group.pivot_table(index="seed", columns="variant", values=["return", "best"])
            if not all(("return", v) in wide.columns for v in SUPERMASKS):
                continue
            ticket, random = wide[("return", "supermask")], wide[("return", "random_supermask")]
            result = paired_verdict(ticket.to_numpy(), random.to_numpy(), question="beats")
            cells = [level, fmt_density(group["density"].mean()), mean_sd(ticket), mean_sd(random)]
            if best:
                cells += [mean_sd(wide[("best", "supermask")]), mean_sd(wide[("best", "random_supermask")])]
            cells += [f"{ticket.mean() - random.mean():+.3g}", f"{result.verdict} (p = {result.p_value:.2g})"]
            rows.append(cells)
        headers = ["level", "density", "supermask", "random_supermask"]
        if best:
            headers += ["supermask: best w", "random_supermask: best w"]
        headers += ["difference", "paired verdict"]
        evaluations = int(at["evaluations"].max())
        parts.append(
            f"## `supermask.weights={rule}` ({evaluations} evaluation(s) per level)\n\n"
            + md_table(headers, rows)
        )
    return "\n\n".join(parts) + "\n"


def main() -> None:
    """Write every table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/results/vischer2022"))
    parser.add_argument("--metric", choices=METRICS, default=DEFAULT_METRIC)
    parser.add_argument(
        "--collect-supermask",
        type=Path,
        default=None,
        metavar="CSV",
        help="only add the supermask rows to CSV",
    )
    args = parser.parse_args()
    if args.collect_supermask is not None:
        collect_supermask(args.root, args.collect_supermask)
        return
    if args.metric != DEFAULT_METRIC:
        args.out = args.out / args.metric
    args.out.mkdir(parents=True, exist_ok=True)
    report_main([str(args.root), "--out", str(args.out), "--metric", args.metric])
    global_df, layer_df = table(args.root, GLOBAL, args.metric), table(args.root, LAYER, args.metric)
    text, summary = normalised_markdown(global_df)
    summary.to_csv(args.out / "normalised.csv", index=False)
    names = {"final": "Return", "best": "Best return", "auc": "Return AUC", "last10": "Last-10% return"}
    what = names[args.metric]
    (args.out / "normalised.md").write_text(
        f"# {what} over the same seed's dense one (mean ± sd (n seeds); `--metric {args.metric}`)\n\n" + text
    )
    if not layer_df.empty:
        text, both = scope_markdown(global_df, layer_df)
        both.to_csv(args.out / "scope.csv", index=False)
        (args.out / "scope.md").write_text(
            f"# Global vs layer-wise magnitude pruning, default job (ticket, mean ± sd (n seeds); "
            f"return: `--metric {args.metric}`)\n\n"
            "Head columns: the fraction of `action_net.weight` / `value_net.weight` kept.\n\n" + text
        )
    names = ["cart_position", "cart_velocity", "pole_angle", "pole_angular_velocity"]
    (args.out / "inputs.md").write_text(
        "# Observation dimensions still connected in the ticket (seeds keeping any first-layer weight)\n\n"
        + inputs_markdown(global_df, names)
    )
    rules = args.out / "supermask_rules.csv"
    if args.metric == DEFAULT_METRIC and rules.exists():
        (args.out / "supermask.md").write_text(
            "# The untrained masks under each weight rule (mean ± sd (n seeds) of each seed's mean over the "
            "rule's evaluations; paired verdict on supermask − random_supermask, two-sided t-test, alpha 0.05)\n\n"
            + supermask_markdown(pd.read_csv(rules))
        )
    print(f"report_vischer2022: wrote {args.out}")


if __name__ == "__main__":
    main()
