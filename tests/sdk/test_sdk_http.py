"""Client ⇄ service behaviour over real HTTP, against the stand-in service of conftest.py."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime
from typing import Any

import httpx
import pytest
from titrate_sdk import AsyncClient, Client

FAST = {"flush_interval": 0.05, "backoff_base": 0.05, "backoff_max": 0.4, "timeout": 2.0}


def _wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_initial_fetch_then_etag_304_keeps_the_cached_config(standin: Any) -> None:
    with Client(standin.url, "sdk-key", poll_interval=60, **FAST) as client:
        assert client.ready
        assert standin.config_200 == 1
        assert standin.auth == {"Bearer sdk-key"}
        snapshot = client.snapshot
        assert snapshot.etag == '"1"'
        assert client.refresh() is False
        assert standin.config_304 == 1
        assert client.snapshot is snapshot
        assert client.stats["config_not_modified"] == 1
        assert client.get_variant("exp", "u-1") in ("control", "treatment")


def test_config_change_reaches_client_within_poll_interval(standin: Any, make_experiment: Any) -> None:
    poll = 0.3
    with Client(standin.url, "k", poll_interval=poll, **FAST) as client:
        before = client.get_variant("exp", "u-1", default="none")
        assert before in ("control", "treatment")
        after = "treatment" if before == "control" else "control"
        everyone_moves = make_experiment(
            variants=[
                {"key": "control", "weight": 1.0 if after == "control" else 0.0, "payload": {}},
                {"key": "treatment", "weight": 1.0 if after == "treatment" else 0.0},
            ]
        )
        changed_at = time.monotonic()
        standin.set_experiments(everyone_moves)
        assert _wait_for(lambda: client.get_variant("exp", "u-1") == after, timeout=poll + 2.0)
        # One poll interval plus the fetch itself (generous margin for a loaded CI machine).
        assert time.monotonic() - changed_at < poll + 1.0
        assert client.snapshot.version == 2
        standin.set_experiments()  # the experiment disappears: defaults again
        assert _wait_for(lambda: client.get_variant("exp", "u-1") == "control", timeout=poll + 2.0)


def test_every_event_arrives_exactly_once_across_a_two_second_outage(standin: Any) -> None:
    tracked: list[str] = []
    # FAST caps the backoff at 0.4 s, so 10 retries could run out inside a 2 s outage (the defaults,
    # 0.5 s doubling to 30 s, ride out more than a minute); give the batch enough attempts.
    with Client(standin.url, "k", max_batch=50, poll_interval=60, max_retries=100, **FAST) as client:
        stop = threading.Event()

        def produce() -> None:
            i = 0
            while not stop.is_set():
                tracked.append(client.track(f"u-{i % 97}", "purchase", float(i)))
                i += 1
                time.sleep(0.001)

        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(0.4)
        before_outage = len(standin.events)
        standin.stop()
        time.sleep(2.0)
        during_outage = len(tracked)
        standin.start()  # same port
        time.sleep(0.4)
        stop.set()
        producer.join()
        assert client.flush(timeout=20)
        stats = client.stats
    assert before_outage > 0
    assert during_outage > before_outage
    assert stats["retries"] > 0
    assert stats["dropped"] == 0
    assert stats["sent"] == len(tracked)
    assert sorted(standin.events) == sorted(tracked)  # each event id stored, none lost
    assert sum(standin.event_posts) == len(tracked) + standin.duplicates
    assert max(standin.event_posts) <= 50


def test_events_carry_the_contract_fields(standin: Any) -> None:
    with Client(standin.url, "k", poll_interval=60, **FAST) as client:
        event_id = client.track("u-9", "purchase", 12.5, {"plan": "pro"})
        explicit = client.track("u-9", "refund", -1, timestamp=datetime(2026, 11, 23, 10, 0, 0))
        assert client.flush(timeout=5)
    event = standin.events[event_id]
    assert set(event) == {"event_id", "unit_id", "name", "value", "timestamp", "attributes"}
    assert (event["unit_id"], event["name"], event["value"], event["attributes"]) == (
        "u-9",
        "purchase",
        12.5,
        {"plan": "pro"},
    )
    assert event["timestamp"].endswith("Z")
    assert datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert standin.events[explicit]["timestamp"] == "2026-11-23T10:00:00.000000Z"
    assert len(event_id) == 32


def test_exposures_logged_once_per_unit_and_never_for_shipped(standin: Any, make_experiment: Any) -> None:
    standin.set_experiments(
        make_experiment(),
        make_experiment("done", status="shipped", shipped_variant="treatment"),
    )
    with Client(standin.url, "k", poll_interval=60, **FAST) as client:
        first = client.get_variant("exp", "u-1", {"country": "US"})
        for _ in range(3):
            assert client.get_variant("exp", "u-1") == first
            assert client.get_variant("done", "u-1") == "treatment"
        client.assign("u-2")
        client.assign_many("exp", [f"batch-{i}" for i in range(100)])  # batch scoring is no exposure
        assert client.flush(timeout=5)
        assert client.stats["exposures_sent"] == 2
    assert sorted((x["experiment"], x["unit_id"]) for x in standin.exposures) == [("exp", "u-1"), ("exp", "u-2")]
    exposure = next(x for x in standin.exposures if x["unit_id"] == "u-1")
    assert exposure["variant"] == first
    assert exposure["attributes"] == {"country": "US"}
    assert exposure["timestamp"].endswith("Z")


def test_log_exposures_false_sends_none(standin: Any) -> None:
    with Client(standin.url, "k", log_exposures=False, poll_interval=60, **FAST) as client:
        client.get_variant("exp", "u-1")
        assert client.flush(timeout=5)
    assert standin.exposures == []


def test_buffer_overflow_counts_drops(standin: Any) -> None:
    client = Client(standin.url, "k", max_buffer=10, start=False, **FAST)
    ids = [client.track("u", "click") for _ in range(15)]
    assert len(set(ids)) == 15
    assert client.stats["dropped"] == 5
    assert client.stats["buffered"] == 10
    assert client.flush(timeout=5)  # not started: sends in the calling thread
    assert sorted(standin.events) == sorted(ids[:10])
    assert client.stats["sent"] == 10
    client.close()


def test_batches_respect_max_batch(standin: Any) -> None:
    client = Client(standin.url, "k", max_batch=7, start=False, **FAST)
    for i in range(30):
        client.track(f"u-{i}", "click")
    assert client.flush(timeout=5)
    assert standin.event_posts == [7, 7, 7, 7, 2]
    client.close()


def test_4xx_drops_the_batch_without_retry(standin: Any) -> None:
    client = Client(standin.url, "k", start=False, **FAST)
    standin.fail_posts = [422]
    for _ in range(3):
        client.track("u", "click")
    assert client.flush(timeout=5)
    stats = client.stats
    assert (stats["dropped"], stats["errors"], stats["retries"], stats["sent"]) == (3, 1, 0, 0)
    assert standin.events == {}
    client.close()


def test_5xx_and_429_are_retried_with_the_same_ids(standin: Any) -> None:
    client = Client(standin.url, "k", start=False, **FAST)
    standin.fail_posts = [503, 429, 500]
    ids = [client.track("u", "click") for _ in range(4)]
    assert client.flush(timeout=10)
    assert client.stats["retries"] == 3
    assert sorted(standin.events) == sorted(ids)
    client.close()


def test_retries_run_out_then_the_batch_is_dropped_and_counted(standin: Any) -> None:
    client = Client(standin.url, "k", start=False, max_retries=2, **FAST)
    standin.fail_posts = [503, 503, 503]
    client.track("u", "click")
    assert client.flush(timeout=10)
    assert (client.stats["retries"], client.stats["dropped"], client.stats["errors"]) == (2, 1, 1)
    client.close()


def test_flush_timeout_returns_false_and_loses_nothing(standin: Any) -> None:
    port = standin.port
    standin.stop()
    with Client(f"http://127.0.0.1:{port}", "k", poll_interval=60, max_retries=100, **FAST) as client:
        ids = [client.track("u", "click") for _ in range(5)]
        assert client.flush(timeout=0.3) is False
        standin.start()
        assert client.flush(timeout=10) is True
    assert sorted(standin.events) == sorted(ids)


def test_close_flushes_and_is_idempotent(standin: Any) -> None:
    client = Client(standin.url, "k", flush_interval=60, poll_interval=60)
    ids = [client.track("u", "click") for _ in range(20)]
    client.close()
    client.close()
    assert sorted(standin.events) == sorted(ids)
    assert not any(t.is_alive() for t in client._threads)
    client.track("u", "after-close")  # never raises; counted as dropped
    assert client.stats["dropped"] == 1


def test_close_gives_up_after_its_timeout_when_the_service_is_gone(standin: Any) -> None:
    client = Client(standin.url, "k", poll_interval=60, **FAST)
    standin.stop()
    client.track("u", "click")
    started = time.monotonic()
    client.close(timeout=0.5)
    assert time.monotonic() - started < 5
    assert client.stats["dropped"] == 1


def test_service_down_at_start_serves_defaults_then_recovers(standin: Any) -> None:
    port = standin.port
    standin.stop()
    with Client(f"http://127.0.0.1:{port}", "k", poll_interval=0.1, **FAST) as client:
        assert not client.ready
        assert client.get_variant("exp", "u-1") == "control"
        assert client.get_variant("exp", "u-1", default="off") == "off"
        assert client.stats["config_errors"] >= 1
        standin.start()
        assert _wait_for(lambda: client.ready, timeout=5)


def test_garbage_config_from_the_service_keeps_the_previous_one(standin: Any) -> None:
    with Client(standin.url, "k", poll_interval=60, **FAST) as client:
        before = client.snapshot
        for raw in (b"not json", b"[]", b'{"experiments": 3}', b'{"spec_version": 3, "experiments": []}'):
            standin.raw_config = raw
            assert client.refresh() is False
            assert client.snapshot is before
            assert client.get_variant("exp", "u-1") in ("control", "treatment")
        assert client.stats["config_errors"] == 4


def test_assign_remote_matches_local_evaluation(standin: Any, make_experiment: Any) -> None:
    standin.set_experiments(make_experiment(), make_experiment("other", traffic=0.5))
    with Client(standin.url, "k", poll_interval=60, log_exposures=False, **FAST) as client:
        for i in range(20):
            unit = f"u-{i}"
            remote = client.assign_remote(unit, {"country": "US"})
            local = client.assign(unit, {"country": "US"})
            assert {k: (a.variant, dict(a.payload)) for k, a in remote.items()} == {
                k: (a.variant, dict(a.payload)) for k, a in local.items()
            }
        only = client.assign_remote("u-1", experiments=["other", "missing"])
        assert set(only) <= {"other"}
        standin.stop()
        with pytest.raises(httpx.HTTPError):
            client.assign_remote("u-1")


def test_external_http_client_is_used_and_not_closed(standin: Any) -> None:
    with httpx.Client() as http:
        with Client(standin.url, "k", http_client=http, poll_interval=60, **FAST) as client:
            client.track("u", "click")
        assert not http.is_closed
        assert len(standin.events) == 1


def test_async_client(standin: Any) -> None:
    async def main() -> None:
        async with AsyncClient(standin.url, "k", poll_interval=60, **FAST) as client:
            assert client.ready
            variant = client.get_variant("exp", "u-1")
            assert variant in ("control", "treatment")
            assert client.assign("u-1")["exp"].variant == variant
            assert client.assign_many("exp", ["u-1"]) == [variant]
            event_id = client.track("u-1", "purchase", 3.0)
            assert await client.flush(timeout=5)
            assert event_id in standin.events
            remote = await client.assign_remote("u-1", experiments=["exp"])
            assert remote["exp"].variant == variant
            assert await client.refresh() is False
            assert client.stats["sent"] == 1

    asyncio.run(main())
