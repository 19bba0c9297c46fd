"""Rules of API key administration (the REST routes and the ``titrate keys`` CLI share them)."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy.orm import Session

from api.audit import record
from api.auth import repository
from api.db.config_version import bump_config_version
from api.db.tables import ApiKey, utc_now
from api.errors import Conflict, NotFound
from api.principal import Principal


class Revocation(NamedTuple):
    """The revoked key's row, and whether it was revoked before this call (then nothing changed)."""

    row: ApiKey
    already_revoked: bool


def list_api_keys(session: Session) -> list[ApiKey]:
    """Every key, revoked ones too, by id (the rows hold only hashes, never secrets)."""
    return repository.list_keys(session)


def revoke_api_key(session: Session, key_id: int, principal: Principal) -> Revocation:
    """Revoke key ``key_id`` inside the caller's transaction; its row and whether it had been revoked already.

    Idempotent (a revoked key stays as it is, ``already_revoked``). The last active admin key cannot be revoked
    (``Conflict``), so nobody is locked out. The config version moves, so every worker clears its key cache within
    ``config_refresh_seconds`` (``SnapshotHolder.on_change``).

    Raises:
        NotFound: no key has that id.
        Conflict: it is the last active admin key.
    """
    row = repository.get_for_update(session, key_id)
    if row is None:
        raise NotFound(f"key {key_id} does not exist")
    if row.revoked_at is not None:
        return Revocation(row, already_revoked=True)
    if row.role == "admin":
        # why lock every active admin row: two admins revoking each other's keys at once must not both see
        # "one other admin left" (PostgreSQL; SQLite serialises writers anyway)
        if repository.lock_active_admins(session) <= 1:
            raise Conflict(f"key {key_id} is the last active admin key; create another admin key first")
    row.revoked_at = utc_now()
    record(session, principal, "key.revoke", experiment_id=None,
           after={"id": row.id, "name": row.name, "role": row.role, "prefix": row.prefix})
    bump_config_version(session)
    return Revocation(row, already_revoked=False)
