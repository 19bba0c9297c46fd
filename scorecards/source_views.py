"""Views that present a user's own exposure and event tables (an *analysis source*) with the columns the scorecard
SQL (:mod:`scorecards.sql`) reads, so the same query runs on a warehouse or lake — never a copy of it.

A :class:`TableMapping` names either a table (``table``, optionally schema-qualified: ``analytics.exp_log``) or a
read-only ``SELECT`` (``sql``), and which of its columns play titrate's roles (``columns``: titrate name → the
user's column). The two builders return SQLAlchemy ``FromClause`` objects (subqueries) to pass to
``scorecards.sql.scorecard_query`` and friends in place of titrate's own tables:

* :func:`exposures_view` → ``id, experiment_id, unit_id, variant, allocation_version, exposed_at, attributes``: the
  rows of one experiment (``experiment`` column = the experiment's key), one row per unit — its first exposure
  (earliest ``timestamp``, ties broken by ``variant``) — with ``allocation_version`` derived from titrate's
  allocation history (the newest version created at or before the exposure; the first version before any).
* :func:`events_view` → ``unit_id, name, value, timestamp``; with ``event_id`` mapped, rows repeating an event id
  count once.

Rules the views apply (the contract the tests check):

* Rows with a NULL unit or timestamp are left out (there is no unit to attribute them to, nor a time to order or
  window them by).
* ``value`` is cast to a double; a NULL value counts as 1.0, the value titrate's event API stores when a client
  sends none — so a table of "view" events without values counts views as the API would.
* ``attributes`` (a JSON text, JSON or map column) is read as JSON, NULL as ``{}``; unmapped, every exposure has
  ``{}`` (no segment values), so segment breakdowns and contextual cells still run and put every unit under "no
  value" rather than failing.
* Timestamps are compared as UTC: on SQLite (ISO text) they are normalised to the text form SQLAlchemy stores
  (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC; offsets and a ``T`` separator accepted, read to the millisecond as
  SQLite's date functions do); on PostgreSQL and DuckDB a ``timestamp without time zone`` column is read in the
  session's time zone, which the caller sets to UTC on each connection (the service does: ``api.sources``).

Identifiers are quoted by SQLAlchemy (``table()``/``column()`` with :class:`~sqlalchemy.sql.quoted_name`), never
pasted into SQL text; the only user SQL is ``sql`` itself, wrapped as a subquery (the service accepts only a
read-only ``SELECT``/``WITH`` there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    FromClause,
    Integer,
    MetaData,
    String,
    Subquery,
    Table,
    TypeDecorator,
    and_,
    case,
    cast,
    column,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import quoted_name
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["EVENT_COLUMNS", "EXPOSURE_COLUMNS", "OPTIONAL_EVENT_COLUMNS", "OPTIONAL_EXPOSURE_COLUMNS", "TableMapping",
           "events_view", "exposures_view", "materialised_tables", "source_from"]

#: titrate's exposure roles a mapping must name, and those it may name.
EXPOSURE_COLUMNS: tuple[str, ...] = ("unit_id", "experiment", "variant", "timestamp")
OPTIONAL_EXPOSURE_COLUMNS: tuple[str, ...] = ("attributes",)
#: titrate's event roles a mapping must name, and those it may name.
EVENT_COLUMNS: tuple[str, ...] = ("unit_id", "name", "value", "timestamp")
OPTIONAL_EVENT_COLUMNS: tuple[str, ...] = ("event_id",)

#: The value of an event stored without one — the default of titrate's event API.
DEFAULT_EVENT_VALUE = 1.0



class UtcTimestamp(TypeDecorator[datetime]):
    """A source's timestamp, read back tz-aware: a naive value (SQLite's text, chDB's DateTime64, a PostgreSQL
    ``timestamp without time zone``) is UTC by the sources' contract and gets ``tzinfo=UTC``, so rows read from any
    engine compare and store like titrate's own (the materialised rows refuse naive datetimes)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """``value`` with UTC attached when naive."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


_TIMESTAMP = UtcTimestamp()
# why JSONB on PostgreSQL: the contextual-cell test (``scorecards.sql_dialect.JsonString``) uses jsonb_typeof.
_JSON: Any = JSON().with_variant(JSONB(), "postgresql")


@dataclass(frozen=True)
class TableMapping:
    """Where one kind of rows lives in a source, and which columns hold titrate's fields.

    Exactly one of ``table`` (a name, optionally ``schema.name``; the part after the last dot is the table) and
    ``sql`` (a ``SELECT`` whose output columns include the mapped ones) is set. ``columns`` maps titrate's names
    (:data:`EXPOSURE_COLUMNS`/:data:`EVENT_COLUMNS` and the optional ones) to the source's column names.
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    table: str | None = None
    sql: str | None = None

    def __post_init__(self) -> None:
        if (self.table is None) == (self.sql is None):
            raise ValueError("a mapping names exactly one of 'table' and 'sql'")


def materialised_tables(schema: str, keyed: bool = True) -> tuple[Table, Table, Table]:
    """The three tables that keep an experiment's materialised scorecard rows (``scorecards.incremental``) in schema
    ``schema`` of an analysis source, shaped as titrate's ``scorecard_units``, ``scorecard_unit_values`` and
    ``scorecard_unit_window_values`` (without their foreign keys: the experiments live in titrate's database): the
    unit table ``experiment_id, unit_id, variant, allocation_version, exposed_at, attributes, excluded_events``, and
    the value and window value tables ``experiment_id, unit_id, component, value``, keyed as titrate's.

    ``keyed`` False: the same tables without primary keys, as they are created on DuckDB. why: DuckDB keeps a key in
    an ART index, and a transaction that deletes an experiment's rows and inserts them again (every full refresh)
    then spent 6.2 s in its ``COMMIT`` for 380k value rows, against 0.06 s unkeyed; titrate's writes keep the rows
    unique without it (an experiment's rows are replaced in one transaction, under its refresh lock)."""
    metadata = MetaData(schema=schema)

    def key(name: str, kind: Any) -> Column[Any]:
        return Column(name, kind, primary_key=keyed, nullable=False)

    units = Table(
        "scorecard_units", metadata,
        key("experiment_id", Integer), key("unit_id", String(256)),
        Column("variant", String(100), nullable=False), Column("allocation_version", Integer, nullable=False),
        Column("exposed_at", _TIMESTAMP, nullable=False), Column("attributes", _JSON, nullable=False),
        Column("excluded_events", Integer, nullable=False))
    values = Table(
        "scorecard_unit_values", metadata,
        key("experiment_id", Integer), key("unit_id", String(256)), key("component", String(512)),
        Column("value", Float, nullable=False))
    window = Table(
        "scorecard_unit_window_values", metadata,
        key("experiment_id", Integer), key("unit_id", String(256)), key("component", String(512)),
        Column("value", Float, nullable=False))
    return units, values, window


def source_from(mapping: TableMapping, roles: Sequence[str]) -> FromClause:
    """The mapping's rows as a ``FromClause`` whose columns are the user's names of ``roles`` (those mapped).

    A table becomes ``table(name, schema=...)`` with quoted identifiers; ``sql`` becomes ``(sql) AS src`` with the
    mapped columns declared. Used by the views below and by the service to probe a source (``SELECT … LIMIT 0``).
    """
    names = list(dict.fromkeys(mapping.columns[r] for r in roles if r in mapping.columns))
    if mapping.sql is not None:
        # why the newline: a query ending in a ``--`` comment must not comment out the subquery's closing parenthesis;
        # a trailing ``;`` would end the statement inside it
        sql = mapping.sql.rstrip().removesuffix(";").rstrip()
        return text(f"{sql}\n").columns(*(column(quoted_name(n, None)) for n in names)).subquery("src")
    assert mapping.table is not None
    schema, _, name = mapping.table.rpartition(".")
    return table(quoted_name(name, None), *(column(quoted_name(n, None)) for n in names),
                 schema=quoted_name(schema, None) if schema else None)


class SourceTimestamp(FunctionElement[datetime]):
    """A source's timestamp column as a value comparable with tz-aware UTC datetimes: the column itself, except on
    SQLite, where ISO text (``T`` or space separated, optional ``Z``/offset, any fraction) is rewritten as
    SQLAlchemy's stored form ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC."""

    type = _TIMESTAMP
    name = "source_timestamp"
    inherit_cache = True


@compiles(SourceTimestamp)
def _source_timestamp_default(element: SourceTimestamp, compiler: SQLCompiler, **kw: Any) -> str:
    (ts,) = list(element.clauses)
    return compiler.process(ts, **kw)


@compiles(SourceTimestamp, "sqlite")
def _source_timestamp_sqlite(element: SourceTimestamp, compiler: SQLCompiler, **kw: Any) -> str:
    (ts,) = list(element.clauses)
    # why strftime: bound datetimes compare with stored text as strings on SQLite, so both must be spelled alike;
    # strftime reads every ISO form (and converts offsets to UTC) and writes milliseconds, padded to microseconds.
    return f"(strftime('%Y-%m-%d %H:%M:%f', {compiler.process(ts, **kw)}) || '000')"


class SourceJson(FunctionElement[Any]):
    """A source's attributes column read as JSON: ``CAST(… AS JSONB)`` on PostgreSQL (from text, json or jsonb),
    ``CAST(… AS JSON)`` elsewhere (DuckDB: from VARCHAR, JSON, MAP or STRUCT), the text itself on SQLite (whose
    JSON functions read text; a CAST there would apply numeric affinity)."""

    type = _JSON
    name = "source_json"
    inherit_cache = True


@compiles(SourceJson)
def _source_json_default(element: SourceJson, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"CAST({compiler.process(value, **kw)} AS JSON)"


@compiles(SourceJson, "postgresql")
def _source_json_postgresql(element: SourceJson, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"CAST({compiler.process(value, **kw)} AS JSONB)"


@compiles(SourceJson, "sqlite")
def _source_json_sqlite(element: SourceJson, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return compiler.process(value, **kw)


# why these three: BigQuery, Snowflake and Databricks have no CAST to JSON; each parses text into the JSON value
# the hooks of scorecards.sql_dialect read (BigQuery JSON, Snowflake and Databricks VARIANT), NULL when the text
# does not parse. BigQuery's column must be JSON text (STRING, as `titrate export` writes it); Snowflake's and
# Databricks' may be text or already semi-structured (read back as its JSON text first). Compile-only: checked
# against tests/scorecards/golden_sql/.
@compiles(SourceJson, "bigquery")
def _source_json_bigquery(element: SourceJson, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"SAFE.PARSE_JSON({compiler.process(value, **kw)})"


@compiles(SourceJson, "snowflake")
def _source_json_snowflake(element: SourceJson, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"TRY_PARSE_JSON(TO_VARCHAR({compiler.process(value, **kw)}))"


@compiles(SourceJson, "databricks")
def _source_json_databricks(element: SourceJson, compiler: SQLCompiler, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"try_parse_json(CAST({compiler.process(value, **kw)} AS STRING))"


def _empty_json() -> ColumnElement[Any]:
    return SourceJson(literal_column("'{}'", String))


def _allocation_version(exposed_at: ColumnElement[Any],
                        allocation_starts: Sequence[tuple[int, datetime]]) -> ColumnElement[Any]:
    """The newest version created at or before ``exposed_at``; before the first (or with no history) the lowest
    version, 1 when there is none. ``allocation_starts``: (version, created_at) pairs, tz-aware."""
    history = sorted(allocation_starts, key=lambda vc: (vc[1], vc[0]))
    first = min((v for v, _ in history), default=1)
    if not history:
        return literal_column(str(int(first)), Integer)
    whens = [(exposed_at >= literal(created_at, _TIMESTAMP), literal_column(str(int(version)), Integer))
             for version, created_at in reversed(history)]
    return case(*whens, else_=literal_column(str(int(first)), Integer))


def exposures_view(mapping: TableMapping, experiment_key: str, experiment_id: int,
                   allocation_starts: Sequence[tuple[int, datetime]]) -> Subquery:
    """One experiment's exposures in a source, shaped as titrate's ``exposures`` table.

    Args:
        mapping: the source's exposure rows; ``columns`` maps ``unit_id, experiment, variant, timestamp`` (and
            optionally ``attributes``) to the source's names.
        experiment_key: rows whose ``experiment`` column equals it are this experiment's; others are ignored.
        experiment_id: titrate's id of the experiment, returned as the constant ``experiment_id`` column (the
            scorecard SQL filters on it).
        allocation_starts: titrate's allocation history as (version, created_at) pairs.

    Returns:
        A subquery named ``exposures`` with columns ``id`` (= ``unit_id``, unique after the dedup),
        ``experiment_id, unit_id, variant, allocation_version, exposed_at, attributes`` and one row per unit: the
        first by ``row_number() OVER (PARTITION BY unit ORDER BY timestamp, variant) = 1``.
    """
    src = source_from(mapping, (*EXPOSURE_COLUMNS, *OPTIONAL_EXPOSURE_COLUMNS))
    cols = mapping.columns
    unit = src.c[cols["unit_id"]]
    ts = SourceTimestamp(src.c[cols["timestamp"]])
    variant = src.c[cols["variant"]]
    attributes = (func.coalesce(SourceJson(src.c[cols["attributes"]]), _empty_json()) if "attributes" in cols
                  else _empty_json())
    ranked = (
        select(unit.label("unit_id"), variant.label("variant"), ts.label("exposed_at"),
               attributes.label("attributes"),
               func.row_number().over(partition_by=unit, order_by=(ts, variant)).label("row_rank"))
        .where(src.c[cols["experiment"]] == literal(experiment_key, String), unit.is_not(None),
               src.c[cols["timestamp"]].is_not(None))
    ).subquery("ranked")
    exposed_at = ranked.c.exposed_at
    return (
        select(ranked.c.unit_id.label("id"),
               literal_column(str(int(experiment_id)), Integer).label("experiment_id"),
               ranked.c.unit_id.label("unit_id"), ranked.c.variant.label("variant"),
               _allocation_version(exposed_at, allocation_starts).label("allocation_version"),
               exposed_at.label("exposed_at"), ranked.c.attributes.label("attributes"))
        .where(ranked.c.row_rank == 1)
    ).subquery("exposures")


def events_view(mapping: TableMapping) -> Subquery:
    """A source's events, shaped as titrate's ``events`` table.

    Args:
        mapping: the source's event rows; ``columns`` maps ``unit_id, name, value, timestamp`` (and optionally
            ``event_id``) to the source's names.

    Returns:
        A subquery named ``events`` with columns ``unit_id, name, value`` (a double; NULL → 1.0) and ``timestamp``.
        With ``event_id`` mapped, rows sharing an event id count once (the earliest:
        ``row_number() OVER (PARTITION BY event_id ORDER BY timestamp, name, value) = 1``); rows without an id
        always count.
    """
    src = source_from(mapping, (*EVENT_COLUMNS, *OPTIONAL_EVENT_COLUMNS))
    cols = mapping.columns
    ts = SourceTimestamp(src.c[cols["timestamp"]])
    value = func.coalesce(cast(src.c[cols["value"]], Float), literal_column(repr(DEFAULT_EVENT_VALUE), Float))
    picked: list[ColumnElement[Any]] = [src.c[cols["unit_id"]].label("unit_id"), src.c[cols["name"]].label("name"),
                                        value.label("value"), ts.label("timestamp")]
    present = and_(src.c[cols["unit_id"]].is_not(None), src.c[cols["timestamp"]].is_not(None))
    if "event_id" not in cols:
        return select(*picked).where(present).subquery("events")
    event_id = src.c[cols["event_id"]]
    ranked = (
        select(*picked, event_id.label("event_id"),
               func.row_number().over(partition_by=event_id, order_by=(ts, src.c[cols["name"]], value))
               .label("row_rank"))
        .where(present)
    ).subquery("ranked_events")
    return (
        select(ranked.c.unit_id, ranked.c.name, ranked.c.value, ranked.c.timestamp)
        .where(or_(ranked.c.row_rank == 1, ranked.c.event_id.is_(None)))
    ).subquery("events")
