"""Engines and sessions: one ``Database`` per process, transactions committed once at the boundary.

Every wait on the database is bounded (``DbTimeouts``), so a stopped, frozen, locked or read-only database turns
into an error within seconds (``api.db.faults`` answers it as a 503), never a hang; and a connection that a fault
left unusable is discarded, so the service recovers by itself when the fault clears.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import URL, Engine, create_engine, event, make_url, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.orm import Session, sessionmaker

from api.db import faults
from api.settings import is_memory_sqlite

if TYPE_CHECKING:
    from api.settings import Settings


def is_sqlite(url: str) -> bool:
    """Whether a SQLAlchemy URL points at SQLite."""
    return url.startswith("sqlite")


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs (the driver the project installs)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@dataclass(frozen=True, slots=True)
class DbTimeouts:
    """How long any one wait on the database may last, in seconds.

    - ``connect``: opening a PostgreSQL connection (libpq ``connect_timeout``, at least 2 s), and the pool's
      liveness check of a pooled connection before it is handed out;
    - ``statement``: PostgreSQL ``statement_timeout`` (server side); the client also gives up on a server that
      has not answered within ``statement + connect`` (a frozen server never enforces its own timeout), closing
      that connection;
    - ``pool``: waiting for a free pooled connection;
    - ``sqlite_busy``: waiting for another SQLite writer's lock (``busy_timeout``).
    ``None`` for ``statement`` means no statement timeout (migrations, which may rebuild large tables).
    """

    connect: float = 5.0
    statement: float | None = 30.0
    pool: float = 10.0
    sqlite_busy: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DbTimeouts:
        """The timeouts configured by ``TITRATE_DB_*_TIMEOUT_SECONDS``."""
        return cls(connect=settings.db_connect_timeout_seconds, statement=settings.db_statement_timeout_seconds,
                   pool=settings.db_pool_timeout_seconds, sqlite_busy=settings.db_sqlite_busy_timeout_seconds)

    @property
    def response(self) -> float | None:
        """How long the client waits for any answer from a PostgreSQL server before giving the connection up."""
        return None if self.statement is None else self.statement + self.connect


class _BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection that waits at most ``response_timeout`` seconds for the server.

    A stopped (SIGSTOP) or unreachable server accepts TCP and never answers: libpq's keepalives and the server's
    ``statement_timeout`` cannot end that wait. Here every wait (query, commit, rollback, ping) has a deadline;
    past it the connection is closed — its state is unknown — and an ``OperationalError`` says so, which
    SQLAlchemy treats as a disconnect (the pool drops the connection).
    """

    response_timeout: float | None = None

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        """``psycopg.Connection.wait`` with ``response_timeout`` as the default deadline."""
        deadline = timeout if timeout is not None else self.response_timeout
        try:
            return super().wait(gen, interval=interval, timeout=deadline)
        except psycopg.errors._WaitTimeout:  # the only way psycopg reports its own wait deadline
            if timeout is not None:  # a caller's own deadline: its business
                raise
            self.close()
            raise psycopg.OperationalError(faults.no_answer_message(deadline)) from None

    def ping(self, timeout: float) -> bool:
        """Whether the server answers an empty statement within ``timeout`` seconds (the pool's pre-ping)."""
        saved, self.response_timeout = self.response_timeout, timeout
        try:
            with self.cursor() as cursor:
                cursor.execute(";")
            return True
        except psycopg.Error:
            return False
        finally:
            self.response_timeout = saved


def _postgres_connect_args(url: URL, timeouts: DbTimeouts) -> dict[str, Any]:
    """libpq parameters bounding connects and dead peers; any the URL sets itself are kept."""
    given = url.query
    response = timeouts.response
    wanted: dict[str, Any] = {
        "connect_timeout": max(2, math.ceil(timeouts.connect)),
        # A peer that vanished (host down, cable cut) is noticed on idle connections and on unacknowledged sends.
        "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
    }
    if response is not None:
        wanted["tcp_user_timeout"] = int(response * 1000)
    args = {key: value for key, value in wanted.items() if key not in given}
    if timeouts.statement is not None:
        options = given.get("options")
        options = " ".join(options) if isinstance(options, tuple) else (options or "")
        if "statement_timeout" not in options:
            args["options"] = f"{options} -c statement_timeout={int(timeouts.statement * 1000)}".strip()
    return args


#: What SQLite says when it cannot write the file (and what the service says when it will not open it).
READ_ONLY_MESSAGE = "attempt to write a readonly database"


def _sqlite_path(url: URL) -> str | None:
    """The SQLite database file of ``url`` (None for an in-memory database)."""
    return None if is_memory_sqlite(url) else url.database


def _create_sqlite_engine(url: str, timeouts: DbTimeouts) -> Engine:
    path = _sqlite_path(make_url(url))
    pool_args: dict[str, Any] = {"pool_timeout": timeouts.pool} if path is not None else {}
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": timeouts.sqlite_busy},
                           **pool_args)
    busy_ms = int(timeouts.sqlite_busy * 1000)

    if path is not None:
        # SQLite silently opens a file it may not write read-only, and within one process every connection to
        # the file then shares that read-only view of the WAL index (-shm) while any of them is open: after write
        # access returns, even new connections stay read-only, until a restart. So no connection is opened, and
        # none is handed out, while the file is not writable (one stat() per checkout): the database answers
        # "read-only" (503) until it is writable again, then new connections open read-write.
        @event.listens_for(engine, "do_connect")
        def _refuse_read_only(_dialect: Any, _record: Any, _cargs: Any, _cparams: Any) -> None:
            if not os.access(path, os.W_OK) and os.path.exists(path):
                raise sqlite3.OperationalError(READ_ONLY_MESSAGE)

        @event.listens_for(engine, "checkout")
        def _on_checkout(_dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            if not os.access(path, os.W_OK) and os.path.exists(path):
                raise sa_exc.DisconnectionError("the database file is not writable: reopen")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", f"busy_timeout={busy_ms}", "foreign_keys=ON", "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _create_postgres_engine(url: str, pool_size: int, timeouts: DbTimeouts) -> Engine:
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=timeouts.pool,
                           connect_args=_postgres_connect_args(make_url(url), timeouts))

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        connection = _BoundedConnection.connect(*cargs, **cparams)
        connection.response_timeout = timeouts.response
        return connection

    @event.listens_for(engine, "connect")
    def _on_connect(_dbapi_connection: Any, record: Any) -> None:
        record.info["titrate_fresh"] = True

    # The pre-ping, bounded by the connect timeout (SQLAlchemy's own ``pool_pre_ping`` would wait as long as a
    # statement may run): a pooled connection the server no longer answers is replaced by a new one.
    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.pop("titrate_fresh", False):
            return
        if not dbapi_connection.ping(timeouts.connect):
            raise sa_exc.DisconnectionError("the pooled connection did not answer a ping")

    return engine


def create_db_engine(url: str, pool_size: int = 10, timeouts: DbTimeouts | None = None) -> Engine:
    """An engine with the project's connection settings.

    SQLite: WAL (readers never wait for the writer), a bounded busy timeout, foreign keys on,
    ``synchronous=NORMAL`` (durable across a process crash in WAL mode), and transactions opened by
    us so writers can ask for ``BEGIN IMMEDIATE`` and never deadlock on a read→write upgrade.
    PostgreSQL: connect, statement, response and pool timeouts (``DbTimeouts``), TCP keepalives, a pre-ping.
    ``timeouts`` None: the defaults without a statement timeout (migrations).
    Errors that leave a connection unusable (a SQLite file that became read-only, an I/O error) count as
    disconnects, so the pool reopens its connections instead of failing forever.
    """
    url = normalise_url(url)
    timeouts = timeouts or DbTimeouts(statement=None)
    engine = (_create_sqlite_engine(url, timeouts) if is_sqlite(url)
              else _create_postgres_engine(url, pool_size, timeouts))

    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        if not context.is_disconnect and faults.needs_new_connection(context.original_exception):
            context.is_disconnect = True

    return engine


class Database:
    """Owns the engine and hands out sessions; ``transaction()`` is the unit of work of a request."""

    def __init__(self, url: str, pool_size: int = 10, timeouts: DbTimeouts | None = None) -> None:
        self.url = normalise_url(url)
        self.timeouts = timeouts or DbTimeouts()
        self.engine = create_db_engine(self.url, pool_size, self.timeouts)
        self.dialect = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session committed once on success and rolled back on any error (atomic writes)."""
        with self._sessions() as session:
            try:
                if self.dialect == "sqlite":
                    session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
                yield session
                session.commit()
            except BaseException as error:
                self._after_error(session, error)
                raise

    @contextmanager
    def read(self, snapshot: bool = False) -> Iterator[Session]:
        """A read-only session (rolled back at the end). ``snapshot``: every statement sees the same committed data
        (PostgreSQL ``REPEATABLE READ``; a SQLite read transaction is one already, from its first read)."""
        with self._sessions() as session:
            try:
                if snapshot and self.dialect == "postgresql":  # the transaction's first statement, so it applies
                    session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
                yield session
            except BaseException as error:
                self._after_error(session, error)
                raise
            finally:
                session.rollback()

    def _after_error(self, session: Session, error: BaseException) -> None:
        """Roll back; when the error left the connections unusable (raised by the raw driver on the bulk paths,
        which SQLAlchemy's disconnect handling never sees), drop every pooled connection."""
        session.rollback()
        if faults.needs_new_connection(error):
            self.engine.dispose()

    def check_writable(self) -> None:
        """Raise unless a new transaction could write now (``/readyz``); bounded by the timeouts, writes nothing.

        PostgreSQL: not a standby, transactions not read-only, and a transaction id can be assigned (refused when
        read-only or when the server stopped taking writes). SQLite: the file is writable, and a new connection
        takes the write lock (``BEGIN IMMEDIATE``, bounded by the busy timeout) and changes the header
        (``user_version`` to itself), then rolls back.
        """
        if self.dialect == "postgresql":
            with self.engine.connect() as conn:
                in_recovery, read_only = conn.execute(
                    text("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")).one()
                if in_recovery:
                    raise faults.ReadOnlyDatabase("the server is a standby (in recovery)")
                if read_only == "on":
                    raise faults.ReadOnlyDatabase("transactions are read-only (default_transaction_read_only)")
                conn.execute(text("SELECT txid_current()"))
                conn.rollback()
            return
        path = _sqlite_path(self.engine.url)
        if path is not None and not os.access(path, os.W_OK) and os.path.exists(path):
            raise faults.ReadOnlyDatabase(READ_ONLY_MESSAGE)
        raw: Any = (sqlite3.connect(path, timeout=self.timeouts.sqlite_busy, isolation_level=None)
                    if path is not None else self.engine.raw_connection())
        try:
            cursor = raw.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                version = int(cursor.execute("PRAGMA user_version").fetchone()[0])
                cursor.execute(f"PRAGMA user_version = {version}")
            finally:
                cursor.execute("ROLLBACK")
        finally:
            raw.close()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
