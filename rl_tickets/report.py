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
import itertools
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from rl_tickets import stats

TICKET = "ticket"
DENSE = "dense"


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Chain:
    """One chain (one seed) as found on disk.

    :param path: the ``seed_<s>`` directory.
    :param chain_hash: name of its parent directory, shared by chains differing only in seed.
    :param seed: the seed.
    :param meta: the parsed ``meta.json``.
    :param levels: ``levels.csv`` (empty if absent).
    :param layers: ``layers.csv`` (empty if absent).
    """

    path: Path
    chain_hash: str
    seed: int
    meta: dict[str, Any]
    levels: pd.DataFrame
    layers: pd.DataFrame


@dataclass
class Experiment:
    """Chains grouped by (name, chain hash); ``label`` names the output directory.

    :param label: the experiment's name, or ``name-<hash[:6]>`` if the name is ambiguous.
    :param name: ``meta["name"]``.
    :param chain_hash: the shared chain hash.
    :param chains: one chain per seed, sorted by seed.
    """

    label: str
    name: str
    chain_hash: str
    chains: list[Chain] = field(default_factory=list)

    @property
    def meta(self) -> dict[str, Any]:
        """Metadata of the first seed (seeds of one experiment share everything but the seed)."""
        return self.chains[0].meta

    @property
    def metric(self) -> str:
        """Name of the metric column in ``levels.csv``."""
        default = "test_accuracy" if self.meta.get("task") == "supervised" else "eval_return_mean"
        return str(self.meta.get("metric") or default)

    @property
    def is_supervised(self) -> bool:
        """Whether the experiment is a supervised baseline (accuracy, not return)."""
        return self.meta.get("task") == "supervised" or "accuracy" in self.metric


def warn(message: str) -> None:
    """Print a one-line note on stderr (incomplete data is normal while a sweep runs)."""
    print(f"rl-tickets-report: {message}", file=sys.stderr)


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV, returning an empty frame if it is missing or unreadable."""
    if not path.is_file():
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:  # created but not yet written: normal while a chain starts
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        warn(f"skipping unreadable {path}: {err}")
        return pd.DataFrame()


def _seed_of(seed_dir: Path, meta: dict[str, Any]) -> int | None:
    """The chain's seed from ``meta.json``, else from the ``seed_<s>`` directory name."""
    if isinstance(meta.get("seed"), int):
        return int(meta["seed"])
    match = re.fullmatch(r"seed_(-?\d+)", seed_dir.name)
    return int(match.group(1)) if match else None


def load_chain(seed_dir: Path) -> Chain | None:
    """Load one ``seed_<s>`` directory, or return ``None`` (with a note) if it has no usable meta.json.

    :param seed_dir: ``ROOT/chains/<hash>/seed_<s>``.
    :return: the chain, with empty frames for missing CSVs.
    """
    meta_path = seed_dir / "meta.json"
    if not meta_path.is_file():
        warn(f"skipping {seed_dir}: no meta.json yet")
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        warn(f"skipping {seed_dir}: unreadable meta.json ({err})")
        return None
    seed = _seed_of(seed_dir, meta)
    if seed is None:
        warn(f"skipping {seed_dir}: no seed in meta.json or directory name")
        return None
    return Chain(
        path=seed_dir,
        chain_hash=seed_dir.parent.name,
        seed=seed,
        meta=meta,
        levels=_read_csv(seed_dir / "levels.csv"),
        layers=_read_csv(seed_dir / "layers.csv"),
    )


def discover(root: Path) -> list[Experiment]:
    """Find every chain under ``root/chains`` and group them into experiments.

    Seeds of one experiment share ``meta["name"]`` and chain hash. A name used by several
    chain hashes (the same name given to different configs) yields one experiment per hash,
    labelled ``name-<hash[:6]>``.

    :param root: the results root.
    :return: experiments sorted by label, each with its chains sorted by seed.
    """
    groups: dict[tuple[str, str], list[Chain]] = {}
    for seed_dir in sorted((root / "chains").glob("*/seed_*")):
        if not seed_dir.is_dir():
            continue
        chain = load_chain(seed_dir)
        if chain is not None:
            name = str(chain.meta.get("name") or chain.chain_hash)
            groups.setdefault((name, chain.chain_hash), []).append(chain)
    name_counts: dict[str, int] = {}
    for name, _ in groups:
        name_counts[name] = name_counts.get(name, 0) + 1
    experiments = [
        Experiment(
            label=name if name_counts[name] == 1 else f"{name}-{chain_hash[:6]}",
            name=name,
            chain_hash=chain_hash,
            chains=sorted(chains, key=lambda c: c.seed),
        )
        for (name, chain_hash), chains in groups.items()
    ]
    return sorted(experiments, key=lambda e: e.label)


# --------------------------------------------------------------------------- metric tables


def per_seed_table(exp: Experiment) -> pd.DataFrame:
    """One row per (seed, level, variant) with ``density`` and ``value`` (the metric).

    A level logged twice (e.g. a resumed run appending) keeps its last row.

    :param exp: the experiment.
    :return: columns ``seed, level, variant, density, value``.
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
            }
        )
        frames.append(rows.dropna(subset=["level"]))
    if not frames:
        return pd.DataFrame(columns=["seed", "level", "variant", "density", "value"])
    table = pd.concat(frames, ignore_index=True)
    table["level"] = table["level"].astype(int)
    table = table.drop_duplicates(subset=["seed", "level", "variant"], keep="last")
    return table.sort_values(["level", "variant", "seed"], ignore_index=True)


def variant_order(variants: Iterable[str]) -> list[str]:
    """Ticket first, then the controls alphabetically (a stable column and colour order)."""
    unique = sorted(set(variants))
    return ([TICKET] if TICKET in unique else []) + [v for v in unique if v != TICKET]


def summary_table(per_seed: pd.DataFrame, n_resamples: int = stats.DEFAULT_N_RESAMPLES) -> pd.DataFrame:
    """Per (level, variant): mean density, n seeds, mean, std, IQM and 95% bootstrap CI.

    :param per_seed: output of :func:`per_seed_table`.
    :param n_resamples: bootstrap resamples.
    :return: columns ``level, variant, density, n, mean, std, iqm, ci_low, ci_high``.
    """
    columns = ["level", "variant", "density", "n", "mean", "std", "iqm", "ci_low", "ci_high"]
    rows = []
    order = {v: i for i, v in enumerate(variant_order(per_seed["variant"]))}
    for (level, variant), group in per_seed.groupby(["level", "variant"], sort=False):
        summary = stats.summarise(group["value"], n_resamples=n_resamples)
        rows.append({"level": level, "variant": variant, "density": group["density"].mean(), **summary})
    table = pd.DataFrame(rows, columns=columns)
    table["_order"] = table["variant"].map(order)
    return table.sort_values(["level", "_order"], ignore_index=True).drop(columns="_order")


def _per_seed_values(per_seed: pd.DataFrame, level: int, variant: str, seeds: Sequence[int]) -> np.ndarray:
    """The metric at (level, variant) for each seed in ``seeds``, NaN where missing."""
    rows = per_seed[(per_seed["level"] == level) & (per_seed["variant"] == variant)]
    by_seed = dict(zip(rows["seed"], rows["value"]))
    return np.array([by_seed.get(s, np.nan) for s in seeds], dtype=float)


def verdict_table(
    per_seed: pd.DataFrame,
    min_seeds: int = 3,
    tolerance: float = 0.0,
    n_resamples: int = stats.DEFAULT_N_RESAMPLES,
) -> pd.DataFrame:
    """Paired verdicts per pruned level: ticket vs dense (level-0 ticket) and vs each control.

    :param per_seed: output of :func:`per_seed_table`.
    :param min_seeds: fewer paired seeds than this gives "not enough seeds".
    :param tolerance: relative non-inferiority margin for "matches dense".
    :param n_resamples: bootstrap resamples.
    :return: columns ``level, density, comparison, question, n, diff_mean, ci_low, ci_high,
        verdict``; ``comparison`` is ``"dense"`` or a control name.
    """
    columns = ["level", "density", "comparison", "question", "n", "diff_mean", "ci_low", "ci_high", "verdict"]
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
                min_seeds,
                question=question,
                tolerance=tolerance,
                n_resamples=n_resamples,
            )
            rows.append(
                {
                    "level": level,
                    "density": density,
                    "comparison": name,
                    "question": question,
                    "n": result.n,
                    "diff_mean": result.diff_mean,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                    "verdict": result.verdict,
                }
            )
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- formatting


def fmt_num(x: float, signed: bool = False) -> str:
    """Four significant digits (fits returns of 500 and accuracies of 0.9812); '–' for NaN."""
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def fmt_density(d: float) -> str:
    """A density as a percentage with three significant digits, e.g. ``10.7%``."""
    return "–" if d is None or not np.isfinite(d) else f"{100 * d:.3g}%"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (no ``tabulate`` dependency)."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _verdict_cell(row: pd.Series) -> str:
    """``better: +12.3 [+4.5, +20.1] (n=5)``, or just the verdict when there is no interval."""
    ci = f" [{fmt_num(row['ci_low'], True)}, {fmt_num(row['ci_high'], True)}]"
    ci = "" if not np.isfinite(row["ci_low"]) else ci
    return f"{row['verdict']}: {fmt_num(row['diff_mean'], True)}{ci} (n={row['n']})"


def summary_markdown(
    exp: Experiment, summary: pd.DataFrame, verdicts: pd.DataFrame, min_seeds: int, tolerance: float
) -> str:
    """The text of ``summary.md``: metric table, verdict table, their rules and the plot."""
    meta = exp.meta
    seeds = ", ".join(str(c.seed) for c in exp.chains)
    out = [
        f"# {exp.label}\n",
        f"- task: {meta.get('task', '?')}, algo: {meta.get('algo', '?')}, env: {meta.get('env', '?')}",
        f"- metric: `{exp.metric}`; seeds: {seeds}; chain hash: `{exp.chain_hash}`",
        "- statistics: mean and IQM over seeds; 95% percentile-bootstrap CI of the mean over seeds\n",
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
            fmt_num(r.iqm),
            f"[{fmt_num(r.ci_low)}, {fmt_num(r.ci_high)}]",
        ]
        for r in summary.itertuples()
    ]
    out.append(md_table(["level", "variant", "density", "n", "mean", "IQM", "95% CI"], rows))
    out += [
        "## Verdicts\n",
        "Paired per-seed differences *ticket − comparison* at each level: mean and 95% bootstrap CI.",
        f"- **matches dense?** (Frankle & Carbin): compared with the level-0 dense network, margin "
        f"m = {tolerance:g} × |dense mean|: *matches* if CI low ≥ −m, *below dense* if CI high < −m, "
        "else *inconclusive*.",
        "- **beats <control>?** (Yu et al.): *better* if CI low > 0, *worse* if CI high < 0, "
        "else *no difference*.",
        f"- fewer than {min_seeds} paired seeds: *not enough seeds*.\n",
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
            cells = {r["comparison"]: _verdict_cell(r) for _, r in group.iterrows()}
            rows.append(
                [level, fmt_density(group["density"].iloc[0])] + [cells.get(c, "–") for c in comparisons]
            )
        out.append(md_table(headers, rows))
    out.append(f"![{exp.metric} vs density]({plot_name(exp)})\n")
    return "\n".join(out)


# --------------------------------------------------------------------------- plots


def plot_name(exp: Experiment) -> str:
    """``accuracy_vs_density.png`` for supervised experiments, ``return_vs_density.png`` otherwise."""
    return "accuracy_vs_density.png" if exp.is_supervised else "return_vs_density.png"


def _percent() -> FuncFormatter:
    """A fresh percent formatter (matplotlib binds a formatter to one axis, so never share one)."""
    return FuncFormatter(lambda x, _: f"{100 * x:.3g}%")


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
    ax.xaxis.set_major_formatter(_percent())


def _percent_log_y(ax: Any) -> None:
    """Log-scale y axis labelled in percent (major and minor ticks: one decade often suffices)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_percent())
    ax.yaxis.set_minor_formatter(_percent())


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


# --------------------------------------------------------------------------- masks


def mask_levels(chain: Chain, variant: str = TICKET) -> list[int]:
    """Levels of a chain that have ``level_NN/<variant>/mask.pt`` (any zero padding)."""
    levels = []
    for mask_path in chain.path.glob(f"level_*/{variant}/mask.pt"):
        match = re.fullmatch(r"level_(\d+)", mask_path.parent.parent.name)
        if match:
            levels.append(int(match.group(1)))
    return sorted(levels)


def load_mask(chain: Chain, level: int, variant: str = TICKET) -> dict[str, torch.Tensor] | None:
    """The saved mask dict of a level, or ``None`` (with a note) if absent or unreadable."""
    candidates = sorted(chain.path.glob(f"level_*/{variant}/mask.pt"))
    for path in candidates:
        match = re.fullmatch(r"level_(\d+)", path.parent.parent.name)
        if match and int(match.group(1)) == level:
            try:
                masks = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # a half-written or foreign file must not stop the report
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                warn(f"skipping unreadable mask {path}: {first_line}")
                return None
            return {k: v.bool() for k, v in masks.items()}
    return None


def flatten(masks: dict[str, torch.Tensor], names: Sequence[str]) -> np.ndarray:
    """Concatenate the named masks (in the given order) into one flat bool array."""
    if not names:
        return np.zeros(0, dtype=bool)
    return np.concatenate([masks[n].reshape(-1).numpy() for n in names])


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard index |a ∩ b| / |a ∪ b| of two bool masks; NaN if both are empty."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


def alive_inputs(masks: dict[str, torch.Tensor], input_layers: Sequence[str]) -> np.ndarray | None:
    """Which input dimensions keep at least one outgoing connection.

    For each input weight ``W`` (``[out, in]``, or ``[out, in, kh, kw]`` for a conv whose
    "input dimensions" are channels) column ``j`` is alive if any ``W[:, j, ...]`` is kept;
    the input layers (e.g. separate actor and critic first layers) combine with "any".

    :param masks: one level's masks.
    :param input_layers: names of the weights reading the observation.
    :return: bool array over input dimensions, or ``None`` if no input layer is in the masks.
    """
    alive: np.ndarray | None = None
    for name in input_layers:
        mask = masks.get(name)
        if mask is None or mask.dim() < 2:
            continue
        # [out, in, ...] -> [in, everything else]: input j is alive if any of its row survives.
        cols = mask.transpose(0, 1).reshape(mask.shape[1], -1).any(dim=1)
        cols_np = cols.numpy()
        if alive is None:
            alive = cols_np
        elif alive.shape == cols_np.shape:
            alive = alive | cols_np
        else:
            warn(f"input layer {name} reads {cols_np.size} inputs, others {alive.size}; ignoring it")
    return alive


def role_density(masks: dict[str, torch.Tensor], names: Sequence[str]) -> float:
    """Kept / total over the named weights present in ``masks``; NaN if none is present."""
    present = [masks[n] for n in names if n in masks]
    total = sum(m.numel() for m in present)
    return float(sum(int(m.sum()) for m in present) / total) if total else float("nan")


@dataclass
class MaskAnalysis:
    """Tables of the mask analysis of one experiment (all long-form DataFrames).

    :param layer_density: ``level, layer, density`` (mean over seeds).
    :param inputs: ``level, input, alive_seeds, n_seeds``.
    :param overlap_seeds: ``level, density, n_seeds, jaccard_mean, jaccard_random``.
    :param overlap_levels: ``from_level, to_level, n_seeds, jaccard_mean``.
    :param roles: ``level, actor_density, critic_density, n_seeds``.
    """

    layer_density: pd.DataFrame
    inputs: pd.DataFrame
    overlap_seeds: pd.DataFrame
    overlap_levels: pd.DataFrame
    roles: pd.DataFrame


def _layer_density_from_csv(exp: Experiment) -> pd.DataFrame:
    """Ticket per-layer density per level from ``layers.csv``, mean over seeds, layer order kept."""
    frames = [
        c.layers for c in exp.chains if not c.layers.empty and {"level", "layer", "density"} <= set(c.layers)
    ]
    if not frames:
        return pd.DataFrame(columns=["level", "layer", "density"])
    df = pd.concat(frames, ignore_index=True)
    if "variant" in df.columns:
        df = df[df["variant"].astype(str) == TICKET]
    df = df.assign(density=pd.to_numeric(df["density"], errors="coerce"))
    return df.groupby(["level", "layer"], sort=False, as_index=False)["density"].mean()


def _input_names(exp: Experiment, n_inputs: int) -> list[str]:
    """Observation names from meta.json if they fit, else ``input[j]``."""
    names = exp.meta.get("observation_names")
    if isinstance(names, list) and len(names) == n_inputs:
        return [str(n) for n in names]
    return [f"input[{j}]" for j in range(n_inputs)]


def _common_names(masks_by_seed: dict[int, dict[str, torch.Tensor]]) -> list[str]:
    """Weight names present with the same shape in every seed's masks, sorted."""
    mask_list = list(masks_by_seed.values())
    names = set.intersection(*(set(m) for m in mask_list)) if mask_list else set()
    first = mask_list[0] if mask_list else {}
    return sorted(n for n in names if all(m[n].shape == first[n].shape for m in mask_list))


def analyse_masks(exp: Experiment) -> MaskAnalysis:
    """Load the ticket masks level by level (two levels in memory at a time) and tabulate them.

    :param exp: the experiment.
    :return: the :class:`MaskAnalysis`.
    """
    meta = exp.meta
    input_layers = list(meta.get("input_layers") or [])
    actor, critic = list(meta.get("actor_layers") or []), list(meta.get("critic_layers") or [])
    layer_rows, input_rows, seed_rows, level_rows, role_rows = [], [], [], [], []
    # Each seed's latest mask so far, so a seed missing one level still pairs with its previous one.
    previous: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}
    for level in sorted({lvl for c in exp.chains for lvl in mask_levels(c)}):
        masks_by_seed = {c.seed: m for c in exp.chains if (m := load_mask(c, level)) is not None}
        if not masks_by_seed:
            continue
        names = _common_names(masks_by_seed)
        # Layer densities straight from the masks: the fallback when layers.csv is missing.
        layer_rows += [
            {"level": level, "layer": name, "density": role_density(masks, [name])}
            for masks in masks_by_seed.values()
            for name in names
        ]
        seed_rows.append(_overlap_row(level, {s: flatten(m, names) for s, m in masks_by_seed.items()}))
        level_rows += _consecutive_overlap(previous, masks_by_seed, level)
        alive_by_seed = {
            s: a for s, m in masks_by_seed.items() if (a := alive_inputs(m, input_layers)) is not None
        }
        input_rows += _input_rows(exp, level, alive_by_seed)
        if actor or critic:
            role_rows.append(_role_row(level, list(masks_by_seed.values()), actor, critic))
        previous.update({s: (level, m) for s, m in masks_by_seed.items()})
    layer_density = _layer_density_from_csv(exp)
    if layer_density.empty and layer_rows:
        layer_density = pd.DataFrame(layer_rows).groupby(["level", "layer"], sort=False, as_index=False)
        layer_density = layer_density["density"].mean()
    return MaskAnalysis(
        layer_density=layer_density,
        inputs=pd.DataFrame(input_rows, columns=["level", "input", "alive_seeds", "n_seeds"]),
        overlap_seeds=pd.DataFrame(
            seed_rows, columns=["level", "density", "n_seeds", "jaccard_mean", "jaccard_random"]
        ),
        overlap_levels=pd.DataFrame(
            level_rows, columns=["from_level", "to_level", "n_seeds", "jaccard_mean"]
        ),
        roles=pd.DataFrame(role_rows, columns=["level", "actor_density", "critic_density", "n_seeds"]),
    )


def _overlap_row(level: int, flats: dict[int, np.ndarray]) -> dict[str, Any]:
    """Mean pairwise Jaccard across seeds at one level, next to what random masks would give."""
    pairs = [jaccard(flats[a], flats[b]) for a, b in itertools.combinations(sorted(flats), 2)]
    sized = [f.mean() for f in flats.values() if f.size]
    density = float(np.mean(sized)) if sized else float("nan")
    return {
        "level": level,
        "density": density,
        "n_seeds": len(flats),
        "jaccard_mean": float(np.mean(pairs)) if pairs else float("nan"),
        # Two independent random masks of density d overlap by d / (2 - d) on average.
        "jaccard_random": density / (2 - density) if np.isfinite(density) else float("nan"),
    }


def _role_row(
    level: int, masks: list[dict[str, torch.Tensor]], actor: Sequence[str], critic: Sequence[str]
) -> dict[str, Any]:
    """Actor and critic density at one level, mean over seeds."""

    def mean_density(names: Sequence[str]) -> float:
        values = [role_density(m, names) for m in masks]
        return float(np.mean(values)) if values and np.isfinite(values).all() else float("nan")

    return {
        "level": level,
        "actor_density": mean_density(actor),
        "critic_density": mean_density(critic),
        "n_seeds": len(masks),
    }


def _consecutive_overlap(
    previous: dict[int, tuple[int, dict[str, torch.Tensor]]],
    current: dict[int, dict[str, torch.Tensor]],
    level: int,
) -> list[dict[str, Any]]:
    """Mean Jaccard between each seed's mask at ``level`` and its previous saved level."""
    by_from: dict[int, list[float]] = {}
    for seed, masks in current.items():
        if seed not in previous:
            continue
        from_level, prev = previous[seed]
        names = _common_names({0: prev, 1: masks})
        by_from.setdefault(from_level, []).append(jaccard(flatten(prev, names), flatten(masks, names)))
    return [
        {"from_level": f, "to_level": level, "n_seeds": len(v), "jaccard_mean": float(np.mean(v))}
        for f, v in sorted(by_from.items())
    ]


def _input_rows(exp: Experiment, level: int, alive_by_seed: dict[int, np.ndarray]) -> list[dict[str, Any]]:
    """Per input dimension: in how many seeds it keeps an outgoing connection at ``level``."""
    if not alive_by_seed:
        return []
    sizes = {a.size for a in alive_by_seed.values()}
    if len(sizes) != 1:
        warn(f"{exp.label}: seeds disagree on the number of inputs at level {level}; skipping inputs")
        return []
    counts = np.sum(np.stack(list(alive_by_seed.values())), axis=0)
    names = _input_names(exp, counts.size)
    return [
        {"level": level, "input": name, "alive_seeds": int(k), "n_seeds": len(alive_by_seed)}
        for name, k in zip(names, counts)
    ]


def masks_markdown(exp: Experiment, analysis: MaskAnalysis) -> str:
    """The text of ``masks.md``."""
    out = [f"# Mask analysis: {exp.label}\n", "Ticket masks only; means over seeds.\n"]
    out += ["## Per-layer density\n", _layer_density_md(analysis.layer_density)]
    if has_mask_plot(analysis):
        out.append("![per-layer density](layer_density.png)\n")
    out += [
        "## Input dimensions with an outgoing connection\n",
        "An input dimension is alive if any weight reading it survives, in any input layer "
        "(Vischer et al. 2022, *minimal task representations*). Cells: seeds in which it is alive.\n",
        _inputs_md(analysis.inputs),
        "## Mask overlap across seeds\n",
        "Mean pairwise Jaccard |A∩B|/|A∪B| of the whole ticket mask between seeds at the same level; "
        "two independent random masks of density d give d/(2−d).\n",
    ]
    if analysis.overlap_seeds.empty:
        out.append("No ticket masks found.\n")
    else:
        rows = [
            [r.level, fmt_density(r.density), r.n_seeds, f"{r.jaccard_mean:.3f}", f"{r.jaccard_random:.3f}"]
            for r in analysis.overlap_seeds.itertuples()
        ]
        out.append(md_table(["level", "density", "seeds", "Jaccard", "random masks"], rows))
    out += ["## Mask overlap across consecutive levels (within a seed)\n"]
    if analysis.overlap_levels.empty:
        out.append("Fewer than two levels with masks.\n")
    else:
        rows = [
            [f"{r.from_level} → {r.to_level}", r.n_seeds, f"{r.jaccard_mean:.3f}"]
            for r in analysis.overlap_levels.itertuples()
        ]
        out.append(md_table(["levels", "seeds", "Jaccard"], rows))
    if not analysis.roles.empty:
        out += ["## Actor vs critic density\n"]
        rows = [
            [r.level, fmt_density(r.actor_density), fmt_density(r.critic_density), r.n_seeds]
            for r in analysis.roles.itertuples()
        ]
        out.append(md_table(["level", "actor", "critic", "seeds"], rows))
    return "\n".join(out)


def _layer_density_md(layer_density: pd.DataFrame) -> str:
    """Layers as rows, levels as columns."""
    if layer_density.empty:
        return "No per-layer densities (no layers.csv and no masks).\n"
    levels = sorted(layer_density["level"].unique())
    layers = list(dict.fromkeys(layer_density["layer"]))
    table = layer_density.set_index(["layer", "level"])["density"]
    rows = [
        [f"`{layer}`"] + [fmt_density(table.get((layer, lvl), np.nan)) for lvl in levels] for layer in layers
    ]
    return md_table(["layer"] + [f"L{lvl}" for lvl in levels], rows)


def _inputs_md(inputs: pd.DataFrame) -> str:
    """Inputs as rows, levels as columns, plus the inputs dead in every seed per level."""
    if inputs.empty:
        return "No input layers listed in meta.json, or no ticket masks.\n"
    levels = sorted(inputs["level"].unique())
    names = list(dict.fromkeys(inputs["input"]))
    cells = {(r.input, r.level): f"{r.alive_seeds}/{r.n_seeds}" for r in inputs.itertuples()}
    text = md_table(
        ["input"] + [f"L{lvl}" for lvl in levels],
        [[n] + [cells.get((n, lvl), "–") for lvl in levels] for n in names],
    )
    lines = []
    for level in levels:
        dead = inputs[(inputs["level"] == level) & (inputs["alive_seeds"] == 0)]["input"].tolist()
        lines.append(f"- level {level}: dead in every seed: {', '.join(dead) if dead else 'none'}")
    return text + "\n" + "\n".join(lines) + "\n"


def has_mask_plot(analysis: MaskAnalysis) -> bool:
    """Whether there is anything to draw in ``layer_density.png``."""
    return not analysis.layer_density.empty or not analysis.roles.empty


def plot_masks(analysis: MaskAnalysis, path: Path, title: str) -> None:
    """Per-layer density profile (one line per level); actor vs critic density in a second panel.

    :param analysis: the mask analysis.
    :param path: PNG to write.
    :param title: figure title.
    """
    has_roles = not analysis.roles.empty
    fig = Figure(figsize=(11 if has_roles else 7, 4.5), layout="constrained")
    axes = fig.subplots(1, 2 if has_roles else 1, squeeze=False)[0]
    ld = analysis.layer_density
    layers = list(dict.fromkeys(ld["layer"]))
    levels = sorted(ld["level"].unique())
    ax = axes[0]
    cmap = matplotlib.colormaps["viridis"]  # level 0 dark, the sparsest level yellow
    for i, level in enumerate(levels):
        rows = ld[ld["level"] == level].set_index("layer")["density"].reindex(layers)
        ax.plot(
            range(len(layers)),
            rows.to_numpy(float),
            marker="o",
            ms=3,
            color=cmap(i / max(len(levels) - 1, 1)),
            label=f"L{level}",
        )
    ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize="x-small")
    _percent_log_y(ax)
    ax.set_ylabel("density")
    ax.set_title(f"{title}: per-layer density")
    ax.grid(alpha=0.3, which="both")
    if levels:
        ax.legend(fontsize="x-small", ncol=2)
    if has_roles:
        roles = analysis.roles.sort_values("level")
        ax2 = axes[1]
        ax2.plot(roles["level"], roles["actor_density"], marker="o", label="actor")
        ax2.plot(roles["level"], roles["critic_density"], marker="s", label="critic")
        _percent_log_y(ax2)
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_xlabel("level")
        ax2.set_ylabel("density")
        ax2.set_title("actor vs critic")
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize="small")
    fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class ReportOptions:
    """Knobs of the report.

    :param min_seeds: fewer paired seeds than this gives "not enough seeds".
    :param tolerance: relative margin for "matches dense" (0 = ticket at least as good).
    :param n_resamples: bootstrap resamples.
    """

    min_seeds: int = 3
    tolerance: float = 0.0
    n_resamples: int = stats.DEFAULT_N_RESAMPLES


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
    verdicts = verdict_table(per_seed, options.min_seeds, options.tolerance, options.n_resamples)
    per_seed.to_csv(out_dir / "per_seed.csv", index=False)
    summary.to_csv(out_dir / "summary.csv", index=False)
    verdicts.to_csv(out_dir / "verdicts.csv", index=False)
    (out_dir / "summary.md").write_text(
        summary_markdown(exp, summary, verdicts, options.min_seeds, options.tolerance)
    )
    if not summary.empty:
        title = f"{exp.label} ({exp.meta.get('algo', '?')}, {exp.meta.get('env', '?')})"
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
        "algo": exp.meta.get("algo", "?"),
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
        "--min-seeds", type=int, default=3, help="paired seeds needed for a verdict (default: 3)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="'matches dense' margin as a fraction of the dense mean (default: 0 = at least as good)",
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
    options = ReportOptions(args.min_seeds, args.tolerance, args.n_resamples)
    out: Path = args.out if args.out is not None else root / "report"
    entries = [write_experiment(exp, out / safe_name(exp.label), options) for exp in experiments]
    (out / "index.md").write_text(index_markdown(entries, root))
    print(f"rl-tickets-report: wrote {len(entries)} experiment(s) to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
