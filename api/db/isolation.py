"""Batched writes that never let one bad row block the others.

A background writer (exposures, serving events, prediction log) writes rows in batches. When the database
refuses a batch there are two very different causes:

- the database is *unavailable* (stopped, frozen, locked, read-only, disk full, a timeout) or misconfigured (a
  missing table): every row would fail the same way, so the whole batch is kept in memory and retried later;
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
#: PostgreSQL SQLSTATE classes that refuse a row's data: data exceptions (22: a value out of range, an invalid JSON
#: token, a string too long), integrity violations (23) and program limits (54: a row too big).
_PG_ROW_CLASSES = ("22", "23", "54")
#: SQLite result code of a value too big to store (SQLITE_TOOBIG).
_SQLITE_TOOBIG = 18


def is_row_refusal(error: BaseException) -> bool:
    """Whether ``error`` says the database refused some row of the batch (split the batch to find it), as opposed
    to anything else — an unavailable database (``api.db.faults``), a missing table, a lost connection — after
    which every row is kept and retried. Unknown errors are *not* row refusals: keeping rows queued (bounded by
    the queue's limit) is safer than moving a whole batch to ``dead_letters`` because of a deployment fault."""
    if isinstance(error, sa_exc.DBAPIError) and isinstance(error.orig, BaseException):
        error = error.orig
    if isinstance(error, psycopg.Error):
        return (error.sqlstate or "")[:2] in _PG_ROW_CLASSES
    if isinstance(error, sqlite3.IntegrityError | sqlite3.DataError):
        return True
    if isinstance(error, sqlite3.OperationalError):
        return getattr(error, "sqlite_errorcode", None) == _SQLITE_TOOBIG
    if isinstance(error, sqlite3.ProgrammingError):  # "Error binding parameter …: type … is not supported"
        return "binding" in str(error).lower()
    # Raised while converting a row for the driver (a timestamp outside UTC's years, a naive timestamp, a
    # non-finite number in JSON, a string longer than its column, an integer too large for SQLite).
    return isinstance(error, ValueError | OverflowError | TypeError)


def write_isolating(
    rows: Sequence[T], write: Callable[[Sequence[T]], int]
) -> tuple[int, list[tuple[T, BaseException]]]:
    """Write ``rows`` with ``write`` (one transaction per call; it returns the rows stored); when a call fails
    because the database refused a row (:func:`is_row_refusal`), split it in halves until each refused row stands
    alone.

    Returns ``(rows stored, [(refused row, its error), ...])``. Raises any other error (halves already written
    stay written: callers retry the whole batch, and the writes are idempotent by unique key).
    """
    if not rows:
        return 0, []
    try:
        return write(rows), []
    except Exception as error:
        if not is_row_refusal(error):
            raise
        if len(rows) == 1:
            return 0, [(rows[0], error)]
    middle = len(rows) // 2
    written_left, refused_left = write_isolating(rows[:middle], write)
    written_right, refused_right = write_isolating(rows[middle:], write)
    return written_left + written_right, refused_left + refused_right
