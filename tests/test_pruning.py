"""Pruning rules: rate accounting, scopes, live-only ranking, overrides, exclusions, one-shot,
criteria as scores, ERK densities, the gradual (Zhu & Gupta) schedule and the per-layer floor."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from rl_tickets.config import Config, ConfigError, PruneConfig, validate
from rl_tickets.sparsity.gradual import GradualSchedule, target_density
from rl_tickets.sparsity.masks import Mask, density
from rl_tickets.sparsity.pruning import PruneSpec, erk_densities, layer_floor, next_mask, prunable

SHAPES = {
    "mlp_extractor.policy_net.0.weight": (64, 4),
    "mlp_extractor.policy_net.2.weight": (64, 64),
    "mlp_extractor.value_net.0.weight": (64, 4),
    "mlp_extractor.value_net.2.weight": (64, 64),
    "action_net.weight": (2, 64),
    "value_net.weight": (1, 64),
}


def weights(seed: int = 0, scales: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Gaussian tensors shaped like a small actor-critic, optionally scaled per tensor (no ties).

    :param seed: random seed.
    :param scales: per-name multipliers.
    """
    generator = torch.Generator().manual_seed(seed)
    scales = scales or {}
    return {n: torch.randn(s, generator=generator) * scales.get(n, 1.0) for n, s in SHAPES.items()}


def dense(tensors: dict[str, torch.Tensor]) -> Mask:
    """An all-kept mask shaped like ``tensors``."""
    return {n: torch.ones_like(t, dtype=torch.bool) for n, t in tensors.items()}


def kept(mask: Mask, names: list[str] | None = None) -> int:
    """Number of kept weights over ``names`` (all by default)."""
    return sum(int(mask[n].sum()) for n in (names or list(mask)))


def survivors_rank_above_the_pruned(scores: dict[str, torch.Tensor], before: Mask, after: Mask) -> bool:
    """Whether every kept score is >= every newly pruned score, pooled over the given tensors."""
    kept_scores = torch.cat([scores[n][after[n]] for n in scores])
    removed = torch.cat([scores[n][before[n] & ~after[n]] for n in scores])
    return removed.numel() == 0 or bool(kept_scores.min() >= removed.max())


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_rate_is_a_fraction_of_the_remaining_weights_per_level(scope: str, rate: float) -> None:
    final = weights()
    mask = dense(final)
    per_tensor = {n: t.numel() for n, t in final.items()}
    total = sum(per_tensor.values())
    expected_total = total
    bound = 0.0  # compounded rounding: |error_n| <= 0.5 * sum_j (1-rate)^j (one rounding per level)
    for level in range(1, 9):
        mask = next_mask(PruneSpec(rate=rate, scope=scope), weights(level), final, mask)
        bound = bound * (1 - rate) + 0.5
        if scope == "layer":
            for n in final:
                # Each tensor loses round(rate * alive) of its own live weights.
                per_tensor[n] -= round(rate * per_tensor[n])
                assert int(mask[n].sum()) == per_tensor[n]
                assert abs(per_tensor[n] - final[n].numel() * (1 - rate) ** level) <= bound
        expected_total -= round(rate * expected_total) if scope == "global" else 0
        actual = kept(mask)
        if scope == "global":
            assert actual == expected_total
        assert abs(actual - total * (1 - rate) ** level) <= bound * (len(final) if scope == "layer" else 1)
        assert density(mask) == pytest.approx((1 - rate) ** level, abs=len(final) * bound / total)


def test_layer_scope_prunes_each_tensor_at_the_same_rate_and_global_pools() -> None:
    # One tensor holds tiny weights: a global ranking takes most of its weights, a per-layer one does not.
    final = weights(scales={"mlp_extractor.policy_net.2.weight": 0.01})
    rate = 0.3
    layer = next_mask(PruneSpec(rate=rate, scope="layer"), final, final, dense(final))
    for n, t in final.items():
        assert int(layer[n].sum()) == t.numel() - round(rate * t.numel())
        assert survivors_rank_above_the_pruned({n: t.abs()}, dense(final), layer)
    pooled = next_mask(PruneSpec(rate=rate, scope="global"), final, final, dense(final))
    total = sum(t.numel() for t in final.values())
    assert kept(pooled) == total - round(rate * total)
    # The smallest magnitudes across all tensors go first.
    assert survivors_rank_above_the_pruned({n: t.abs() for n, t in final.items()}, dense(final), pooled)
    small = "mlp_extractor.policy_net.2.weight"
    assert pooled[small].float().mean() < 0.5 < layer[small].float().mean()
    others = [n for n in final if n != small]
    assert density({n: pooled[n] for n in others}) > 0.9
    assert any(not torch.equal(layer[n], pooled[n]) for n in final)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_ranking_is_over_live_weights_only(scope: str) -> None:
    final = weights()
    generator = torch.Generator().manual_seed(7)
    mask = {n: torch.rand(t.shape, generator=generator) < 0.6 for n, t in final.items()}
    # Dead weights with large stored values (e.g. a forward-only mask drifted them) must stay dead.
    stored = {n: torch.where(mask[n], final[n], torch.full_like(final[n], 100.0)) for n in final}
    new = next_mask(PruneSpec(rate=0.25, scope=scope), stored, stored, mask)
    for n in final:
        assert not bool((new[n] & ~mask[n]).any()), f"{n}: a dead weight was revived"
    alive = kept(mask)
    if scope == "global":
        assert kept(new) == alive - round(0.25 * alive)
    else:
        assert all(int(new[n].sum()) == int(mask[n].sum()) - round(0.25 * int(mask[n].sum())) for n in final)
    live_scores = {n: torch.where(mask[n], final[n].abs(), torch.zeros_like(final[n])) for n in final}
    if scope == "global":
        assert survivors_rank_above_the_pruned(live_scores, mask, new)


def test_overrides_by_regex_prune_those_tensors_at_their_own_rate() -> None:
    final = weights()
    # Frankle & Carbin: output layers at half the rate.
    spec = PruneSpec(rate=0.2, scope="global", overrides={r"(^|\.)(action|value)_net\.weight$": 0.1})
    mask = dense(final)
    for _ in range(3):
        before = mask
        mask = next_mask(spec, final, final, mask)
        heads = ["action_net.weight", "value_net.weight"]
        for n in heads:
            alive = int(before[n].sum())
            assert int(mask[n].sum()) == alive - round(0.1 * alive)
        body = [n for n in final if n not in heads]
        alive_body = kept(before, body)
        assert kept(mask, body) == alive_body - round(0.2 * alive_body)
        assert survivors_rank_above_the_pruned({n: final[n].abs() for n in body}, before, mask)
    assert density({"action_net.weight": mask["action_net.weight"]}) > density(
        {n: mask[n] for n in final if "mlp_extractor" in n}
    )


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_excluded_tensors_are_untouched_and_not_counted(scope: str) -> None:
    final = weights(scales={"value_net.weight": 0.001, "mlp_extractor.value_net.2.weight": 0.001})
    exclude = [r"value_net"]  # leave the critic dense
    spec = PruneSpec(rate=0.5, scope=scope, exclude=exclude)
    counted = prunable(list(final), exclude)
    assert counted == [
        "mlp_extractor.policy_net.0.weight",
        "mlp_extractor.policy_net.2.weight",
        "action_net.weight",
    ]
    mask = next_mask(spec, final, final, dense(final))
    for n in final:
        if n not in counted:
            assert bool(mask[n].all()), f"{n} is excluded but was pruned"
    # The rate applies over the counted tensors alone: density over them is exactly halved.
    total = sum(final[n].numel() for n in counted)
    if scope == "global":
        assert kept(mask, counted) == total - round(0.5 * total)
    assert density({n: mask[n] for n in counted}) == pytest.approx(0.5, abs=len(counted) / total)
    # An excluded tensor that was pruned before (e.g. by an earlier config) is returned unchanged.
    old = dense(final)
    old["value_net.weight"][0, :10] = False
    again = next_mask(spec, final, final, old)
    assert torch.equal(again["value_net.weight"], old["value_net.weight"])


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("times", [1, 3, 10])
def test_one_shot_goes_straight_to_the_compounded_density(scope: str, times: int) -> None:
    final = weights()
    rate = 0.2
    mask = next_mask(PruneSpec(rate=rate, scope=scope), final, final, dense(final), times=times)
    target = (1 - rate) ** times
    total = sum(t.numel() for t in final.values())
    if scope == "global":
        assert kept(mask) == total - round((1 - target) * total)
        assert survivors_rank_above_the_pruned({n: t.abs() for n, t in final.items()}, dense(final), mask)
    else:
        for n, t in final.items():
            assert abs(int(mask[n].sum()) - target * t.numel()) <= 0.5
    # One rounding only: within half a weight per tensor of (1 - rate) ** times.
    assert abs(kept(mask) - target * total) <= 0.5 * (len(final) if scope == "layer" else 1)


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k highest scores of one tensor."""
    keep = torch.zeros(score.numel(), dtype=torch.bool)
    keep[score.flatten().topk(k).indices] = True
    return keep.view_as(score)


@pytest.mark.parametrize(
    "criterion, score",
    [
        ("magnitude", lambda f, i: f.abs()),
        ("magnitude_increase", lambda f, i: f.abs() - i.abs()),
        ("movement", lambda f, i: (f - i).abs()),
    ],
)
def test_criteria_only_define_the_score(criterion: str, score: object) -> None:
    initial = weights(1)
    final = {n: initial[n] + 0.5 * weights(2)[n] for n in initial}
    rate = 0.4
    mask = next_mask(PruneSpec(rate=rate, scope="layer", criterion=criterion), final, initial, dense(final))
    for n in final:
        k = final[n].numel() - round(rate * final[n].numel())
        assert torch.equal(mask[n], _top(score(final[n], initial[n]), k)), n  # type: ignore[operator]
    if criterion == "movement":
        for n in final:
            moved = {n: (final[n] - initial[n]).abs()}
            assert survivors_rank_above_the_pruned(moved, {n: torch.ones_like(mask[n])}, {n: mask[n]})
        # ...which differs from what magnitude would keep.
        by_magnitude = next_mask(PruneSpec(rate=rate, scope="layer"), final, initial, dense(final))
        assert any(not torch.equal(mask[n], by_magnitude[n]) for n in final)


def test_random_criterion_keeps_the_same_counts_and_is_seeded() -> None:
    final = weights()
    spec = PruneSpec(rate=0.3, scope="layer", criterion="random")
    first = next_mask(spec, final, final, dense(final), generator=torch.Generator().manual_seed(5))
    same = next_mask(spec, final, final, dense(final), generator=torch.Generator().manual_seed(5))
    other = next_mask(spec, final, final, dense(final), generator=torch.Generator().manual_seed(6))
    by_magnitude = next_mask(PruneSpec(rate=0.3, scope="layer"), final, final, dense(final))
    for n in final:
        assert int(first[n].sum()) == int(by_magnitude[n].sum())
        assert torch.equal(first[n], same[n])
    assert any(not torch.equal(first[n], other[n]) for n in final)
    assert any(not torch.equal(first[n], by_magnitude[n]) for n in final)


def test_unknown_criterion_is_rejected() -> None:
    final = weights()
    with pytest.raises(ValueError, match="criterion"):
        next_mask(PruneSpec(criterion="largest"), final, final, dense(final))


def test_erk_densities_follow_the_formula_and_cap_at_one() -> None:
    shapes = {
        "conv.weight": (16, 3, 3, 3),
        "fc1.weight": (256, 400),
        "fc2.weight": (128, 256),
        "out.weight": (4, 128),
    }
    numel = {n: math.prod(s) for n, s in shapes.items()}
    total = sum(numel.values())
    for target in (0.05, 0.2, 0.5):
        got = erk_densities(shapes, target)
        # Overall density is the target.
        assert sum(got[n] * numel[n] for n in shapes) == pytest.approx(target * total, rel=1e-9)
        assert all(0 < d <= 1.0 for d in got.values())
        free = [n for n in shapes if got[n] < 1.0]
        # Uncapped layers: density proportional to sum(shape) / prod(shape), one common scale.
        ratios = [got[n] / (sum(shapes[n]) / numel[n]) for n in free]
        assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)
        capped = [n for n in shapes if n not in free]
        for n in capped:
            assert got[n] == 1.0 and sum(shapes[n]) / numel[n] * ratios[0] >= 1.0
    # At 50% the small layers would exceed 1 and are capped; the big ones share the rest.
    half = erk_densities(shapes, 0.5)
    assert (
        half["conv.weight"] == 1.0
        and half["out.weight"] == 1.0
        and half["fc1.weight"] < half["fc2.weight"] < 1.0
    )


def test_erk_next_mask_hits_the_overall_density_within_one_weight_per_tensor() -> None:
    final = weights()
    spec = PruneSpec(rate=0.5, distribution="erk")
    mask = dense(final)
    total = sum(t.numel() for t in final.values())
    for level in (1, 2, 3):
        mask = next_mask(spec, final, final, mask)
        assert abs(kept(mask) - 0.5**level * total) <= len(final)
    densities = erk_densities({n: tuple(t.shape) for n, t in final.items()}, 0.125)
    for n in final:
        assert int(mask[n].sum()) == round(densities[n] * final[n].numel())


def zhu_gupta(step: int, begin: int, end: int, final_density: float) -> float:
    """Zhu & Gupta (2017) eq. 1 as a density: s_t = s_f (1 - (1 - (t - t0) / (n dt)) ** 3), clamped."""
    progress = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return 1.0 - (1.0 - final_density) * (1.0 - (1.0 - progress) ** 3)


def test_gradual_target_density_follows_the_cubic() -> None:
    begin, end, final_density = 200, 1000, 0.1
    assert target_density(0, begin, end, final_density) == 1.0
    assert target_density(begin, begin, end, final_density) == 1.0
    assert target_density(end, begin, end, final_density) == pytest.approx(final_density, abs=1e-15)
    assert target_density(5 * end, begin, end, final_density) == pytest.approx(final_density, abs=1e-15)
    middle = (begin + end) // 2
    assert target_density(middle, begin, end, final_density) == pytest.approx(
        1 - 0.9 * (1 - 0.5**3), abs=1e-15
    )
    steps = range(0, 1200, 50)
    values = [target_density(t, begin, end, final_density) for t in steps]
    assert values == pytest.approx([zhu_gupta(t, begin, end, final_density) for t in steps], abs=1e-15)
    assert all(a >= b for a, b in zip(values, values[1:]))
    # Cubic: most of the pruning happens early (a quarter of the way, 1-(3/4)^3 = 58% of it is done).
    quarter = begin + (end - begin) // 4
    assert 1 - target_density(quarter, begin, end, final_density) == pytest.approx(0.9 * (1 - 0.75**3))


def test_gradual_schedule_reaches_the_scheduled_density_on_live_weights() -> None:
    final = weights()
    names = list(final)
    schedule = GradualSchedule(
        spec=PruneSpec(scope="global"), names=names, final_density=0.2, begin=100, end=500, every=100
    )
    assert schedule(100, final) is None  # nothing to prune yet
    previous = dense(final)
    total = sum(t.numel() for t in final.values())
    for step in (200, 300, 400, 500):
        mask = schedule(step, final)
        assert mask is not None
        assert not any(bool((mask[n] & ~previous[n]).any()) for n in names)
        assert abs(kept(mask) - target_density(step, 100, 500, 0.2) * total) <= 1
        previous = mask
    assert schedule(600, final) is None


@pytest.mark.parametrize("criterion", ["movement", "magnitude_increase"])
def test_gradual_criteria_compare_with_the_weights_at_the_previous_mask_update(criterion: str) -> None:
    """Each update ranks the current weights against those of the previous update (the run's start at
    first); ranking weights against themselves scored every weight 0 and kept them by position."""
    start, middle, later = weights(0), weights(1), weights(2)
    names = list(start)
    spec = PruneSpec(scope="global", criterion=criterion)
    schedule = GradualSchedule(spec=spec, names=names, final_density=0.2, begin=100, end=500, every=100)
    assert schedule(0, start) is None  # before pruning begins; the run's start is the first reference
    first = schedule(200, middle)
    second = schedule(300, later)
    assert first is not None and second is not None
    for mask, now, before, previous, step in (
        (first, middle, start, dense(start), 200),
        (second, later, middle, first, 300),
    ):
        rate = 1.0 - target_density(step, 100, 500, 0.2) / density(previous)
        expected = next_mask(replace(spec, rate=rate), now, before, previous)
        assert all(torch.equal(mask[n], expected[n]) for n in names), step
    # Not kept by position: the first kept entries of the flattened big layer are not simply 0..k-1.
    flat = first["mlp_extractor.policy_net.2.weight"].flatten()
    assert not bool(flat[: int(flat.sum())].all())


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("rate", [0.1, 0.15, 0.3])
@pytest.mark.parametrize("numel", [15, 35, 115, 1005])
def test_a_level_removes_round_rate_times_alive_even_at_half_ties(
    scope: str, rate: float, numel: int
) -> None:
    """rate * alive ending in .5 (e.g. 0.1 * 15) must round as Python and torch.nn.utils.prune do."""
    final = {"w.weight": torch.randn(1, numel, generator=torch.Generator().manual_seed(numel))}
    mask = next_mask(PruneSpec(rate=rate, scope=scope), final, final, dense(final))
    assert kept(mask) == numel - round(rate * numel)


@pytest.mark.parametrize(
    "numel,fraction,floor",
    [(3000, 0.001, 3), (4096, 0.001, 5), (192, 0.001, 1), (64, 0.001, 1), (4096, 0.0, 0)],
)
def test_layer_floor_is_the_fraction_rounded_up(numel: int, fraction: float, floor: int) -> None:
    assert layer_floor(numel, fraction) == floor


def test_global_ranking_collapses_a_small_scaled_head_unless_a_floor_keeps_its_best_weights() -> None:
    """Acrobot's failure in miniature: a head 1000x smaller than the rest is ranked away entirely."""
    final = weights(1, scales={"action_net.weight": 1e-3})
    plain = next_mask(PruneSpec(rate=0.5), final, final, dense(final))
    assert kept(plain, ["action_net.weight"]) == 0  # the layer is gone: the network is cut
    floor = layer_floor(128, 0.05)  # 7 of the head's 128 weights
    floored = next_mask(PruneSpec(rate=0.5, min_layer_density=0.05), final, final, dense(final))
    assert kept(floored) == kept(plain)  # the overall count is exact: the floor is taken inside the ranking
    head = floored["action_net.weight"]
    assert int(head.sum()) == floor
    # The head keeps its best-scored weights, and the rest of the budget is plain global ranking.
    assert bool(final["action_net.weight"].abs()[head].min() >= final["action_net.weight"].abs()[~head].max())
    others = [n for n in SHAPES if n != "action_net.weight"]
    assert kept(floored, others) == kept(plain, others) - floor
    assert all(bool((floored[n] <= plain[n]).all()) for n in others)  # the lowest-ranked survivors made room


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_a_floor_that_does_not_bind_leaves_the_mask_exactly_as_before(scope: str) -> None:
    final, mask = weights(2), dense(weights(2))
    for _ in range(6):  # down to 26% overall: every layer stays far above 0.1%
        plain = next_mask(PruneSpec(scope=scope), final, final, mask)
        floored = next_mask(PruneSpec(scope=scope, min_layer_density=0.001), final, final, mask)
        assert all(torch.equal(plain[n], floored[n]) for n in SHAPES)
        mask = plain


@pytest.mark.parametrize(
    "spec",
    [
        PruneSpec(rate=0.9, scope="layer", min_layer_density=0.2),
        PruneSpec(rate=0.9, overrides={"value_net.weight": 0.99}, min_layer_density=0.2),
        PruneSpec(rate=0.95, distribution="erk", min_layer_density=0.2),
    ],
    ids=["layer", "override", "erk"],
)
def test_layer_wise_counts_are_raised_to_the_floor(spec: PruneSpec) -> None:
    final = weights(3)
    mask = next_mask(spec, final, final, dense(final))
    for name, keep in mask.items():
        assert int(keep.sum()) >= layer_floor(keep.numel(), 0.2), name
    # The rate alone would have taken some layer below the floor: that layer sits exactly at it.
    assert any(int(keep.sum()) == layer_floor(keep.numel(), 0.2) for keep in mask.values())


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_a_floor_never_revives_dead_weights(scope: str) -> None:
    final = weights(4, scales={"action_net.weight": 1e-3})
    mask = dense(final)
    mask["action_net.weight"] = torch.zeros(2, 64, dtype=torch.bool)
    mask["action_net.weight"][0, :3] = True  # 3 alive, below a floor of 26
    new = next_mask(PruneSpec(scope=scope, min_layer_density=0.2), final, final, mask)
    assert torch.equal(new["action_net.weight"], mask["action_net.weight"])
    assert all(bool((new[n] <= mask[n]).all()) for n in SHAPES)


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_a_floor_outside_zero_to_one_is_one_line(value: float) -> None:
    cfg = Config(prune=PruneConfig(min_layer_density=value))
    with pytest.raises(ConfigError, match=rf"^prune.min_layer_density={value} must lie in \[0, 1\)"):
        validate(cfg)
