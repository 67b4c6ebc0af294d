"""Error rates and power of the report's verdicts, by simulation (the table in docs/verdicts.md).

    python scripts/verdict_error_rates.py [--draws 10000] [--seed 2026]

Each cell draws ``--draws`` paired samples of n seeds from one family and counts how often
:func:`rl_tickets.report.stats.paired_verdicts` (the tests of ``paired_verdict``, default t-test,
alpha 0.05, the margin column's fraction of the dense mean) gives the counted verdict. Error cells have a limit: the
nominal rate (alpha/2 for each one-sided verdict, alpha for "better or worse"); a cell fails when
its rate exceeds the limit by more than 3 binomial standard errors of the simulation. Returns are on
CartPole's scale: cap 500, floor 10, and ``bounds=(10, 500)`` where the row says so.

Then: the seeds that tied samples need, the old test's rates on the same families, the t-test's
exact rates on three-valued differences (by enumeration, no simulation), and the t-test beside the
sign-flip test on "beats".

``tests/test_stats.py`` runs the same cells with fewer draws.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.stats

from rl_tickets.report import stats

CAP, FLOOR = 500.0, 10.0
BOUNDS = (FLOOR, CAP)
TOLERANCE = stats.DEFAULT_TOLERANCE
ALPHA = stats.DEFAULT_ALPHA
NS = (5, 10, 20)
POWER_NS = (5, 10, 20, 100)

# A sampler draws (ticket, other) arrays of the given shape: (draws, seeds).
Sampler = Callable[[np.random.Generator, tuple[int, int]], tuple[np.ndarray, np.ndarray]]


def two_point(
    rng: np.random.Generator, shape: tuple[int, int], p_cap: float, low: float = FLOOR
) -> np.ndarray:
    """``CAP`` with probability ``p_cap``, else ``low``."""
    return np.where(rng.random(shape) < p_cap, CAP, low)


def normal(mean: float) -> Callable[[np.random.Generator, tuple[int, int]], np.ndarray]:
    """Normal returns with sd 50."""
    return lambda rng, shape: rng.normal(mean, 50.0, shape)


def student2(mean: float) -> Callable[[np.random.Generator, tuple[int, int]], np.ndarray]:
    """Student t with 2 degrees of freedom (infinite variance), scale 25."""
    return lambda rng, shape: mean + 25.0 * rng.standard_t(2, shape)


def at_margin(ticket_mean: float, dense_mean: float) -> float:
    """The ticket's mean one margin below dense: ``dense_mean * (1 - TOLERANCE)``; asserts it is."""
    assert math.isclose(ticket_mean, dense_mean * (1 - TOLERANCE)), (ticket_mean, dense_mean)
    return ticket_mean


def capped_failing(fail_to: float, tolerance: float = TOLERANCE) -> Sampler:
    """Dense at the cap on every seed; the ticket fails to ``fail_to`` on the share of seeds that puts
    its mean one margin below dense: ``tolerance * CAP / (CAP - fail_to)`` (5.1% to 10, 10% to 250)."""
    share = tolerance * CAP / (CAP - fail_to)
    assert math.isclose(CAP - share * (CAP - fail_to), CAP * (1 - tolerance))
    return lambda rng, shape: (two_point(rng, shape, 1 - share, fail_to), np.full(shape, CAP))


def two_point_pair(p_dense: float) -> Sampler:
    """Both arms CAP or FLOOR; dense at the cap with probability ``p_dense``, the ticket with the
    probability that puts its mean one margin below dense."""
    dense_mean = FLOOR + (CAP - FLOOR) * p_dense
    p_ticket = p_dense - TOLERANCE * dense_mean / (CAP - FLOOR)
    at_margin(FLOOR + (CAP - FLOOR) * p_ticket, dense_mean)
    return lambda rng, shape: (two_point(rng, shape, p_ticket), two_point(rng, shape, p_dense))


def dense_failing(p_fail: float = 0.05) -> Sampler:
    """The mirror image: dense at the cap but failing to FLOOR on ``p_fail`` of the seeds; the ticket
    steady (sd 5) at one margin below dense's mean."""
    dense_mean = CAP - p_fail * (CAP - FLOOR)
    ticket_mean = at_margin(dense_mean * (1 - TOLERANCE), dense_mean)
    return lambda rng, shape: (rng.normal(ticket_mean, 5.0, shape), two_point(rng, shape, 1 - p_fail))


def iid(draw: Callable[[np.random.Generator, tuple[int, int]], np.ndarray]) -> Sampler:
    """Both arms i.i.d. from ``draw``: the null of "beats"."""
    return lambda rng, shape: (draw(rng, shape), draw(rng, shape))


@dataclass(frozen=True)
class Cell:
    """One row of the table: a question, a truth, a family, and the verdicts counted.

    :param limit: the nominal bound of the rate (None: a power row, no limit).
    """

    question: str
    truth: str
    family: str
    sample: Sampler
    counted: tuple[str, ...]
    limit: float | None
    bounds: tuple[float, float] | None = None
    ns: tuple[int, ...] = NS
    tolerance: float = TOLERANCE


def cells() -> list[Cell]:
    """Every row of the table, in order."""
    margin = "ticket one margin below dense"
    null = "null: arms i.i.d."
    m_families: list[tuple[str, Sampler, tuple[float, float] | None]] = [
        ("normal, sd 50", lambda r, s: (normal(475.0)(r, s), normal(500.0)(r, s)), None),
        ("t, 2 df, scale 25", lambda r, s: (student2(475.0)(r, s), student2(500.0)(r, s)), None),
    ]
    for fail_to in (FLOOR, 250.0):
        for bounds in (BOUNDS, None):
            name = f"dense 500; ticket fails to {fail_to:g}"
            m_families.append((name, capped_failing(fail_to), bounds))
    for p_dense in (0.9, 0.7):
        for bounds in (BOUNDS, None):
            m_families.append((f"two-point 500/10, dense p={p_dense:g}", two_point_pair(p_dense), bounds))
    for bounds in (BOUNDS, None):
        m_families.append(("dense fails to 10 on 5%; ticket steady", dense_failing(), bounds))
    rows = []
    for family, sample, bounds in m_families:
        for word in (stats.MATCHES, stats.BELOW_DENSE):
            rows.append(Cell("matches", margin, family, sample, (word,), ALPHA / 2, bounds))
    # A larger stated margin: 20% of dense. Capped data at the margin, then a perfect ticket.
    rows.append(
        Cell(
            "matches",
            margin,
            "dense 500; ticket fails to 10",
            capped_failing(FLOOR, 0.2),
            (stats.MATCHES,),
            ALPHA / 2,
            BOUNDS,
            tolerance=0.2,
        )
    )
    b_families: list[tuple[str, Callable[[np.random.Generator, tuple[int, int]], np.ndarray]]] = [
        ("normal, sd 50", normal(500.0)),
        ("t, 2 df, scale 25", student2(500.0)),
        ("500, fails to 10 on 5.1%", lambda r, s: two_point(r, s, 1 - TOLERANCE * CAP / (CAP - FLOOR))),
        ("500, fails to 250 on 10%", lambda r, s: two_point(r, s, 0.9, 250.0)),
        ("two-point 500/10, p=0.9", lambda r, s: two_point(r, s, 0.9)),
        ("two-point 500/10, p=0.7", lambda r, s: two_point(r, s, 0.7)),
    ]
    for family, draw in b_families:
        rows.append(Cell("beats", null, family, iid(draw), (stats.BETTER,), ALPHA / 2))
        rows.append(Cell("beats", null, family, iid(draw), (stats.WORSE,), ALPHA / 2))
        rows.append(Cell("beats", null, family, iid(draw), (stats.BETTER, stats.WORSE), ALPHA))
    effect = "power: ticket 500, control fails to 10 on half"
    half = lambda r, s: (np.full(s, CAP), two_point(r, s, 0.5))  # noqa: E731
    rows.append(Cell("beats", effect, "500 vs 500/10 p=0.5", half, (stats.BETTER,), None, ns=POWER_NS))
    perfect = "power: ticket = dense in distribution"
    power: list[tuple[str, Sampler, tuple[float, float] | None, float]] = [
        ("both 500 on every seed", lambda r, s: (np.full(s, CAP), np.full(s, CAP)), BOUNDS, TOLERANCE),
        ("both 500 on every seed", lambda r, s: (np.full(s, CAP), np.full(s, CAP)), BOUNDS, 0.2),
        ("two-point 500/10, p=0.9", iid(lambda r, s: two_point(r, s, 0.9)), BOUNDS, TOLERANCE),
        (
            "normal 450, sd 30, clipped to [10, 500]",
            iid(lambda r, s: np.clip(r.normal(450.0, 30.0, s), FLOOR, CAP)),
            BOUNDS,
            TOLERANCE,
        ),
        ("normal, sd 50", iid(normal(500.0)), None, TOLERANCE),
    ]
    for family, sample, bounds, tolerance in power:
        rows.append(
            Cell("matches", perfect, family, sample, (stats.MATCHES,), None, bounds, POWER_NS, tolerance)
        )
    collapsed = "power: ticket fails to 10 on half, dense 500"
    flipped = lambda r, s: half(r, s)[::-1]  # noqa: E731
    rows.append(
        Cell(
            "matches", collapsed, "500/10 p=0.5 vs 500", flipped, (stats.BELOW_DENSE,), None, BOUNDS, POWER_NS
        )
    )
    return rows


def rate(cell: Cell, n: int, draws: int, seed: int, index: int) -> float:
    """Fraction of ``draws`` simulated samples of ``n`` seeds whose verdict is one of ``cell.counted``."""
    rng = np.random.default_rng([seed, index, n])
    ticket, other = cell.sample(rng, (draws, n))
    result = stats.paired_verdicts(
        ticket, other, question=cell.question, tolerance=cell.tolerance, alpha=ALPHA, bounds=cell.bounds
    )
    return float(np.isin(result.verdict, cell.counted).mean())


def over_limit(cell: Cell, value: float, draws: int) -> bool:
    """Whether ``value`` exceeds the cell's limit by more than 3 binomial standard errors."""
    if cell.limit is None:
        return False
    return value > cell.limit + 3.0 * math.sqrt(cell.limit * (1 - cell.limit) / draws)


def old_rate(sample: Sampler, word: str, n: int, draws: int, seed: int) -> float:
    """The rate of ``word`` ("matches" or "below dense") before this test: a paired t-test whose
    p-value was 0 when every difference was equal (e.g. all seeds at the cap)."""
    ticket, dense = sample(np.random.default_rng([seed, 999, n]), (draws, n))
    diffs, margin = ticket - dense, TOLERANCE * np.abs(dense.mean(axis=1, keepdims=True))
    centred = diffs + margin if word == stats.MATCHES else -diffs - margin
    mean, sd = centred.mean(axis=1), centred.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = scipy.stats.t.sf(mean / (sd / math.sqrt(n)), df=n - 1)
    p = np.where(sd == 0, np.where(mean > 0, 0.0, 1.0), p)
    return float(np.mean(p < ALPHA / 2))


def exact_beats_null(p_cap: float, n: int) -> float:
    """Exact rate of "better or worse" when both arms are CAP or FLOOR i.i.d. (cap with probability
    ``p_cap``): every difference is +-(CAP - FLOOR) or 0, so enumerate the counts of each."""
    q = p_cap * (1 - p_cap)
    total = 0.0
    rows, weights = [], []
    for up in range(n + 1):
        for down in range(n + 1 - up):
            zero = n - up - down
            weights.append(
                math.comb(n, up) * math.comb(n - up, down) * q ** (up + down) * (1 - 2 * q) ** zero
            )
            rows.append(np.r_[np.full(up, CAP - FLOOR), np.full(down, FLOOR - CAP), np.zeros(zero)])
    verdict = stats.paired_verdicts(np.array(rows), np.zeros((len(rows), n)), alpha=ALPHA).verdict
    total = float(np.dot(weights, np.isin(verdict, (stats.BETTER, stats.WORSE))))
    return total


def extra_tables(draws: int, seed: int) -> None:
    """Seeds needed on tied seeds, the old test's rate on capped data, exact rates of the t-test."""
    print("\n| margin (fraction of 500) | margin | any valid test: n >= | this test (`bounds=(10, 500)`) |")
    print("|---:|---:|---:|---:|")
    for tol in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3):
        margin = tol * CAP
        exact = stats.min_seeds_exact(margin, FLOOR, CAP, ALPHA / 2)
        print(f"| {tol:.0%} | {margin:g} | {exact} | {stats.min_seeds_tied(margin, FLOOR, CAP, ALPHA / 2)} |")
    print("\n| before this test: t-test, p = 0 on zero variance | n=5 | n=10 | n=20 |\n|---|---:|---:|---:|")
    before = [
        (stats.MATCHES, "dense 500; ticket fails to 10", capped_failing(FLOOR)),
        (stats.MATCHES, "dense 500; ticket fails to 250", capped_failing(250.0)),
        (stats.BELOW_DENSE, "dense fails to 10 on 5%; ticket steady", dense_failing()),
    ]
    for word, family, sample in before:
        values = " | ".join(f"{old_rate(sample, word, n, draws, seed):.2%}" for n in NS)
        print(f"| false {word}, {family} | {values} |")
    exact_ns = (5, 6, 8, 10, 12, 15, 20, 30)
    print(
        "\n| exact rate of better or worse, arms i.i.d. 500/10 | "
        + " | ".join(f"n={n}" for n in exact_ns)
        + " |"
    )
    print("|---|" + "---:|" * len(exact_ns))
    for p_cap in (0.9, 0.7, 0.5):
        values = " | ".join(f"{exact_beats_null(p_cap, n):.2%}" for n in exact_ns)
        print(f"| p(500) = {p_cap:g} | {values} |")


def test_rates(sample: Sampler, n: int, test: str, draws: int, seed: int, index: int) -> float:
    """Fraction of "better or worse" verdicts of ``test`` ("t" or "signflip") on ``draws`` samples."""
    ticket, other = sample(np.random.default_rng([seed, 500 + index, n]), (draws, n))
    verdict = stats.paired_verdicts(ticket, other, alpha=ALPHA, test=test).verdict
    return float(np.isin(verdict, (stats.BETTER, stats.WORSE)).mean())


def signflip_table(draws: int, seed: int) -> None:
    """The two tests side by side on "beats": null rates and the power for a shift of 1.5 sd."""
    ns = (5, 6, 10, 12)
    shift = 1.5 * math.sqrt(2.0) * 50.0  # 1.5 standard deviations of a difference of two N(., 50)
    rows = [
        ("null: arms i.i.d. normal, sd 50", iid(normal(500.0))),
        ("null: arms i.i.d. two-point 500/10, p=0.7", iid(lambda r, s: two_point(r, s, 0.7))),
        (
            "power: ticket shifted by 1.5 sd, normal",
            lambda r, s: (normal(500.0 + shift)(r, s), normal(500.0)(r, s)),
        ),
    ]
    print("\n| beats: better or worse | test | " + " | ".join(f"n={n}" for n in ns) + " |")
    print("|---|---|" + "---:|" * len(ns))
    for index, (name, sample) in enumerate(rows):
        for test in stats.TESTS:
            values = [
                f"{test_rates(sample, n, test, draws, seed, index):.2%}"
                if n >= stats.min_seeds_for(test)
                else "–"
                for n in ns
            ]
            print(f"| {name} | {test} | " + " | ".join(values) + " |")


def main(argv: list[str] | None = None) -> int:
    """Print the tables; exit status 1 if any error rate is over its limit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=10_000, help="simulated samples per cell")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the simulation")
    args = parser.parse_args(argv)
    header = ["question", "truth", "family", "bounds", "margin", "verdict", "limit"] + [
        f"n={n}" for n in POWER_NS
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * 7 + "---:|" * len(POWER_NS))
    failures = 0
    for index, cell in enumerate(cells()):
        values = {n: rate(cell, n, args.draws, args.seed, index) for n in cell.ns}
        shown = []
        for n in POWER_NS:
            if n not in values:
                shown.append("")
                continue
            bad = over_limit(cell, values[n], args.draws)
            failures += bad
            shown.append(f"{values[n]:.2%}" + (" **over**" if bad else ""))
        bounds = "none" if cell.bounds is None else f"({cell.bounds[0]:g}, {cell.bounds[1]:g})"
        limit = "" if cell.limit is None else f"<= {cell.limit:.1%}"
        words = " or ".join(cell.counted)
        margin = "" if cell.question == "beats" else f"{cell.tolerance:.0%}"
        print(
            "| "
            + " | ".join([cell.question, cell.truth, cell.family, bounds, margin, words, limit, *shown])
            + " |"
        )
    print(f"\n{args.draws} draws per cell, seed {args.seed}; {failures} error rate(s) over limit + 3 SE.")
    extra_tables(args.draws, args.seed)
    signflip_table(args.draws, args.seed)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
