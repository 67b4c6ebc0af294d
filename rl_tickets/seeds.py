"""Seeds derived from names: every random stream of a chain (levels, controls, evaluation) has its own."""

from __future__ import annotations

import numpy as np


def seed_for(*parts: int | str) -> int:
    """A 31-bit seed derived from ``parts`` (chain seed, level, variant...), stable across runs.

    :param parts: ints or strings identifying the random stream.
    """
    # Every byte of a string counts (SeedSequence takes ints of any size): keeping only the low 32
    # bits kept only the first 4 characters, so "random_mask" and "random_reinit" shared a seed.
    words = [p if isinstance(p, int) else int.from_bytes(p.encode(), "little") for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0] % (2**31 - 1))
