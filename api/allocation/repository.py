"""Queries of the allocation updater: its reads and the updater lock (the writes are ORM adds in the service's
transaction)."""

from __future__ import annotations

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from api.db.tables import AuditEntry, Experiment

ADAPTIVE_STRATEGIES = ("thompson", "ramp")


def adaptive_running_keys(session: Session) -> list[str]:
    """Keys of running experiments whose allocation the updater manages (thompson or ramp), oldest first."""
    rows = session.execute(
        select(Experiment.key, Experiment.allocation).where(Experiment.status == "running").order_by(Experiment.id)
    ).all()
    return [key for key, allocation in rows if (allocation or {}).get("strategy") in ADAPTIVE_STRATEGIES]


def has_audit(session: Session, experiment_id: int, action: str, version: int) -> bool:
    """Whether an audit row ``action`` was already written for allocation ``version`` (``after.version``)."""
    rows = session.scalars(
        select(AuditEntry.after).where(AuditEntry.experiment_id == experiment_id, AuditEntry.action == action)
    ).all()
    return any(isinstance(after, dict) and after.get("version") == version for after in rows)


def try_advisory_lock(conn: Connection, key: int) -> bool:
    """PostgreSQL: take the session-level advisory lock ``key`` on ``conn`` if free (never waits) and commit, so
    the lock outlives the statement's transaction; released by :func:`advisory_unlock` or when ``conn`` closes."""
    got = bool(conn.scalar(select(func.pg_try_advisory_lock(key))))
    conn.commit()
    return got


def advisory_unlock(conn: Connection, key: int) -> None:
    """PostgreSQL: release the session-level advisory lock ``key`` held by ``conn``."""
    conn.scalar(select(func.pg_advisory_unlock(key)))
    conn.commit()
