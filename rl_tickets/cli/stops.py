"""How a job stops early: interrupts (Ctrl-C, SIGTERM) and OS errors, each as one line and an exit code.

SIGINT arrives as :class:`KeyboardInterrupt`; :func:`interrupts` makes SIGTERM (what ``kill``, SLURM
and container runtimes send) arrive the same way, as :class:`Interrupted`, so both unwind through
``finally`` blocks (W&B runs are finished as failed, the progress bar stops) instead of killing the
process mid-write. Exit codes follow the shell: 128 + the signal number.

Python cannot deliver an exception raised while it runs a ``__del__`` method or a weakref callback (it
prints "Exception ignored" and goes on): an interrupt that lands there, e.g. in W&B's teardown, would be
lost and the job would end with status 0. So :func:`interrupts` also records every signal it raises,
and :func:`raise_pending` raises a recorded one again where the job can act on it.

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


# Signals raised by the handler and not yet acted on (see raise_pending).
_pending: list[int] = []


def _interrupt(signum: int) -> BaseException:
    """The exception a signal raises: KeyboardInterrupt for SIGINT (as Python does), else Interrupted."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum)


def _raise(signum: int, frame: FrameType | None) -> None:
    """Signal handler: record the signal and raise its interrupt in the main thread."""
    _pending.append(signum)
    raise _interrupt(signum)


@contextmanager
def interrupts() -> Iterator[None]:
    """Within the block, SIGINT raises KeyboardInterrupt and SIGTERM :class:`Interrupted`, each recorded
    for :func:`raise_pending` (the previous handlers are restored after)."""
    previous = {signum: signal.signal(signum, _raise) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def acknowledge() -> None:
    """The job has acted on its interrupts (it is stopping because of them): forget them."""
    _pending.clear()


def raise_pending() -> None:
    """Raise again the last interrupt :func:`interrupts` raised if nothing acted on it (it was swallowed
    in a ``__del__`` or a weakref callback, so the job went on as if it had not come)."""
    if _pending:
        signum = _pending[-1]
        _pending.clear()
        raise _interrupt(signum)


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
