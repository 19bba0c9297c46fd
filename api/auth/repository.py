"""Queries of the API key table (the only module of ``api.auth`` that builds statements on it)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db.tables import ApiKey


def add(session: Session, row: ApiKey) -> ApiKey:
    """Store a new key row in the caller's transaction and flush it, so it has its id."""
    session.add(row)
    session.flush()
    return row


def active_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    """The unrevoked key whose stored hash is ``key_hash``, or None."""
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))).first()


def list_keys(session: Session) -> list[ApiKey]:
    """Every key (revoked ones too), by id."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def get_for_update(session: Session, key_id: int) -> ApiKey | None:
    """Key ``key_id``, its row locked for the caller's transaction (PostgreSQL), or None."""
    return session.scalars(select(ApiKey).where(ApiKey.id == key_id).with_for_update()).first()


def lock_active_admins(session: Session) -> int:
    """Lock every active admin key row (PostgreSQL) and return how many there are.

    Two admins revoking each other's keys at once must not both see "one other admin left"; SQLite serialises
    writers anyway.
    """
    return len(session.scalars(
        select(ApiKey.id).where(ApiKey.role == "admin", ApiKey.revoked_at.is_(None)).with_for_update()).all())
