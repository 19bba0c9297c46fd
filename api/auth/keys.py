"""API keys: generation, hashing, storage and a short-lived in-memory cache of verified keys."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time

from sqlalchemy.orm import Session

from api.auth import repository
from api.db.tables import ROLES, ApiKey, utc_now

# Principal and the role order live below every domain (api.principal); re-exported for the routes' imports.
from api.principal import ROLE_RANK as ROLE_RANK
from api.principal import Principal as Principal

KEY_PREFIX = "tk_"


def hash_key(secret: str) -> str:
    """SHA-256 hex digest of a key (keys carry 256 random bits, so a fast hash is enough)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(session: Session, role: str, name: str) -> tuple[ApiKey, str]:
    """Store a new key and return the row and the secret (shown once, never stored)."""
    if role not in ROLE_RANK:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = repository.add(session, ApiKey(name=name, role=role, prefix=secret[:10], key_hash=hash_key(secret),
                                         created_at=utc_now()))
    return row, secret


def find_principal(session: Session, secret: str) -> Principal | None:
    """The principal of an unrevoked key, or None."""
    row = repository.active_by_hash(session, hash_key(secret))
    if row is None:
        return None
    return Principal(key_id=row.id, name=row.name, role=row.role, prefix=row.prefix)


class KeyCache:
    """Verified keys by hash for ``ttl`` seconds, so the assignment hot path does no DB read.

    Revoking a key takes effect at once in the worker that revoked it and, because revocation bumps the config
    version, within ``config_refresh_seconds`` in every other worker (``SnapshotHolder`` clears the cache on a
    version change); ``ttl`` bounds it if that refresh fails.
    """

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._entries: dict[str, tuple[Principal | None, float]] = {}
        self._lock = threading.Lock()

    def get(self, secret: str) -> tuple[bool, Principal | None]:
        """``(hit, principal)``; a cached miss (unknown key) is a hit with None."""
        entry = self._entries.get(hash_key(secret))
        if entry is None or entry[1] < time.monotonic():
            return False, None
        return True, entry[0]

    def put(self, secret: str, principal: Principal | None) -> None:
        """Remember the verification result (unknown keys for a shorter time, to limit probing cost)."""
        ttl = self._ttl if principal is not None else min(self._ttl, 5.0)
        with self._lock:
            if len(self._entries) > 100_000:
                self._entries.clear()
            self._entries[hash_key(secret)] = (principal, time.monotonic() + ttl)

    def forget(self, key_hash: str) -> None:
        """Forget one key by its stored hash (this worker sees a revocation at once)."""
        with self._lock:
            self._entries.pop(key_hash, None)

    def clear(self) -> None:
        """Forget every cached key (another worker's revocation: the config version moved)."""
        with self._lock:
            self._entries.clear()
