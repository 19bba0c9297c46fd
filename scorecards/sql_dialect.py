"""The dialect-specific pieces of the scorecard SQL (``scorecards.sql``): one small SQLAlchemy compiler hook per
construct and dialect, on top of SQLAlchemy's own compiler — never copies of the query — and the few expressions
every dialect must spell the same way (finiteness, inline floats, an attribute's value)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ColumnElement, Float, String, cast, literal, literal_column
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler, TypeCompiler
from sqlalchemy.sql.functions import FunctionElement


class BeforeOffset(FunctionElement[bool]):
    """``ts < start + hours`` for timestamp columns, rendered per dialect."""

    type = Boolean()
    name = "before_offset"
    inherit_cache = True


@compiles(BeforeOffset)
def _before_offset_default(element: BeforeOffset, compiler: SQLCompiler, **kw: Any) -> str:
    ts, start, hours = list(element.clauses)
    # why: the hours are a validated finite float rendered as a literal, so PostgreSQL sees
    # ``number * interval`` (a typed expression) rather than an untyped parameter times an interval.
    ts_sql, start_sql, hours_sql = (compiler.process(c, **kw) for c in (ts, start, hours))
    return f"({ts_sql} < {start_sql} + {hours_sql} * INTERVAL '1 hour')"


@compiles(BeforeOffset, "sqlite")
def _before_offset_sqlite(element: BeforeOffset, compiler: SQLCompiler, **kw: Any) -> str:
    ts, start, hours = list(element.clauses)
    # why: SQLite stores timestamps as ISO text; julianday() reads them to the whole millisecond, as fractional
    # days (a double whose last bit is ~40 µs today). Adding hours / 24.0 to that double rounds, so an event exactly
    # at a fractional-hour window end (0.5 h, 6.5 h) could fall inside the window; in whole milliseconds (integers
    # far below 2^53, exact as doubles) the bound is exact at SQLite's resolution.
    ms = (f"round(julianday({compiler.process(c, **kw)}) * 86400000.0)" for c in (ts, start))
    return f"({next(ms)} < {next(ms)} + round({compiler.process(hours, **kw)} * 3600000.0))"


@compiles(BeforeOffset, "duckdb")
def _before_offset_duckdb(element: BeforeOffset, compiler: SQLCompiler, **kw: Any) -> str:
    ts, start, hours = list(element.clauses)
    # why: DuckDB keeps TIMESTAMPTZ to the microsecond, as PostgreSQL does; the offset is rounded to whole
    # microseconds explicitly (PostgreSQL's ``number * interval`` rounds the same way), rather than relying on how
    # DuckDB multiplies an interval by a double. The hours are cast to DOUBLE first: DuckDB reads a numeric literal
    # as DECIMAL(18), and 0.3333333333333333 * 3600000000 overflows it.
    ts_sql, start_sql, hours_sql = (compiler.process(c, **kw) for c in (ts, start, hours))
    offset = f"to_microseconds(CAST(round(CAST({hours_sql} AS DOUBLE) * 3600000000.0) AS BIGINT))"
    return f"({ts_sql} < {start_sql} + {offset})"


class JsonString(FunctionElement[str]):
    """The value of a JSON object's key when it is a JSON *string*, else NULL (numbers, booleans, null, lists and
    objects never match a string) — the rule by which assignment picks contextual weights (bucketing spec §3.6)."""

    type = String()
    name = "json_string"
    inherit_cache = True


@compiles(JsonString)
def _json_string_postgresql(element: JsonString, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = (compiler.process(c, **kw) for c in element.clauses)
    return f"(CASE WHEN jsonb_typeof({column} -> {key}) = 'string' THEN {column} ->> {key} END)"


@compiles(JsonString, "sqlite")
def _json_string_sqlite(element: JsonString, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = (compiler.process(c, **kw) for c in element.clauses)
    path = f"'$.\"' || {key} || '\"'"
    return f"(CASE WHEN json_type({column}, {path}) = 'text' THEN json_extract({column}, {path}) END)"


@compiles(JsonString, "duckdb")
def _json_string_duckdb(element: JsonString, compiler: SQLCompiler, **kw: Any) -> str:
    column, key = (compiler.process(c, **kw) for c in element.clauses)
    # why a quoted JSONPath as on SQLite: a key with dots or spaces names one key, never a path.
    path = f"('$.\"' || {key} || '\"')"
    return f"(CASE WHEN json_type({column}, {path}) = 'VARCHAR' THEN json_extract_string({column}, {path}) END)"


class JsonValid(FunctionElement[bool]):
    """Whether a JSON column's stored text parses as JSON: ``json_valid`` on SQLite, where older versions may have
    stored ``NaN``/``Infinity`` tokens that make every JSON function raise "malformed JSON"; elsewhere the column
    type guarantees it (PostgreSQL JSONB refuses such text; DuckDB's JSON type refuses text that does not parse and
    its JSON functions read ``NaN``/``Infinity`` tokens without raising), so only NULL fails."""

    type = Boolean()
    name = "json_valid_row"
    inherit_cache = True


@compiles(JsonValid)
def _json_valid_default(element: JsonValid, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)
    return f"({compiler.process(column, **kw)} IS NOT NULL)"


@compiles(JsonValid, "sqlite")
def _json_valid_sqlite(element: JsonValid, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)
    return f"(json_valid({compiler.process(column, **kw)}) = 1)"


@compiles(Float, "duckdb")
def _float_duckdb(type_: Float[Any], compiler: TypeCompiler, **kw: Any) -> str:
    """``Float`` is a double on DuckDB, as on PostgreSQL (``FLOAT`` = ``double precision``) and SQLite (``REAL``).

    why: DuckDB's ``FLOAT`` is a 4-byte single, so the scorecard's ``CAST(... AS FLOAT)`` (per-unit values, the
    finiteness bounds) would round every sum to ~7 digits and overflow on the largest double. A ``Float`` that asks
    for single precision (``precision`` ≤ 24 binary digits) keeps it.
    """
    if type_.precision is not None and type_.precision <= 24:
        return "FLOAT"
    return "DOUBLE"


#: The largest finite double. why a range test rather than isfinite(): it is the one finiteness test every SQL
#: dialect can say — NaN compares false (SQLite stores NaN as NULL) or above every number (PostgreSQL, DuckDB),
#: and ±Infinity lie outside the range.
_DOUBLE_MAX = 1.7976931348623157e308


def finite_number(value: ColumnElement[Any]) -> ColumnElement[bool]:
    """``value`` is a finite number (false for NULL, NaN and ±Infinity)."""
    low, high = (cast(literal_column(repr(bound)), Float) for bound in (-_DOUBLE_MAX, _DOUBLE_MAX))
    return value.between(low, high)


def segment_value(attributes: ColumnElement[Any], segment: str, strings_only: bool) -> ColumnElement[Any]:
    """An exposure attribute's value as text (NULL when absent); with ``strings_only`` NULL unless it is a JSON
    string. why: JSON path extraction compiles per dialect (``->>`` on PostgreSQL and DuckDB, ``JSON_EXTRACT`` on
    SQLite)."""
    if strings_only:
        return JsonString(attributes, cast(literal(segment), String))
    return attributes[segment].as_string()


def float_literal(value: float) -> ColumnElement[float]:
    """A float rendered inline (values come from validated metric definitions, never from users' SQL)."""
    return literal_column(repr(float(value)), Float)
