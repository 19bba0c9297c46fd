"""Dead-letter route (admin): the rows the database refused, so nothing is lost silently."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request

from api.auth.dependencies import require_admin
from api.auth.keys import Principal
from api.dead_letters import repository
from api.dead_letters.schemas import DeadLetterOut, DeadLettersOut

router = APIRouter(prefix="/v1/dead-letters", tags=["ops"])

MAX_ID = 2**63 - 1


@router.get("", response_model=DeadLettersOut)
def list_dead_letters(
    request: Request,
    kind: Literal["exposure", "event", "prediction"] | None = Query(None, description="only rows of this kind"),
    limit: int = Query(100, ge=1, le=1000, description="rows per page"),
    before_id: int | None = Query(None, ge=1, le=MAX_ID, description="rows older than this id (paging)"),
    _: Principal = Depends(require_admin),
) -> DeadLettersOut:
    """Rows a background writer could not store because the database refused them, with the error."""
    with request.app.state.db.read() as session:
        counts = repository.counts_by_kind(session)
        rows = repository.newest(session, kind, limit, before_id)
        items = [DeadLetterOut.model_validate(row, from_attributes=True) for row in rows]
    return DeadLettersOut(counts=counts, items=items,
                          next_before_id=items[-1].id if len(items) == limit else None)
