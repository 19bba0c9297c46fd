"""Queries of ``titrate export``: titrate's own exposures (with their experiment's key) and events, oldest first,
streamed in chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, select

from api.db.tables import Event, Experiment, Exposure

_Rows = Select[*tuple[Any, ...]]  # a query of any columns


def experiment_id(conn: Connection, key: str) -> int | None:
    """The id of the experiment ``key`` (None when there is none)."""
    return conn.execute(select(Experiment.id).where(Experiment.key == key)).scalar()


def exposures_query(since: datetime | None, experiment: int | None) -> _Rows:
    """Exposures exposed at or after ``since`` (of experiment id ``experiment``), in the export's column order."""
    query: _Rows = (select(Experiment.key, Exposure.unit_id, Exposure.variant, Exposure.allocation_version,
                           Exposure.exposed_at, Exposure.attributes, Exposure.source)
                    .join(Experiment, Experiment.id == Exposure.experiment_id)
                    .order_by(Exposure.id))
    if since is not None:
        query = query.where(Exposure.exposed_at >= since)
    if experiment is not None:
        query = query.where(Exposure.experiment_id == experiment)
    return query


def events_query(since: datetime | None, experiment: int | None) -> _Rows:
    """Events received at or after ``since`` (of units exposed to experiment id ``experiment``), in column order."""
    query: _Rows = select(Event.event_id, Event.unit_id, Event.name, Event.value, Event.timestamp,
                          Event.attributes, Event.received_at).order_by(Event.id)
    if since is not None:
        query = query.where(Event.received_at >= since)
    if experiment is not None:
        exposed = select(Exposure.unit_id).where(Exposure.experiment_id == experiment)
        query = query.where(Event.unit_id.in_(exposed))
    return query


def stream(conn: Connection, query: _Rows, chunk_rows: int) -> Iterator[Sequence[Sequence[Any]]]:
    """The rows of ``query`` in chunks of ``chunk_rows`` (a server-side cursor on PostgreSQL)."""
    yield from conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(query).partitions(chunk_rows)
