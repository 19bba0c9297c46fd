"""The config version: one row every worker polls to know when to rebuild its snapshot (and clear its key cache).

Kept below every domain package: experiments, allocations and API-key revocations all move it, assignment reads it.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from api.db.tables import ConfigVersion, utc_now


def bump_config_version(session: Session) -> None:
    """Increment the config version; on PostgreSQL this row lock also serialises config writers."""
    session.execute(
        update(ConfigVersion).where(ConfigVersion.id == 1)
        .values(version=ConfigVersion.version + 1, updated_at=utc_now())
    )


def config_version(session: Session) -> int:
    """The current config version."""
    return int(session.scalar(select(ConfigVersion.version).where(ConfigVersion.id == 1)) or 0)
