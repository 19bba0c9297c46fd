"""Queries of incremental scorecards: computing per-unit rows on the analysis tables, storing them in titrate's
database, reading them back as scorecard sums, and the refresh locks (SQL built by ``scorecards.incremental``).

The analysis side (:func:`unit_rows`, :func:`excluded_exposures`) runs on whatever connection reads the experiment's
exposures and events (titrate's own tables, or an analysis source's); the stored side always on titrate's database.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Executable,
    Float,
    FromClause,
    Integer,
    MetaData,
    Result,
    String,
    Table,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator, TypeEngine

from api.db.tables import (
    Allocation,
    Experiment,
    ScorecardRefresh,
    ScorecardUnit,
    ScorecardUnitValue,
    ScorecardUnitWindowValue,
    Variant,
)
from scorecards.incremental import (
    EXCLUDED_EVENTS,
    component_text,
    delta_units_query,
    delta_values_query,
    exposed_units_query,
    plan_components,
    stored_scorecard_query,
    stored_version_metric_query,
    stored_version_segment_metric_query,
    unit_rows_query,
)
from scorecards.sql import (
    MetricAggregate,
    MetricSpec,
    ScorecardAggregates,
    excluded_exposures_query,
    exposure_counts_query,
    read_scorecard_rows,
    read_segment_rows,
    read_version_rows,
    read_version_segment_rows,
)

UNITS: Table = ScorecardUnit.__table__  # type: ignore[assignment]
VALUES: Table = ScorecardUnitValue.__table__  # type: ignore[assignment]
WINDOW: Table = ScorecardUnitWindowValue.__table__  # type: ignore[assignment]


class StoreTables(NamedTuple):
    """Where materialised rows are kept (titrate's tables, or those of a schema of an analysis source:
    ``scorecards.source_views.materialised_tables``); ``window`` None where a read must not add window values (a
    state without a settled cutoff: ``RefreshState.settled_through``)."""

    units: Table
    values: Table
    window: Table | None


OWN_STORE = StoreTables(UNITS, VALUES, WINDOW)

#: Session-level advisory lock of the refresh job ("titrates" in ASCII hex; the allocation job's key + "s").
JOB_LOCK_KEY = 0x7469747261746573
#: First half of the transaction-level advisory lock taken per experiment while its rows are replaced.
_EXPERIMENT_LOCK_CLASS = 0x7363  # "sc"
#: Unit ids per DELETE statement (below SQLite's 32,766 and PostgreSQL's 65,535 bound parameters).
_CHUNK = 2000
#: Unit ids per delta statement (two IN lists: below both bounds).
_DELTA_CHUNK = 15000


class Runner(Protocol):
    """What runs the analysis side's statements: a session or connection of titrate's database, or an analysis
    source's reader (``api.sources.service.SourceReader``)."""

    def execute(self, statement: Executable, /) -> Result[Any]:
        """Run ``statement``."""
        ...


class AnalysisTables(Protocol):
    """The exposure and event tables of an experiment's analysis (``api.analysis.repository.AnalysisTables``)."""

    @property
    def exposures(self) -> FromClause:
        """Exposures: ``experiment_id, unit_id, variant, allocation_version, exposed_at, attributes``."""
        ...

    @property
    def events(self) -> FromClause:
        """Events: ``unit_id, name, value, timestamp``."""
        ...


@dataclass(frozen=True)
class RefreshState:
    """The stored refresh state of one experiment (a detached copy of ``scorecard_refreshes``)."""

    experiment_id: int
    watermark: datetime
    computed_at: datetime
    last_full_at: datetime
    mode: str
    components: tuple[str, ...]
    excluded_exposures: int
    units_recomputed: int
    #: An analysis source's rows: the stored values count its events dated by then, the window values those dated
    #: after (``scorecards.incremental``); None: titrate's own tables (no window values).
    settled_through: datetime | None = None


# ------------------------------------------------------------------------------------------------ analysis side


def unit_rows(conn: Runner, tables: AnalysisTables, experiment_id: int, metrics: Sequence[MetricSpec],
              as_of: datetime, earliest: datetime | None, units: Any = None, after: datetime | None = None,
              through: datetime | None = None, with_events_only: bool = False) -> list[Mapping[str, Any]]:
    """The per-unit rows (``scorecards.incremental.unit_rows_query``) at ``as_of``, as mappings: every usable
    exposure's, or only of the unit ids ``units`` selects (a one-column ``SELECT`` or a list); counting only the
    events dated in ``(after, through]`` where given (``with_events_only``: only units with such an event)."""
    def rows_of(selected: Any) -> list[Mapping[str, Any]]:
        return _mappings(conn, unit_rows_query(tables.exposures, tables.events, experiment_id, metrics, as_of,
                                               earliest, selected, dated_after=after, dated_through=through,
                                               with_events_only=with_events_only))

    if isinstance(units, list):
        return [row for chunk in _chunks(units) for row in rows_of(list(chunk))]
    return rows_of(units)


def own_unit_rows(conn: Runner, tables: AnalysisTables, experiment_id: int, metrics: Sequence[MetricSpec],
                  as_of: datetime, earliest: datetime | None, since: datetime | None) -> list[Mapping[str, Any]]:
    """:func:`unit_rows` on titrate's own tables, counting only the events received by ``as_of``: every usable
    exposure's when ``since`` is None (a full refresh), else only the units exposed after ``since`` (recomputed
    whole by an incremental refresh; the others get :func:`merge_arrived`)."""
    units = None if since is None else exposed_units_query(tables.exposures, experiment_id, since, as_of)
    return _mappings(conn, unit_rows_query(tables.exposures, tables.events, experiment_id, metrics, as_of, earliest,
                                           units, received_by=as_of))


def _mappings(conn: Runner, stmt: Executable) -> list[Mapping[str, Any]]:
    """The rows of ``stmt``, each as a mapping of column label → value."""
    result: Any = conn.execute(stmt).all()
    return [row._mapping for row in result]


def excluded_exposures(conn: Runner, tables: AnalysisTables, experiment_id: int,
                       earliest: datetime | None, latest: datetime) -> int:
    """The experiment's exposure rows the analysis leaves out (``scorecards.sql.excluded_exposures_query``)."""
    return int(conn.execute(excluded_exposures_query(tables.exposures, experiment_id, earliest, latest)).scalar_one())


# -------------------------------------------------------------------------------------------------- stored side


def _state(row: ScorecardRefresh) -> RefreshState:
    return RefreshState(row.experiment_id, row.watermark, row.computed_at, row.last_full_at, row.mode,
                        tuple(row.components), int(row.excluded_exposures), int(row.units_recomputed),
                        row.settled_through)


def state(session: Session, experiment_id: int) -> RefreshState | None:
    """The experiment's refresh state; None when it was never refreshed."""
    row = session.get(ScorecardRefresh, experiment_id, populate_existing=True)
    return None if row is None else _state(row)


def lock_experiment(session: Session, experiment_id: int) -> None:
    """Serialise writers of one experiment's stored rows until the transaction ends: a transaction-level advisory
    lock on PostgreSQL; on SQLite the transaction's ``BEGIN IMMEDIATE`` already holds the only write lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(_EXPERIMENT_LOCK_CLASS, experiment_id)))


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


#: What a stored unit row holds, comparable with a computed one: variant, version, exposure time, attributes (JSON
#: text), excluded events, the nonzero component values (sorted by key).
Digest = tuple[str, int, datetime, str, int, tuple[tuple[str, float], ...]]


def row_digest(r: Mapping[str, Any], labels: Mapping[str, str]) -> Digest:
    """The :data:`Digest` of a row of :func:`unit_rows` (``labels``: column label → component key)."""
    values = tuple(sorted((key, float(r[label])) for label, key in labels.items() if r[label]))
    return (str(r["variant"]), int(r["allocation_version"]), r["exposed_at"],
            json.dumps(r["attributes"], sort_keys=True, default=str), int(r["excluded_events"]), values)


def same_digest(stored: Digest | None, computed: Digest) -> bool:
    """Whether a stored row already holds what was computed: equal exactly but for the component values, which may
    differ in the last bits (relative 1e-12) — why: a database may add a unit's values in another order from one
    run to the next (PostgreSQL's parallel plans), which is no reason to rewrite the row."""
    if stored is None or stored[:5] != computed[:5] or len(stored[5]) != len(computed[5]):
        return False
    return all(k1 == k2 and math.isclose(v1, v2, rel_tol=1e-12, abs_tol=1e-300)
               for (k1, v1), (k2, v2) in zip(stored[5], computed[5], strict=True))


def stored_digests(session: Session, experiment_id: int) -> dict[str, Digest]:
    """unit id → :data:`Digest` of every stored row of the experiment (what a full refresh compares against, so it
    rewrites only the units whose rows changed)."""
    values: dict[str, list[tuple[str, float]]] = {}
    for unit, component, value in session.execute(select(VALUES.c.unit_id, VALUES.c.component, VALUES.c.value)
                                                  .where(VALUES.c.experiment_id == experiment_id)):
        values.setdefault(unit, []).append((component, float(value)))
    return {str(r.unit_id): (str(r.variant), int(r.allocation_version), r.exposed_at,
                             json.dumps(r.attributes, sort_keys=True, default=str), int(r.excluded_events),
                             tuple(sorted(values.get(r.unit_id, []))))
            for r in session.execute(select(UNITS).where(UNITS.c.experiment_id == experiment_id))}


def replace_rows(session: Session | Connection, experiment_id: int, rows: Sequence[Mapping[str, Any]],
                 labels: Mapping[str, str], everything: bool, removed: Sequence[str] = (),
                 store: StoreTables = OWN_STORE) -> None:
    """Replace stored rows by ``rows`` (of :func:`unit_rows`; ``labels``: column label → component key): all the
    experiment's rows when ``everything``, else those of the units in ``rows`` (and delete the units ``removed``).
    Only nonzero values are stored; ``store``: the tables (titrate's unless a source keeps them)."""
    unit_table, value_table = store.units, store.values
    conn = session.connection() if isinstance(session, Session) else session
    if conn.dialect.name == "sqlite" and store == OWN_STORE:
        _replace_rows_sqlite(conn, experiment_id, rows, labels, everything, removed)
        return
    if everything:
        session.execute(delete(value_table).where(value_table.c.experiment_id == experiment_id))
        session.execute(delete(unit_table).where(unit_table.c.experiment_id == experiment_id))
    else:
        for chunk in _chunks([str(r["unit_id"]) for r in rows] + list(removed)):
            session.execute(delete(value_table).where(value_table.c.experiment_id == experiment_id,
                                                      value_table.c.unit_id.in_(chunk)))
            session.execute(delete(unit_table).where(unit_table.c.experiment_id == experiment_id,
                                                     unit_table.c.unit_id.in_(chunk)))
    if not rows:
        return
    units: list[dict[str, Any]] = []
    values: list[dict[str, Any]] = []
    for r in rows:
        units.append({"experiment_id": experiment_id, "unit_id": r["unit_id"], "variant": r["variant"],
                      "allocation_version": r["allocation_version"], "exposed_at": r["exposed_at"],
                      "attributes": r["attributes"], "excluded_events": int(r["excluded_events"])})
        values += [{"experiment_id": experiment_id, "unit_id": r["unit_id"], "component": key, "value": float(r[label])}
                   for label, key in labels.items() if r[label]]
    _insert_rows(conn, unit_table, units)
    _insert_rows(conn, value_table, values)


def _replace_rows_sqlite(conn: Connection, experiment_id: int, rows: Sequence[Mapping[str, Any]],
                         labels: Mapping[str, str], everything: bool, removed: Sequence[str]) -> None:
    """:func:`replace_rows` on titrate's SQLite tables through the driver: the touched units' rows deleted by one
    statement per table (the ids as one JSON array, ``json_each``), the new ones inserted by one ``executemany``
    of tuples, each value rendered by its column's own bind processor (the bytes SQLAlchemy would store). why:
    SQLAlchemy's compilation of 2,000-id IN lists and its per-row dict handling were two thirds of an incremental
    refresh of a source (``bench/incremental_refresh.py``)."""
    raw: Any = conn.connection.driver_connection
    ids = json.dumps([str(r["unit_id"]) for r in rows] + list(removed))
    for table in ("scorecard_unit_values", "scorecard_units"):
        if everything:
            raw.execute(f"DELETE FROM {table} WHERE experiment_id = ?", (experiment_id,))
        else:
            raw.execute(f"DELETE FROM {table} WHERE experiment_id = ? AND unit_id IN (SELECT value FROM json_each(?))",
                        (experiment_id, ids))
    if not rows:
        return
    dialect = conn.dialect
    at = UNITS.c.exposed_at.type.bind_processor(dialect) or (lambda v: v)
    attributes = UNITS.c.attributes.type.bind_processor(dialect) or (lambda v: v)
    pairs = list(labels.items())
    units, values = [], []
    for r in rows:
        unit = r["unit_id"]
        units.append((experiment_id, unit, r["variant"], r["allocation_version"], at(r["exposed_at"]),
                      attributes(r["attributes"]), int(r["excluded_events"])))
        values += [(experiment_id, unit, key, float(r[label])) for label, key in pairs if r[label]]
    raw.executemany("INSERT INTO scorecard_units (experiment_id, unit_id, variant, allocation_version, exposed_at, "
                    "attributes, excluded_events) VALUES (?, ?, ?, ?, ?, ?, ?)", units)
    raw.executemany("INSERT INTO scorecard_unit_values (experiment_id, unit_id, component, value) VALUES (?, ?, ?, ?)",
                    values)


def replace_window(session: Session | Connection, experiment_id: int, rows: Sequence[Mapping[str, Any]],
                   labels: Mapping[str, str], store: StoreTables = OWN_STORE) -> None:
    """Replace all the experiment's window values (``store.window``) by those of ``rows`` (of :func:`unit_rows`
    over the events dated after the settled cutoff): each nonzero component value, and ``EXCLUDED_EVENTS`` where
    the unit has excluded events in the window."""
    table = store.window
    assert table is not None
    conn = session.connection() if isinstance(session, Session) else session
    conn.execute(delete(table).where(table.c.experiment_id == experiment_id))
    values: list[dict[str, Any]] = []
    for r in rows:
        unit = r["unit_id"]
        values += [{"experiment_id": experiment_id, "unit_id": unit, "component": key, "value": float(r[label])}
                   for label, key in labels.items() if r[label]]
        if r["excluded_events"]:
            values.append({"experiment_id": experiment_id, "unit_id": unit, "component": EXCLUDED_EVENTS,
                           "value": float(r["excluded_events"])})
    if values and conn.dialect.name == "sqlite" and store == OWN_STORE:  # why the driver: as _replace_rows_sqlite
        raw: Any = conn.connection.driver_connection
        raw.executemany(f"INSERT INTO {table.name} (experiment_id, unit_id, component, value) VALUES (?, ?, ?, ?)",
                        [(v["experiment_id"], v["unit_id"], v["component"], v["value"]) for v in values])
    else:
        _insert_rows(conn, table, values)


#: The exposure of a stored unit row: variant, allocation version, exposure time (aware), attributes.
Exposure = tuple[str, int, datetime, Any]


def _exposure(r: Mapping[str, Any]) -> Exposure:
    at, attributes = r["exposed_at"], r["attributes"]
    # why normalised: a source's store may give back naive UTC times or JSON text where its views give others
    at = datetime.fromisoformat(at) if isinstance(at, str) else at
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    attributes = json.loads(attributes) if isinstance(attributes, str) else attributes
    return str(r["variant"]), int(r["allocation_version"]), at, attributes


def stored_settled_rows(conn: Runner, store: StoreTables, experiment_id: int, units: Sequence[str],
                        labels: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """unit id → the stored (settled) row of each of ``units`` that has one, shaped as a row of :func:`unit_rows`
    (absent values 0): what an analysis source's refresh adds a settled delta to."""
    unit_table, value_table = store.units, store.values
    found = {str(row.unit_id): dict(row._mapping) | dict.fromkeys(labels, 0.0)
             for row in _rows_of_units(conn, unit_table, [unit_table], experiment_id, units)}
    label_of = {key: label for label, key in labels.items()}
    for unit, component, value in _rows_of_units(
            conn, value_table, [value_table.c.unit_id, value_table.c.component, value_table.c.value],
            experiment_id, units):
        if str(unit) in found and component in label_of:
            found[str(unit)][label_of[component]] = float(value)
    return found


def _rows_of_units(conn: Runner, table: Table, columns: Sequence[Any], experiment_id: int,
                   units: Sequence[str]) -> list[Any]:
    """``columns`` of the rows of ``table`` (a stored table) of the experiment's ``units``: the ids as one parameter
    on titrate's SQLite (a JSON array read by ``json_each``) or PostgreSQL (an array, ``unnest``ed), else as bound
    parameters, a chunk per statement. why: an IN list of thousands of bound parameters costs more to compile and
    to test than the lookup itself."""
    dialect = (conn.get_bind().dialect.name if isinstance(conn, Session)
               else conn.dialect.name if isinstance(conn, Connection) else None)  # None: a source's reader
    found: list[Any] = []
    for chunk in ([units] if dialect in ("sqlite", "postgresql") else _chunks(list(units))):
        ids: Any = (select(func.json_each(json.dumps(list(chunk))).table_valued("value").c.value)
                    if dialect == "sqlite" else _id_array(chunk) if dialect == "postgresql" else list(chunk))
        found += conn.execute(select(*columns).where(table.c.experiment_id == experiment_id,
                                                     table.c.unit_id.in_(ids))).all()
    return found


def _id_array(ids: Sequence[str]) -> Any:
    """PostgreSQL: the unit ids as one array parameter, ``unnest``ed into a one-column ``SELECT`` (a hashed
    semi-join where an IN list of bound parameters is tested element by element for each row)."""
    return select(func.unnest(literal(list(ids), ARRAY(String(256)))))


@dataclass(frozen=True)
class SourceRefresh:
    """What an analysis source's refresh stores: ``rows`` replace their units' stored (settled) rows; ``deltas``
    (rows of the events that settled since the last refresh) are added to their units' stored rows
    (:func:`merge_deltas`); ``window`` replaces all the window values (:func:`replace_window`)."""

    rows: list[Mapping[str, Any]]
    deltas: list[Mapping[str, Any]]
    window: list[Mapping[str, Any]]


def source_rows(conn: Runner, tables: AnalysisTables, store_conn: Runner, store: StoreTables, experiment_id: int,
                metrics: Sequence[MetricSpec], now: datetime, earliest: datetime | None, cutoff: datetime,
                settled: datetime | None) -> SourceRefresh:
    """An analysis source's refresh at ``now`` (``scorecards.incremental``): the window rows count the events dated
    in ``(cutoff, now]``. Full (``settled`` None): every unit's settled row, from its events dated by ``cutoff``.
    Incremental (``settled``: the previous cutoff): the units exposed after ``settled`` recomputed whole; every
    other unit with events dated in ``(settled, cutoff]`` gets a delta of those; a unit with a delta or a window
    row whose stored row (read on ``store_conn``) is missing or has another exposure is recomputed whole instead.
    Every read of the source is a range of event dates, but for the units recomputed whole."""
    window = unit_rows(conn, tables, experiment_id, metrics, now, earliest, after=cutoff, with_events_only=True)
    if settled is None:
        return SourceRefresh(unit_rows(conn, tables, experiment_id, metrics, now, earliest, through=cutoff), [],
                             window)
    new = unit_rows(conn, tables, experiment_id, metrics, now, earliest,
                    exposed_units_query(tables.exposures, experiment_id, settled, now), through=cutoff)
    deltas = unit_rows(conn, tables, experiment_id, metrics, now, earliest, after=settled, through=cutoff,
                       with_events_only=True)
    fresh = {str(r["unit_id"]) for r in new}
    seen = {str(r["unit_id"]): r for r in [*window, *deltas] if str(r["unit_id"]) not in fresh}
    stored = stored_exposures(store_conn, store, experiment_id, list(seen))
    recompute = sorted(unit for unit, row in seen.items()
                       if unit not in stored or stored[unit] != _exposure(row))
    whole = unit_rows(conn, tables, experiment_id, metrics, now, earliest, recompute, through=cutoff)
    skip = fresh | set(recompute)
    return SourceRefresh([*new, *whole], [d for d in deltas if str(d["unit_id"]) not in skip], window)


def stored_exposures(conn: Runner, store: StoreTables, experiment_id: int, units: Sequence[str]) -> dict[str, Exposure]:
    """unit id → :data:`Exposure` of each of ``units`` that has a stored row."""
    t = store.units
    return {str(row.unit_id): _exposure(row._mapping) for row in _rows_of_units(
        conn, t, [t.c.unit_id, t.c.variant, t.c.allocation_version, t.c.exposed_at, t.c.attributes], experiment_id,
        units)}


def merge_deltas(session: Session | Connection, experiment_id: int, deltas: Sequence[Mapping[str, Any]],
                 metrics: Sequence[MetricSpec], store: StoreTables = OWN_STORE) -> None:
    """Add each delta (a row of :func:`unit_rows` over the events that settled since the last refresh; its unit
    has a stored row with the same exposure: :func:`source_rows`) to its unit's stored row: values add, ``any``
    flags take the larger, and so do excluded events. On titrate's SQLite or PostgreSQL the deltas go into a
    temporary table and are merged by the statements of :func:`merge_arrived`; elsewhere (a source's schema) the
    rows are read, added and replaced."""
    if not deltas:
        return
    conn = session.connection() if isinstance(session, Session) else session
    labels = component_labels(metrics)
    if conn.dialect.name in ("sqlite", "postgresql") and store == OWN_STORE:
        _DELTA.create(conn)
        long = [(str(d["unit_id"]), EXCLUDED_EVENTS, float(d["excluded_events"])) for d in deltas]
        long += [(str(d["unit_id"]), key, float(d[label])) for d in deltas for label, key in labels.items()
                 if d[label]]
        if conn.dialect.name == "postgresql":
            _copy(conn, _DELTA, [{"unit_id": u, "component": c, "value": v} for u, c, v in long])
        else:  # why the driver: as _replace_rows_sqlite
            raw: Any = conn.connection.driver_connection
            raw.executemany("INSERT INTO scorecard_delta (unit_id, component, value) VALUES (?, ?, ?)", long)
        _merge_delta_table(conn, experiment_id, metrics)
        return
    maxed = set(maxed_labels(metrics))
    stored = stored_settled_rows(conn, store, experiment_id, [str(d["unit_id"]) for d in deltas], labels)
    merged: list[dict[str, Any]] = []
    for delta in deltas:
        new = dict(stored[str(delta["unit_id"])])
        new["excluded_events"] = int(new["excluded_events"]) + int(delta["excluded_events"])
        for label in labels:
            a, b = float(new[label]), float(delta[label])
            new[label] = max(a, b) if label in maxed else a + b
        merged.append(new)
    replace_rows(conn, experiment_id, merged, labels, everything=False, store=store)


#: The temporary table an incremental refresh's delta is computed into (``scorecards.incremental.delta_values_query``:
#: long form), merged from, and dropped, in the refresh's write transaction.
_DELTA = Table("scorecard_delta", MetaData(), Column("unit_id", String(256)), Column("component", String(512)),
               Column("value", Float), prefixes=["TEMPORARY"])
#: The unit ids given a delta, on SQLite (``scorecards.incremental.delta_units_query``), kept beside it.
_DELTA_UNITS = Table("scorecard_delta_units", MetaData(), Column("unit_id", String(256), primary_key=True),
                     prefixes=["TEMPORARY"])


def merge_arrived(session: Session | Connection, tables: AnalysisTables, experiment_id: int,
                  metrics: Sequence[MetricSpec], watermark: datetime, since: datetime, as_of: datetime) -> int:
    """Add to the stored rows the contribution of the events that arrived since ``watermark`` (titrate's own tables,
    which live in the same database as the stored rows) and return how many units got a delta (those stored,
    exposed at or before ``since``, with an arrived event).

    All in the database, no rows through the client: the delta (``delta_values_query``) is computed into a
    temporary table by one ``INSERT … SELECT``, merged into the value table by one ``INSERT … SELECT … ON CONFLICT
    DO UPDATE`` (``sum``/``count`` components add; ``any`` ones take the max — a delta's ``any`` is 1 when present,
    so it is written as is) and into ``excluded_events`` by one ``UPDATE`` of the units with new excluded events.
    Zero deltas are not written. Run it in the refresh's write transaction (on SQLite it holds the write lock
    while the delta is computed: a read of the new events only)."""
    conn = session.connection() if isinstance(session, Session) else session
    # why in the database: moving the delta rows through Python (fetch, then an executemany upsert of ~4 values
    # per unit) cost more than computing them
    _DELTA.create(conn)
    arrived_units = delta_units_query(tables.events, UNITS, experiment_id, metrics, watermark, since, as_of)
    postgres = conn.dialect.name == "postgresql"

    def compute_delta(ids: Any) -> None:
        conn.execute(insert(_DELTA).from_select(["unit_id", "component", "value"], delta_values_query(
            tables.exposures, tables.events, experiment_id, metrics, watermark, as_of, ids, materialize=not postgres)))

    if postgres:
        # why the ids through the client, as one array: with the id query as a subquery PostgreSQL planned the
        # per-unit join as a nested loop over every exposure (minutes at 100k units); unnest(one array parameter)
        # is a hashed semi-join, where an IN list of bound parameters is tested element by element for each row
        units = [str(u) for u in conn.execute(arrived_units).scalars()]
        for chunk in _chunks(units, _DELTA_CHUNK):
            compute_delta(_id_array(chunk))
    else:
        # why a temporary table of the ids on SQLite: it looks the units up as it did a list, without moving the
        # ids through Python and back as thousands of rendered literals (~45 ms of a 9.5k-unit refresh)
        _DELTA_UNITS.create(conn)
        conn.execute(insert(_DELTA_UNITS).from_select(["unit_id"], arrived_units))
        compute_delta(select(_DELTA_UNITS.c.unit_id))
        _DELTA_UNITS.drop(conn)
    return _merge_delta_table(conn, experiment_id, metrics)


def _merge_delta_table(conn: Connection, experiment_id: int, metrics: Sequence[MetricSpec]) -> int:
    """Merge the temporary delta table (long form: ``delta_values_query``'s rows) into titrate's stored rows, drop
    it, and return how many units it gave a delta (its ``EXCLUDED_EVENTS`` rows)."""
    postgres = conn.dialect.name == "postgresql"
    d = _DELTA.c
    upsert = (postgresql_insert if postgres else sqlite_insert)(VALUES).from_select(
        ["experiment_id", "unit_id", "component", "value"],
        # why the WHERE: it keeps the excluded-event rows out, and SQLite's parser needs one to tell the upsert's
        # ON CONFLICT from a join's ON
        select(literal(experiment_id), d.unit_id, d.component, d.value).where(d.component != EXCLUDED_EVENTS))
    maxed = [component_text(c) for c in plan_components(metrics) if c[1] == "any"]
    conn.execute(upsert.on_conflict_do_update(
        index_elements=[VALUES.c.experiment_id, VALUES.c.unit_id, VALUES.c.component],
        set_={"value": case((VALUES.c.component.in_(maxed), upsert.excluded.value),
                            else_=VALUES.c.value + upsert.excluded.value)}))
    new_excluded = select(d.value).where(d.unit_id == UNITS.c.unit_id, d.component == EXCLUDED_EVENTS)
    conn.execute(update(UNITS).where(
        UNITS.c.experiment_id == experiment_id,
        UNITS.c.unit_id.in_(select(d.unit_id).where(d.component == EXCLUDED_EVENTS, d.value != 0)))
        .values(excluded_events=UNITS.c.excluded_events + cast(new_excluded.scalar_subquery(), Integer)))
    given = int(conn.execute(select(func.count()).select_from(_DELTA).where(d.component == EXCLUDED_EVENTS))
                .scalar_one())
    # why no try/finally: on an error the transaction rolls back, and the table's creation with it
    _DELTA.drop(conn)
    return given


def _insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (column → value, every row with the same columns) into a stored table, titrate's or a source's
    ``materialise`` schema's, by the engine's bulk path: ``COPY`` on PostgreSQL (:func:`_copy`), one list per column
    on DuckDB (:func:`_insert_columns`), else SQLAlchemy's executemany. why: a full refresh writes a row per unit and
    one per nonzero value; on DuckDB an executemany of 40k rows took 1.4 s, the lists 0.13 s."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _copy(conn, table, rows)
    elif conn.dialect.name == "duckdb":
        _insert_columns(conn, table, rows)
    else:
        conn.execute(insert(table), rows)


def _copy(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """PostgreSQL: ``COPY`` the rows into ``table`` inside the session's transaction. why: an executemany sends one
    statement per row (pipelined), which made writing the rows most of a refresh's time."""
    if not rows:
        return
    names = list(rows[0])
    raw: Any = conn.connection.dbapi_connection
    target = conn.dialect.identifier_preparer.format_table(table)
    with raw.cursor() as cursor, cursor.copy(f"COPY {target} ({', '.join(names)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([json.dumps(row[n]) if n == "attributes" else row[n] for n in names])


def _insert_columns(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """DuckDB: one ``INSERT … SELECT unnest($1::T[]), unnest($2::T[]), …`` with a list parameter per column, each
    value rendered by its column's own bind processor (JSON as its text, cast to JSON on insert) — in the
    connection's transaction, through the driver."""
    names = list(rows[0])
    columns: list[str] = []
    lists: list[list[Any]] = []
    for name in names:
        column = table.c[name]
        process = column.type.bind_processor(conn.dialect) or (lambda value: value)
        base: TypeEngine[Any] = column.type.impl_instance if isinstance(column.type, TypeDecorator) else column.type
        kind = ("VARCHAR" if isinstance(base, JSON) else "TIMESTAMPTZ" if isinstance(base, DateTime)
                else base.compile(dialect=conn.dialect))
        columns.append(f"unnest(${len(lists) + 1}::{kind}[])")
        lists.append([process(row[name]) for row in rows])
    target = conn.dialect.identifier_preparer.format_table(table)
    raw: Any = conn.connection.driver_connection
    raw.execute(f"INSERT INTO {target} ({', '.join(names)}) SELECT {', '.join(columns)}", lists)


def save_state(session: Session, new: RefreshState, keep_card: bool = False) -> None:
    """Write the experiment's refresh state (insert or update). Its published card is cleared unless ``keep_card``
    (the card of the state before, served while the new state's is built after this transaction commits)."""
    row = session.get(ScorecardRefresh, new.experiment_id)
    if row is None:
        row = ScorecardRefresh(experiment_id=new.experiment_id)
        session.add(row)
    # the card kept is the replaced state's only: one an earlier publish left (a crash after its state's commit)
    # is older still
    replaced = row.computed_at
    ours = replaced is not None and row.card_key is not None and row.card_key.endswith(_card_stamp(replaced))
    row.watermark, row.computed_at, row.last_full_at = new.watermark, new.computed_at, new.last_full_at
    row.mode, row.components = new.mode, list(new.components)
    row.excluded_exposures, row.units_recomputed = new.excluded_exposures, new.units_recomputed
    row.settled_through = new.settled_through
    if not (keep_card and ours):  # nobody will publish this state's card: none of an older state may stay
        row.card, row.card_key = None, None
    session.flush()


def _card_stamp(computed_at: datetime) -> str:
    """What ends a stored ``card_key``: the ``computed_at`` of the state the card was built from."""
    return "@" + computed_at.astimezone(UTC).isoformat()


def publish_card(session: Session, experiment_id: int, card_key: str, card: str, computed_at: datetime) -> None:
    """Store the REST scorecard of the experiment's state computed at ``computed_at`` (``card_key`` is stored
    stamped with it; :func:`card_lookup` gives it back without)."""
    session.execute(update(ScorecardRefresh).where(ScorecardRefresh.experiment_id == experiment_id)
                    .values(card=card, card_key=card_key + _card_stamp(computed_at)))


def drop_card(session: Session, experiment_id: int) -> None:
    """Clear the experiment's published card (reads then build it)."""
    session.execute(update(ScorecardRefresh).where(ScorecardRefresh.experiment_id == experiment_id)
                    .values(card=None, card_key=None))


def want_card(session: Session, experiment_id: int, at: datetime) -> None:
    """Record that a plain read needed the experiment's card at ``at`` (the refresh job then publishes it)."""
    session.execute(update(ScorecardRefresh).where(ScorecardRefresh.experiment_id == experiment_id)
                    .values(card_wanted_at=at))


def card_wanted_at(session: Session, experiment_id: int) -> datetime | None:
    """When a plain read last needed the experiment's card (None: never, or never refreshed)."""
    return session.scalar(select(ScorecardRefresh.card_wanted_at)
                          .where(ScorecardRefresh.experiment_id == experiment_id))


@dataclass(frozen=True)
class CardLookup:
    """What a read needs to answer from a published card, found by the experiment's key in one query."""

    status: str
    plan_fingerprint: str | None
    has_model: bool
    versions: int
    newest_version: int | None
    card_key: str | None
    card: str | None


def card_lookup(session: Session, key: str) -> CardLookup | None:
    """The published card of the started experiment ``key`` and what decides whether it still answers (status,
    plan fingerprint, model variants, allocation history); None when there is no such experiment or it was never
    refreshed (the read's normal path then answers, 404/409 included)."""
    versions = (select(func.count()).where(Allocation.experiment_id == Experiment.id)
                .correlate(Experiment).scalar_subquery())
    newest = (select(func.max(Allocation.version)).where(Allocation.experiment_id == Experiment.id)
              .correlate(Experiment).scalar_subquery())
    has_model = exists().where(Variant.experiment_id == Experiment.id, Variant.model.is_not(None))
    row = session.execute(
        select(Experiment.status, Experiment.plan_fingerprint, has_model, versions, newest,
               ScorecardRefresh.card_key, ScorecardRefresh.card)
        .join(ScorecardRefresh, ScorecardRefresh.experiment_id == Experiment.id)
        .where(Experiment.key == key, Experiment.plan.is_not(None))).one_or_none()
    if row is None:
        return None
    status, fingerprint, model, count, newest_version, card_key, card = row
    return CardLookup(status, fingerprint, bool(model), int(count), None if newest_version is None
                      else int(newest_version), None if card_key is None else card_key.rpartition("@")[0], card)


def refreshable_experiments(session: Session, statuses: Sequence[str]) -> list[Experiment]:
    """Experiments in ``statuses`` that have a frozen plan, oldest first — detached from ``session``, so they stay
    readable (id, key, plan) after it ends."""
    found = list(session.scalars(select(Experiment).where(Experiment.status.in_(statuses),
                                                          Experiment.plan.is_not(None)).order_by(Experiment.id)))
    for experiment in found:
        session.expunge(experiment)
    return found


def stored_metric_aggregates(session: Runner, experiment_id: int, metrics: Sequence[MetricSpec],
                             as_of: datetime, store: StoreTables = OWN_STORE) -> ScorecardAggregates:
    """Per-variant sums of every metric over the stored rows (``as_of``: their ``computed_at``)."""
    rows = session.execute(stored_scorecard_query(store.units, store.values, experiment_id, metrics, as_of,
                                                  window=store.window)).all()
    return read_scorecard_rows(rows, metrics)


def stored_metric_aggregates_by_segment(session: Runner, experiment_id: int, metrics: Sequence[MetricSpec],
                                        as_of: datetime, segment: str,
                                        strings_only: bool = False, store: StoreTables = OWN_STORE,
                                        ) -> dict[str | None, ScorecardAggregates]:
    """The same sums per value of an exposure attribute, over the stored rows."""
    stmt = stored_scorecard_query(store.units, store.values, experiment_id, metrics, as_of, segment, strings_only,
                                  window=store.window)
    return read_segment_rows(session.execute(stmt).all(), metrics)


def stored_exposure_counts(session: Runner, experiment_id: int,
                           store: StoreTables = OWN_STORE) -> dict[tuple[int, str], int]:
    """Stored units per (allocation version, variant)."""
    rows: Any = session.execute(exposure_counts_query(store[0], experiment_id)).all()
    return {(int(version), str(variant)): int(units) for version, variant, units in rows}


def stored_exposure_counts_by_segment(session: Runner, experiment_id: int, segment: str,
                                      store: StoreTables = OWN_STORE) -> dict[tuple[int, str | None, str], int]:
    """Stored units per (allocation version, string value of attribute ``segment`` or None, variant)."""
    rows: Any = session.execute(exposure_counts_query(store[0], experiment_id, None, segment,
                                                      segment_strings_only=True)).all()
    return {(int(version), None if value is None else str(value), str(variant)): int(units)
            for version, value, variant, units in rows}


def stored_metric_strata(session: Runner, experiment_id: int, metric: MetricSpec, as_of: datetime,
                         context_attribute: str | None = None, store: StoreTables = OWN_STORE,
                         ) -> dict[tuple[int, str | None], dict[str, MetricAggregate]]:
    """(allocation version, context value or None) → variant → sums of one metric, over the stored rows."""
    if context_attribute is None:
        by_version = read_version_rows(session.execute(stored_version_metric_query(
            store.units, store.values, experiment_id, metric, as_of, store.window)).all(), metric)
        return {(version, None): sums for version, sums in by_version.items()}
    return read_version_segment_rows(session.execute(stored_version_segment_metric_query(
        store.units, store.values, experiment_id, metric, as_of, context_attribute, store.window)).all(), metric)


def maxed_labels(metrics: Sequence[MetricSpec]) -> list[str]:
    """Column labels of :func:`unit_rows` whose components are ``any`` (0/1 flags: merged by max, not added)."""
    return [label for c, label in plan_components(metrics).items() if c[1] == "any"]


def component_labels(metrics: Sequence[MetricSpec]) -> dict[str, str]:
    """Column label of :func:`unit_rows` → stored component key, for every component of ``metrics``."""
    return {label: component_text(c) for c, label in plan_components(metrics).items()}


def try_job_lock(conn: Connection) -> bool:
    """PostgreSQL: take the refresh job's session-level advisory lock on ``conn`` if free (never waits)."""
    got = bool(conn.scalar(select(func.pg_try_advisory_lock(JOB_LOCK_KEY))))
    conn.commit()
    return got


def job_unlock(conn: Connection) -> None:
    """PostgreSQL: release the refresh job's advisory lock held by ``conn``."""
    conn.scalar(select(func.pg_advisory_unlock(JOB_LOCK_KEY)))
    conn.commit()
