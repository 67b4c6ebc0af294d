"""The report (``rl-tickets-report ROOT``): loading results, statistics, tables, plots, mask analysis.

Modules: :mod:`.loading` (chains and experiments on disk), :mod:`.stats` (IQM, bootstrap CIs, paired
verdicts), :mod:`.tables` (per-seed, summary and verdict tables), :mod:`.markdown` and
:mod:`.formatting` (text), :mod:`.plots` (figures), :mod:`.masks` (mask analysis), :mod:`.cli` (the
command line).
"""

from rl_tickets.report.cli import main

__all__ = ["main"]
