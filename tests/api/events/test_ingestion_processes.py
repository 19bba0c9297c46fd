"""``POST /v1/events`` through ingestion processes (``TITRATE_EVENTS_INGEST_PROCESSES``): the same counts, rows
and refusals as in the serving process; a database fault is the same 503; a process that dies costs the batch it
held a 503, not the service."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import text

from api.app import create_app
from api.db.engine import Database
from api.events.ingestion import IngestionPool
from api.settings import Settings
from tests.api.db.test_faults import _table_locked
from tests.api.events.test_event_refusals import _LATEST, CASES, EXPECTED
from tests.conftest import Keys
from tests.live import LiveServer


def _settings(database_url: str, **overrides: Any) -> Settings:
    given: dict[str, Any] = {"log_json": False, "scheduler_enabled": False, "api_key_cache_seconds": 30,
                             "config_refresh_seconds": 0.2, "exposure_flush_seconds": 0.05,
                             "events_ingest_processes": 2}
    return Settings(database_url=database_url, **(given | overrides))


@pytest.fixture(scope="module")
def pooled(database_url: str) -> Iterator[TestClient]:
    """The app with two ingestion processes (started once per database: each imports the service)."""
    with TestClient(create_app(_settings(database_url))) as client:
        yield client


def _batch(prefix: str, n: int) -> dict[str, Any]:
    """``n`` events (every tenth repeating the one before it), values, zones and attributes of several kinds."""
    events = []
    for i in range(n):
        j = i - 1 if i % 10 == 9 else i
        events.append({"event_id": f"{prefix}-{j}", "unit_id": f"u-{j % 37}", "name": ("buy", "view")[j % 2],
                       "value": j / 7, "timestamp": f"2026-11-2{j % 10}T1{j % 10}:00:00+0{j % 5}:00",
                       "attributes": {"sku": j, "plan": "pro", "é": [j, None, True]} if j % 3 else {}})
    return {"events": events}


def _stored(db: Database, prefix: str) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT event_id, unit_id, name, value, timestamp, attributes, received_at "
                                 "FROM events WHERE event_id LIKE :p ORDER BY id"), {"p": f"{prefix}-%"}).all()
    return [(r[0][len(prefix):], *r[1:6]) for r in rows]


def test_batches_are_counted_and_stored_as_in_the_serving_process(pooled: TestClient, client: TestClient,
                                                                  db: Database, keys: Keys) -> None:
    sdk = keys.headers("sdk")
    answers = {}
    for name, app in (("pooled", pooled), ("inline", client)):
        first = app.post("/v1/events", json=_batch(name, 500), headers=sdk)
        again = app.post("/v1/events", json=_batch(name, 500), headers=sdk)
        answers[name] = (first.status_code, first.content, again.status_code, again.content)
    assert answers["pooled"] == answers["inline"] == (200, b'{"accepted":450,"duplicates":50}',
                                                      200, b'{"accepted":0,"duplicates":500}')
    assert _stored(db, "pooled") == _stored(db, "inline")
    assert len(_stored(db, "pooled")) == 450


def test_refusals_are_the_same_bytes_from_an_ingestion_process(pooled: TestClient, db: Database,
                                                               keys: Keys) -> None:
    headers = {**keys.headers("sdk"), "content-type": "application/json"}
    for case, body in sorted(CASES.items()):
        before = datetime.now(UTC).replace(microsecond=0)
        response = pooled.post("/v1/events", content=body, headers=headers)
        after = datetime.now(UTC)
        assert response.status_code == 422, (case, response.text)
        for stamp in _LATEST.findall(response.text):
            assert before + timedelta(hours=24) <= datetime.fromisoformat(stamp) <= after + timedelta(hours=24)
        assert _LATEST.sub("and <latest> (now", response.text) == EXPECTED[case], case
    too_many = {"events": [{"event_id": "x", "unit_id": "u", "name": "n", "timestamp": "2026-11-23T10:00:00Z"}]}
    with TestClient(create_app(_settings(db.url, events_ingest_processes=1, max_events_per_batch=1))) as small:
        refused = small.post("/v1/events", json={"events": too_many["events"] * 2}, headers=headers)
        assert small.post("/v1/events", json=too_many, headers=headers).status_code == 200
    assert refused.status_code == 422
    assert json.loads(refused.content)["detail"][0]["loc"] == ["body", "events"]
    assert "TITRATE_MAX_EVENTS_PER_BATCH" in refused.text


def test_a_locked_database_answers_503_from_an_ingestion_process(db: Database, keys: Keys) -> None:
    quick = _settings(db.url, db_statement_timeout_seconds=1, db_sqlite_busy_timeout_seconds=1,
                      db_retry_after_seconds=7, events_ingest_processes=1)
    event = {"event_id": "e-1", "unit_id": "u", "name": "n", "timestamp": "2026-11-23T10:00:00Z"}
    with TestClient(create_app(quick)) as client:
        with _table_locked(db, "events"):
            start = time.monotonic()
            locked = client.post("/v1/events", json={"events": [event]}, headers=keys.headers("sdk"))
            elapsed = time.monotonic() - start
        after = client.post("/v1/events", json={"events": [event]}, headers=keys.headers("sdk"))
    assert locked.status_code == 503, locked.text
    assert locked.headers["retry-after"] == "7"
    assert locked.json()["detail"] in ("database unavailable: database is locked",
                                       "database unavailable: statement timeout")
    assert elapsed < 10, elapsed
    assert after.content == b'{"accepted":1,"duplicates":0}'


def test_a_dead_ingestion_process_fails_its_batch_and_new_ones_take_the_next(db: Database, keys: Keys) -> None:
    event = {"event_id": "e-1", "unit_id": "u", "name": "n", "timestamp": "2026-11-23T10:00:00Z"}
    sdk = keys.headers("sdk")
    with TestClient(create_app(_settings(db.url, events_ingest_processes=1))) as client:
        pool: IngestionPool = client.app.state.ingestion  # type: ignore[attr-defined]
        (process,) = pool._pool._processes.values()  # type: ignore[union-attr]
        os.kill(process.pid, signal.SIGKILL)
        process.join(10)
        lost = client.post("/v1/events", json={"events": [event]}, headers=sdk)
        stored = client.post("/v1/events", json={"events": [event]}, headers=sdk)
    assert lost.status_code == 503, lost.text
    assert lost.headers["retry-after"] == "1"
    assert "retry" in lost.json()["detail"]
    assert stored.content == b'{"accepted":1,"duplicates":0}'


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's (elsewhere idle means nice 19)")
@pytest.mark.parametrize("priority", ["idle", "normal"])
def test_ingestion_processes_run_in_the_scheduling_class_asked_for(database_url: str, priority: str) -> None:
    settings = _settings(database_url, events_ingest_priority=priority)
    worker_class = os.sched_getscheduler(0)  # what spawned processes inherit (the normal class, unless run otherwise)
    pool = IngestionPool(settings, 2)
    try:
        pool.start()
        pids = list(pool._pool._processes)  # type: ignore[attr-defined]
        classes = {os.sched_getscheduler(pid) for pid in pids}
    finally:
        pool.close()
    assert len(pids) == 2
    assert classes == {os.SCHED_IDLE if priority == "idle" else worker_class}
    assert os.sched_getscheduler(0) == worker_class  # the worker itself keeps its class


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.usefixtures("db")
def test_ingestion_processes_end_when_their_worker_is_killed(database_url: str) -> None:
    server = LiveServer(database_url, extra_env={"TITRATE_EVENTS_INGEST_PROCESSES": "2",
                                                 "TITRATE_SCHEDULER_ENABLED": "false"})
    server.start()
    try:
        assert server.process is not None
        helpers = [pid for pid in _children(server.process.pid)
                   if "spawn_main" in (Path("/proc") / str(pid) / "cmdline").read_text()]
        assert len(helpers) == 2, helpers
        server.process.kill()  # SIGKILL: no lifespan shutdown closes the pool
        server.process.wait(10)
        deadline = time.monotonic() + 15
        while any(map(_running, helpers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_running, helpers)), [pid for pid in helpers if _running(pid)]
    finally:
        server.stop()


def test_an_in_memory_sqlite_database_cannot_have_ingestion_processes() -> None:
    with pytest.raises(ValidationError) as refused:
        _settings("sqlite://")
    assert [error["loc"] for error in refused.value.errors()] == [("events_ingest_processes",)]
    assert "in-memory SQLite" in str(refused.value)
    assert _settings("sqlite://", events_ingest_processes=0).events_ingest_processes == 0
    unchecked = Settings.model_construct(database_url="sqlite://", events_ingest_processes=1)
    with pytest.raises(ValueError, match="TITRATE_EVENTS_INGEST_PROCESSES"):
        IngestionPool(unchecked, 1)
