"""Metrics catalog routes: thin — parse, authorise, call the service, serialise."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from api.auth.dependencies import require_analyst
from api.auth.keys import Principal
from api.metrics_catalog import repository, service
from api.metrics_catalog.schemas import MetricCreate, MetricOut
from api.schemas_common import KeyPath

router = APIRouter(prefix="/v1/metrics", tags=["metrics"])


@router.post("", status_code=201, response_model=MetricOut)
def create_metric(body: MetricCreate, request: Request,
                  principal: Principal = Depends(require_analyst)) -> MetricOut:
    """Add a metric to the catalog."""
    with request.app.state.db.transaction() as session:
        metric = service.create_metric(session, body, principal)
        return MetricOut.model_validate(metric)


@router.get("", response_model=list[MetricOut])
def list_metrics(request: Request, _: Principal = Depends(require_analyst)) -> list[MetricOut]:
    """List the metrics catalog."""
    with request.app.state.db.read() as session:
        return [MetricOut.model_validate(m) for m in repository.list_all(session)]


@router.get("/{key}", response_model=MetricOut)
def get_metric(key: KeyPath, request: Request, _: Principal = Depends(require_analyst)) -> MetricOut:
    """Get one metric."""
    from api.errors import NotFound

    with request.app.state.db.read() as session:
        metric = repository.get_by_key(session, key)
        if metric is None:
            raise NotFound(f"no metric '{key}'")
        return MetricOut.model_validate(metric)
