"""Database faults: JSON 503 + Retry-After instead of 500s or hangs, bounded waits, /readyz that checks writes,
and recovery without a restart (issue 12, item 4).

The outage tests stop, freeze (SIGSTOP) and restart a *private* PostgreSQL cluster made for this module (never the
shared test server), and make a SQLite file read-only under a server that runs without root's permission override.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc

from api import migrate
from api.app import create_app
from api.auth.keys import create_api_key
from api.db import faults
from api.db.engine import Database
from api.settings import Settings
from tests.conftest import REQUIRE_POSTGRES, Keys
from tests.factories import create_experiment, create_metrics
from tests.live import ROOT, LiveServer, free_port

IS_ROOT = os.geteuid() == 0


def _event(event_id: str) -> dict[str, Any]:
    return {"event_id": event_id, "unit_id": "u-1", "name": "purchase", "value": 1.0,
            "timestamp": "2026-11-23T10:00:00Z", "attributes": {}}


METRIC = {"key": "conversion", "kind": "proportion", "event": "purchase", "aggregation": "any",
          "direction": "higher_is_better"}


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"].startswith("database unavailable: ")
    assert int(response.headers["retry-after"]) >= 1


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` until it holds; returns the seconds it took (fails after ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {timeout} s")


# --- which errors are faults (real driver errors) ---------------------------------------------------------------


def test_sqlite_faults_are_recognised_and_data_errors_are_not(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY, blob TEXT)")
    conn.execute("INSERT INTO t VALUES (1, 'a')")
    errors: dict[str, BaseException] = {}
    for name, run in {
        "readonly": lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("INSERT INTO t VALUES (2, '')"),
        "integrity": lambda: conn.execute("INSERT INTO t VALUES (1, 'dup')"),
        "no_table": lambda: conn.execute("SELECT * FROM missing"),
    }.items():
        with pytest.raises(sqlite3.Error) as caught:
            run()
        errors[name] = caught.value
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as caught:
        sqlite3.connect(path, timeout=0.05, isolation_level=None).execute("BEGIN IMMEDIATE")
    errors["locked"] = caught.value
    locker.execute("ROLLBACK")
    full = sqlite3.connect(path, isolation_level=None)
    full.execute(f"PRAGMA max_page_count = {full.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(sqlite3.OperationalError) as caught:
        full.execute("INSERT INTO t (blob) VALUES (?)", ("x" * 100_000,))
    errors["full"] = caught.value

    assert faults.unavailable_reason(errors["readonly"]) == "database is read-only"
    assert faults.unavailable_reason(errors["locked"]) == "database is locked"
    assert faults.unavailable_reason(errors["full"]) == "database or disk is full"
    assert faults.needs_new_connection(errors["readonly"])
    assert not faults.needs_new_connection(errors["locked"])
    # Wrapped by SQLAlchemy the same; integrity and programming errors are not faults.
    wrapped = sa_exc.OperationalError("INSERT", {}, errors["readonly"])  # type: ignore[arg-type]
    assert faults.unavailable_reason(wrapped) == "database is read-only"
    assert faults.unavailable_reason(errors["integrity"]) is None
    assert faults.unavailable_reason(sa_exc.IntegrityError("INSERT", {}, errors["integrity"])) is None  # type: ignore[arg-type]
    assert faults.unavailable_reason(errors["no_table"]) is None
    assert faults.unavailable_reason(ValueError("x")) is None


def test_postgres_faults_are_recognised_by_sqlstate() -> None:
    assert faults.unavailable_reason(psycopg.errors.QueryCanceled()) == "statement timeout"
    assert faults.unavailable_reason(psycopg.errors.AdminShutdown()) == "database server shutting down"
    assert faults.unavailable_reason(psycopg.errors.ReadOnlySqlTransaction()) == "database is read-only"
    assert faults.unavailable_reason(psycopg.OperationalError("connection refused")) == \
        "cannot reach the database server"
    assert faults.unavailable_reason(psycopg.errors.UniqueViolation()) is None
    assert faults.unavailable_reason(psycopg.errors.InvalidTextRepresentation()) is None
    assert faults.unavailable_reason(psycopg.errors.NumericValueOutOfRange()) is None
    assert faults.needs_new_connection(psycopg.errors.ReadOnlySqlTransaction())
    assert not faults.needs_new_connection(psycopg.errors.QueryCanceled())


def test_only_faults_become_503_other_database_errors_stay_500(settings: Settings, db: Database) -> None:
    app = create_app(settings)

    def _integrity() -> None:
        raise sa_exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed: t.x"))

    def _locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    app.add_api_route("/test/integrity", _integrity)
    app.add_api_route("/test/locked", _locked)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/test/integrity").status_code == 500
        locked = client.get("/test/locked")
        _assert_unavailable(locked)  # type: ignore[arg-type]
        assert locked.json()["detail"] == "database unavailable: database is locked"
        assert locked.headers["retry-after"] == str(settings.db_retry_after_seconds)


# --- a locked table: bounded wait, then 503, on both databases --------------------------------------------------


@contextlib.contextmanager
def _table_locked(db: Database, table: str) -> Iterator[None]:
    """Another session holds a write lock on ``table`` (SQLite: the whole database)."""
    if db.dialect == "sqlite":
        assert db.engine.url.database
        holder = sqlite3.connect(db.engine.url.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    with db.engine.connect() as conn:
        conn.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()


def test_locked_database_answers_503_within_the_timeout_then_recovers(database_url: str, db: Database,
                                                                      keys: Keys) -> None:
    quick = Settings(database_url=database_url, log_json=False, db_statement_timeout_seconds=1,
                     db_sqlite_busy_timeout_seconds=1, db_retry_after_seconds=7, scheduler_enabled=False)
    admin, sdk = keys.headers("admin"), keys.headers("sdk")
    with TestClient(create_app(quick)) as client:
        for table, call in (
            ("metrics", lambda: client.post("/v1/metrics", json=METRIC, headers=admin)),
            ("events", lambda: client.post("/v1/events", json={"events": [_event("e-1")]}, headers=sdk)),
        ):
            with _table_locked(db, table):
                start = time.monotonic()
                response = call()
                elapsed = time.monotonic() - start
            _assert_unavailable(response)  # type: ignore[arg-type]
            assert response.headers["retry-after"] == "7"
            assert response.json()["detail"] in ("database unavailable: database is locked",
                                                 "database unavailable: statement timeout")
            assert elapsed < 10, elapsed  # bounded by the 1 s timeouts, not the 30 s defaults
            assert call().status_code in (200, 201)  # the lock is gone: the same request works


@pytest.mark.usefixtures("keys")
def test_postgres_read_only_sessions_fail_readiness_and_writes_then_recover(database_url: str, db: Database,
                                                                            settings: Settings) -> None:
    if db.dialect != "postgresql":
        pytest.skip("PostgreSQL read-only transactions (default_transaction_read_only)")
    name = db.engine.url.database
    admin_engine = create_engine(db.engine.url, isolation_level="AUTOCOMMIT")
    with TestClient(create_app(settings)) as client:
        with db.transaction() as session:
            admin_key = create_api_key(session, "admin", "ro-admin")[1]
        headers = {"Authorization": f"Bearer {admin_key}"}
        assert client.get("/readyz").status_code == 200
        try:
            with admin_engine.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
            client.app.state.db.dispose()  # type: ignore[attr-defined]  # sessions opened from now on are read-only
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["database"] == "database is read-only"
            _assert_unavailable(client.post("/v1/metrics", json=METRIC, headers=headers))  # type: ignore[arg-type]
        finally:
            with admin_engine.connect() as conn:
                conn.execute(text("SET default_transaction_read_only = off"))
                conn.execute(text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only'))
            admin_engine.dispose()
        # No restart, no dispose: the read-only sessions are dropped by the failures themselves.
        _wait_for(lambda: client.get("/readyz").status_code == 200, 10, "readiness after read-write returned")
        assert client.post("/v1/metrics", json=METRIC, headers=headers).status_code == 201


# --- a private PostgreSQL cluster: stopped and frozen ----------------------------------------------------------


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if found and (Path(found[-1]) / "initdb").exists():
        return Path(found[-1])
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


class PrivateCluster:
    """A throw-away PostgreSQL cluster on a free port (run as ``postgres`` when we are root)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="titrate-faults-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user: dict[str, Any] = {}
        if IS_ROOT:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self.user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    def _run(self, *args: str) -> None:
        subprocess.run([str(self.bin / args[0]), *args[1:]], check=True, capture_output=True, timeout=120,
                       cwd=self.dir, **self.user)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def pids(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, ...)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat_file in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat_file).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                children.append(int(Path(stat_file).parent.name))
        return [postmaster, *children]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    bin_dir = _postgres_bin()
    if bin_dir is None or (IS_ROOT and not _has_user("postgres")):
        if REQUIRE_POSTGRES:
            pytest.fail("TITRATE_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries (initdb) for the fault tests")
        pytest.skip("!!! PostgreSQL server binaries (initdb, pg_ctl) not found: PostgreSQL fault tests SKIPPED !!!")
    private = PrivateCluster(bin_dir)
    try:
        private.init()
        private.start()
        admin = create_engine(private.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE titrate"))
        admin.dispose()
        migrate.upgrade(private.url("titrate"))
        yield private
    finally:
        private.remove()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _keys(url: str) -> Keys:
    db = Database(url)
    try:
        with db.transaction() as session:
            made = {role: create_api_key(session, role, f"faults-{role}-{secrets.token_hex(3)}")[1]
                    for role in ("sdk", "analyst", "admin")}
    finally:
        db.dispose()
    return Keys(**made)


_QUICK_ENV = {"TITRATE_DB_CONNECT_TIMEOUT_SECONDS": "2", "TITRATE_DB_STATEMENT_TIMEOUT_SECONDS": "2",
              "TITRATE_DB_POOL_TIMEOUT_SECONDS": "3", "TITRATE_DB_SQLITE_BUSY_TIMEOUT_SECONDS": "1",
              "TITRATE_DB_RETRY_AFTER_SECONDS": "3", "TITRATE_SCHEDULER_ENABLED": "false",
              "TITRATE_CONFIG_REFRESH_SECONDS": "0.5"}


def _client_addr(response: httpx.Response) -> Any:
    return response.extensions["network_stream"].get_extra_info("client_addr")


def _outage_requests(http: httpx.Client, keys: Keys, bound: float) -> dict[str, float]:
    """Every kind of route answers 503 JSON within ``bound`` seconds, on one kept-alive connection; returns the
    seconds each took."""
    took: dict[str, float] = {}
    first = http.get("/healthz")
    assert first.status_code == 200
    calls: list[tuple[str, Callable[[], httpx.Response]]] = [
        ("read", lambda: http.get("/v1/experiments", headers=keys.headers("analyst"))),
        ("write", lambda: http.post("/v1/metrics", json=METRIC, headers=keys.headers("admin"))),
        ("events", lambda: http.post("/v1/events", json={"events": [_event(secrets.token_hex(8))]},
                                     headers=keys.headers("sdk"))),
        # an uncached key: the assign hot path has to look it up in the database
        ("assign-auth", lambda: http.post("/v1/assign", json={"unit_id": "u-1"},
                                          headers={"Authorization": f"Bearer tk_{secrets.token_hex(16)}"})),
        ("readyz", lambda: http.get("/readyz")),
    ]
    for what, call in calls:
        start = time.monotonic()
        response = call()
        elapsed = took[what] = time.monotonic() - start
        assert response.status_code == 503, (what, response.status_code, response.text)
        assert elapsed < bound, (what, elapsed)
        if what == "readyz":
            assert response.json()["status"] == "unavailable"
        else:
            _assert_unavailable(response)
        # the connection survived the error response: the next request goes over the same one
        after = http.get("/healthz")
        assert after.status_code == 200
        assert _client_addr(after) == _client_addr(first), what
    print("outage answers (s):", {what: round(seconds, 2) for what, seconds in took.items()})
    return took


def _recovered(http: httpx.Client, keys: Keys) -> None:
    _wait_for(lambda: http.get("/readyz").status_code == 200, 30, "readiness after the fault cleared")
    assert http.get("/v1/experiments", headers=keys.headers("analyst")).status_code == 200
    events = http.post("/v1/events", json={"events": [_event(secrets.token_hex(8))]}, headers=keys.headers("sdk"))
    assert events.status_code == 200, events.text
    unknown = http.post("/v1/assign", json={"unit_id": "u"}, headers={"Authorization": "Bearer tk_nobody"})
    assert unknown.status_code == 401


@pytest.fixture(scope="module")
def pg_server(cluster: PrivateCluster) -> Iterator[tuple[LiveServer, Keys]]:
    url = cluster.url("titrate")
    keys = _keys(url)
    server = LiveServer(url, extra_env=_QUICK_ENV)
    server.start()
    try:
        yield server, keys
    finally:
        server.stop()


def test_postgres_stopped_answers_503_and_recovers_without_restart(cluster: PrivateCluster,
                                                                   pg_server: tuple[LiveServer, Keys]) -> None:
    server, keys = pg_server
    with httpx.Client(base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=1)) as http:
        assert http.get("/readyz").status_code == 200
        create_metrics(http, keys.headers("admin"))  # type: ignore[arg-type]
        create_experiment(http, keys.headers("admin"), start=True, key="outage")  # type: ignore[arg-type]
        assign = {"unit_id": "before-outage", "experiments": ["outage"]}
        assert http.post("/v1/assign", json=assign, headers=keys.headers("sdk")).status_code == 200  # key cached
        cluster.stop()
        try:
            _outage_requests(http, keys, bound=5)  # connection refused: immediate
            # Assignment keeps serving from memory; its exposure waits in the writer's queue.
            during = http.post("/v1/assign", json={**assign, "unit_id": "during-outage"}, headers=keys.headers("sdk"))
            assert during.status_code == 200, during.text
        finally:
            cluster.start()
        _recovered(http, keys)

    def _exposed() -> bool:
        with psycopg.connect(f"host=127.0.0.1 port={cluster.port} user=postgres dbname=titrate") as conn:
            row = conn.execute("SELECT count(*) FROM exposures WHERE unit_id = 'during-outage'").fetchone()
        return row is not None and row[0] == 1

    _wait_for(_exposed, 30, "the exposure assigned during the outage reaching the database")
    assert server.process is not None
    assert server.process.poll() is None


def test_postgres_frozen_answers_503_within_the_timeouts_and_recovers(cluster: PrivateCluster,
                                                                      pg_server: tuple[LiveServer, Keys]) -> None:
    server, keys = pg_server
    with httpx.Client(base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=1)) as http:
        _wait_for(lambda: http.get("/readyz").status_code == 200, 30, "readiness before the freeze")
        pids = cluster.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            # connect timeout 2 s: a ping of a pooled connection (2 s) and a new connection (2 s) give up; the
            # statement timeout (2 s) + connect timeout bound a request caught mid-statement. Generous margin.
            _outage_requests(http, keys, bound=15)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        _recovered(http, keys)


# --- SQLite made read-only under a running server ---------------------------------------------------------------


class UnprivilegedServer(LiveServer):
    """A live server without root's permission override (when we are root), so file modes apply to it."""

    def _spawn(self, env: dict[str, str], log: object) -> subprocess.Popen[bytes]:
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"] if IS_ROOT else []
        return subprocess.Popen(
            [*prefix, sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port",
             str(self.port), "--no-access-log"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,  # type: ignore[arg-type]
        )


def _set_writable(folder: Path, writable: bool) -> None:
    files = [p for p in folder.iterdir() if p.is_file()]
    mode = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
    for path in files:
        path.chmod(mode | stat.S_IWUSR if writable else mode)
    folder.chmod(0o755 if writable else 0o555)


def test_sqlite_read_only_fails_readiness_and_writes_then_recovers_without_restart() -> None:
    if IS_ROOT and shutil.which("setpriv") is None:
        pytest.skip("!!! running as root without setpriv (util-linux): cannot make a file read-only for the server")
    folder = Path(tempfile.mkdtemp(prefix="titrate-faults-sqlite-"))
    url = f"sqlite:///{folder / 'titrate.db'}"
    try:
        migrate.upgrade(url)
        keys = _keys(url)
        server = UnprivilegedServer(url, extra_env=_QUICK_ENV)
        server.start()
        with contextlib.ExitStack() as stack:
            stack.callback(server.stop)
            http = stack.enter_context(httpx.Client(base_url=server.url, timeout=30))
            sdk, admin = keys.headers("sdk"), keys.headers("admin")
            assert http.get("/readyz").status_code == 200
            assert http.post("/v1/events", json={"events": [_event("before")]}, headers=sdk).status_code == 200
            _set_writable(folder, False)
            try:
                ready = http.get("/readyz")
                assert ready.status_code == 503, ready.text
                assert ready.json()["database"] == "database is read-only"
                # Writes, and reads too: the service opens no connection to a file it cannot write (SQLite would
                # share a read-only view of the WAL index that outlives the fault, see api/db/engine.py).
                for response in (http.post("/v1/events", json={"events": [_event("during")]}, headers=sdk),
                                 http.post("/v1/metrics", json=METRIC, headers=admin),
                                 http.get("/v1/metrics", headers=admin)):
                    _assert_unavailable(response)
                    assert response.json()["detail"] == "database unavailable: database is read-only"
            finally:
                _set_writable(folder, True)
            _wait_for(lambda: http.get("/readyz").status_code == 200, 10, "readiness after write access returned")
            assert http.post("/v1/events", json={"events": [_event("after")]}, headers=sdk).status_code == 200
            assert http.post("/v1/metrics", json=METRIC, headers=admin).status_code == 201
            assert server.process is not None
            assert server.process.poll() is None
        stored = sqlite3.connect(folder / "titrate.db").execute("SELECT event_id FROM events ORDER BY 1").fetchall()
        assert stored == [("after",), ("before",)]
    finally:
        _set_writable(folder, True)
        shutil.rmtree(folder, ignore_errors=True)
