"""The one background-loop primitive behind every periodic worker of a service process.

* :class:`PeriodicLoop` — a daemon thread calling ``run_once`` every ``period`` seconds. A failing round is
  logged, never fatal; with ``backoff`` the wait doubles after each failure (up to ``max_backoff``) and returns
  to ``period`` after a success; :meth:`~PeriodicLoop.wake` starts a round now (ignored while backing off, so
  waiters cannot turn the backoff into a busy loop); with ``run_at_stop`` :meth:`~PeriodicLoop.stop` runs one
  last round, retrying until its timeout (graceful shutdown: SIGTERM → lifespan → ``stop``).
* :class:`PeriodicFlusher` — that loop configured for the batched writers (exposures, serving records):
  backoff on, one flush at stop, the rows kept named in the log.
* :class:`AsyncPeriodicLoop` — the same contract for a job that must run on the event loop (it awaits
  coroutines bound to it, e.g. unloading models whose batchers live there); stopped by cancelling it.

Users: the exposure writer and the serving recorder (flushers), the config-snapshot refresher and the
allocation scheduler (threads, no backoff), the serving runtime's model unloading (event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

#: How often a helper process (the refresh worker, an event ingestion process) checks that the process that
#: started it is still there (seconds).
PARENT_CHECK_SECONDS = 1.0

MAX_BACKOFF_SECONDS = 10.0
#: Pause between the retries of the last round at stop.
STOP_RETRY_SECONDS = 0.5


def next_wait(current: float, period: float, failed: bool, backoff: bool, max_backoff: float) -> float:
    """The wait before the next round: ``period`` after a success (or without backoff), else double the
    current wait, capped at ``max_backoff`` (never below ``period``)."""
    if not failed or not backoff:
        return period
    return max(period, min(current * 2, max_backoff))


class PeriodicLoop:
    """Runs ``run_once`` in a daemon thread every ``period`` seconds (see the module docstring).

    Args:
        name: the thread's name, also the prefix of its log lines.
        run_once: one round; its return value is ignored, an exception is logged with ``failure()``.
        period: seconds between rounds (the first round runs one period after :meth:`start`).
        backoff: double the wait after a failed round, up to ``max_backoff`` seconds.
        run_at_stop: :meth:`stop` runs one more round after the thread ended (retried until the timeout).
        after_round: called after every round in the thread, failed or not (e.g. a queue-depth gauge).
        failure: the log message of a failed round (called when it fails, so it may count what is kept).
        shutdown_failure: the log message when the last round at stop still fails at its deadline.
        stop_timeout: default seconds :meth:`stop` waits for a round in progress.
    """

    def __init__(self, name: str, run_once: Callable[[], object], period: float, *, backoff: bool = False,
                 max_backoff: float = MAX_BACKOFF_SECONDS, run_at_stop: bool = False,
                 after_round: Callable[[], None] | None = None, failure: Callable[[], str] | None = None,
                 shutdown_failure: Callable[[], str] | None = None, stop_timeout: float = 30.0) -> None:
        self._name = name
        self._run_once = run_once
        self._period = period
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._run_at_stop = run_at_stop
        self._after_round = after_round
        self._failure = failure or (lambda: f"{name}: round failed")
        self._shutdown_failure = shutdown_failure or (lambda: f"{name}: last round at shutdown failed")
        self._stop_timeout = stop_timeout
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        """The loop's (and its thread's) name."""
        return self._name

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run a round now rather than at the end of the period (e.g. group commit: callers wait for a flush).
        Ignored while backing off."""
        self._wake.set()

    def _run(self) -> None:
        wait = self._period
        while not self._stop.is_set():
            if wait > self._period:  # backing off: only stop ends the wait early
                self._stop.wait(wait)
            else:
                self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                break
            failed = False
            try:
                self._run_once()
            except Exception:  # a failed round must not end the loop: the next one retries
                failed = True
                log.exception(self._failure())
            wait = next_wait(wait, self._period, failed, self._backoff, self._max_backoff)
            if self._after_round is not None:
                self._after_round()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread (waiting up to ``timeout`` for a round in progress); with ``run_at_stop`` run one
        last round, retrying every 0.5 s until ``timeout`` has passed, then log what could not be done."""
        timeout = self._stop_timeout if timeout is None else timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        if not self._run_at_stop:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._run_once()
                return
            except Exception:
                if time.monotonic() > deadline:
                    log.exception(self._shutdown_failure())
                    return
                time.sleep(STOP_RETRY_SECONDS)


class PeriodicFlusher(PeriodicLoop):
    """Runs ``flush`` every ``period`` seconds with backoff while it fails, and once more at ``stop``."""

    def __init__(self, name: str, flush: Callable[[], int], pending: Callable[[], int], period: float,
                 after_round: Callable[[], None] | None = None) -> None:
        super().__init__(name, flush, period, backoff=True, run_at_stop=True, after_round=after_round,
                         failure=lambda: f"{name}: flush failed; {pending()} rows kept for retry",
                         shutdown_failure=lambda: f"{name}: could not flush {pending()} rows at shutdown")


class AsyncPeriodicLoop:
    """Awaits ``run_once()`` every ``period`` seconds in a task on the running event loop; a failed round is
    logged with ``failure`` and the loop goes on (no backoff: the job is local, not a database)."""

    def __init__(self, name: str, run_once: Callable[[], Awaitable[object]], period: float, *,
                 failure: str | None = None) -> None:
        self._name = name
        self._run_once = run_once
        self._period = period
        self._failure = failure or f"{name}: round failed"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the task (call from the event loop; the first round runs one period later)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            try:
                await self._run_once()
            except Exception:  # never let one failure stop the loop for good
                log.exception(self._failure)

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def parent_gone(parent_pid: int | None) -> bool:
    """Whether the process that started this one (``parent_pid``) has ended: this process was re-parented."""
    return parent_pid is not None and os.getppid() != parent_pid


def lower_cpu_priority(increment: int) -> int | None:
    """Add ``increment`` to this process's nice value (POSIX ``nice(2)``), so that the operating system runs the
    serving workers first when both want a core; returns the new nice value, None where nothing changed (0, a
    platform without ``os.nice``, or refused)."""
    if increment <= 0 or not hasattr(os, "nice"):
        return None
    try:
        return os.nice(increment)
    except OSError:  # a sandbox may refuse it: the worker runs on at its priority
        log.warning("could not lower this process's CPU priority", exc_info=True)
        return None


def run_at_idle_priority() -> str | None:
    """Move this process to the operating system's idle scheduling class: Linux ``SCHED_IDLE`` (it runs on a core
    nothing else wants, and a task of the normal class that wakes up takes the core from it at once), or where that
    class does not exist the weakest nice value (19, by :func:`lower_cpu_priority`). Returns ``"SCHED_IDLE"`` or
    ``"nice 19"``, None if refused."""
    if not (hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE")):
        return "nice 19" if hasattr(os, "nice") and lower_cpu_priority(19 - os.nice(0)) is not None else None
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:  # a sandbox may refuse it: the process runs on at its priority
        log.warning("could not move this process to the idle CPU priority", exc_info=True)
        return None
    return "SCHED_IDLE"


def exit_when_parent_gone(parent_pid: int) -> threading.Thread:
    """A daemon thread ending this process (``os._exit``) within :data:`PARENT_CHECK_SECONDS` of its parent
    ``parent_pid`` ending, for helpers whose parent may be killed without stopping them."""

    def _watch() -> None:
        while not parent_gone(parent_pid):
            time.sleep(PARENT_CHECK_SECONDS)
        log.warning("the process that started this one (pid %d) has ended; exiting", parent_pid)
        os._exit(0)

    thread = threading.Thread(target=_watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
