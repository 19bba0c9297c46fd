"""API key administration routes (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from api.audit import record
from api.auth import repository
from api.auth.dependencies import require_admin, require_sdk
from api.auth.keys import Principal, create_api_key
from api.auth.service import revoke_api_key
from api.schemas_common import RequestModel

#: ``api_keys.id`` is a 32-bit INTEGER column: a larger id is a 422 naming it, never a database error (500).
MAX_KEY_ID = 2**31 - 1

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class KeyCreate(RequestModel):
    """A new key's role and a name saying who or what uses it."""


    role: Literal["sdk", "analyst", "admin"]
    name: str = Field("unnamed", min_length=1, max_length=200)


class KeyOut(BaseModel):
    """A key's public facts (the secret is only in the creation response)."""

    id: int
    name: str
    role: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class KeyRevoked(KeyOut):
    """The revoked key, and whether it had been revoked before this request (then nothing changed)."""

    already_revoked: bool


class KeyCreated(KeyOut):
    """The new key, with its secret shown this once."""

    key: str


class KeyIdentity(BaseModel):
    """Who the calling key is: its name, role and public prefix, and how audit rows name it."""

    name: str
    role: str
    prefix: str
    actor: str


@router.get("/me", response_model=KeyIdentity)
async def who_am_i(principal: Principal = Depends(require_sdk)) -> KeyIdentity:
    """The calling key's name and role (any valid key; the console asks it at sign-in)."""
    return KeyIdentity(name=principal.name, role=principal.role, prefix=principal.prefix, actor=principal.actor)


@router.post("", status_code=201, response_model=KeyCreated)
def create_key(body: KeyCreate, request: Request, principal: Principal = Depends(require_admin)) -> KeyCreated:
    """Create an API key (the secret is returned once and stored only hashed)."""
    with request.app.state.db.transaction() as session:
        row, secret = create_api_key(session, body.role, body.name)
        record(session, principal, "key.create", experiment_id=None,
               after={"id": row.id, "name": row.name, "role": row.role, "prefix": row.prefix})
        return KeyCreated(id=row.id, name=row.name, role=row.role, prefix=row.prefix, created_at=row.created_at,
                          revoked_at=None, key=secret)


@router.get("", response_model=list[KeyOut])
def list_keys(request: Request, _: Principal = Depends(require_admin)) -> list[KeyOut]:
    """List API keys (never their secrets)."""
    with request.app.state.db.read() as session:
        rows = repository.list_keys(session)
        return [KeyOut(id=r.id, name=r.name, role=r.role, prefix=r.prefix, created_at=r.created_at,
                       revoked_at=r.revoked_at) for r in rows]


@router.delete("/{key_id}", response_model=KeyRevoked)
def revoke_key(request: Request, key_id: int = Path(ge=1, le=MAX_KEY_ID, description="the key's id (GET /v1/keys)"),
               principal: Principal = Depends(require_admin)) -> KeyRevoked:
    """Revoke an API key: refused at once by this worker and within the config refresh period by every other
    one. Idempotent: revoking a revoked key changes nothing and answers ``already_revoked: true``. The last active
    admin key cannot be revoked (409), so nobody is locked out — create another admin key first."""
    with request.app.state.db.transaction() as session:
        row, already = revoke_api_key(session, key_id, principal)  # idempotent: a revoked key stays as it is
        out = KeyRevoked(id=row.id, name=row.name, role=row.role, prefix=row.prefix, created_at=row.created_at,
                         revoked_at=row.revoked_at, already_revoked=already)
        key_hash = row.key_hash
    request.app.state.key_cache.forget(key_hash)
    return out
