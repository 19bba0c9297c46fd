"""The scorecard refresh job in its own process (``titrate refresh-worker``, ``api.incremental.scheduler``):
``titrate serve`` starts it beside its workers and stops it with them, it stops by itself when serve is killed, the
service processes run no round of their own, and their reads answer from the rows that process stored — the memo of
built cards (``api.analysis.card_cache``) included. Both databases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app as cli
from api.db.engine import Database
from api.db.tables import Experiment
from api.incremental import repository, scheduler
from api.incremental.repository import RefreshState
from api.settings import Settings, get_settings
from tests.api.incremental.test_refresh import ARMS, _get, _seed
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics
from tests.live import free_port

ROOT = Path(__file__).resolve().parents[3]
#: Generous bounds on waits for another process (a loaded 2-core machine starts Python in ~10 s): never timings.
DEADLINE_SECONDS = 180.0


def _children(pid: int) -> dict[int, str]:
    """Live child processes of ``pid`` and their command lines (Linux ``/proc``)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def _wait_for(what: str, check: Any) -> Any:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if (got := check()):
            return got
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def _state(db: Database, key: str) -> RefreshState | None:
    with db.read() as session:
        exp_id = session.scalar(select(Experiment.id).where(Experiment.key == key))
        return None if exp_id is None else repository.state(session, exp_id)


@contextmanager
def _serve(database_url: str, log: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``titrate serve`` (one worker) on the database with a 0.5 s refresh interval, once /healthz answers."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--no-migrate"], cwd=ROOT,
            env={**os.environ, "TITRATE_DATABASE_URL": database_url, "TITRATE_LOG_JSON": "false",
                 "TITRATE_LOG_LEVEL": "INFO", "TITRATE_SCORECARD_REFRESH_SECONDS": "0.5", **env},
            stdout=subprocess.DEVNULL, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_for("titrate serve to answer /healthz", healthy)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _refresh_worker_of(serve: subprocess.Popen[bytes]) -> int:
    workers = _wait_for("the refresh worker beside titrate serve", lambda: [
        pid for pid, cmd in _children(serve.pid).items() if "refresh-worker" in cmd])
    assert len(workers) == 1, workers  # one per host, whatever --workers
    return int(workers[0])


def test_serve_runs_the_refresh_in_a_process_beside_its_worker_and_reads_see_it(
        client: TestClient, keys: Keys, db: Database, tmp_path: Path) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="beside", variants=ARMS)
    _seed(db, "beside", range(0, 40), hours_ago=30)
    log = tmp_path / "serve.log"
    with _serve(db.url, log) as (serve, url):
        worker = _refresh_worker_of(serve)
        # analysis yields the cores to serving: the worker lowers itself TITRATE_SCORECARD_REFRESH_NICE (10) below
        # serve once started (waited for: it does so after its imports)
        _wait_for("the refresh worker's lower priority", lambda: os.getpriority(os.PRIO_PROCESS, worker)
                  == min(19, os.getpriority(os.PRIO_PROCESS, serve.pid) + 10))
        first = _wait_for("a refresh stored by the refresh worker", lambda: _state(db, "beside"))
        with httpx.Client(base_url=url, headers=keys.headers("analyst"), timeout=60) as http:
            card = http.get("/v1/experiments/beside/scorecard").raise_for_status().json()
            assert sum(card["current_n"].values()) == 40
            # the read answered from a refresh the other process stored (never one of its own: the worker's app
            # runs no round and this read found a state)
            stored = _state(db, "beside")
            assert stored is not None
            assert stored.computed_at >= first.computed_at
            assert card["computed_at"].replace("Z", "+00:00") <= stored.computed_at.isoformat()

            _seed(db, "beside", range(40, 70), hours_ago=2)
            later = _wait_for("the next round to store the new units", lambda: (
                s if (s := _state(db, "beside")) is not None and s.units_recomputed and
                s.computed_at > stored.computed_at and _stored_units(db, "beside") == 70 else None))
            again = http.get("/v1/experiments/beside/scorecard").raise_for_status().json()
            assert sum(again["current_n"].values()) == 70  # the serving process's memo was not stale
            assert again["computed_at"] > card["computed_at"]
            assert later.computed_at.isoformat() <= again["computed_at"].replace("Z", "+00:00")
        serve.send_signal(signal.SIGTERM)
        # uvicorn ends a gracefully stopped process by the signal it received, as without the refresh worker
        assert serve.wait(timeout=DEADLINE_SECONDS) == -signal.SIGTERM, log.read_text()[-3000:]
    assert not _alive(worker), "the refresh worker outlived titrate serve"
    text = log.read_text()
    assert "scorecard refresh worker started" in text
    assert "scorecard refresh worker stopped" in text


def _stored_units(db: Database, key: str) -> int:
    with db.read() as session:
        exp_id = session.scalar(select(Experiment.id).where(Experiment.key == key))
        return 0 if exp_id is None else len(repository.stored_digests(session, exp_id))


def test_the_refresh_worker_stops_by_itself_when_serve_is_killed(db: Database, tmp_path: Path) -> None:
    with _serve(db.url, tmp_path / "serve.log") as (serve, _):
        worker = _refresh_worker_of(serve)
        serve.send_signal(signal.SIGKILL)  # no chance to stop its child
        serve.wait()
        _wait_for("the orphaned refresh worker to stop", lambda: not _alive(worker))


def test_serve_starts_no_refresh_worker_unless_the_mode_is_process(db: Database, tmp_path: Path) -> None:
    with _serve(db.url, tmp_path / "serve.log", TITRATE_SCORECARD_REFRESH_MODE="inline") as (serve, _):
        assert not [cmd for cmd in _children(serve.pid).values() if "refresh-worker" in cmd]


@pytest.mark.parametrize(("mode", "in_app"), [("process", False), ("inline", True), ("off", False)])
def test_the_service_process_runs_rounds_only_inline(database_url: str, db: Database, mode: str,
                                                     in_app: bool) -> None:
    settings = Settings(database_url=database_url, log_json=False, scorecard_refresh_mode=mode)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as test_client:
        assert (test_client.app.state.refresh_scheduler is not None) is in_app  # type: ignore[attr-defined]


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``TITRATE_*`` of the test database for an in-process CLI run (the settings are cached per process)."""
    monkeypatch.setenv("TITRATE_DATABASE_URL", database_url)
    monkeypatch.setenv("TITRATE_LOG_JSON", "false")
    get_settings.cache_clear()
    try:
        yield
    finally:
        get_settings.cache_clear()


def test_refresh_worker_once_refreshes_and_leaves_the_signal_handlers(client: TestClient, keys: Keys,
                                                                     db: Database, cli_env: None) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="once", variants=ARMS)
    _seed(db, "once", range(0, 30), hours_ago=30)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(cli, ["refresh-worker", "--once"])
    assert result.exit_code == 0, result.output
    assert "refresh round done" in result.output
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    state = _state(db, "once")
    assert state is not None
    assert state.units_recomputed == 30
    # a read in a process that did not refresh answers from those rows (its memo keyed on the stored state)
    assert _get(client, "once", keys)["computed_at"].replace("Z", "+00:00") == state.computed_at.isoformat()


def test_the_worker_loop_stops_when_asked_and_when_its_parent_is_gone(database_url: str, db: Database) -> None:
    settings = Settings(database_url=database_url, log_json=False, scorecard_refresh_seconds=0.05)
    stop = threading.Event()
    runner = threading.Thread(target=lambda: scheduler.run_worker(settings, stop))
    runner.start()
    stop.set()
    runner.join(timeout=DEADLINE_SECONDS)
    assert not runner.is_alive()
    # a parent that is not this process's parent any more: the loop ends on its first check
    assert scheduler.run_worker(settings, threading.Event(), parent_pid=os.getppid() + 1_000_000) == 0
    assert scheduler.parent_gone(os.getppid()) is False
