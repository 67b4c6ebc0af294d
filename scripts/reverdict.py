"""Recompute the verdicts of an archived report from its per_seed.csv (when the raw results are gone).

    python scripts/reverdict.py docs/results/study_ppo_cartpole --env CartPole-v1 [--min-seeds 5] [--test t]
    python scripts/reverdict.py FOLDER --env CartPole-v1 --roles ppo [--write-roles]

Writes ``verdicts.csv`` beside per_seed.csv and prints the verdict table as markdown, with the same
tests, options and cell format as ``rl-tickets-report``, then every cell whose verdict differs from the
``verdicts.csv`` it replaces. ``--env`` gives the bounded test the environment's return range
(``rl_tickets/report/ranges.py``, e.g. CartPole-v1: [0, 500]); ``--bounds LOW HIGH`` states one directly.
Without either the range is guessed from the data, and constant differences are never evidence.

``--roles ALGO`` also recomputes the actor/critic densities of the folder's ``masks.md`` (whose old
"Actor vs critic" table came from a substring rule that counted PPO's value body as the actor's) from
its per-layer table: it builds ALGO's default SB3 policy on ``--env`` to read each layer's role (by
module identity, :func:`rl_tickets.rl.roles.layer_roles`) and size, and averages the per-layer means
weighted by size. That is the mean over seeds of each role's density exactly (a role's density is a
size-weighted mean of its layers'), up to the 3 significant digits masks.md shows per layer. It prints
the old substring rule's numbers from the same table beside them, as a check against the published
ones, and with ``--write-roles`` replaces the table in masks.md.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from rl_tickets.report import stats, tables
from rl_tickets.report.formatting import fmt_density, md_table
from rl_tickets.report.markdown import question_header, verdict_cell
from rl_tickets.report.ranges import env_bounds
from rl_tickets.report.records import DENSE, variant_order

ROLES_HEADING = "## Actor vs critic density"


def layer_facts(algo: str, env_id: str) -> tuple[dict[str, str], dict[str, int]]:
    """Role and size of every prunable weight of ``algo``'s default policy on ``env_id``.

    :param algo: ppo, a2c, dqn, sac or td3.
    :param env_id: a Gymnasium id.
    """
    import gymnasium as gym
    from stable_baselines3 import A2C, DQN, PPO, SAC, TD3

    from rl_tickets.rl.policies import POLICIES
    from rl_tickets.rl.roles import layer_roles

    classes = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC, "td3": TD3}
    extra = {"buffer_size": 1} if algo in ("dqn", "sac", "td3") else {}
    model = classes[algo](POLICIES[algo], gym.make(env_id), device="cpu", **extra)
    sizes = {n: p.numel() for n, p in model.policy.named_parameters()}
    roles = {n: r for n, r in layer_roles(model.policy).items() if n.endswith("weight")}
    return roles, {n: sizes[n] for n in roles}


def per_layer_table(masks_md: str) -> dict[str, list[float]]:
    """The per-layer density table of a masks.md: layer -> density per level (fractions)."""
    table: dict[str, list[float]] = {}
    for line in masks_md.splitlines():
        match = re.fullmatch(
            r"\| `([^`]+)` \|(?: (?:actor|critic|shared|q|other|–) \|)? (.*) \|", line.strip()
        )
        if match:
            table[match.group(1)] = [float(cell.rstrip("%")) / 100 for cell in match.group(2).split(" | ")]
    return table


def roles_markdown(
    masks_md: str, roles: dict[str, str], sizes: dict[str, int], seeds: int
) -> tuple[str, str]:
    """The recomputed actor/critic table, and the old substring rule's from the same per-layer means.

    :param masks_md: the text of masks.md.
    :param roles: layer -> role (module identity).
    :param sizes: layer -> number of weights.
    :param seeds: seeds behind the means (the table's last column).
    """
    table = per_layer_table(masks_md)
    missing = set(table) ^ set(roles)
    assert not missing, f"masks.md's layers differ from the policy's: {sorted(missing)} (another network?)"

    def mean(names: list[str], level: int) -> float:
        return sum(sizes[n] * table[n][level] for n in names) / sum(sizes[n] for n in names)

    by_role = {r: [n for n in table if roles[n] == r] for r in ("actor", "critic")}
    # The rule this replaces: "policy_net", "action_net", "actor." anywhere in the name -> actor, and
    # "mlp_extractor." contains "actor.", so the value body counted too; "value_net" anywhere -> critic.
    old_actor = [n for n in table if any(p in n for p in ("policy_net", "action_net", "actor."))]
    levels = range(1, len(next(iter(table.values()))))
    new = [[lvl, *[fmt_density(mean(by_role[r], lvl)) for r in by_role], seeds] for lvl in levels]
    old = [[lvl, fmt_density(mean(old_actor, lvl))] for lvl in levels]
    return md_table(["level", "actor", "critic", "seeds"], new), md_table(
        ["level", "actor (substring rule)"], old
    )


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
    parser.add_argument("--roles", default=None, help="recompute masks.md's actor/critic table for this algo")
    parser.add_argument("--write-roles", action="store_true", help="replace that table in masks.md")
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
    headers = ["level", "density"] + [question_header(c) for c in comparisons]
    rows = []
    for level, group in verdicts.groupby("level"):
        cells = {r["comparison"]: verdict_cell(r) for _, r in group.iterrows()}
        rows.append([level, fmt_density(group["density"].iloc[0])] + [cells.get(c, "–") for c in comparisons])
    print(f"range assumed by the bounded test: {bounds if bounds else 'unknown (guessed from the data)'}\n")
    print(md_table(headers, rows))
    changed = changes(before, verdicts)
    print("changed verdicts:\n" + ("\n".join(changed) if changed else "- none"))
    if args.roles:
        assert args.env, "--roles needs --env (the network's input and output sizes)"
        write_roles(
            args.folder / "masks.md", args.roles, args.env, int(per_seed["seed"].nunique()), args.write_roles
        )


def write_roles(masks_path: Path, algo: str, env_id: str, seeds: int, write: bool) -> None:
    """Print (and with ``write`` put into masks.md) the actor/critic table recomputed by module role.

    :param masks_path: the folder's masks.md.
    :param algo: the algorithm whose default policy the study trained.
    :param env_id: its environment.
    :param seeds: seeds behind the per-layer means.
    :param write: replace the "Actor vs critic density" section of masks.md.
    """
    text = masks_path.read_text()
    roles, sizes = layer_facts(algo, env_id)
    new, old = roles_markdown(text, roles, sizes, seeds)
    print(
        f"\nactor vs critic by module (from masks.md's per-layer means):\n{new}\nthe old rule on the same means:\n{old}"
    )
    if write:
        head = text.split(ROLES_HEADING)[0]
        note = (
            "Recomputed by `python scripts/reverdict.py <this folder> --env "
            + env_id
            + " --roles "
            + algo
            + " --write-roles` from the per-layer means above, weighted by layer size, with roles by module "
            "(actor: `mlp_extractor.policy_net` + `action_net`; critic: `mlp_extractor.value_net` + "
            "`value_net`). The table this replaces counted the value body as the actor's (a substring rule).\n"
        )
        masks_path.write_text(f"{head}{ROLES_HEADING}\n\n{note}\n{new}")


if __name__ == "__main__":
    main()
