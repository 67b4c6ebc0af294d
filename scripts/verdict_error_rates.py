"""Error rate and power of the report's verdicts, by simulation (the README's numbers).

    python scripts/verdict_error_rates.py [--draws 4000]

Under the null both variants are N(0, 1) per seed; with an effect the ticket is shifted by 1.5 standard
deviations of a paired difference. Prints the fraction of "better" and "worse" verdicts per test and n.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from rl_tickets.report import stats


def verdict_rates(n: int, shift: float, test: str, draws: int, seed: int) -> tuple[float, float]:
    """Fractions of "better" and "worse" over ``draws`` simulated paired samples of ``n`` seeds."""
    rng = np.random.default_rng(seed)
    better = worse = 0
    for _ in range(draws):
        verdict = stats.paired_verdict(rng.normal(shift, 1.0, n), rng.normal(0.0, 1.0, n), test=test).verdict
        better += verdict == stats.BETTER
        worse += verdict == stats.WORSE
    return better / draws, worse / draws


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=4000)
    args = parser.parse_args()
    print("| test | n | effect | better | worse | either |\n|---|---:|---|---:|---:|---:|")
    cases = [("t", 5), ("t", 10), ("t", 20), ("signflip", 6), ("signflip", 10), ("signflip", 12)]
    for test, n in cases:
        b, w = verdict_rates(n, 0.0, test, args.draws, seed=99)
        print(f"| {test} | {n} | none | {b:.2%} | {w:.2%} | {b + w:.2%} |")
    for test, n in [("t", 5), ("t", 10), ("signflip", 10)]:
        b, w = verdict_rates(n, 1.5 * math.sqrt(2), test, args.draws // 2, seed=5)
        print(f"| {test} | {n} | 1.5 sd | {b:.2%} | {w:.2%} | {b + w:.2%} |")


if __name__ == "__main__":
    main()
