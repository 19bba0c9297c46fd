"""Queries of the metrics catalog."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db.tables import Metric


def get_by_key(session: Session, key: str) -> Metric | None:
    """The metric called ``key`` or None."""
    return session.scalars(select(Metric).where(Metric.key == key)).first()


def get_many(session: Session, keys: Sequence[str]) -> dict[str, Metric]:
    """Metrics by key for the given keys (missing keys are absent)."""
    if not keys:
        return {}
    return {m.key: m for m in session.scalars(select(Metric).where(Metric.key.in_(set(keys))))}


def list_all(session: Session) -> list[Metric]:
    """Every metric, by key."""
    return list(session.scalars(select(Metric).order_by(Metric.key)))
