"""Experiment registry and lifecycle routes: thin — parse, authorise, call the service, serialise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from api import audit
from api.auth.dependencies import require_admin, require_analyst
from api.auth.keys import Principal
from api.db.tables import Experiment
from api.experiments import presenters, repository, service
from api.experiments.schemas import (
    AllocationOut,
    AuditOut,
    ExperimentCreate,
    ExperimentOut,
    ExperimentUpdate,
    RollbackRequest,
    Status,
)
from api.schemas_common import KeyPath

router = APIRouter(prefix="/v1/experiments", tags=["experiments"])


def write_experiment(request: Request, action: Callable[[Session], Experiment]) -> ExperimentOut:
    """Run a change in one transaction, answer with the result, and refresh this worker's snapshot (also the
    ship route's, which lives with the ship guard in ``api.analysis``)."""
    with request.app.state.db.transaction() as session:
        experiment = action(session)
        allocation = repository.latest_allocations(session, [experiment.id]).get(experiment.id)
        out = presenters.experiment_out(experiment, allocation)
    request.app.state.snapshots.reload()
    return out


@router.post("", status_code=201, response_model=ExperimentOut)
def create_experiment(body: ExperimentCreate, request: Request,
                      principal: Principal = Depends(require_analyst)) -> ExperimentOut:
    """Register an experiment as a draft."""
    return write_experiment(request, lambda s: service.create_experiment(s, body, principal))


@router.get("", response_model=list[ExperimentOut])
def list_experiments(request: Request, status: list[Status] | None = Query(None),
                     _: Principal = Depends(require_analyst)) -> list[ExperimentOut]:
    """List experiments, newest first (optionally filtered by status)."""
    with request.app.state.db.read() as session:
        experiments = repository.list_experiments(session, status)
        allocations = repository.latest_allocations(session, [e.id for e in experiments])
        return [presenters.experiment_out(e, allocations.get(e.id)) for e in experiments]


@router.get("/{key}", response_model=ExperimentOut)
def get_experiment(key: KeyPath, request: Request, _: Principal = Depends(require_analyst)) -> ExperimentOut:
    """Get one experiment."""
    with request.app.state.db.read() as session:
        experiment = service.get_or_404(session, key)
        allocation = repository.latest_allocations(session, [experiment.id]).get(experiment.id)
        return presenters.experiment_out(experiment, allocation)


@router.patch("/{key}", response_model=ExperimentOut)
def update_experiment(key: KeyPath, body: ExperimentUpdate, request: Request,
                      principal: Principal = Depends(require_analyst)) -> ExperimentOut:
    """Edit an experiment (drafts freely; running ones name, owner, description; targeting and traffic as admin)."""
    return write_experiment(request, lambda s: service.update_experiment(s, key, body, principal))


@router.post("/{key}/start", response_model=ExperimentOut)
def start_experiment(key: KeyPath, request: Request, principal: Principal = Depends(require_admin)) -> ExperimentOut:
    """Start: freeze and fingerprint the analysis plan and begin assigning."""
    return write_experiment(request, lambda s: service.start(s, key, principal))


def _simple(action: Literal["pause", "resume", "stop"]) -> Callable[..., ExperimentOut]:
    def _endpoint(key: KeyPath, request: Request, principal: Principal = Depends(require_admin)) -> ExperimentOut:
        return write_experiment(request, lambda s: service.simple_transition(s, key, action, principal))

    _endpoint.__name__ = f"{action}_experiment"
    _endpoint.__doc__ = {"pause": "Pause: stop assigning and exposing (running → paused).",
                         "resume": "Resume a paused experiment.",
                         "stop": "Stop without shipping (everyone back to the default)."}[action]
    return _endpoint


for _action in ("pause", "resume", "stop"):
    router.add_api_route(f"/{{key}}/{_action}", _simple(_action), methods=["POST"],  # type: ignore[arg-type]
                         response_model=ExperimentOut)


@router.post("/{key}/rollback", response_model=ExperimentOut)
def rollback_experiment(key: KeyPath, body: RollbackRequest, request: Request,
                        principal: Principal = Depends(require_admin)) -> ExperimentOut:
    """Roll back: everyone eligible gets control."""
    return write_experiment(request, lambda s: service.simple_transition(s, key, "rollback", principal, body.reason))


@router.get("/{key}/audit", response_model=list[AuditOut])
def experiment_audit(key: KeyPath, request: Request, _: Principal = Depends(require_analyst)) -> list[AuditOut]:
    """The experiment's audit log, oldest first."""
    with request.app.state.db.read() as session:
        experiment = service.get_or_404(session, key)
        return [presenters.audit_out(e) for e in audit.history(session, experiment.id)]


@router.get("/{key}/allocations", response_model=list[AllocationOut])
def experiment_allocations(key: KeyPath, request: Request,
                           _: Principal = Depends(require_analyst)) -> list[AllocationOut]:
    """The experiment's allocation history, oldest first."""
    with request.app.state.db.read() as session:
        experiment = service.get_or_404(session, key)
        return [presenters.allocation_out(a) for a in repository.allocation_history(session, experiment.id)]
