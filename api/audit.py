"""The audit log: who changed what, when, with the state before and after."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db.tables import AuditEntry, utc_now
from api.json_types import JsonObject
from api.principal import Principal


def record(
    session: Session,
    principal: Principal | str,
    action: str,
    *,
    experiment_id: int | None,
    before: JsonObject | None = None,
    after: JsonObject | None = None,
    reason: str | None = None,
) -> AuditEntry:
    """Write one audit row in the caller's transaction (so it commits or rolls back with the change)."""
    actor = principal.actor if isinstance(principal, Principal) else principal
    entry = AuditEntry(experiment_id=experiment_id, actor=actor, action=action, before=before, after=after,
                       reason=reason, at=utc_now())
    session.add(entry)
    return entry


def history(session: Session, experiment_id: int) -> list[AuditEntry]:
    """An experiment's audit rows, oldest first."""
    return list(session.scalars(
        select(AuditEntry).where(AuditEntry.experiment_id == experiment_id).order_by(AuditEntry.id)
    ))
