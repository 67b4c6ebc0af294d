"""Directory locks that hold on a cluster's shared file system (chains, the shared dense level, workers).

Why not ``fcntl.flock`` (or ``filelock``, whose Unix lock *is* ``flock``): on NFS, flock is emulated by
byte-range locks through the lock manager (or stays local to one client with ``local_lock``), and on
Lustre it is off, client-local (``localflock``) or cluster-wide only with the ``flock`` mount option:
two jobs on two nodes could both "hold" a chain. Creating a name atomically works everywhere, so:

* **Acquire**: write the record (host, pid, boot id, a random token, the time) to a uniquely named
  temporary file, then ``os.link`` it to the lock name, which fails atomically if the name exists, on
  every NFS version and Lustre (``O_CREAT|O_EXCL`` was not atomic on NFSv2 and old clients). A
  retransmitted NFS request can fail after the first one worked, so the temporary file's link count
  decides (2: ours), as ``open(2)`` advises. The name only ever appears with a complete record.
* **Heartbeat**: a daemon thread touches (``os.utime``) the lock file every ``heartbeat_s``: its mtime is the
  heartbeat. On NFS ``utime(path, None)`` makes the *server* stamp its clock, and a waiter measures the
  age against the mtime of a temporary file it has just written (the same clock), so no two hosts'
  clocks are compared (Lustre stamps clients' clocks: NTP skew is tiny next to ``stale_s``). Touching,
  unlike rewriting the record, can never overwrite a successor's record. If the record no longer carries
  our token, the lock was taken over: :attr:`Lock.lost` turns true and one line is logged.
* **Stale**: a lock is taken over when its owner is provably dead (same host and boot id, pid gone), its
  host rebooted (same host, another boot id), or its heartbeat is older than ``stale_s`` (or 3 of the
  holder's own beats). Takeovers are serialized by a second, short-lived lock file (``.lock.takeover``);
  under it the stale file is renamed aside (atomic: exactly one file moves) and checked to be the very
  record judged stale (token and heartbeat); anything else is put back.
* **Release**: the lock file is removed only if it still carries our token (renamed aside, checked).

Not reentrant: a thread asking again for a directory it holds gets :class:`LockNesting` (it would wait
for itself for ever); another thread of the same process waits its turn.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LOCK_NAME = ".lock"
GUARD_NAME = ".lock.takeover"
logger = logging.getLogger(__name__)


def _boot_id() -> str:
    """This machine's boot id (changes at every reboot), or "" where the kernel does not tell."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


HOST, BOOT_ID = socket.gethostname(), _boot_id()


@dataclass(frozen=True)
class Owner:
    """Who holds a lock: one acquisition by one process (picklable: pass it to worker processes)."""

    host: str
    pid: int
    boot_id: str
    token: str  # random per acquisition: the same process locking twice is two owners

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


class LockError(RuntimeError):
    """A lock could not be taken as asked."""


class LockNesting(LockError):
    """This thread already holds the lock it asks for (waiting would deadlock)."""


class LockTimeout(LockError, TimeoutError):
    """The lock stayed held by someone else for longer than ``timeout_s``."""


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    return True


def _read(path: Path) -> tuple[dict[str, Any] | None, float | None]:
    """The record of a lock file and its mtime (the heartbeat); (None, None) if there is none.

    Opening the file (not ``stat`` by name) makes an NFS client revalidate it (close-to-open). A record
    that does not parse (an empty ``.lock`` left by the old flock scheme) is None: only age makes it stale.
    """
    try:
        with open(path, "rb") as handle:
            mtime, data = os.fstat(handle.fileno()).st_mtime, handle.read()
    except FileNotFoundError:
        return None, None
    try:
        record = json.loads(data)  # and check the fields the rest of the module converts:
        _owner_of(record), float(record.get("acquired", 0.0)), float(record.get("heartbeat_s", 0.0))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, mtime
    return record, mtime


def _owner_of(record: dict[str, Any] | None) -> Owner | None:
    """The owner in a lock record."""
    if record is None:
        return None
    return Owner(str(record["host"]), int(record["pid"]), str(record["boot_id"]), str(record["token"]))


def _write(path: Path, owner: Owner, heartbeat_s: float) -> float:
    """Write a record to ``path``; return the file's mtime (the file system's "now")."""
    record = {**asdict(owner), "acquired": time.time(), "heartbeat_s": heartbeat_s}
    path.write_text(json.dumps(record))
    return path.stat().st_mtime


def _link(tmp: Path, path: Path) -> bool:
    """Create ``path`` as a second name of ``tmp`` if it does not exist; return whether we did."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        pass  # usually taken; on NFS possibly our own retransmitted LINK: the link count tells
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
        # No hard links on this file system (some FUSE mounts): O_EXCL, atomic on local disks and NFSv3+.
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(tmp.read_bytes())
        return True
    try:
        return os.stat(tmp).st_nlink == 2
    except OSError:
        return False


def _remove_if(path: Path, scratch: Path, token: str | None, mtime: float | None = None) -> bool:
    """Remove ``path`` if it is still the record with this token (and heartbeat, if given).

    Checking and then unlinking could remove a file created in between; renaming the file aside first
    moves exactly one file, which is then checked at leisure and put back if it is not the one meant.
    """
    try:
        os.rename(path, scratch)
    except FileNotFoundError:
        if not os.path.lexists(scratch):  # (a retransmitted NFS RENAME can fail after it worked)
            return False
    record, moved = _read(scratch)
    owner = _owner_of(record)
    if (owner.token if owner else None) == token and (mtime is None or moved == mtime):
        scratch.unlink(missing_ok=True)
        return True
    try:
        os.link(scratch, path)  # someone else's lock: put it back
    except OSError:
        logger.error("lock file %s was replaced while being put back; its owner %s lost it", path, owner)
    scratch.unlink(missing_ok=True)
    return False


def _stale(record: dict[str, Any] | None, age: float, stale_s: float) -> str | None:
    """Why a lock record is stale, or None if it is live. ``age``: seconds since its heartbeat."""
    # A holder that beats slowly (long heartbeat_s) is not stale before three of its beats are missed.
    limit = max(stale_s, 3.0 * float(record.get("heartbeat_s", 0.0))) if record else stale_s
    owner = _owner_of(record)
    if owner is not None and owner.host == HOST:
        if owner.boot_id and BOOT_ID and owner.boot_id != BOOT_ID:
            return f"{owner.host} rebooted since it was taken"
        if not _alive(owner.pid):
            return f"process {owner.pid} is gone"
    if age > limit:
        return f"its heartbeat is {age:.1f} s old"
    return None


def _describe(directory: Path, record: dict[str, Any] | None) -> str:
    """'the lock on DIR held by host:pid since TIME' for messages."""
    if record is None:
        return f"the lock on {directory} (unreadable lock file)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record.get("acquired", 0.0))))
    return f"the lock on {directory} held by {_owner_of(record)} since {since}"


_HELD: dict[tuple[str, int, int], Lock] = {}  # (directory, pid, thread) -> the lock it holds
_HELD_GUARD = threading.Lock()


class Lock:
    """A held directory lock; :func:`acquire` or :func:`locked` make one. Release it exactly once."""

    def __init__(self, directory: Path, owner: Owner, heartbeat_s: float) -> None:
        self.directory, self.owner, self.heartbeat_s = directory, owner, heartbeat_s
        self.path = directory / LOCK_NAME
        self.acquired = time.time()
        self._key = (str(directory.resolve()), owner.pid, threading.get_ident())
        self._lost, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lock heartbeat {directory}", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> bool:
        """Whether the heartbeat found the lock taken over by someone else (we stalled too long)."""
        return self._lost.is_set()

    def is_held(self) -> bool:
        """Whether the lock file still carries this acquisition's token (reads the file)."""
        return not self.lost and _owner_of(_read(self.path)[0]) == self.owner

    def _beat(self) -> None:
        """Touch the lock file every ``heartbeat_s`` while it is still ours (the heartbeat thread)."""
        while not self._stop.wait(self.heartbeat_s):
            try:
                record, _ = _read(self.path)
                if _owner_of(record) != self.owner:
                    self._lost.set()
                    logger.error("lost %s: taken over as stale", _describe(self.directory, record))
                    return
                os.utime(self.path)
            except OSError as error:  # a file server hiccup: the next beat tries again
                logger.debug("heartbeat on %s failed: %s", self.path, error)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file if it is still ours (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        with _HELD_GUARD:
            if _HELD.get(self._key) is self:
                del _HELD[self._key]
        if _owner_of(_read(self.path)[0]) == self.owner:  # not ours any more: leave it be
            _remove_if(self.path, self.directory / f"{LOCK_NAME}.{self.owner.token}.out", self.owner.token)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _take_over(directory: Path, owner: Owner, stale_s: float, say: Callable[[str], None]) -> bool:
    """Remove a stale lock file, serialized with other takers by the guard file; return whether we did.

    Without it, a second taker who judged the same record stale could rename aside the *fresh* lock the
    first one created meanwhile. A guard left by a dead taker goes stale like a lock.
    """
    path, guard = directory / LOCK_NAME, directory / GUARD_NAME
    tmp = directory / f"{LOCK_NAME}.{owner.token}.guard"
    try:
        now = _write(tmp, owner, 0.0)
        if not _link(tmp, guard):  # someone else is taking over (or died doing so)
            record, mtime = _read(guard)
            if mtime is not None and _stale(record, now - mtime, stale_s):
                _remove_if(guard, tmp.with_suffix(".out"), getattr(_owner_of(record), "token", None), mtime)
            return False
        try:
            record, mtime = _read(path)
            why = _stale(record, now - mtime, stale_s) if mtime is not None else None
            token = getattr(_owner_of(record), "token", None)
            if why and _remove_if(path, tmp.with_suffix(".out"), token, mtime):
                say(f"took over {_describe(directory, record)}: {why}")
                return True
            return False
        finally:
            _remove_if(guard, tmp.with_suffix(".out"), owner.token)
    finally:
        tmp.unlink(missing_ok=True)


def acquire(
    directory: Path,
    *,
    on_wait: Callable[[str], None] | None = None,
    heartbeat_s: float = 30.0,
    stale_s: float = 300.0,
    poll_s: float = 1.0,
    report_s: float = 60.0,
    timeout_s: float | None = None,
) -> Lock:
    """Take the lock on ``directory`` (created if missing), waiting while someone else holds it.

    :param directory: the directory to lock; the lock file is ``directory/.lock``.
    :param on_wait: told, when the wait starts and every ``report_s`` after, which lock it waits for,
        who holds it since when and how long it has waited; also told of takeovers. Default: logged as
        warnings (a job that silently waits hours looks hung).
    :param heartbeat_s: how often the holder touches the lock file.
    :param stale_s: a lock whose heartbeat is older than this is taken over (must exceed heartbeat_s).
    :param poll_s: how often a waiter looks again.
    :param report_s: how often a waiter says it is still waiting.
    :param timeout_s: give up after this long with :class:`LockTimeout`; None waits for ever.
    :return: the held lock; :meth:`Lock.release` it (or use :func:`locked`).
    :raises LockNesting: this thread holds the lock on ``directory`` already.
    """
    if stale_s <= heartbeat_s:
        raise ValueError(
            f"stale_s ({stale_s}) must exceed heartbeat_s ({heartbeat_s}): live locks look stale"
        )
    directory.mkdir(parents=True, exist_ok=True)
    owner = Owner(HOST, os.getpid(), BOOT_ID, secrets.token_hex(16))
    key = (str(directory.resolve()), owner.pid, threading.get_ident())
    if key in _HELD:
        raise LockNesting(f"this thread already holds the lock on {directory}; nesting it would deadlock")
    say = on_wait or (lambda line: logger.warning("%s", line))
    path, tmp = directory / LOCK_NAME, directory / f"{LOCK_NAME}.{owner.token}.tmp"
    start, next_report = time.monotonic(), 0.0
    while True:
        try:
            now = _write(tmp, owner, heartbeat_s)  # a fresh record each try: "acquired" is when it won
            if _link(tmp, path):
                break
        finally:
            tmp.unlink(missing_ok=True)
        record, mtime = _read(path)
        if mtime is None:
            continue  # released meanwhile: try again at once
        if _stale(record, now - mtime, stale_s) and _take_over(directory, owner, stale_s, say):
            continue  # removed: try to create it at once (another waiter may still be first)
        waited = time.monotonic() - start
        if timeout_s is not None and waited >= timeout_s:
            raise LockTimeout(f"gave up after {waited:.1f} s waiting for {_describe(directory, record)}")
        if waited >= next_report:
            say(f"waiting for {_describe(directory, record)} ({waited:.0f} s so far)")
            next_report = waited + report_s
        time.sleep(poll_s if timeout_s is None else max(0.0, min(poll_s, timeout_s - waited)))
    lock = Lock(directory, owner, heartbeat_s)
    with _HELD_GUARD:
        _HELD[key] = lock
    return lock


@contextmanager
def locked(
    directory: Path,
    *,
    on_wait: Callable[[str], None] | None = None,
    heartbeat_s: float = 30.0,
    stale_s: float = 300.0,
    poll_s: float = 1.0,
    report_s: float = 60.0,
    timeout_s: float | None = None,
) -> Iterator[Lock]:
    """Hold the lock on ``directory`` for the ``with`` block (two jobs never train one chain at once).

    Takes the same arguments as :func:`acquire`; the lock is released however the block ends.
    """
    lock = acquire(
        directory,
        on_wait=on_wait,
        heartbeat_s=heartbeat_s,
        stale_s=stale_s,
        poll_s=poll_s,
        report_s=report_s,
        timeout_s=timeout_s,
    )
    try:
        yield lock
    finally:
        lock.release()


def read_owner(directory: Path) -> Owner | None:
    """Who holds the lock on ``directory`` now, or None (free, or an unreadable lock file)."""
    return _owner_of(_read(directory / LOCK_NAME)[0])


def is_held_by(directory: Path, owner: Owner) -> bool:
    """Whether that very acquisition still holds the lock on ``directory`` (a worker asks about its parent).

    Also False when the owner's process on this machine is gone (its file stays until taken over).
    """
    if read_owner(directory) != owner:
        return False
    return not (owner.host == HOST and owner.boot_id == BOOT_ID and not _alive(owner.pid))


def holds(directory: Path) -> bool:
    """Whether this process (any thread) holds the lock on ``directory`` and the lock file still says so."""
    where, pid = str(directory.resolve()), os.getpid()
    with _HELD_GUARD:
        locks = [lock for (d, p, _), lock in _HELD.items() if d == where and p == pid]
    return any(lock.is_held() for lock in locks)
