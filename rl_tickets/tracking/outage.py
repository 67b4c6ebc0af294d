"""Bounded W&B outages: one quick probe of the server per process, and the verdict kept for the process.

``wandb.init`` against a server that accepts connections and never answers gives up only after its
``init_timeout`` plus a 10 s grace (wandb 0.31, measured here: 15.6 s at ``init_timeout=5``, 25.6 s at
15); a closed port costs about as much. So before an online init, :meth:`Outage.reachable` sends one
HTTP request with a :data:`PROBE_S` timeout: a server that does not answer counts as down, and every
later run of the process goes offline at once. An init that still fails after an answered probe also
marks the server down, and its timeout is capped (:meth:`Outage.init_timeout`) so that probe and init
together stay within :data:`BUDGET_S`.

Why a process-level object (:data:`PROCESS`) and not the mirror's own state: a Hydra multirun runs its
jobs one after another in one process, each with its own mirror; the first job's verdict is what
spares the later jobs the wait. Tests pass their own :class:`Outage`.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

BUDGET_S = 20.0  # the most one process waits for an unreachable W&B server
PROBE_S = 4.0  # one HTTP request; a live server answers in well under a second
GRACE_S = 10.7  # what wandb.init waits beyond its init_timeout before it raises
DEFAULT_URL = "https://api.wandb.ai"


def server_url() -> str:
    """The W&B server this process logs to (``WANDB_BASE_URL``, else W&B's cloud)."""
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_URL


@dataclass
class Outage:
    """Which W&B servers answered or did not, and how long this process has waited on them.

    :param down: servers found unreachable: later runs go offline without trying.
    :param up: servers that answered the probe.
    :param spent_s: seconds spent on probes and failed inits.
    """

    down: set[str] = field(default_factory=set)
    up: set[str] = field(default_factory=set)
    spent_s: float = 0.0

    def reachable(self, url: str) -> bool:
        """Whether ``url`` answers an HTTP request within :data:`PROBE_S` (asked once per process).

        :param url: the server's base URL.
        """
        if url in self.down or url in self.up:
            return url in self.up
        started = time.monotonic()
        try:
            urllib.request.urlopen(url, timeout=PROBE_S).close()
            answered = True
        except urllib.error.HTTPError:  # an error status is still an answer
            answered = True
        except (OSError, ValueError):  # refused, timed out, no such host, a malformed URL
            answered = False
        self.spent_s += time.monotonic() - started
        (self.up if answered else self.down).add(url)
        return answered

    def init_timeout(self, wanted: float) -> float:
        """``init_timeout`` for the next online init: what the user asked, capped by what is left of the
        budget after wandb's own grace period (at least 1 s).

        :param wanted: ``logger.init_timeout``.
        """
        return max(1.0, min(wanted, BUDGET_S - GRACE_S - self.spent_s))

    def failed(self, url: str, seconds: float) -> None:
        """Record an online init that failed after ``seconds``: ``url`` is down for this process.

        :param url: the server's base URL.
        :param seconds: how long the init took to fail.
        """
        self.down.add(url)
        self.up.discard(url)
        self.spent_s += seconds


PROCESS = Outage()
