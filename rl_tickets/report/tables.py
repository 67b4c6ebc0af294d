"""The report's numbers: per-seed values, descriptive summaries and paired verdicts per experiment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rl_tickets.report import stats
from rl_tickets.report.metrics import DEFAULT_METRIC, curve_column, level_metric
from rl_tickets.report.records import DENSE, TICKET, Experiment, level_dirs, variant_order, warn
from rl_tickets.report.verdicts import Bounds
from rl_tickets.sparsity.supermask import SUPERMASK_CONTROLS

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
    :param metric: the headline metric, ``final``, ``best`` or ``auc`` (:mod:`rl_tickets.report.metrics`).
    """

    min_seeds: int = DEFAULT_MIN_SEEDS
    tolerance: float = stats.DEFAULT_TOLERANCE
    n_resamples: int = stats.DEFAULT_N_RESAMPLES
    alpha: float = stats.DEFAULT_ALPHA
    test: str = "t"
    holm: bool = False
    metric: str = DEFAULT_METRIC

    def verdict(
        self, mine: np.ndarray, theirs: np.ndarray, question: str, bounds: tuple[float, float] | None
    ) -> stats.PairedResult:
        """The paired verdict of ``mine`` against ``theirs`` under these options.

        :param mine: per-seed values of the subject.
        :param theirs: per-seed values of the comparison, paired by seed.
        :param question: ``beats`` or ``matches``.
        :param bounds: the metric's known range, if any (:mod:`rl_tickets.report.ranges`).
        """
        return stats.paired_verdict(
            mine,
            theirs,
            self.min_seeds,
            question=question,  # type: ignore[arg-type]
            tolerance=self.tolerance,
            alpha=self.alpha,
            test=self.test,
            bounds=bounds,
        )


def per_seed_table(exp: Experiment, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """One row per (seed, level, variant) with ``density`` and ``value`` (the metric).

    A level logged twice (e.g. a resumed run appending) keeps its last row.

    :param exp: the experiment.
    :param metric: ``final`` (levels.csv), ``best`` or ``auc`` (from each level's eval_curve.csv).
    :return: columns ``seed, level, variant, density, value, secondary, metric`` (``secondary``: the
        experiment's second metric, e.g. the final test accuracy; NaN where there is none; ``metric``:
        the metric's name).
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
        rows = rows.dropna(subset=["level"])
        if metric != "final":
            dirs = level_dirs(chain)
            rows["value"] = [
                level_metric(dirs.get((int(r.level), r.variant)), curve_column(exp), metric, r.value)
                for r in rows.itertuples()
            ]
        frames.append(rows)
    if not frames:
        return pd.DataFrame(columns=["seed", "level", "variant", "density", "value", "secondary", "metric"])
    table = pd.concat(frames, ignore_index=True).assign(metric=metric)
    table["level"] = table["level"].astype(int)
    table = table.drop_duplicates(subset=["seed", "level", "variant"], keep="last")
    return table.sort_values(["level", "variant", "seed"], ignore_index=True)


def summary_table(per_seed: pd.DataFrame, n_resamples: int = stats.DEFAULT_N_RESAMPLES) -> pd.DataFrame:
    """Per (level, variant): mean density, n seeds, mean, std, IQM and 95% bootstrap CI.

    :param per_seed: output of :func:`per_seed_table`.
    :param n_resamples: bootstrap resamples.
    :return: columns ``level, variant, density, n, mean, std, iqm, ci_low, ci_high, secondary_mean,
        metric`` (the metric's name, from ``per_seed``).
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
    table = pd.DataFrame(rows, columns=columns).assign(metric=_metric_of(per_seed))
    table["_order"] = table["variant"].map(order)
    return table.sort_values(["level", "_order"], ignore_index=True).drop(columns="_order")


def _metric_of(per_seed: pd.DataFrame) -> str:
    """The metric named in a per-seed table (``final`` for tables written before it was named)."""
    if "metric" in per_seed.columns and per_seed["metric"].notna().any():
        return str(per_seed["metric"].dropna().iloc[0])
    return DEFAULT_METRIC


def _per_seed_values(per_seed: pd.DataFrame, level: int, variant: str, seeds: Sequence[int]) -> np.ndarray:
    """The metric at (level, variant) for each seed in ``seeds``, NaN where missing."""
    rows = per_seed[(per_seed["level"] == level) & (per_seed["variant"] == variant)]
    by_seed = dict(zip(rows["seed"], rows["value"]))
    return np.array([by_seed.get(s, np.nan) for s in seeds], dtype=float)


# What a level's verdicts are about: the ticket, or in a one-run chain (no ticket) the schedule's run.
SUBJECTS = (TICKET, "gradual", "static", "set", "rigl")
# The comparison of the two untrained variants: the ticket's mask against a random mask, no training.
UNTRAINED_MASKS = "supermask_vs_random_supermask"


def verdict_table(
    per_seed: pd.DataFrame, options: ReportOptions | None = None, bounds: Bounds = None
) -> pd.DataFrame:
    """Paired verdicts per pruned level: ticket vs dense (level-0 ticket) and vs each control.

    A one-run schedule's level (gradual pruning, static, SET, RigL: no ticket) takes the ticket's
    place: the schedule's run against dense and against the controls beside it (small_dense).

    With ``options.holm`` the p-values of each question ("matches dense?" over the levels; "beats
    <control>?" over levels and controls) are Holm-adjusted within the experiment before the verdict.

    :param per_seed: output of :func:`per_seed_table`.
    :param options: test, alpha, minimum seeds, tolerance and Holm correction.
    :param bounds: the metric's known range ``(low, high)`` (:func:`rl_tickets.report.ranges.metric_bounds`),
        which "matches dense?" needs for a verdict on tied seeds; ``None`` when unknown.
    :return: columns ``level, density, comparison, question, test, n, diff_mean, ci_low, ci_high,
        margin, p_value, p_below, p_value_holm, p_below_holm, verdict, metric, low, high``; the
        ``*_holm`` columns are filled only with ``options.holm``; ``comparison`` is ``"dense"``, a
        control name, or :data:`UNTRAINED_MASKS` (``supermask`` against ``random_supermask``, both
        untrained); ``metric`` names the metric; ``low``/``high`` are the range the bounded test of
        "matches dense?" assumed (NaN for "beats").
    """
    options = options or ReportOptions()
    columns = [
        "level", "density", "comparison", "question", "test", "n", "diff_mean",
        "ci_low", "ci_high", "margin", "p_value", "p_below", "p_value_holm", "p_below_holm", "verdict",
        "metric", "low", "high",
    ]  # fmt: skip
    seeds = sorted(per_seed["seed"].unique())
    tickets = per_seed[per_seed["variant"].isin(SUBJECTS) & (per_seed["level"] > 0)]
    rows = []
    for level in sorted(tickets["level"].unique()):
        at_level = per_seed[per_seed["level"] == level]["variant"]
        subject = next(v for v in SUBJECTS if v in set(at_level))
        ticket = _per_seed_values(per_seed, level, subject, seeds)
        density = tickets.loc[(tickets["level"] == level) & (tickets["variant"] == subject), "density"].mean()
        # Untrained (supermask) rows are not compared with the trained ticket; they answer their own
        # question: does the ticket's mask beat a random mask with the same per-layer counts, untrained?
        controls = [v for v in variant_order(at_level) if v not in SUBJECTS and v not in SUPERMASK_CONTROLS]
        comparisons = [(DENSE, "matches", ticket, _per_seed_values(per_seed, 0, TICKET, seeds))]
        comparisons += [(c, "beats", ticket, _per_seed_values(per_seed, level, c, seeds)) for c in controls]
        if set(SUPERMASK_CONTROLS) <= set(at_level):
            supermask, random_supermask = (
                _per_seed_values(per_seed, level, v, seeds) for v in SUPERMASK_CONTROLS
            )
            comparisons.append((UNTRAINED_MASKS, "beats", supermask, random_supermask))
        for name, question, mine, other in comparisons:
            result = options.verdict(mine, other, question, bounds)
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
                    "metric": _metric_of(per_seed),
                    "low": result.low,
                    "high": result.high,
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
