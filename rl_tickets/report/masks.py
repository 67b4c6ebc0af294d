"""Mask analysis for the report: per-layer density, surviving input dimensions (Vischer et al. 2022's
minimal task representations), mask overlap (Jaccard) across seeds and levels, actor vs critic density.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from rl_tickets.report.formatting import fmt_density, md_table
from rl_tickets.report.records import TICKET, Chain, Experiment, warn
from rl_tickets.report.roles import DENSITY_ROLES, report_roles, role_row


def mask_levels(chain: Chain, variant: str = TICKET) -> list[int]:
    """Levels of a chain that have ``level_NN/<variant>/mask.pt`` (any zero padding)."""
    levels = []
    for mask_path in chain.path.glob(f"level_*/{variant}/mask.pt"):
        match = re.fullmatch(r"level_(\d+)", mask_path.parent.parent.name)
        if match and (int(match.group(1)), variant) not in chain.damaged:
            levels.append(int(match.group(1)))
    return sorted(levels)


def load_mask(chain: Chain, level: int, variant: str = TICKET) -> dict[str, torch.Tensor] | None:
    """The saved mask dict of a level, or ``None`` (with a note) if absent, unreadable or damaged."""
    if (level, variant) in chain.damaged:
        return None
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
    :param roles: ``level, actor_density, critic_density, shared_density, n_seeds`` (empty without an
        actor or a critic, e.g. DQN or supervised).
    :param layer_roles: ``{layer: role}`` of the masks' layers (empty without roles).
    """

    layer_density: pd.DataFrame
    inputs: pd.DataFrame
    overlap_seeds: pd.DataFrame
    overlap_levels: pd.DataFrame
    roles: pd.DataFrame
    layer_roles: dict[str, str] = field(default_factory=dict)


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
    layer_roles: dict[str, str] = {}
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
        # meta.json's roles (module identity), or for older chains the names' exact module paths.
        roles = report_roles(meta, names)
        layer_roles.update(roles)
        if {"actor", "critic"} & set(roles.values()):
            role_rows.append(role_row(level, [m for m in masks_by_seed.values()], roles))
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
        roles=pd.DataFrame(role_rows, columns=["level", *[f"{r}_density" for r in DENSITY_ROLES], "n_seeds"]),
        layer_roles=layer_roles,
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
    out += ["## Per-layer density\n", _layer_density_md(analysis.layer_density, analysis.layer_roles)]
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
        out += ["## Actor vs critic density\n", ROLES_NOTE]
        shown = [r for r in DENSITY_ROLES if analysis.roles[f"{r}_density"].notna().any()]
        rows = [
            [r.level, *[fmt_density(getattr(r, f"{role}_density")) for role in shown], r.n_seeds]
            for r in analysis.roles.itertuples()
        ]
        out.append(md_table(["level", *shown, "seeds"], rows))
    return "\n".join(out)


ROLES_NOTE = (
    "Kept fraction of each role's weights, mean over seeds. Roles by module: PPO/A2C's actor is "
    "`mlp_extractor.policy_net` + `action_net`, its critic `mlp_extractor.value_net` + `value_net`; SAC/TD3's "
    "`actor.*` and `critic.*`; a features extractor read by both is *shared* (the `role` column of layers.csv).\n"
)


def _layer_density_md(layer_density: pd.DataFrame, roles: dict[str, str]) -> str:
    """Layers as rows (with their role, where known), levels as columns."""
    if layer_density.empty:
        return "No per-layer densities (no layers.csv and no masks).\n"
    levels = sorted(layer_density["level"].unique())
    layers = list(dict.fromkeys(layer_density["layer"]))
    table = layer_density.set_index(["layer", "level"])["density"]
    role = [roles.get(layer, "–") for layer in layers] if roles else []
    rows = [
        [f"`{layer}`", *role[i : i + 1]] + [fmt_density(table.get((layer, lvl), np.nan)) for lvl in levels]
        for i, layer in enumerate(layers)
    ]
    return md_table(["layer", *(["role"] if roles else [])] + [f"L{lvl}" for lvl in levels], rows)


# Beyond this many inputs (pixels), per-input rows are unreadable: report counts per level instead.
MAX_INPUT_ROWS = 64


def _inputs_summary_md(inputs: pd.DataFrame, levels: list[int], n_inputs: int) -> str:
    """Per level: inputs alive in every seed, in some seed, and in none."""
    rows = []
    for level in levels:
        at = inputs[inputs["level"] == level]
        every = int((at["alive_seeds"] == at["n_seeds"]).sum())
        none = int((at["alive_seeds"] == 0).sum())
        rows.append([f"L{level}", str(every), str(n_inputs - every - none), str(none)])
    header = (
        f"{n_inputs} input dimensions; counts of inputs alive in every seed, in some seeds, and in none.\n\n"
    )
    return (
        header
        + md_table(["level", "alive in every seed", "alive in some", "dead in every seed"], rows)
        + "\n"
    )


def _inputs_md(inputs: pd.DataFrame) -> str:
    """Inputs as rows, levels as columns, plus the inputs dead in every seed per level."""
    if inputs.empty:
        return "No input layers listed in meta.json, or no ticket masks.\n"
    levels = sorted(inputs["level"].unique())
    names = list(dict.fromkeys(inputs["input"]))
    if len(names) > MAX_INPUT_ROWS:
        return _inputs_summary_md(inputs, levels, len(names))
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
