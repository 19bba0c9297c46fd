"""Dead-letter storage: the rows a background writer could not store, and how many there are."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.db.tables import DeadLetter, Experiment, utc_now
from api.json_types import JsonObject
from api.ops import observability

#: Longest error message kept per row (driver messages can quote the whole row back).
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True, slots=True)
class RefusedRow:
    """A row the database refused: its kind (``exposure``, ``event``, ``prediction``), its experiment when it has
    one, the row itself (JSON-like) and the error."""

    kind: str
    experiment_id: int | None
    payload: JsonObject
    error: BaseException


def payload_text(payload: JsonObject) -> str:
    """The row as JSON text that always encodes: datetimes and other objects as ``str``, non-finite numbers as
    ``NaN``/``Infinity`` tokens (this is a record of what was refused, not data to compute on), NUL escaped."""
    return json.dumps(payload, default=str, allow_nan=True, ensure_ascii=False).replace("\x00", "\\u0000")


def error_text(error: BaseException) -> str:
    """``Type: message``, cut to :data:`MAX_ERROR_CHARS`."""
    return f"{type(error).__name__}: {error}".replace("\x00", "\\u0000")[:MAX_ERROR_CHARS]


def store(session: Session, rows: Sequence[RefusedRow]) -> int:
    """Keep refused rows in ``dead_letters`` and add the exposures among them to their experiment's
    ``exposures_dead_lettered``, in the caller's transaction; counts them in ``/metrics``. Returns rows kept."""
    if not rows:
        return 0
    now = utc_now()
    session.add_all([DeadLetter(kind=row.kind, experiment_id=row.experiment_id, payload=payload_text(row.payload),
                                error=error_text(row.error), created_at=now) for row in rows])
    per_experiment = Counter(row.experiment_id for row in rows if row.kind == "exposure" and row.experiment_id)
    for experiment_id, count in per_experiment.items():
        session.execute(update(Experiment).where(Experiment.id == experiment_id)
                        .values(exposures_dead_lettered=Experiment.exposures_dead_lettered + count))
    session.flush()
    for kind, count in Counter(row.kind for row in rows).items():
        observability.DEAD_LETTERS.labels(kind).inc(count)
    return len(rows)


def counts_by_kind(session: Session) -> dict[str, int]:
    """How many dead letters there are of each kind."""
    rows = session.execute(select(DeadLetter.kind, func.count()).group_by(DeadLetter.kind)).all()
    return {kind: int(count) for kind, count in rows}


def newest(session: Session, kind: str | None, limit: int, before_id: int | None) -> list[DeadLetter]:
    """The newest dead letters (optionally of one kind, older than ``before_id`` for paging), newest first."""
    query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(DeadLetter.kind == kind)
    if before_id is not None:
        query = query.where(DeadLetter.id < before_id)
    return list(session.scalars(query))


def add_dropped_exposures(session: Session, dropped: dict[int, int]) -> None:
    """Add exposures dropped in memory (queue full) to each experiment's ``exposures_dropped``."""
    for experiment_id, count in dropped.items():
        session.execute(update(Experiment).where(Experiment.id == experiment_id)
                        .values(exposures_dropped=Experiment.exposures_dropped + count))
