"""A periodic flusher: the one background loop behind every batched writer (exposures, serving records).

Writers queue rows in memory; this thread calls their ``flush`` every ``period`` seconds, doubles the wait
(up to 10 s) while the database refuses, so rows are kept and retried rather than lost, and on ``stop`` flushes
what is left, retrying until a deadline (graceful shutdown: SIGTERM → lifespan → ``stop``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 10.0


class PeriodicFlusher:
    """Runs ``flush`` in a daemon thread every ``period`` seconds and once more at ``stop``."""

    def __init__(self, name: str, flush: Callable[[], int], pending: Callable[[], int], period: float,
                 after_round: Callable[[], None] | None = None) -> None:
        self._name = name
        self._flush = flush
        self._pending = pending
        self._period = period
        self._after_round = after_round
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Flush now rather than at the end of the period (callers waiting for durability: group commit).
        Ignored while the database is refusing, so waiters cannot turn the backoff into a busy loop."""
        self._wake.set()

    def _run(self) -> None:
        backoff = self._period
        while not self._stop.is_set():
            if backoff > self._period:  # backing off: only stop ends the wait early
                self._stop.wait(backoff)
            else:
                self._wake.wait(backoff)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._flush()
                backoff = self._period
            except Exception:  # keep the rows and retry with backoff: nothing is lost while we live
                log.exception("%s: flush failed; %d rows kept for retry", self._name, self._pending())
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            if self._after_round is not None:
                self._after_round()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread and flush what is left (retrying until ``timeout``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._flush()
                return
            except Exception:
                if time.monotonic() > deadline:
                    log.exception("%s: could not flush %d rows at shutdown", self._name, self._pending())
                    return
                time.sleep(0.5)
