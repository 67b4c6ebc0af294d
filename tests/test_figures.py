"""The report's figures as a paper needs them, checked on the figure objects the real report draws (a
fake results root: two environments, three seeds, ticket and two controls, eval curves, a layer pruned
to 0%): one colour and marker per variant in every figure, markers on every series, legends outside
the data, per-seed points below 10 seeds, the protocol under the name, the name said once, 0% layers
at the axis floor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from rl_tickets.report import main
from rl_tickets.report.formatting import figure_title, protocol_line
from rl_tickets.report.plots import plot_metric_vs_density
from rl_tickets.report.style import VARIANT_STYLES, ZERO_MARKER, log_floor, variant_style

SEEDS = (0, 1, 2)
LEVELS = (0, 1, 2, 3)
VARIANTS = ("ticket", "reinit", "random_mask")
ENVS = {"cartpole": 500.0, "acrobot": 100.0}
CONFIG = {
    "task": "rl",
    "prune": {"levels": 3, "rate": 0.2, "scope": "global", "schedule": "iterative"},
    "rewind": {"step": 0},
    "retrain": {"mode": "rewind"},
    "train": {"timesteps": 1000},
}
LAYERS = ("mlp_extractor.policy_net.0.weight", "action_net.weight", "value_net.weight")


def masks(level: int) -> dict[str, torch.Tensor]:
    """Level 3 prunes action_net away completely (a 0% layer), the others keep 0.8**level."""
    out = {}
    for name in LAYERS:
        mask = torch.zeros(10, 10, dtype=torch.bool)
        mask.view(-1)[: round(100 * 0.8**level)] = True
        out[name] = mask
    if level == 3:
        out["action_net.weight"][:] = False
    return out


def build_root(root: Path) -> None:
    """One experiment per environment in the runner's layout (levels.csv, layers.csv, masks, curves)."""
    for e, (env, top) in enumerate(ENVS.items()):
        for seed in SEEDS:
            chain = root / "chains" / (str(e) * 12) / f"seed_{seed}"
            chain.mkdir(parents=True)
            meta = {"name": f"ppo_{env}", "task": "rl", "algo": "ppo", "env": env, "seed": seed}
            meta |= {"metric": "eval_return_mean", "unit": "timesteps", "config": {**CONFIG, "seed": seed}}
            (chain / "meta.json").write_text(json.dumps(meta))
            rows, layer_rows = [], []
            for level in LEVELS:
                for v, variant in enumerate(VARIANTS if level else ("ticket",)):
                    value = top * (1 - 0.05 * level * v) - seed
                    rows.append(
                        {"level": level, "variant": variant, "density": 0.8**level, "eval_return_mean": value}
                    )
                    directory = chain / f"level_{level:02d}" / variant
                    directory.mkdir(parents=True)
                    steps = np.arange(1, 6) * 200
                    pd.DataFrame({"step": steps, "eval/return_mean": value * steps / 1000}).to_csv(
                        directory / "eval_curve.csv", index=False
                    )
                    if variant == "ticket" and level:
                        torch.save(masks(level), directory / "mask.pt")
                        for name, mask in masks(level).items():
                            layer_rows.append(
                                {
                                    "level": level,
                                    "variant": "ticket",
                                    "layer": name,
                                    "numel": mask.numel(),
                                    "density": mask.float().mean().item(),
                                }
                            )
            pd.DataFrame(rows).to_csv(chain / "levels.csv", index=False)
            pd.DataFrame(layer_rows).to_csv(chain / "layers.csv", index=False)


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Figure]:
    """Every figure the report saves, by file name (experiment folder / file), drawn by the real report."""
    root = tmp_path_factory.mktemp("figures")
    build_root(root)
    saved: dict[str, Figure] = {}
    original = Figure.savefig

    def keep(self: Figure, path: Any, *args: Any, **kwargs: Any) -> None:
        saved[f"{Path(path).parent.name}/{Path(path).name}"] = self
        original(self, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Figure, "savefig", keep)
        assert main([str(root), "--n-resamples", "200"]) == 0
    for figure in saved.values():
        FigureCanvasAgg(figure).draw()  # legends and titles get their final positions, and a renderer
    return saved


def series(figure: Figure) -> list[Line2D]:
    """The lines a legend names (reference lines and per-seed points included)."""
    return [
        line
        for ax in figure.axes
        for line in ax.get_lines()
        if not line.get_label().startswith("_") and line.get_visible()
    ]


def variant_of(label: str) -> str | None:
    """The variant a legend label names (``ticket (n=3)``, ``ticket > reinit (2 envs)`` -> reinit)."""
    name = label.split(" (")[0].split(" > ")[-1]
    return name if name in VARIANTS else None


def test_the_report_draws_every_figure(figures: dict[str, Figure]) -> None:
    names = {key.split("/")[1] for key in figures}
    expected = {"return_vs_density.png", "learning_curves.png", "layer_density.png", "iqm.png"}
    assert expected | {"probability_of_improvement.png", "performance_profile.png"} <= names


def test_a_variant_has_one_colour_and_marker_in_every_figure(figures: dict[str, Figure]) -> None:
    seen: dict[str, set[tuple[str, str]]] = {}
    for figure in figures.values():
        for line in series(figure):
            variant = variant_of(line.get_label())
            if variant is not None and line.get_linestyle() != "None":
                seen.setdefault(variant, set()).add((str(line.get_color()), str(line.get_marker())))
    assert set(seen) == set(VARIANTS)
    for variant, styles in seen.items():
        assert styles == {VARIANT_STYLES[variant]}, (variant, styles)


def test_every_series_has_markers(figures: dict[str, Figure]) -> None:
    for name, figure in figures.items():
        for line in series(figure):
            horizontal_reference = len(
                set(np.asarray(line.get_ydata(), dtype=float))
            ) == 1 and "dense" in str(line.get_label())
            if not horizontal_reference and "no difference" not in str(line.get_label()):
                assert line.get_marker() not in ("None", None, ""), (name, line.get_label())


def test_legends_sit_outside_every_panel(figures: dict[str, Figure]) -> None:
    for name, figure in figures.items():
        legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes if ax.get_legend())]
        assert legends, name
        renderer = figure.canvas.get_renderer()
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in figure.axes:
                if ax.get_visible():
                    assert not box.overlaps(ax.get_window_extent(renderer)), (name, ax.get_title())


def test_per_seed_points_below_ten_seeds(figures: dict[str, Figure], tmp_path: Path) -> None:
    """Three seeds: each variant's level has three open per-seed markers; ten seeds: none."""
    ax = figures["ppo_cartpole/return_vs_density.png"].axes[0]
    points = [
        line for line in ax.get_lines() if line.get_linestyle() == "None" and line.get_label().startswith("_")
    ]
    counts = [len(line.get_xdata()) for line in points]
    assert counts == [len(SEEDS)] * (len(LEVELS) + 2 * (len(LEVELS) - 1))
    assert all(line.get_markerfacecolor() == "none" for line in points)
    assert any(line.get_label() == "one seed (open markers)" for line in ax.get_lines())

    many = pd.DataFrame(
        [{"seed": s, "level": 1, "variant": "ticket", "density": 0.8, "value": float(s)} for s in range(10)]
    )
    summary = pd.DataFrame(
        [
            {
                "level": 1,
                "variant": "ticket",
                "density": 0.8,
                "n": 10,
                "mean": 4.5,
                "ci_low": 3.0,
                "ci_high": 6.0,
            }
        ]
    )
    drawn: list[Figure] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Figure, "savefig", lambda self, *a, **k: drawn.append(self))
        plot_metric_vs_density(summary, tmp_path / "x.png", "return", "t", many)
    assert not [line for line in drawn[0].axes[0].get_lines() if line.get_linestyle() == "None"]


def test_titles_carry_the_protocol_and_say_the_name_once(figures: dict[str, Figure]) -> None:
    protocol = "20% pruned per level · global scope · rewind to step 0 · 1,000 env steps per level · 3 seeds"
    for name, figure in figures.items():
        texts = [figure._suptitle.get_text()] if figure._suptitle else []
        texts += [ax.get_title() for ax in figure.axes]
        heading = next(text for text in texts if text)
        assert protocol in heading, (name, heading)
        first = heading.split("\n")[0]
        if not name.startswith("across-"):
            experiment = name.split("/")[0]
            assert first.startswith(experiment) and first.count("cartpole") + first.count("acrobot") == 1


def test_figure_titles_name_learner_and_environment_only_when_the_name_does_not() -> None:
    meta = {"algo": "ppo", "env": "cartpole", "config": CONFIG}
    assert figure_title("ppo_cartpole", meta, 3).split("\n")[0] == "ppo_cartpole"
    assert figure_title("vischer2022", meta, 3).split("\n")[0] == "vischer2022 (ppo, cartpole)"
    gradual = {**CONFIG, "prune": {"schedule": "gradual", "final_density": 0.1, "scope": "layer"}}
    line = protocol_line({"config": gradual, "task": "rl"}, 1)
    assert line.startswith("gradual pruning to 10% · layer scope") and line.endswith("1 seed")
    supervised = {**CONFIG, "train": {"iterations": 5000}}
    assert "5,000 iterations per level" in protocol_line({"config": supervised, "task": "supervised"}, 2)


def test_a_layer_pruned_to_zero_sits_at_the_axis_floor(figures: dict[str, Figure]) -> None:
    ax = figures["ppo_cartpole/layer_density.png"].axes[0]
    zeros = [line for line in ax.get_lines() if line.get_marker() == ZERO_MARKER]
    assert len(zeros) == 1 and zeros[0].get_label() == "0% (layer pruned away)"
    densities = [float(m.float().mean()) for level in LEVELS[1:] for m in masks(level).values()]
    floor = log_floor(densities)
    assert 0.0 in densities and floor == min(d for d in densities if d > 0) / 2
    assert list(zeros[0].get_ydata()) == [floor]
    # At action_net's tick (levels are dodged sideways by less than half a tick).
    assert [round(x) for x in zeros[0].get_xdata()] == [LAYERS.index("action_net.weight")]
    assert ax.get_ylim()[0] < floor


def test_unknown_variants_keep_one_colour() -> None:
    assert variant_style("rigl") == variant_style("rigl") != variant_style("ticket")
    assert variant_style("dense")["color"] != variant_style("ticket")["color"]
