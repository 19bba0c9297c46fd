"""The background-loop primitive: period, backoff doubling to the cap, wake, the last round at stop, failures
logged and never fatal — in fractions of a second."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from api.background import AsyncPeriodicLoop, PeriodicFlusher, PeriodicLoop, next_wait


class _Recorder:
    """A round that records when it ran and fails while ``failing`` is set."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[float] = []
        self.failures = failures
        self.ran = threading.Event()

    def __call__(self) -> int:
        self.calls.append(time.monotonic())
        self.ran.set()
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("database refused")
        return 0


def _wait_for(predicate: object, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_next_wait_doubles_to_the_cap_and_resets_after_a_success() -> None:
    waits = [0.1]
    for _ in range(8):
        waits.append(next_wait(waits[-1], 0.1, failed=True, backoff=True, max_backoff=1.0))
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert next_wait(1.0, 0.1, failed=False, backoff=True, max_backoff=1.0) == 0.1
    assert next_wait(0.1, 0.1, failed=True, backoff=False, max_backoff=1.0) == 0.1
    assert next_wait(0.1, 5.0, failed=True, backoff=True, max_backoff=1.0) == 5.0  # never below the period


def test_rounds_run_every_period_and_the_first_after_one_period() -> None:
    run = _Recorder()
    loop = PeriodicLoop("test-period", run, 0.05)
    started = time.monotonic()
    loop.start()
    _wait_for(lambda: len(run.calls) >= 3)
    loop.stop()
    assert run.calls[0] - started >= 0.045
    gaps = [b - a for a, b in zip(run.calls, run.calls[1:], strict=False)]
    assert all(g >= 0.045 for g in gaps)


def test_a_failing_round_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    run = _Recorder(failures=2)
    loop = PeriodicLoop("test-failing", run, 0.02, failure=lambda: "round of test-failing failed")
    with caplog.at_level(logging.ERROR, logger="api.background"):
        loop.start()
        _wait_for(lambda: len(run.calls) >= 4)
        loop.stop()
    failed = [r for r in caplog.records if r.getMessage() == "round of test-failing failed"]
    assert len(failed) == 2
    assert all(r.exc_info is not None for r in failed)


def test_backoff_doubles_the_wait_while_rounds_fail() -> None:
    run = _Recorder(failures=3)
    loop = PeriodicLoop("test-backoff", run, 0.02, backoff=True, max_backoff=0.08)
    loop.start()
    _wait_for(lambda: len(run.calls) >= 4)
    loop.stop()
    gaps = [b - a for a, b in zip(run.calls, run.calls[1:], strict=False)]
    # waits after failures 1, 2, 3: 0.04, 0.08, 0.08 (capped); after the success the period again (next_wait)
    assert gaps[0] >= 0.035
    assert gaps[1] >= 0.075
    assert gaps[2] >= 0.075


def test_wake_is_ignored_while_backing_off() -> None:
    run = _Recorder(failures=10_000)
    loop = PeriodicLoop("test-backoff-wake", run, 0.01, backoff=True, max_backoff=0.4)
    loop.start()
    _wait_for(lambda: len(run.calls) >= 4)  # now waiting 0.16 s
    seen = len(run.calls)
    deadline = time.monotonic() + 0.1
    while time.monotonic() < deadline:
        loop.wake()
        time.sleep(0.005)
    assert len(run.calls) == seen
    loop.stop()


def test_wake_runs_a_round_now() -> None:
    run = _Recorder()
    loop = PeriodicLoop("test-wake", run, 30.0)
    loop.start()
    loop.wake()
    assert run.ran.wait(1.0)
    loop.stop()
    assert len(run.calls) == 1


def test_stop_runs_the_last_round_once_when_asked() -> None:
    run = _Recorder()
    rounds_seen: list[int] = []
    loop = PeriodicLoop("test-stop", run, 30.0, run_at_stop=True, after_round=lambda: rounds_seen.append(1))
    loop.start()
    loop.stop(timeout=1.0)
    assert len(run.calls) == 1  # the round at stop, not one from the thread
    assert rounds_seen == []
    plain = _Recorder()
    other = PeriodicLoop("test-stop-plain", plain, 30.0)
    other.start()
    other.stop(timeout=1.0)
    assert plain.calls == []


def test_the_last_round_at_stop_is_retried_until_it_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("api.background.STOP_RETRY_SECONDS", 0.01)
    run = _Recorder(failures=2)
    loop = PeriodicLoop("test-stop-retry", run, 30.0, run_at_stop=True)
    loop.stop(timeout=1.0)  # never started: stop still runs the last round
    assert len(run.calls) == 3


def test_the_last_round_at_stop_gives_up_at_the_deadline_and_logs(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("api.background.STOP_RETRY_SECONDS", 0.01)
    run = _Recorder(failures=10_000)
    pending = 7
    flusher = PeriodicFlusher("test-flusher", run, lambda: pending, 30.0)
    with caplog.at_level(logging.ERROR, logger="api.background"):
        flusher.stop(timeout=0.05)
    assert len(run.calls) >= 2
    assert [r.getMessage() for r in caplog.records] == ["test-flusher: could not flush 7 rows at shutdown"]


def test_a_flusher_backs_off_names_the_kept_rows_and_reports_each_round(caplog: pytest.LogCaptureFixture) -> None:
    run = _Recorder(failures=1)
    rounds = threading.Semaphore(0)
    flusher = PeriodicFlusher("test-flusher", run, lambda: 3, 0.01, after_round=rounds.release)
    with caplog.at_level(logging.ERROR, logger="api.background"):
        flusher.start()
        assert rounds.acquire(timeout=1.0)
        assert rounds.acquire(timeout=1.0)  # after_round runs after failed and successful rounds alike
        flusher.stop(timeout=1.0)
    assert "test-flusher: flush failed; 3 rows kept for retry" in [r.getMessage() for r in caplog.records]
    assert len(run.calls) >= 3  # two rounds in the thread, one at stop


def test_the_async_loop_awaits_each_round_on_the_event_loop_and_survives_failures(
        caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []

    async def round_() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("boom")

    async def scenario() -> None:
        loop = AsyncPeriodicLoop("test-async", round_, 0.02, failure="async round failed")
        loop.start()
        while len(calls) < 3:
            await asyncio.sleep(0.005)
        await loop.stop()
        seen = len(calls)
        await asyncio.sleep(0.05)
        assert len(calls) == seen  # stopped: no more rounds

    with caplog.at_level(logging.ERROR, logger="api.background"):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records] == ["async round failed"]
    await_gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert all(g >= 0.015 for g in await_gaps)


def test_stopping_an_async_loop_that_never_started_is_harmless() -> None:
    async def round_() -> None:
        return None

    asyncio.run(AsyncPeriodicLoop("test-async-idle", round_, 1.0).stop())
