"""Queries of the allocation updater (reads only; the writes are ORM adds in the service's transaction)."""

from __future__ import annotations

from sqlalchemy import select
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
