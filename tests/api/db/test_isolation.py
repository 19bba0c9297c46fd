"""``api.db.isolation``: a refused batch is split until exactly the refused rows stand alone; any other error keeps
every row (it is raised for the caller to retry)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import errors as pg_errors
from sqlalchemy import exc as sa_exc

from api.db.isolation import is_row_refusal, write_isolating


def _sqlite_error(statement: str) -> sqlite3.Error:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.execute("INSERT INTO t VALUES (1, 'a')")
    try:
        conn.execute(statement)
    except sqlite3.Error as error:
        return error
    finally:
        conn.close()
    raise AssertionError("no error")


@pytest.mark.parametrize(("error", "refusal"), [
    (_sqlite_error("INSERT INTO t VALUES (1, 'b')"), True),  # unique violation
    (_sqlite_error("INSERT INTO t VALUES (2, NULL)"), True),  # NOT NULL
    (_sqlite_error("INSERT INTO missing VALUES (1)"), False),  # a missing table is a deployment fault
    (sqlite3.OperationalError("attempt to write a readonly database"), False),
    (sqlite3.OperationalError("database is locked"), False),
    (pg_errors.InvalidTextRepresentation('invalid input syntax for type json: Token "NaN" is invalid'), True),
    (pg_errors.StringDataRightTruncation("value too long for type character varying(256)"), True),
    (pg_errors.ForeignKeyViolation("insert or update violates foreign key constraint"), True),
    (pg_errors.ProgramLimitExceeded("row is too big"), True),
    (pg_errors.QueryCanceled("canceling statement due to statement timeout"), False),
    (pg_errors.AdminShutdown("terminating connection due to administrator command"), False),
    (pg_errors.UndefinedTable('relation "exposures" does not exist'), False),
    (psycopg.OperationalError("connection refused"), False),
    (OverflowError("date value out of range"), True),
    (ValueError("Out of range float values are not JSON compliant"), True),
    (RuntimeError("something unexpected"), False),
])
def test_which_errors_are_row_refusals(error: BaseException, refusal: bool) -> None:
    assert is_row_refusal(error) is refusal
    wrapped = sa_exc.DBAPIError("INSERT …", {}, error) if isinstance(error, sqlite3.Error | psycopg.Error) else None
    if wrapped is not None:
        assert is_row_refusal(wrapped) is refusal  # the same through SQLAlchemy's wrapper


def _writer(bad: set[int], calls: list[int]):  # type: ignore[no-untyped-def]
    def write(rows: Sequence[int]) -> int:
        calls.append(len(rows))
        if bad & set(rows):
            raise ValueError("refused")
        return len(rows)
    return write


@given(n=st.integers(1, 300), data=st.data())
def test_exactly_the_refused_rows_are_handed_back(n: int, data: st.DataObject) -> None:
    rows = list(range(n))
    bad = set(data.draw(st.lists(st.sampled_from(rows), max_size=5)))
    calls: list[int] = []
    written, refused = write_isolating(rows, _writer(bad, calls))
    assert written == n - len(bad)
    assert sorted(row for row, _ in refused) == sorted(bad)
    assert all(isinstance(error, ValueError) for _, error in refused)
    # O(k log n) transactions for k refused rows, one when all is well
    assert len(calls) <= 1 + 2 * max(len(bad), 1) * max(n.bit_length(), 1)


def test_an_unavailable_database_raises_and_refuses_nothing() -> None:
    def write(rows: Sequence[int]) -> int:
        raise psycopg.OperationalError("connection refused")

    with pytest.raises(psycopg.OperationalError):
        write_isolating(list(range(10)), write)
