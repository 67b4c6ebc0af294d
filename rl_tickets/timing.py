"""Where a level's wall time goes: named, non-overlapping sections of one clock.

A section opened inside another pauses the outer one (an evaluation inside ``learn()`` is evaluation
time, not training time), so sections never count a second twice and their sum never exceeds the
elapsed time. The clock is injectable: benchmarks pass ``time.process_time`` to see through other
jobs' load, tests a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

# The sections of metrics.json's ``time`` record, in the order they are written.
TIME_KEYS = ("train_s", "eval_s", "save_s", "prune_s", "total_s")


class Stopwatch:
    """Accumulates wall time per named section (``with watch.section("eval"): ...``).

    :param clock: seconds as a float (default ``time.perf_counter``).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.totals: dict[str, float] = {}
        self._open: list[str] = []
        self._since = 0.0

    def _charge(self, now: float) -> None:
        """Add the time since the last change to the innermost open section."""
        top = self._open[-1]
        self.totals[top] = self.totals.get(top, 0.0) + now - self._since
        self._since = now

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time the enclosed block as ``name``; an enclosing section is paused meanwhile.

        :param name: the section (e.g. ``train``, ``eval``, ``save``, ``prune``).
        """
        now = self.clock()
        if self._open:
            self._charge(now)
        self._open.append(name)
        self._since = now
        try:
            yield
        finally:
            self._charge(self.clock())
            self._open.pop()

    def seconds(self, name: str) -> float:
        """Total seconds spent in section ``name`` so far (0 if never entered).

        :param name: the section.
        """
        return self.totals.get(name, 0.0)

    def record(self, names: Iterable[str]) -> dict[str, float]:
        """``{"<name>_s": seconds}`` for each name, rounded to 0.1 ms (metrics.json's ``time`` record).

        :param names: section names.
        """
        return {f"{name}_s": round(self.seconds(name), 4) for name in names}


def steps_per_second(steps: int, train_s: float) -> float | None:
    """Training throughput: steps (env steps or iterations) per second of training time alone.

    :param steps: steps trained in the level.
    :param train_s: seconds spent training (evaluation and saving excluded).
    :return: None when nothing was trained or no time was measured.
    """
    return round(steps / train_s, 2) if steps > 0 and train_s > 0 else None


def recorded_seconds(record: dict[str, float]) -> float:
    """The seconds one ``metrics.json`` ``time`` record accounts for, each counted once.

    ``total_s`` already includes the sections (from the start of the level's preparation to its mask
    on disk), so it is the answer when present; a record without it (a stability copy's, an older
    level's) is the sum of its sections.

    :param record: the ``time`` entry, e.g. ``{"train_s": 47.6, "eval_s": 0.8, "total_s": 48.5}``.
    """
    if "total_s" in record:
        return float(record["total_s"])
    return sum(float(record.get(key, 0.0)) for key in TIME_KEYS)
