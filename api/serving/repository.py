"""Statements on the model registry and the prediction log (the only module here that builds them): lookups,
the serving report's reads, the recorder's inserts and the retention purge."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, case, delete, func, insert, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from api.db.rows import PredictionRow
from api.db.tables import ModelSpecRow, Prediction
from api.serving.wire import PredictionTotals


def get_spec(session: Session, key: str) -> ModelSpecRow | None:
    """The registered model called ``key`` or None."""
    return session.scalars(select(ModelSpecRow).where(ModelSpecRow.key == key)).first()


def get_specs(session: Session, keys: Sequence[str]) -> dict[str, ModelSpecRow]:
    """Registered models by key for the given keys (missing keys are absent)."""
    if not keys:
        return {}
    return {m.key: m for m in session.scalars(select(ModelSpecRow).where(ModelSpecRow.key.in_(set(keys))))}


def list_specs(session: Session) -> list[ModelSpecRow]:
    """Every registered model, by key."""
    return list(session.scalars(select(ModelSpecRow).order_by(ModelSpecRow.key)))


def prediction_totals(session: Session, experiment_id: int) -> dict[tuple[str, bool], PredictionTotals]:
    """Per (variant, shadow): requests, inputs, errors, mean shadow agreement, first and last time (all rows)."""
    stmt = (
        select(
            Prediction.variant, Prediction.shadow, func.count().label("n"),
            func.coalesce(func.sum(Prediction.n_inputs), 0).label("n_inputs"),
            func.coalesce(func.sum(case((Prediction.error.is_not(None), 1), else_=0)), 0).label("errors"),
            func.count(Prediction.agreement).label("agreement_n"),
            func.avg(Prediction.agreement).label("agreement_mean"),
            func.min(Prediction.created_at).label("first_at"),
            func.max(Prediction.created_at).label("last_at"),
        )
        .where(Prediction.experiment_id == experiment_id)
        .group_by(Prediction.variant, Prediction.shadow)
    )
    return {(row.variant, bool(row.shadow)): cast(PredictionTotals, row._asdict()) for row in session.execute(stmt)}


def recent_predictions(session: Session, experiment_id: int, variant: str, shadow: bool, limit: int,
                       since: datetime | None = None, before: datetime | None = None) -> Sequence[Row[Any]]:
    """The newest ``limit`` predictions of one variant (optionally within ``[since, before)``), newest first."""
    stmt = select(Prediction.created_at, Prediction.latency_ms, Prediction.error, Prediction.summary).where(
        Prediction.experiment_id == experiment_id, Prediction.variant == variant, Prediction.shadow == shadow
    )
    if since is not None:
        stmt = stmt.where(Prediction.created_at >= since)
    if before is not None:
        stmt = stmt.where(Prediction.created_at < before)
    return session.execute(stmt.order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(limit)).all()


def insert_predictions(session: Session, rows: Sequence[PredictionRow]) -> int:
    """Insert prediction log rows (one executemany in the caller's transaction); returns how many."""
    if not rows:
        return 0
    session.execute(insert(Prediction), list(rows))
    return len(rows)


def delete_predictions_before(session: Session, cutoff: datetime, limit: int) -> int:
    """Delete at most ``limit`` predictions created before ``cutoff`` (the oldest ids first found); returns how many."""
    oldest = select(Prediction.id).where(Prediction.created_at < cutoff).limit(limit).scalar_subquery()
    result = cast(CursorResult[Any], session.execute(delete(Prediction).where(Prediction.id.in_(oldest))))
    return result.rowcount
