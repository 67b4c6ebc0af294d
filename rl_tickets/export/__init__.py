"""Tickets you can ship: a finished level as plain SB3, compact, sparse and TorchScript files.

- :mod:`~rl_tickets.export.level`: read a finished level directory; user errors;
- :mod:`~rl_tickets.export.plain`: the plain SB3 checkpoint (SB3's policy class, no mask buffers);
- :mod:`~rl_tickets.export.compact`: dead units removed, constants folded, a smaller ``net_arch``;
- :mod:`~rl_tickets.export.sparse`: CSR weights in ``sparse.pt`` (``weights_only=True`` loadable);
- :mod:`~rl_tickets.export.actor`: the deterministic actor as plain ops, dense/sparse/TorchScript;
- :mod:`~rl_tickets.export.measure`: bytes and interleaved median latencies;
- :mod:`~rl_tickets.export.bundle`: all of it for one level, checked, written atomically;
- :mod:`~rl_tickets.export.cli`: ``rl-tickets-export``.
"""

from rl_tickets.export.bundle import export_level
from rl_tickets.export.level import ExportError

__all__ = ["ExportError", "export_level"]
