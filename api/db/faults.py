"""Database faults: which errors mean "the database is unavailable now" and how the API answers them.

A stopped, frozen, locked, read-only or full database, a lost connection, a statement or pool timeout: every route
answers ``503 {"detail": "database unavailable: <reason>"}`` with ``Retry-After`` (``TITRATE_DB_RETRY_AFTER_SECONDS``)
instead of a plain-text 500, whichever layer raised the error (SQLAlchemy, or the raw drivers on the bulk paths).
Errors about one statement or its data (an integrity violation, a bad value, a missing table) are not faults and
keep their own handling. Reasons are fixed phrases — the driver's message (hosts, ports, paths) goes to the log,
never to the caller, who may not even be authenticated yet.
"""

from __future__ import annotations

import logging
import sqlite3

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)

DATABASE_UNAVAILABLE = Counter(
    "titrate_database_unavailable", "requests answered 503 because the database was unavailable", ["reason"]
)

#: SQLite primary result codes that mean the database cannot be used now (``sqlite3.Error.sqlite_errorcode``).
_SQLITE_REASONS = {
    5: "database is locked",  # SQLITE_BUSY: another writer held the lock past the busy timeout
    6: "database table is locked",  # SQLITE_LOCKED
    8: "database is read-only",  # SQLITE_READONLY
    10: "disk I/O error",  # SQLITE_IOERR
    13: "database or disk is full",  # SQLITE_FULL
    14: "cannot open the database file",  # SQLITE_CANTOPEN
    15: "database lock protocol error",  # SQLITE_PROTOCOL
}
#: Of those, the ones after which a connection stays broken (SQLite opened the file read-only, or lost it).
_SQLITE_RECONNECT = {8, 10, 14}
#: When the driver gives no code: the messages of the same faults.
_SQLITE_MESSAGES = (
    ("database is locked", 5), ("database table is locked", 6), ("readonly database", 8), ("disk i/o error", 10),
    ("database or disk is full", 13), ("unable to open database file", 14),
)

#: PostgreSQL SQLSTATEs (exact first, then by class) that mean "unavailable now, retry later".
_PG_STATES = {
    "57014": "statement timeout",  # query_canceled (statement_timeout)
    "55P03": "lock timeout",  # lock_not_available
    "25006": "database is read-only",  # read_only_sql_transaction (standby, default_transaction_read_only)
    "53100": "database disk is full",  # disk_full
    "53200": "database out of memory",  # out_of_memory
    "53300": "too many database connections",  # too_many_connections
    "57P01": "database server shutting down",  # admin_shutdown
    "57P02": "database server crashed",  # crash_shutdown
    "57P03": "database server not accepting connections yet",  # cannot_connect_now
    "40001": "serialization failure, retry",  # serialization_failure
    "40P01": "deadlock, retry",  # deadlock_detected
}
_PG_CLASSES = {
    "08": "connection to the database server failed",  # connection_exception
    "53": "database server out of resources",  # insufficient_resources
    "57": "database server intervention",  # operator_intervention
    "58": "database server system error",  # system_error (I/O)
}
_NO_ANSWER = "the database server did not answer within"


class ReadOnlyDatabase(Exception):
    """The database answers but cannot take writes now (``Database.check_writable``)."""


def no_answer_message(seconds: float | None) -> str:
    """The message of the error raised when a PostgreSQL server stops answering (``api.db.engine``)."""
    return f"{_NO_ANSWER} {seconds:g} s" if seconds is not None else _NO_ANSWER


def _sqlite_code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    message = str(error).lower()
    return next((value for text, value in _SQLITE_MESSAGES if text in message), None)


def _driver_error(error: BaseException) -> BaseException:
    """The DBAPI exception under a SQLAlchemy wrapper (or the error itself)."""
    if isinstance(error, sa_exc.DBAPIError) and isinstance(error.orig, BaseException):
        return error.orig
    return error


def unavailable_reason(error: BaseException) -> str | None:
    """A short fixed phrase when ``error`` means the database is unavailable now; None for any other error
    (integrity violations, bad values, programming errors keep their own handling)."""
    if isinstance(error, sa_exc.TimeoutError):
        return "no free database connection (pool timeout)"
    if isinstance(error, sa_exc.DisconnectionError):
        return "connection to the database lost"
    if isinstance(error, ReadOnlyDatabase):
        return "database is read-only"
    driver = _driver_error(error)
    if isinstance(driver, sqlite3.Error):
        code = _sqlite_code(driver)
        return _SQLITE_REASONS.get(code) if code is not None else None
    if isinstance(driver, psycopg.Error):
        state = driver.sqlstate or ""
        if state:
            return _PG_STATES.get(state) or _PG_CLASSES.get(state[:2])
        if str(driver).startswith(_NO_ANSWER):
            return "the database server did not answer in time"
        if isinstance(driver, (psycopg.OperationalError, psycopg.InterfaceError)):  # client side: no SQLSTATE
            return "cannot reach the database server"
        return None
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return "connection to the database lost"
    return None


def needs_new_connection(error: BaseException) -> bool:
    """Whether ``error`` leaves a connection unusable even after the fault clears, so it must be reopened: SQLite
    opened the file read-only, hit an I/O error or lost the file; a PostgreSQL session is read-only (it keeps the
    ``default_transaction_read_only`` or standby it started with). PostgreSQL connections that break are closed by
    psycopg and dropped by the pool already."""
    driver = _driver_error(error)
    if isinstance(driver, sqlite3.Error):
        return _sqlite_code(driver) in _SQLITE_RECONNECT
    return isinstance(driver, psycopg.Error) and driver.sqlstate == "25006"


def install_database_fault_handlers(app: FastAPI) -> None:
    """Answer database faults with 503 + ``Retry-After`` on every route; re-raise anything else unchanged."""

    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        reason = unavailable_reason(exc)
        if reason is None:
            raise exc  # not a fault: the error keeps its previous behaviour
        DATABASE_UNAVAILABLE.labels(reason).inc()
        log.warning("database unavailable (%s) on %s %s: %s", reason, request.method, request.url.path,
                    " ".join(str(_driver_error(exc)).split())[:500])
        settings = getattr(request.app.state, "settings", None)
        retry_after = getattr(settings, "db_retry_after_seconds", 5)
        return JSONResponse({"detail": f"database unavailable: {reason}"}, status_code=503,
                            headers={"Retry-After": str(retry_after)})

    for error_class in (sa_exc.DBAPIError, sa_exc.TimeoutError, sa_exc.DisconnectionError, sqlite3.Error,
                        psycopg.Error, ReadOnlyDatabase):
        app.add_exception_handler(error_class, _database_error)
