"""Choosing n entries without a full sort: the same set as topk, a uniformly random subset."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from rl_tickets.sparsity import selection
from rl_tickets.sparsity.selection import extreme_among, random_among


def valid_topk(
    values: torch.Tensor, allowed: torch.Tensor, chosen: torch.Tensor, n: int, largest: bool
) -> bool:
    """Whether ``chosen`` is one of topk's answers: n distinct allowed entries, none beaten by one left out."""
    flat, ok = values.flatten(), allowed.flatten()
    if chosen.numel() != n or len(set(chosen.tolist())) != n or not ok[chosen].all():
        return False
    left = ok.clone()
    left[chosen] = False
    if not left.any() or n == 0:
        return True
    sign = 1.0 if largest else -1.0
    return bool((sign * flat[chosen]).min() >= (sign * flat[left]).max())


@pytest.mark.parametrize("m", [1, 7, 300, 262_144])
@pytest.mark.parametrize("density", [0.1, 0.9])
@pytest.mark.parametrize("largest", [True, False])
def test_extreme_among_is_what_topk_over_the_candidates_picks(m: int, density: float, largest: bool) -> None:
    generator = torch.Generator().manual_seed(m)
    allowed = torch.rand(m, generator=generator) < density
    count = int(allowed.sum())
    for values in (
        torch.randn(m, generator=generator),
        torch.randint(0, 5, (m,), generator=generator).float(),  # heavy ties at the boundary
        torch.arange(m).float(),  # sorted by position
    ):
        for n in sorted(
            {0, 1, max(1, count // 100), max(1, count // 10), max(1, count // 2), count, count + 5}
        ):
            chosen = extreme_among(values, allowed, n, largest=largest)
            assert valid_topk(values, allowed, chosen, min(n, count), largest), (m, n, largest)


def test_extreme_among_sorts_only_the_few_entries_past_its_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    topk = torch.topk

    def recording(values: torch.Tensor, k: int, **kwargs: object) -> torch.return_types.topk:
        sizes.append(values.numel())
        return topk(values, k, **kwargs)

    monkeypatch.setattr(selection.torch, "topk", recording)
    values = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))
    allowed = torch.rand(512, 512, generator=torch.Generator().manual_seed(1)) < 0.9
    chosen = extreme_among(values, allowed, 2600)
    assert valid_topk(values, allowed, chosen, 2600, True)
    assert max(sizes) < 20_000  # the sample and the ~2n past the threshold, never the 236k candidates


def test_random_among_draws_distinct_allowed_entries_by_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    allowed = torch.rand(512, 512, generator=torch.Generator().manual_seed(0)) < 0.9
    monkeypatch.setattr(torch.Tensor, "nonzero", lambda *_a, **_k: pytest.fail("fell back to all candidates"))
    chosen = random_among(allowed, 2600, torch.Generator().manual_seed(0))
    assert chosen.numel() == 2600 and len(set(chosen.tolist())) == 2600 and allowed.flatten()[chosen].all()


@pytest.mark.parametrize(("m", "density", "n"), [(4096, 0.9, 5), (4096, 0.1, 40), (60, 0.5, 20)])
def test_random_among_is_uniform_over_the_allowed_entries(m: int, density: float, n: int) -> None:
    """Every allowed entry is chosen equally often (chi-square), on the rejection and the fallback path."""
    generator = torch.Generator().manual_seed(m + n)
    allowed = torch.rand(m, generator=generator) < density
    index = allowed.nonzero().squeeze(1)
    counts = torch.zeros(m)
    trials = max(200, 40 * index.numel() // n)
    for _ in range(trials):
        chosen = random_among(allowed, n, generator)
        assert chosen.numel() == n and len(set(chosen.tolist())) == n and allowed[chosen].all()
        counts[chosen] += 1
    assert float(counts[~allowed].sum()) == 0
    assert stats.chisquare(counts[index].numpy()).pvalue > 1e-4


def test_random_among_clips_to_the_allowed_count() -> None:
    allowed = torch.zeros(10, dtype=torch.bool)
    allowed[[2, 5]] = True
    assert sorted(random_among(allowed, 5, torch.Generator()).tolist()) == [2, 5]
    assert random_among(torch.zeros(3, dtype=torch.bool), 2, torch.Generator()).numel() == 0
