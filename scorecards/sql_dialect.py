"""The dialect-specific pieces of the scorecard SQL (``scorecards.sql``): one small SQLAlchemy compiler hook per
construct and dialect, on top of SQLAlchemy's own compiler — never copies of the query — and the few expressions
every dialect must spell the same way (finiteness, inline floats, an attribute's value).

The constructs and their spellings:

* :class:`BeforeOffset` (``ts < start + hours``, the attribution window and the CUPED pre-period): interval
  arithmetic on PostgreSQL, whole milliseconds of ``julianday`` on SQLite, whole microseconds added to the
  timestamp on DuckDB (``to_microseconds``), ClickHouse (``addMicroseconds``), BigQuery (``TIMESTAMP_ADD``),
  Snowflake (``DATEADD``) and Databricks (``timestampadd``).
* :class:`JsonString` / :class:`JsonText` (an attribute's value when it is a JSON string / as text): ``jsonb_typeof``
  and ``->>`` on PostgreSQL, ``json_type``/``json_extract`` on SQLite and DuckDB, ``JSONType``/``JSONExtract*`` on
  ClickHouse (attributes stored as JSON text or the ``JSON`` type), ``JSON_TYPE``/``LAX_STRING`` on BigQuery (a
  ``JSON`` column), ``GET``/``AS_VARCHAR`` on Snowflake (a ``VARIANT``/``OBJECT`` column), ``variant_get`` and
  ``schema_of_variant`` on Databricks (a ``VARIANT`` column).
* :class:`JsonValid` (the attributes parse): ``json_valid`` on SQLite, ``isValidJSON`` on ClickHouse (whose
  ``String`` column may hold any text), ``IS NOT NULL`` where the column type guarantees it.
* ``Float`` is a double everywhere: ``DOUBLE`` on DuckDB and Databricks (whose ``FLOAT`` is 4 bytes), ``Float64`` on
  ClickHouse; PostgreSQL, SQLite, BigQuery (``FLOAT64``) and Snowflake already read it so.

ClickHouse (embedded chDB through ``chdb-sqlalchemy``, dialect ``chdb``; the same hooks are registered for the
``clickhouse`` dialect of a server, untested here) also needs two connection settings, which
:func:`prepare_engine` applies: ``join_use_nulls = 1`` (ClickHouse's ``LEFT JOIN`` otherwise fills a unit without
events with default values — an empty name, a zero value, 1970 — not NULL, so ``count(e.value)`` counted them), and
``session_timezone = 'UTC'``; and its timezone-aware ``DateTime`` parameters must be ``DateTime64(6, 'UTC')``
(chdb-sqlalchemy binds a generic ``DateTime`` to whole seconds). The compile-only dialects (BigQuery, Snowflake,
Databricks) are checked against committed SQL (``tests/scorecards/golden_sql/``), never run here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Engine,
    Float,
    String,
    cast,
    event,
    literal,
    literal_column,
    type_coerce,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler, TypeCompiler
from sqlalchemy.sql.elements import BindParameter, Cast, ColumnClause, Label, _anonymous_label
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.sqltypes import REAL, DateTime

#: SQLAlchemy dialect names of ClickHouse: chdb-sqlalchemy's embedded chDB and clickhouse-sqlalchemy's server.
CLICKHOUSE = ("chdb", "clickhouse")

#: The ClickHouse session settings the scorecard SQL needs (:func:`prepare_engine` sets them on every connection).
CLICKHOUSE_SETTINGS: dict[str, str] = {"join_use_nulls": "1", "session_timezone": "'UTC'"}


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


def _offset_parts(element: BeforeOffset, compiler: SQLCompiler, double: str, integer: str,
                  **kw: Any) -> tuple[str, str, str]:
    """``ts``, ``start`` and the offset in whole microseconds, ``CAST(round(CAST(hours AS double) * 3.6e9) AS
    integer)``, as SQL. why whole microseconds: every engine below keeps timestamps to the microsecond, as PostgreSQL
    does, and PostgreSQL's ``number * interval`` rounds the offset the same way; an explicit integer rather than how
    each engine multiplies an interval by a double. The hours are cast to a double first: DuckDB (and Snowflake)
    read a numeric literal as a DECIMAL, and 0.3333333333333333 * 3600000000 overflows DuckDB's DECIMAL(18)."""
    ts, start, hours = list(element.clauses)
    ts_sql, start_sql, hours_sql = (compiler.process(c, **kw) for c in (ts, start, hours))
    return ts_sql, start_sql, f"CAST(round(CAST({hours_sql} AS {double}) * 3600000000.0) AS {integer})"


@compiles(BeforeOffset, "duckdb")
def _before_offset_duckdb(element: BeforeOffset, compiler: SQLCompiler, **kw: Any) -> str:
    ts, start, micros = _offset_parts(element, compiler, "DOUBLE", "BIGINT", **kw)
    return f"({ts} < {start} + to_microseconds({micros}))"


@compiles(BeforeOffset, *CLICKHOUSE)
def _before_offset_clickhouse(element: BeforeOffset, compiler: SQLCompiler, **kw: Any) -> str:
    # why addMicroseconds rather than ``+ INTERVAL``: ClickHouse's interval takes an integer count of one unit (no
    # ``number * INTERVAL '1 hour'``); on a DateTime64(6) column the sum stays exact to the microsecond.
    ts, start, micros = _offset_parts(element, compiler, "Float64", "Int64", **kw)
    return f"({ts} < addMicroseconds({start}, {micros}))"


@compiles(BeforeOffset, "bigquery")
def _before_offset_bigquery(element: BeforeOffset, compiler: SQLCompiler, **kw: Any) -> str:
    ts, start, micros = _offset_parts(element, compiler, "FLOAT64", "INT64", **kw)
    return f"({ts} < TIMESTAMP_ADD({start}, INTERVAL {micros} MICROSECOND))"


@compiles(BeforeOffset, "snowflake")
def _before_offset_snowflake(element: BeforeOffset, compiler: SQLCompiler, **kw: Any) -> str:
    ts, start, micros = _offset_parts(element, compiler, "DOUBLE", "BIGINT", **kw)
    return f"({ts} < DATEADD(microsecond, {micros}, {start}))"


@compiles(BeforeOffset, "databricks")
def _before_offset_databricks(element: BeforeOffset, compiler: SQLCompiler, **kw: Any) -> str:
    ts, start, micros = _offset_parts(element, compiler, "DOUBLE", "BIGINT", **kw)
    return f"({ts} < timestampadd(MICROSECOND, {micros}, {start}))"


def _json_args(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> tuple[str, str, str]:
    """The attributes column, the key and the key's JSONPath (``$['key']``) of a :class:`JsonString` or
    :class:`JsonText`, as SQL: the last three of its clauses, a key or path given as ``literal_column(text)``
    rendered as a string literal of the dialect.

    why literal columns: a hook leaves some clauses out (the default spelling of :class:`JsonText` renders only its
    first), and a bound parameter left out of the SQL breaks numbered parameter styles (DuckDB's ``$n``), while an
    unrendered literal column is nothing; its text is part of the statement's cache key, so a cached statement
    never reuses another key's SQL. Databricks' ``variant_get`` needs the path as a literal, not an expression."""
    column, key, path = list(element.clauses)[-3:]

    def render(clause: Any) -> str:
        if isinstance(clause, ColumnClause) and clause.is_literal:
            return compiler.render_literal_value(clause.name, String())
        return compiler.process(clause, **kw)

    return compiler.process(column, **kw), render(key), render(path)


class JsonString(FunctionElement[str]):
    """The value of a JSON object's key when it is a JSON *string*, else NULL (numbers, booleans, null, lists and
    objects never match a string) — the rule by which assignment picks contextual weights (bucketing spec §3.6).
    Built by :func:`segment_value` from ``(attributes, key, path)``: the key a string parameter, the path a literal
    column (see :func:`_json_args`)."""

    type = String()
    name = "json_string"
    inherit_cache = True


@compiles(JsonString)
def _json_string_postgresql(element: JsonString, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, _ = _json_args(element, compiler, **kw)
    return f"(CASE WHEN jsonb_typeof({column} -> {key}) = 'string' THEN {column} ->> {key} END)"


@compiles(JsonString, "sqlite")
def _json_string_sqlite(element: JsonString, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, _ = _json_args(element, compiler, **kw)
    path = f"'$.\"' || {key} || '\"'"
    return f"(CASE WHEN json_type({column}, {path}) = 'text' THEN json_extract({column}, {path}) END)"


@compiles(JsonString, "duckdb")
def _json_string_duckdb(element: JsonString, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, _ = _json_args(element, compiler, **kw)
    # why a quoted JSONPath as on SQLite: a key with dots or spaces names one key, never a path.
    path = f"('$.\"' || {key} || '\"')"
    return f"(CASE WHEN json_type({column}, {path}) = 'VARCHAR' THEN json_extract_string({column}, {path}) END)"


def _clickhouse_json(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> tuple[str, str]:
    """The attributes as JSON text and the key, as ClickHouse SQL. why ``toString``: ClickHouse's JSON functions
    read text; a ``JSON``-typed column (or a view's ``CAST(… AS JSON)``) becomes its JSON text, a ``String`` column
    stays as it is. The key names one key (``JSONType(json, 'a.b')`` never walks a path)."""
    column, key, _ = _json_args(element, compiler, **kw)
    return f"toString({column})", key


@compiles(JsonString, *CLICKHOUSE)
def _json_string_clickhouse(element: JsonString, compiler: SQLCompiler, **kw: Any) -> str:
    text, key = _clickhouse_json(element, compiler, **kw)
    return f"if(JSONType({text}, {key}) = 'String', JSONExtractString({text}, {key}), NULL)"


@compiles(JsonString, "bigquery")
def _json_string_bigquery(element: JsonString, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, _ = _json_args(element, compiler, **kw)
    return f"(CASE WHEN JSON_TYPE({column}[{key}]) = 'string' THEN LAX_STRING({column}[{key}]) END)"


@compiles(JsonString, "snowflake")
def _json_string_snowflake(element: JsonString, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, _ = _json_args(element, compiler, **kw)
    # why AS_VARCHAR: it is the VARIANT's string when it holds a string, else NULL — the strings-only rule itself.
    return f"AS_VARCHAR(GET({column}, {key}))"


@compiles(JsonString, "databricks")
def _json_string_databricks(element: JsonString, compiler: SQLCompiler, **kw: Any) -> str:
    column, _, path = _json_args(element, compiler, **kw)
    return (f"(CASE WHEN schema_of_variant(variant_get({column}, {path}, 'VARIANT')) = 'STRING' "
            f"THEN variant_get({column}, {path}, 'STRING') END)")


class JsonText(FunctionElement[str]):
    """The value of a JSON object's key as text, NULL when absent or JSON null: a string's characters, a number's
    or boolean's JSON spelling (``7``, ``2.5``, ``true``). Built by :func:`segment_value` from ``(attributes[key]
    as text, attributes, key, path)``, key and path literal columns; every dialect whose JSON SQLAlchemy already
    renders (PostgreSQL ``->>``, SQLite and DuckDB) compiles the first, the others their own spelling from the last
    three (see :func:`_json_args`)."""

    type = String()
    name = "json_text"
    inherit_cache = True


@compiles(JsonText)
def _json_text_default(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(list(element.clauses)[0], **kw)


@compiles(JsonText, *CLICKHOUSE)
def _json_text_clickhouse(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    text, key = _clickhouse_json(element, compiler, **kw)
    # why JSONExtractRaw for the rest: it is the value's JSON spelling, as PostgreSQL's ->> gives for numbers.
    return (f"multiIf(JSONType({text}, {key}) = 'Null', NULL, JSONType({text}, {key}) = 'String', "
            f"JSONExtractString({text}, {key}), JSONExtractRaw({text}, {key}))")


@compiles(JsonText, "bigquery")
def _json_text_bigquery(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, _ = _json_args(element, compiler, **kw)
    return f"LAX_STRING({column}[{key}])"


@compiles(JsonText, "snowflake")
def _json_text_snowflake(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, _ = _json_args(element, compiler, **kw)
    return f"TO_VARCHAR(STRIP_NULL_VALUE(GET({column}, {key})))"


@compiles(JsonText, "databricks")
def _json_text_databricks(element: JsonText, compiler: SQLCompiler, **kw: Any) -> str:
    column, _, path = _json_args(element, compiler, **kw)
    # why try_: a list or object has no STRING cast there (NULL, where PostgreSQL's ->> gives its JSON text)
    return f"try_variant_get({column}, {path}, 'STRING')"


class JsonValid(FunctionElement[bool]):
    """Whether a JSON column's stored text parses as JSON: ``json_valid`` on SQLite, where older versions may have
    stored ``NaN``/``Infinity`` tokens that make every JSON function raise "malformed JSON", and ``isValidJSON`` on
    ClickHouse, whose ``String`` column may hold any text (its JSON functions read unparsable text as empty rather
    than raising); elsewhere the column type guarantees it (PostgreSQL JSONB refuses such text; DuckDB's JSON type
    refuses text that does not parse and its JSON functions read ``NaN``/``Infinity`` tokens without raising;
    BigQuery's JSON and Snowflake's and Databricks' VARIANT hold parsed values), so only NULL fails."""

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


@compiles(JsonValid, *CLICKHOUSE)
def _json_valid_clickhouse(element: JsonValid, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)
    value = compiler.process(column, **kw)
    return f"({value} IS NOT NULL AND isValidJSON(toString({value})) = 1)"


@compiles(Float, "duckdb")
def _float_duckdb(type_: Float[Any], compiler: TypeCompiler, **kw: Any) -> str:
    """``Float`` is a double on DuckDB, as on PostgreSQL (``FLOAT`` = ``double precision``), SQLite (``REAL``),
    BigQuery (``FLOAT64``) and Snowflake (``FLOAT`` is 8 bytes); Databricks: see :func:`_cast_databricks`.

    why: DuckDB's ``FLOAT`` is a 4-byte single, so the scorecard's ``CAST(... AS FLOAT)`` (per-unit values, the
    finiteness bounds) would round every sum to ~7 digits and overflow on the largest double. A ``Float`` that asks
    for single precision (``precision`` ≤ 24 binary digits) keeps it.
    """
    if type_.precision is not None and type_.precision <= 24:
        return "FLOAT"
    return "DOUBLE"


@compiles(Float, *CLICKHOUSE)
def _float_clickhouse(type_: Float[Any], compiler: TypeCompiler, **kw: Any) -> str:
    """``Float`` is ``Float64`` on ClickHouse (``Float32`` only when single precision is asked for)."""
    if type_.precision is not None and type_.precision <= 24:
        return "Float32"
    return "Float64"


@compiles(BindParameter, "bigquery")
def _bind_bigquery(element: BindParameter[Any], compiler: SQLCompiler, **kw: Any) -> str:
    """A timezone-aware datetime rendered inline (``literal_binds``) is a ``TIMESTAMP`` literal in UTC on BigQuery.

    why: sqlalchemy-bigquery renders every datetime literal as ``DATETIME '…'`` (a civil time, which BigQuery
    refuses to compare with a ``TIMESTAMP`` column and which cannot carry the ``+00:00`` it appends). Bound
    parameters (the normal path) are untouched: the driver types an aware datetime as a TIMESTAMP itself.
    """
    value = element.effective_value
    if kw.get("literal_binds") and isinstance(value, datetime) and value.tzinfo is not None:
        return f"TIMESTAMP '{value.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"
    return compiler.visit_bindparam(element, **kw)


@compiles(Label, "bigquery")
def _label_bigquery(element: Label[Any], compiler: SQLCompiler, **kw: Any) -> str:
    """In ``GROUP BY`` a function (the segment value) is its expression on BigQuery, not a made-up label.

    why: SQLAlchemy groups by a function through an anonymous label, and sqlalchemy-bigquery renders every label in
    ``GROUP BY`` by its name — ``GROUP BY `json_text_1``` names no column of the ``SELECT`` (whose label is
    ``segment``), which BigQuery refuses. A named label is left to the dialect.
    """
    if kw.get("within_group_by") and isinstance(element.name, _anonymous_label):
        kw.pop("within_group_by")
        return compiler.process(element.element, **kw)
    return compiler.visit_label(element, **kw)


@compiles(Cast, "databricks")
def _cast_databricks(element: Cast[Any], compiler: SQLCompiler, **kw: Any) -> str:
    """``CAST(… AS DOUBLE)`` for a ``Float`` on Databricks, whose ``FLOAT`` is a 4-byte single.

    why a hook on the cast rather than on the type (as on DuckDB): databricks-sqlalchemy registers its own ``Float``
    hook (``FLOAT`` unless more than 24 bits of precision are asked for) when it is imported, replacing one
    registered before it. ``REAL`` and ``Float(precision ≤ 24)`` stay single.
    """
    type_ = element.type
    if isinstance(type_, Float) and not isinstance(type_, REAL) and (type_.precision is None or type_.precision > 24):
        return f"CAST({compiler.process(element.clause, **kw)} AS DOUBLE)"
    return compiler.visit_cast(element, **kw)


def prepare_engine(engine: Engine) -> Engine:
    """Make ``engine`` ready for the scorecard SQL and return it; a no-op except on ClickHouse.

    On chDB (dialect ``chdb``) every new connection runs ``SET`` for each of :data:`CLICKHOUSE_SETTINGS`, and the
    dialect binds timezone-aware datetimes (the scorecard's ``as_of``, window ends and ``earliest``) as
    ``DateTime64(6, 'UTC')`` — ``toDateTime64(?, 6, 'UTC')`` with the microseconds — where chdb-sqlalchemy would
    bind a generic ``DateTime`` as ``toDateTime(?)``, to whole seconds. Call it right after ``create_engine``,
    before the first query (the dialect memoises type adaptations).
    """
    if engine.dialect.name != "chdb":
        return engine
    try:
        from chdb_sqlalchemy.types import DateTime64
    except ImportError as exc:  # the dialect named "chdb" is chdb-sqlalchemy's: unreachable unless it was replaced
        raise RuntimeError("a chdb engine without chdb-sqlalchemy's types") from exc

    class _UTCDateTime64(DateTime64):  # type: ignore[misc]
        """chDB's DateTime64(6, 'UTC') for SQLAlchemy's generic ``DateTime`` (precision and zone fixed)."""

        def __init__(self, timezone: Any = None, **_: Any) -> None:
            super().__init__(precision=6, timezone="UTC")

    engine.dialect.colspecs = {**engine.dialect.colspecs, DateTime: _UTCDateTime64}

    @event.listens_for(engine, "connect")
    def _settings(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for name, value in CLICKHOUSE_SETTINGS.items():
                cursor.execute(f"SET {name} = {value}")
        finally:
            cursor.close()

    return engine


#: The largest finite double. why a range test rather than isfinite(): it is the one finiteness test every SQL
#: dialect can say — NaN compares false (SQLite stores NaN as NULL; ClickHouse, BigQuery) or above every number
#: (PostgreSQL, DuckDB), and ±Infinity lie outside the range.
_DOUBLE_MAX = 1.7976931348623157e308


def finite_number(value: ColumnElement[Any]) -> ColumnElement[bool]:
    """``value`` is a finite number (false for NULL, NaN and ±Infinity)."""
    low, high = (cast(literal_column(repr(bound)), Float) for bound in (-_DOUBLE_MAX, _DOUBLE_MAX))
    return value.between(low, high)


def segment_value(attributes: ColumnElement[Any], segment: str, strings_only: bool) -> ColumnElement[Any]:
    """An exposure attribute's value as text (NULL when absent); with ``strings_only`` NULL unless it is a JSON
    string. why: JSON path extraction compiles per dialect (``->>`` on PostgreSQL and DuckDB, ``JSON_EXTRACT`` on
    SQLite, :class:`JsonText`'s hooks elsewhere)."""
    # why a bracketed, quoted JSONPath: a key with dots or spaces names one key, never a path.
    escaped = segment.replace("\\", "\\\\").replace("'", "\\'")
    path = literal_column(f"$['{escaped}']", String)
    if strings_only:
        return JsonString(attributes, cast(literal(segment), String), path)
    document = attributes if isinstance(attributes.type, JSON) else type_coerce(attributes, JSON)
    return JsonText(document[segment].as_string(), attributes, literal_column(segment, String), path)


def float_literal(value: float) -> ColumnElement[float]:
    """A float rendered inline (values come from validated metric definitions, never from users' SQL)."""
    return literal_column(repr(float(value)), Float)


class PlannerOpaque(FunctionElement[Any]):
    """A column the query planner may not answer through an index, rendered ``+column`` on SQLite (its documented
    way to take a term out of index selection) and as the bare column elsewhere; same type, same value.

    why: SQLite 3.40.1 answers the scorecard join's ``e.name IN (…) AND e.timestamp <= as_of`` through titrate's
    ``(unit_id, name, timestamp)`` events index with events dated after ``as_of`` on some data layouts (the
    cross-engine data set: 4,258 extra joined rows; PostgreSQL, DuckDB, ClickHouse and a pandas restatement agree
    without them). With the ``as_of`` bound opaque the index still serves ``unit_id`` and ``name``.
    """

    name = "planner_opaque"
    inherit_cache = True

    def __init__(self, column: ColumnElement[Any]) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(PlannerOpaque)
def _planner_opaque_default(element: PlannerOpaque, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)
    return str(compiler.process(column, **kw))


@compiles(PlannerOpaque, "sqlite")
def _planner_opaque_sqlite(element: PlannerOpaque, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)
    return f"+{compiler.process(column, **kw)}"
