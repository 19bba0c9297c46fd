"""Batched writes that never let one bad row block the others.

A background writer (exposures, serving events, prediction log) writes rows in batches. When the database
refuses a batch there are two very different causes:

- the database is *unavailable* (stopped, frozen, locked, read-only, disk full, a timeout): every row would fail
  the same way, so the whole batch is kept in memory and retried later;
- the database refuses *a row* (a value out of range, an invalid JSON token, a string too long, a timestamp that
  cannot be converted): retrying would fail forever and block every row queued behind it, so the batch is split
  in halves, recursively, until the refused rows stand alone; the others are written and the refused ones are
  handed back to be kept in ``dead_letters``.

Splitting costs O(k · log n) extra transactions for k refused rows in a batch of n, and nothing when all is well.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

import psycopg
from sqlalchemy import exc as sa_exc

T = TypeVar("T")

#: Errors that say "the database cannot take writes now", whichever layer raised them: SQLAlchemy (sessions,
#: pool checkout, pool timeout) or the raw drivers (the bulk paths write through ``driver_connection``).
#: psycopg's ``QueryCanceled`` (statement timeout) and ``AdminShutdown`` are ``OperationalError`` subclasses;
#: sqlite3's "database is locked", "attempt to write a readonly database", "disk I/O error" and "database or disk
#: is full" are ``OperationalError`` too.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, sa_exc.DisconnectionError,
    psycopg.OperationalError, psycopg.InterfaceError, sqlite3.OperationalError, sqlite3.InterfaceError,
    ConnectionError, TimeoutError,
)


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database is unavailable (retry everything later) rather than that it refused
    some row of the batch (split the batch to find it)."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, _UNAVAILABLE)


def write_isolating(
    rows: Sequence[T], write: Callable[[Sequence[T]], int]
) -> tuple[int, list[tuple[T, BaseException]]]:
    """Write ``rows`` with ``write`` (one transaction per call; it returns the rows stored); when a call fails
    for a reason other than unavailability, split it in halves until each refused row stands alone.

    Returns ``(rows stored, [(refused row, its error), ...])``. Raises the first unavailability error (halves
    already written stay written: callers retry the whole batch, and the writes are idempotent by unique key).
    """
    if not rows:
        return 0, []
    try:
        return write(rows), []
    except Exception as error:
        if is_unavailable(error):
            raise
        if len(rows) == 1:
            return 0, [(rows[0], error)]
    middle = len(rows) // 2
    written_left, refused_left = write_isolating(rows[:middle], write)
    written_right, refused_right = write_isolating(rows[middle:], write)
    return written_left + written_right, refused_left + refused_right
