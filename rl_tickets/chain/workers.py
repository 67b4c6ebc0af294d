"""A small pool of local worker processes that runs a dependency graph of jobs (``workers=N``).

The runner hands it one task per (level, variant) with the tasks that must finish first; a task
starts as soon as its dependencies are done and a worker is free, in the order given. Workers are
started with ``spawn`` (no forked copies of torch's thread pools or of a CUDA context), each with its
torch threads pinned, and are kept for the whole run. Each worker talks to the parent over its own
pipe: the parent sends a job, the worker sends progress messages (training curves) and then the
result, so the parent always knows which level each worker is training. W&B runs, the progress
display and the locks stay in the parent.

Workers never outlive the parent. Each asks the kernel to SIGKILL it when the parent dies
(``PR_SET_PDEATHSIG``, Linux) and, as a fallback where that is missing, a thread watches the parent's
process id; no Manager or other helper process exists to be orphaned. The pool stops its workers on
every exit path (terminated on an error or interrupt). A worker that dies (killed, out of memory)
loses only the level it was training: the pool says so in one line and trains that level once more in
a fresh worker; a second death of the same level stops the run with :class:`WorkerDied`.

``PR_SET_PDEATHSIG`` fires when the *thread* that started the child ends, so workers are only ever
started from the thread that runs the pool (the runner's thread, which outlives it).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

import torch

Key = tuple[int, str]
# Seconds between checks for messages while jobs run (curves reach W&B and the bar this often).
POLL_S = 0.2
# How often a worker checks that its parent is still there (the fallback to PR_SET_PDEATHSIG).
WATCH_S = 1.0
# Seconds an idle worker gets to exit after being told to, before it is killed.
STOP_S = 10.0
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
RETRIES = 1  # fresh workers a level gets after the one training it died
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One job of the graph.

    :param key: (level, variant).
    :param after: keys that must be done first; keys that are not tasks of the graph count as done.
    """

    key: Key
    after: tuple[Key, ...] = ()


class WorkerDied(RuntimeError):
    """A worker process died (twice) while training a level: the run stopped, finished levels are kept.

    :param key: the (level, variant) it was training.
    :param how: ``killed by SIGKILL`` or ``exit status N``.
    """

    def __init__(self, key: Key, how: str) -> None:
        super().__init__(key, how)
        self.key, self.how = key, how

    def __str__(self) -> str:
        return f"a worker process died ({self.how}) while training level {self.key[0]} {self.key[1]}, twice"


def threads_per_worker(requested: int, available: int, workers: int) -> int:
    """Torch threads of each worker: ``threads`` if set, else the parent's threads divided among the workers.

    Dividing keeps N workers from oversubscribing the cores (MLP agents run one thread anyway).

    :param requested: the ``threads`` setting (0 = automatic).
    :param available: the parent's torch threads (what one job would have used).
    :param workers: worker processes.
    """
    return requested if requested > 0 else max(1, available // workers)


def available_cores() -> int:
    """The CPU cores this process may run on (``os.sched_getaffinity``: what SLURM and taskset allow)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def die_with_parent(parent: int) -> None:
    """Make this process end when ``parent`` does: PR_SET_PDEATHSIG where the kernel has it, plus a
    thread that watches the parent's process id (a dead parent's children are re-parented).

    :param parent: the process id of the parent that started this one.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl (another libc): the watch thread alone
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), name="parent watch", daemon=True).start()


def _watch(parent: int) -> None:
    """Exit at once (no cleanup: the level in progress is only a .partial) when the parent is gone."""
    while True:
        time.sleep(WATCH_S)
        if os.getppid() != parent:
            os._exit(1)


class _Outbox:
    """What a job sees as its outbox: ``put`` sends a message up the worker's pipe, before its result."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def put(self, message: Any) -> None:
        """Send a message to the parent's ``on_message``."""
        self.connection.send(("message", message))


def _portable(error: Exception) -> Exception:
    """The error as the parent can receive it: with the worker's traceback as a note, picklable."""
    error.add_note("in a worker process:\n" + "".join(traceback.format_exception(error)).rstrip())
    try:
        pickle.dumps(error)
        return error
    except Exception:  # an exception type that does not pickle: its text survives
        return RuntimeError(f"{type(error).__name__}: {error}")


def _serve(connection: Connection, parent: int, threads: int, modules: Sequence[str]) -> None:
    """A worker's life: die with the parent, pin threads, import, then run jobs until told to stop."""
    die_with_parent(parent)
    # Ctrl-C reaches the whole process group: the parent alone handles it (it stops the workers), so
    # workers print no KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    for name in modules:
        importlib.import_module(name)
    outbox = _Outbox(connection)
    while True:
        try:
            order = connection.recv()
        except (EOFError, OSError):  # the parent closed the pipe (or is gone)
            return
        if order is None:
            return
        job, key = order
        try:
            reply = ("done", key, job(key, outbox))
        except Exception as error:
            reply = ("error", key, _portable(error))
        connection.send(reply)


@contextmanager
def _standard_start_method() -> Iterator[None]:
    """Let processes start from inside a loky worker (a job of Hydra's joblib launcher).

    loky makes ``"loky"`` multiprocessing's default start method in its workers, and a spawned child
    replays the parent's default, which it cannot find. While this pool starts its processes, the
    default is ``spawn``; the previous one is restored afterwards.
    """
    current = multiprocessing.get_start_method(allow_none=True)
    if current is None or current in multiprocessing.get_all_start_methods():
        yield
        return
    multiprocessing.set_start_method("spawn", force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(current, force=True)


@dataclass
class _Worker:
    """One worker process, the parent's end of its pipe, and the task it is running."""

    process: BaseProcess
    connection: Connection
    task: Task | None = None


def how_it_ended(process: BaseProcess) -> str:
    """``killed by SIGKILL`` or ``exit status N`` for a process that has ended.

    :param process: the ended process.
    """
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class WorkerPool:
    """``with WorkerPool(n, threads) as pool: pool.run(tasks, job, ...)``; workers start at once.

    :param workers: processes.
    :param threads: torch threads per process.
    :param modules: imported by each worker when it starts (so it is ready when the first task comes).
    :param say: told one line when a worker dies and its level is trained again (default: logged).
    """

    def __init__(
        self,
        workers: int,
        threads: int,
        modules: Sequence[str] = (),
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.threads, self.modules = threads, tuple(modules)
        self.say = say or (lambda line: log.warning("%s", line))
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        try:
            for _ in range(workers):
                self._workers.append(self._start())
        except BaseException:
            self.close(abort=True)
            raise

    def _start(self) -> _Worker:
        """A fresh worker process (importing its modules while the parent goes on)."""
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_serve, args=(theirs, os.getpid(), self.threads, self.modules), name="rl_tickets worker"
        )
        with _standard_start_method():
            process.start()
        theirs.close()
        return _Worker(process, ours)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        # Ctrl-C, SIGTERM or an error: stop the levels now (a level cut short is only a .partial).
        self.close(abort=kind is not None)

    def close(self, abort: bool) -> None:
        """Stop every worker: idle ones are told to exit, busy ones (or all, when aborting) terminated.

        :param abort: terminate every worker at once.
        """
        for worker in self._workers:
            if abort or worker.task is not None:
                worker.process.terminate()
            else:
                try:
                    worker.connection.send(None)
                except OSError:
                    pass  # already gone
        deadline = time.monotonic() + STOP_S
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
        self._workers = []

    def run(
        self,
        tasks: Sequence[Task],
        job: Callable[[Key, Any], Any],
        on_message: Callable[[Any], None],
        on_done: Callable[[Key, Any], None],
    ) -> None:
        """Run every task once its dependencies are done; return when all are done.

        :param tasks: the graph, in priority order (among ready tasks, earlier ones start first).
        :param job: a picklable callable ``job(key, outbox)`` run in a worker; ``outbox.put(message)``
            sends a message to ``on_message``.
        :param on_message: called in this process for every message, in the order sent.
        :param on_done: called in this process with (key, the job's return value) when a task ends,
            after its messages.
        :raises Exception: the first job's error (or :class:`WorkerDied`), once the jobs already
            running have ended.
        """
        run = _Run(self, tasks, job, on_message, on_done)
        while run.pending or run.busy():
            if run.failure is None:
                run.assign()
            busy = run.busy()
            if not busy:
                if run.failure is not None:
                    break
                raise ValueError(f"tasks wait on each other: {[t.key for t in run.pending]}")
            wait([w.connection for w in busy] + [w.process.sentinel for w in busy], timeout=POLL_S)
            for worker in busy:
                run.collect(worker)
        if run.failure is not None:
            raise run.failure

    def replace(self, worker: _Worker) -> _Worker:
        """Put a fresh worker in the place of one that died.

        :param worker: the dead worker.
        """
        worker.connection.close()
        worker.process.join()
        fresh = self._start()
        self._workers[self._workers.index(worker)] = fresh
        return fresh


class _Run:
    """The state of one :meth:`WorkerPool.run`: what waits, what is done, how often a level was tried."""

    def __init__(
        self,
        pool: WorkerPool,
        tasks: Sequence[Task],
        job: Callable[[Key, Any], Any],
        on_message: Callable[[Any], None],
        on_done: Callable[[Key, Any], None],
    ) -> None:
        self.pool, self.job, self.on_message, self.on_done = pool, job, on_message, on_done
        self.keys = {task.key for task in tasks}
        self.pending, self.done = list(tasks), set[Key]()
        self.deaths: dict[Key, int] = {}
        self.failure: BaseException | None = None

    def busy(self) -> list[_Worker]:
        """The workers running a task."""
        return [w for w in self.pool._workers if w.task is not None]

    def assign(self) -> None:
        """Give ready tasks to idle workers, in priority order."""
        for task in [t for t in self.pending if all(k in self.done or k not in self.keys for k in t.after)]:
            idle = [w for w in self.pool._workers if w.task is None]
            if not idle:
                return
            self.pending.remove(task)
            idle[0].task = task
            idle[0].connection.send((self.job, task.key))

    def collect(self, worker: _Worker) -> None:
        """Handle what a busy worker has sent; then, if it died, retry its level or stop the run."""
        while worker.task is not None:
            try:
                if not worker.connection.poll():
                    break
                kind, *body = worker.connection.recv()
            except (EOFError, OSError):
                break  # it is gone: see below
            if kind == "message":
                self.on_message(body[0])
                continue
            key, value = body
            worker.task = None
            if kind == "done":
                self.done.add(key)
                self.on_done(key, value)
            elif self.failure is None:
                self.failure = value  # let the running jobs finish their levels, start nothing new
        if worker.task is None or worker.process.is_alive():
            return
        task = worker.task
        worker.task = None
        worker.process.join()
        how = how_it_ended(worker.process)
        self.pool.replace(worker)
        self.deaths[task.key] = self.deaths.get(task.key, 0) + 1
        if self.deaths[task.key] > RETRIES:
            self.failure = self.failure or WorkerDied(task.key, how)
            return
        self.pool.say(
            f"rl-tickets: a worker process died ({how}) while training level {task.key[0]} {task.key[1]}; "
            "training it again in a fresh worker"
        )
        self.pending.insert(0, task)
