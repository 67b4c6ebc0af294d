"""A small pool of local worker processes that runs a dependency graph of jobs (``workers=N``).

The runner hands it one task per (level, variant) with the tasks that must finish first; a task
starts as soon as its dependencies are done and a worker is free, in the order given. Workers are
started with ``spawn`` (no forked copies of torch's thread pools or of a CUDA context), each with its
torch threads pinned, and are kept for the whole run. A job sends progress messages (training curves)
through a queue; the parent forwards them and is told when each task is done, in its own process,
so W&B runs, the progress display and the locks stay where they were.
"""

from __future__ import annotations

import importlib
import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch

Key = tuple[int, str]
# Seconds between checks for messages while jobs run (curves reach W&B and the bar this often).
POLL_S = 0.2


@dataclass(frozen=True)
class Task:
    """One job of the graph.

    :param key: (level, variant).
    :param after: keys that must be done first; keys that are not tasks of the graph count as done.
    """

    key: Key
    after: tuple[Key, ...] = ()


def threads_per_worker(requested: int, available: int, workers: int) -> int:
    """Torch threads of each worker: ``threads`` if set, else the parent's threads divided among the workers.

    Dividing keeps N workers from oversubscribing the cores (MLP agents run one thread anyway).

    :param requested: the ``threads`` setting (0 = automatic).
    :param available: the parent's torch threads (what one job would have used).
    :param workers: worker processes.
    """
    return requested if requested > 0 else max(1, available // workers)


def _start_worker(threads: int, modules: Sequence[str]) -> None:
    """Worker initializer: pin torch's threads and import the heavy modules once, up front."""
    # Ctrl-C reaches the whole process group: the parent alone handles it (it stops the workers), so
    # idle workers print no KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    for name in modules:
        importlib.import_module(name)


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


def _ready() -> bool:
    """A no-op job: submitting one per worker starts the workers (and their imports) early."""
    return True


class WorkerPool:
    """``with WorkerPool(n, threads) as pool: pool.run(tasks, job, ...)``; workers start at once.

    :param workers: processes.
    :param threads: torch threads per process.
    :param modules: imported by each worker when it starts (so it is ready when the first task comes).
    """

    def __init__(self, workers: int, threads: int, modules: Sequence[str] = ()) -> None:
        self.workers = workers
        context = multiprocessing.get_context("spawn")
        # The message relay runs no torch: forking it takes milliseconds, where a spawned one would
        # first import the parent's main module (torch, Hydra) while the parent waits. Only a process
        # with one thread is forked (another thread could hold a lock the copy would then wait on).
        single = threading.active_count() == 1
        relay = "fork" if single and "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with _standard_start_method():
            self._manager = multiprocessing.get_context(relay).Manager()
            self._executor = ProcessPoolExecutor(
                workers, mp_context=context, initializer=_start_worker, initargs=(threads, tuple(modules))
            )
            # Workers are started on demand, by submit(); one no-op per worker starts them all now,
            # while the parent is busy elsewhere (the dense level 0).
            for _ in range(workers):
                self._executor.submit(_ready)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is not None and not issubclass(kind, Exception):  # Ctrl-C, SIGTERM: stop the levels now
            for process in list((getattr(self._executor, "_processes", None) or {}).values()):
                process.terminate()  # a level cut short is only a .partial: the rerun trains it again
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._manager.shutdown()

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
        :raises Exception: the first job's error, once the jobs already running have ended.
        """
        outbox = self._manager.Queue()
        keys = {task.key for task in tasks}
        pending, done = list(tasks), set()
        running: dict[Future[Any], Task] = {}

        def forward() -> None:
            while True:
                try:
                    on_message(outbox.get_nowait())
                except queue.Empty:
                    return

        while pending or running:
            for task in [t for t in pending if all(k in done or k not in keys for k in t.after)]:
                if len(running) >= self.workers:
                    break
                pending.remove(task)
                running[self._executor.submit(job, task.key, outbox)] = task
            if not running:
                raise ValueError(f"tasks wait on each other: {[t.key for t in pending]}")
            finished, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
            forward()
            for future in finished:
                task = running.pop(future)
                error = future.exception()
                if error is not None:
                    # Let the running jobs finish their levels (they are valid results), start nothing new.
                    pending.clear()
                    wait(running)
                    forward()
                    raise error
                done.add(task.key)
                on_done(task.key, future.result())
