"""FastAPI dependencies that authenticate the bearer key and enforce the route's minimum role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.auth.keys import Principal, find_principal

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer <key>`")


async def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> Principal:
    """The caller's principal; 401 when the key is missing or unknown."""
    return await principal_for_secret(request, credentials.credentials if credentials is not None else None)


async def authorize(request: Request, role: str) -> Principal:
    """The same check as ``Depends(require(role))`` without the dependency machinery, for the hot path."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    principal = await principal_for_secret(request, secret.strip() if scheme.lower() == "bearer" else None)
    if not principal.has_role(role):
        raise HTTPException(403, f"this route needs the '{role}' role; the key has '{principal.role}'")
    return principal


async def principal_for_secret(request: Request, secret: str | None) -> Principal:
    """Verify a key (cached for a short time so the hot path does no DB read); 401 when missing or unknown."""
    if not secret:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    cache = request.app.state.key_cache
    hit, principal = cache.get(secret)
    if not hit:
        db = request.app.state.db

        def _lookup() -> Principal | None:
            with db.read() as session:
                return find_principal(session, secret)

        principal = await run_in_threadpool(_lookup)
        cache.put(secret, principal)
    if principal is None:
        raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    return principal


def require(role: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting keys of ``role`` or above (``sdk < analyst < admin``); 403 otherwise."""

    async def _require(principal: Principal = Depends(authenticate)) -> Principal:
        if not principal.has_role(role):
            raise HTTPException(403, f"this route needs the '{role}' role; the key has '{principal.role}'")
        return principal

    _require.__name__ = f"require_{role}"
    return _require


require_sdk = require("sdk")
require_analyst = require("analyst")
require_admin = require("admin")
