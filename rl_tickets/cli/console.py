"""Plain-text output for the terminal and the log file: tables with fixed columns, never wrapped.

A terminal library would wrap a table (and a path in its title) to the terminal's width, and to 80
columns when piped; a plain table reads the same on a terminal, in a pipe and in Hydra's log file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence


def say(text: str, logger: logging.Logger) -> None:
    """Print ``text`` on stdout and log it at INFO.

    Under Hydra the INFO record lands in the run's log file; Hydra's console handler is set to show
    only warnings (``conf/config.yaml``), so nothing prints twice.

    :param text: what to show.
    :param logger: the caller's logger.
    """
    print(text, flush=True)
    logger.info(text)


def fmt_value(value: object, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (0.944 and 0.928 stay apart; 500.0 prints 500); '–' if missing.

    :param value: a number, a numeric string, or anything else (printed as is).
    :param digits: significant digits.
    """
    if value is None or value == "":
        return "–"
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    return "–" if math.isnan(number) else f"{number:.{digits}g}"


def _is_number(text: str) -> bool:
    """Whether a cell reads as a number (or the missing-value dash), i.e. aligns right."""
    try:
        float(text)
    except ValueError:
        return text == "–"
    return True


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns separated by two spaces (numbers right-aligned, text left), a dashed rule under the header.

    :param headers: column names.
    :param rows: cells (converted with ``str``).
    :return: the table, lines joined by newlines (no trailing newline).
    """
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    right = [all(_is_number(row[i]) for row in cells[1:]) for i in range(len(headers))]
    lines = [
        "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
