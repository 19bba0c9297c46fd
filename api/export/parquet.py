"""``titrate export``: titrate's own ``exposures`` and ``events`` tables as Parquet files a warehouse can load.

Rows are read from the database in chunks (a server-side cursor on PostgreSQL), appended column-wise to a DuckDB
table in a scratch database on disk, and written with DuckDB's ``COPY ... (FORMAT PARQUET)``: memory stays bounded
by the chunk size whatever the table's size. Timestamps are ``TIMESTAMP WITH TIME ZONE`` (UTC instants);
attributes are JSON text.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from api.db.engine import create_db_engine
from api.export import repository

FORMATS = ("parquet",)
CHUNK_ROWS = 50_000

# (name, DuckDB type) of each exported column, in file order.
EXPOSURE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("experiment", "VARCHAR"), ("unit_id", "VARCHAR"), ("variant", "VARCHAR"), ("allocation_version", "INTEGER"),
    ("exposed_at", "TIMESTAMPTZ"), ("attributes", "VARCHAR"), ("source", "VARCHAR"),
)
EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "VARCHAR"), ("unit_id", "VARCHAR"), ("name", "VARCHAR"), ("value", "DOUBLE"),
    ("timestamp", "TIMESTAMPTZ"), ("attributes", "VARCHAR"), ("received_at", "TIMESTAMPTZ"),
)


class ExportError(Exception):
    """A request the export cannot honour (unknown experiment key); ``str()`` is one line."""


@dataclass(frozen=True)
class ExportResult:
    """Rows written to each file."""

    exposures: int
    events: int


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _json_text(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _append(duck: duckdb.DuckDBPyConnection, table: str, columns: Sequence[tuple[str, str]],
            rows: Sequence[Sequence[Any]]) -> None:
    """Append ``rows`` to ``table`` column-wise: one list parameter per column, unnested together."""
    values = [[_convert(kind, row[i]) for row in rows] for i, (_, kind) in enumerate(columns)]
    unnested = ", ".join(f"unnest(${i + 1}::{kind}[])" for i, (_, kind) in enumerate(columns))
    duck.execute(f"INSERT INTO {table} SELECT {unnested}", values)


def _convert(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "TIMESTAMPTZ":
        return _utc(value)
    if kind == "VARCHAR" and not isinstance(value, str):
        return _json_text(value)
    return value


def _write(duck: duckdb.DuckDBPyConnection, rows: Iterable[Sequence[Sequence[Any]]], table: str,
           columns: Sequence[tuple[str, str]], path: Path) -> int:
    """Copy chunks of ``rows`` into a DuckDB table, then that table into the Parquet file ``path``."""
    duck.execute(f"CREATE TABLE {table} ({', '.join(f'{name} {kind}' for name, kind in columns)})")
    count = 0
    for chunk in rows:
        _append(duck, table, columns, chunk)
        count += len(chunk)
    duck.execute(f"COPY {table} TO '{str(path).replace(chr(39), chr(39) * 2)}' (FORMAT PARQUET)")
    duck.execute(f"DROP TABLE {table}")
    return count


def export_parquet(url: str, out: Path, *, since: datetime | None = None, experiment: str | None = None,
                   chunk_rows: int = CHUNK_ROWS) -> ExportResult:
    """Write ``out/exposures.parquet`` and ``out/events.parquet`` from the titrate database at ``url``.

    ``since`` keeps exposures exposed at or after it and events received at or after it (``received_at``: the
    incremental load's watermark, late events included); ``experiment`` keeps that experiment's exposures and the
    events of its exposed units. ``out`` is created if missing; existing files of the same names are replaced.
    """
    if since is not None and since.tzinfo is None:
        raise ValueError("since must be timezone-aware")
    out.mkdir(parents=True, exist_ok=True)
    engine = create_db_engine(url, pool_size=1)
    try:
        with engine.connect() as conn, tempfile.TemporaryDirectory(prefix="titrate-export-") as scratch:
            experiment_id: int | None = None
            if experiment is not None:
                experiment_id = repository.experiment_id(conn, experiment)
                if experiment_id is None:
                    raise ExportError(f"--experiment {experiment!r}: no experiment with that key")
            duck = duckdb.connect(str(Path(scratch) / "export.duckdb"))
            try:
                duck.execute("SET TimeZone = 'UTC'")
                duck.execute(f"SET temp_directory = '{scratch.replace(chr(39), chr(39) * 2)}'")
                counts = []
                for query, table, columns, name in (
                        (repository.exposures_query(since, experiment_id), "exposures", EXPOSURE_COLUMNS,
                         "exposures"),
                        (repository.events_query(since, experiment_id), "events", EVENT_COLUMNS, "events")):
                    chunks = repository.stream(conn, query, chunk_rows)
                    counts.append(_write(duck, chunks, table, columns, out / f"{name}.parquet"))
            finally:
                duck.close()
    finally:
        engine.dispose()
    return ExportResult(exposures=counts[0], events=counts[1])
