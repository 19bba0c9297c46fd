"""Engines and sessions: one ``Database`` per process, transactions committed once at the boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def is_sqlite(url: str) -> bool:
    """Whether a SQLAlchemy URL points at SQLite."""
    return url.startswith("sqlite")


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs (the driver the project installs)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_db_engine(url: str, pool_size: int = 10) -> Engine:
    """An engine with the project's connection settings.

    SQLite: WAL (readers never wait for the writer), a 30 s busy timeout, foreign keys on,
    ``synchronous=NORMAL`` (durable across a process crash in WAL mode), and transactions opened by
    us so writers can ask for ``BEGIN IMMEDIATE`` and never deadlock on a read→write upgrade.
    """
    url = normalise_url(url)
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON", "synchronous=NORMAL"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
            connection.exec_driver_sql(f"BEGIN {mode}")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


class Database:
    """Owns the engine and hands out sessions; ``transaction()`` is the unit of work of a request."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = normalise_url(url)
        self.engine = create_db_engine(self.url, pool_size)
        self.dialect = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session committed once on success and rolled back on any error (atomic writes)."""
        with self._sessions() as session:
            if self.dialect == "sqlite":
                session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (rolled back at the end)."""
        with self._sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
