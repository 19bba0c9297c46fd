"""Queries of analysis sources: titrate's ``analysis_sources`` table and which experiments name a source; and the
probes run on a source when it is registered (``LIMIT 0`` queries whose failure names the problem, built with the
scorecard's own expressions so that a source they accept is one the scorecard can read)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, DateTime, String, Table, cast, func, literal_column, select
from sqlalchemy import delete as delete_rows
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateSchema

from api.db.tables import (
    AnalysisSource,
    Experiment,
    ScorecardRefresh,
    ScorecardUnit,
    ScorecardUnitValue,
    ScorecardUnitWindowValue,
)
from scorecards.source_views import SourceJson, TableMapping, materialised_tables, source_from
from scorecards.sql_dialect import BeforeOffset, float_literal

#: Statuses in which an experiment may still be analysed for a decision: its source must stay registered.
NOT_ENDED = ("draft", "running", "paused")


def get_by_key(session: Session, key: str) -> AnalysisSource | None:
    """The source called ``key`` or None."""
    return session.scalars(select(AnalysisSource).where(AnalysisSource.key == key)).first()


def list_all(session: Session) -> list[AnalysisSource]:
    """Every source, by key."""
    return list(session.scalars(select(AnalysisSource).order_by(AnalysisSource.key)))


def experiments_naming(session: Session, key: str, statuses: tuple[str, ...] = NOT_ENDED) -> list[str]:
    """Keys of the experiments in ``statuses`` whose analysis reads source ``key``."""
    return list(session.scalars(select(Experiment.key).where(Experiment.analysis_source == key,
                                                             Experiment.status.in_(statuses))
                                .order_by(Experiment.key)))


def experiment_ids_naming(session: Session, key: str) -> list[int]:
    """Ids of every experiment (any status) whose analysis reads source ``key``."""
    return list(session.scalars(select(Experiment.id).where(Experiment.analysis_source == key)
                                .order_by(Experiment.id)))


def forget_refreshes(session: Session, experiment_ids: list[int], rows: bool) -> None:
    """Delete the scorecard refresh states (and their published cards) of these experiments in titrate's database,
    and with ``rows`` their materialised rows there too: a read then refreshes them in full, or answers that their
    source is unknown."""
    if not experiment_ids:
        return
    tables = [ScorecardRefresh, *((ScorecardUnitValue, ScorecardUnitWindowValue, ScorecardUnit) if rows else ())]
    for table in tables:
        session.execute(delete_rows(table).where(table.experiment_id.in_(experiment_ids)))


def delete_store_rows(conn: Connection, tables: tuple[Table, ...], experiment_ids: list[int]) -> None:
    """Delete these experiments' rows from the tables of a source's materialise schema."""
    for table in tables:
        conn.execute(delete_rows(table).where(table.c.experiment_id.in_(experiment_ids)))


def delete(session: Session, source: AnalysisSource) -> None:
    """Remove a source row."""
    session.delete(source)
    session.flush()


# ------------------------------------------------------------------------------------------- probes of a source

_TIMESTAMP_LITERAL = cast(literal_column("'2000-01-01 00:00:00+00:00'"), DateTime(timezone=True))
_TEXT_LITERAL = cast(literal_column("'titrate'"), String)


def probe_rows(conn: Connection, mapping: TableMapping) -> None:
    """``SELECT * FROM <table or (sql)> LIMIT 0``: the rows exist and can be read."""
    src = source_from(mapping, list(mapping.columns))
    conn.execute(select(literal_column("*")).select_from(src).limit(0)).all()


def probe_column(conn: Connection, mapping: TableMapping, name: str) -> None:
    """``SELECT <name> … LIMIT 0``: the column exists."""
    src = source_from(mapping, list(mapping.columns))
    conn.execute(select(src.c[name]).select_from(src).limit(0)).all()


def _typed(role: str, column: Any) -> list[Any]:
    """Expressions that only bind when ``column`` has the type ``role`` needs, as the scorecard uses it."""
    if role == "timestamp":
        return [BeforeOffset(column, column, float_literal(1.0)), column < _TIMESTAMP_LITERAL]
    if role == "value":
        return [column + literal_column("0.5")]
    if role in ("experiment", "name"):
        return [column == _TEXT_LITERAL]
    if role == "attributes":
        return [SourceJson(column)]
    return []


def probe_type(conn: Connection, mapping: TableMapping, role: str, name: str) -> None:
    """``SELECT <typed expressions of the column> … LIMIT 0`` on a typed database (PostgreSQL, DuckDB, …): fails
    when the column cannot play ``role``."""
    src = source_from(mapping, list(mapping.columns))
    expressions = _typed(role, src.c[name])
    if expressions:
        conn.execute(select(*expressions).select_from(src).limit(0)).all()


def count_unusable(conn: Connection, mapping: TableMapping, role: str, name: str) -> int:
    """SQLite (no column types): how many of the first 1000 non-NULL values of the column cannot play ``role``
    (``timestamp``: not ISO text that SQLite's date functions read; ``value``: not a number)."""
    src = source_from(mapping, list(mapping.columns))
    column = src.c[name]
    sample = select(column.label("v")).select_from(src).where(column.is_not(None)).limit(1000).subquery()
    v = sample.c.v
    bad: Any = ((func.typeof(v) != "text") | func.strftime("%Y", v).is_(None) if role == "timestamp"
                else func.typeof(v).not_in(("integer", "real")))
    return int(conn.execute(select(func.count()).select_from(sample).where(bad)).scalar_one())


def probe_join(conn: Connection, exposures: TableMapping, events: TableMapping) -> None:
    """The exposures' and events' unit ids can be compared (the scorecard joins on them)."""
    x = source_from(exposures, ["unit_id"]).alias("x")
    e = source_from(events, ["unit_id"]).alias("e")
    on = x.c[exposures.columns["unit_id"]] == e.c[events.columns["unit_id"]]
    conn.execute(select(literal_column("1")).select_from(x.join(e, on)).limit(0)).all()


def read_one(conn: Connection, mapping: TableMapping) -> None:
    """One row of the mapped columns: the rows can be read, not only planned."""
    src = source_from(mapping, list(mapping.columns))
    conn.execute(select(*(src.c[n] for n in dict.fromkeys(mapping.columns.values()))).select_from(src).limit(1)).all()


# ------------------------------------------------------------------ the materialise schema of a source


def store_tables(conn: Connection, schema: str) -> tuple[Table, Table, Table]:
    """The tables of materialise schema ``schema`` as titrate creates them on ``conn``'s engine
    (``scorecards.source_views.materialised_tables``; on DuckDB without primary keys: ``keyed``)."""
    return materialised_tables(schema, keyed=conn.dialect.name != "duckdb")


def create_store(conn: Connection, schema: str) -> tuple[Table, Table, Table]:
    """Create schema ``schema`` and its three tables where absent (:func:`store_tables`) and check that they can be
    written (a DELETE of no rows: a schema whose tables exist but are read-only to this role fails here, not at the
    first refresh)."""
    store = store_tables(conn, schema)
    conn.execute(CreateSchema(schema, if_not_exists=True))
    for table in store:
        table.create(conn, checkfirst=True)
        conn.execute(delete_rows(table).where(table.c.experiment_id == -1))
    return store
