"""Who is calling: the verified API key's identity and the role order.

Below every domain package (``api.auth`` verifies keys and builds principals, ``api.audit`` names them, every
service checks roles), so none of them needs another to know who acts.
"""

from __future__ import annotations

from dataclasses import dataclass

from api.db.tables import ROLES

ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, name, role and public prefix (never the secret)."""

    key_id: int
    name: str
    role: str
    prefix: str

    def has_role(self, required: str) -> bool:
        """Roles are ordered ``sdk < analyst < admin``."""
        return ROLE_RANK[self.role] >= ROLE_RANK[required]

    @property
    def actor(self) -> str:
        """How audit rows name the caller."""
        return f"{self.name} ({self.prefix}…)"
