"""How a job stops early: interrupts (Ctrl-C, SIGTERM) and OS errors, each as one line and an exit code.

SIGINT arrives as :class:`KeyboardInterrupt`; :func:`sigterm_interrupts` makes SIGTERM (what ``kill``,
SLURM and container runtimes send) arrive the same way, as :class:`Interrupted`, so both unwind
through ``finally`` blocks (W&B runs are finished as failed, the progress bar stops) instead of
killing the process mid-write. Exit codes follow the shell: 128 + the signal number.

Writing results can fail for reasons the user fixes outside rl_tickets (a full disk, a read-only or
foreign directory): :func:`os_error_line` says what happened and what to do. Nothing half-written is
ever marked complete (a level's COMPLETE is written last), so a rerun after the fix resumes.
"""

from __future__ import annotations

import errno
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

# errno -> what to do about it
ADVICE = {
    errno.ENOSPC: "free some space (or choose another root=) and run the same command again",
    errno.EDQUOT: "free some space (or choose another root=) and run the same command again",
    errno.EROFS: "choose a root= on a writable file system",
    errno.EACCES: "choose a root= you can write to, or fix its permissions",
    errno.EPERM: "choose a root= you can write to, or fix its permissions",
    errno.ENOTDIR: "a part of that path is a file; choose another root=",
}


class Interrupted(BaseException):
    """A signal asked the job to stop (a BaseException, like KeyboardInterrupt: ``except Exception``
    blocks in libraries must not swallow it).

    :param signum: the signal number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: FrameType | None) -> None:
    """Signal handler: raise :class:`Interrupted` in the main thread."""
    raise Interrupted(signum)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Interrupted` (the previous handler is restored after)."""
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_signal(error: BaseException) -> signal.Signals | None:
    """The signal behind an interrupt (SIGINT for KeyboardInterrupt), or None for anything else.

    :param error: a raised exception.
    """
    if isinstance(error, KeyboardInterrupt):
        return signal.SIGINT
    if isinstance(error, Interrupted):
        return signal.Signals(error.signum)
    return None


def signal_name(error: KeyboardInterrupt | Interrupted) -> str:
    """SIGINT or SIGTERM (the name of the signal behind an interrupt).

    :param error: the interrupt.
    """
    signum = interrupt_signal(error)
    return signum.name if signum is not None else "interrupt"


def exit_code(error: BaseException) -> int:
    """The exit status a job ends with after ``error``: 128 + signal for interrupts, else 1.

    :param error: a raised exception.
    """
    signum = interrupt_signal(error)
    return 128 + int(signum) if signum is not None else 1


def os_error_line(error: OSError) -> str | None:
    """One line for an OS error the user can fix (disk full, read-only, permissions), else None.

    :param error: the error.
    """
    advice = ADVICE.get(error.errno or 0)
    if advice is None:
        return None
    where = f": {error.filename}" if error.filename else ""
    return f"rl-tickets: error: {error.strerror or error}{where}; {advice} (finished levels are kept)"
