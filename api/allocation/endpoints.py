"""Allocation updater routes: thin — parse, authorise, call the service, serialise."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.exc import IntegrityError

from api.allocation.schemas import StepOut
from api.allocation.service import run_allocation_step
from api.auth.dependencies import require_admin
from api.auth.keys import Principal
from api.db.tables import utc_now
from api.errors import Conflict
from api.experiments import service as experiments_service
from api.schemas_common import KeyPath

router = APIRouter(prefix="/v1/experiments", tags=["allocations"])


@router.post("/{key}/allocations/recompute", response_model=StepOut)
def recompute_allocation(key: KeyPath, request: Request,
                         force: bool = Query(False, description="ignore the thompson update cadence"),
                         accept: bool = Query(False, description="suggest-mode ramps: accept the suggested step "
                                                                 "(it advances if its conditions still hold)"),
                         principal: Principal = Depends(require_admin)) -> StepOut:
    """Run the scheduled allocation step now (bandit update, ramp advance or automatic rollback)."""
    try:
        with request.app.state.db.transaction() as session:
            experiment = experiments_service.get_or_404(session, key, for_update=True)
            if experiment.status != "running":
                raise Conflict(f"experiment '{key}' is '{experiment.status}': allocation updates run only while "
                               "it is running")
            result = run_allocation_step(session, experiment, utc_now(), actor=principal, force=force,
                                         accept=accept)
    except IntegrityError:
        raise Conflict(f"another allocation updater published a new version of '{key}' first; "
                       "GET /allocations shows it") from None
    if result.new_version or result.action == "rolled_back":
        request.app.state.snapshots.reload()
    return StepOut(**asdict(result))
