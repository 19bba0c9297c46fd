"""Analysis source routes: thin — parse, authorise, call the service, serialise."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from api.auth.dependencies import require_admin, require_analyst
from api.auth.keys import Principal
from api.schemas_common import KeyPath
from api.sources import repository, service
from api.sources.schemas import SourceCreate, SourceOut

router = APIRouter(prefix="/v1/sources", tags=["sources"])


@router.post("", status_code=201, response_model=SourceOut, response_model_exclude_none=True)
def create_source(body: SourceCreate, request: Request, principal: Principal = Depends(require_admin)) -> SourceOut:
    """Register an analysis source after checking its URL, columns and types (422/424/503 otherwise)."""
    limits = service.SourceLimits.from_settings(request.app.state.settings)
    with request.app.state.db.transaction() as session:
        return service.source_out(service.create_source(session, body, principal, limits))


@router.get("", response_model=list[SourceOut], response_model_exclude_none=True)
def list_sources(request: Request, _: Principal = Depends(require_analyst)) -> list[SourceOut]:
    """List the analysis sources (passwords masked)."""
    with request.app.state.db.read() as session:
        return [service.source_out(s) for s in repository.list_all(session)]


@router.get("/{key}", response_model=SourceOut, response_model_exclude_none=True)
def get_source(key: KeyPath, request: Request, _: Principal = Depends(require_analyst)) -> SourceOut:
    """Get one analysis source (password masked)."""
    with request.app.state.db.read() as session:
        return service.source_out(service.get_or_404(session, key))


@router.delete("/{key}", status_code=204)
def delete_source(key: KeyPath, request: Request, principal: Principal = Depends(require_admin)) -> Response:
    """Remove an analysis source (409 while an experiment that has not ended reads it), and the materialised rows
    it keeps for its experiments."""
    released = service.release_stored_rows(request.app.state.db, key)
    with request.app.state.db.transaction() as session:
        service.delete_source(session, key, principal, released)
    return Response(status_code=204)
