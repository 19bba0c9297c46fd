"""Serving routes: the model registry, predictions through an experiment, and the serving report."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Request, Response

from api.assignment.service import check_attributes
from api.auth.dependencies import require_analyst, require_sdk
from api.auth.keys import Principal
from api.db.tables import ModelSpecRow
from api.experiments import service as experiments_service
from api.schemas_common import KEY_PATTERN, KeyPath
from api.serving import repository, service
from api.serving.schemas import ModelCreate, ModelOut, PredictRequest, PredictResponse, ServingReportOut
from api.serving.wire import ServingReport

router = APIRouter(tags=["serving"])

ModelKeyPath = Annotated[str, Path(pattern=KEY_PATTERN, description="model key")]


def _model_out(row: ModelSpecRow, request: Request) -> ModelOut:
    variant = request.app.state.model_manager.variant(row.key)
    return ModelOut(key=row.key, task=row.task, path=row.path, dtype=row.dtype, device=row.device,  # type: ignore[arg-type]
                    max_batch=row.max_batch, max_length=row.max_length, pooling=row.pooling,  # type: ignore[arg-type]
                    endpoint=row.endpoint, created_at=row.created_at, loaded=variant is not None,
                    runtime=variant.describe() if variant is not None else None)


@router.post("/v1/models", status_code=201, response_model=ModelOut,
             responses={424: {"description": "a remote model's inference server is unreachable, not ready or failing"}})
def register_model(body: ModelCreate, request: Request, principal: Principal = Depends(require_analyst)) -> ModelOut:
    """Register a model variant spec (its directory or its inference server is checked now: a broken model is a 422)."""
    state = request.app.state
    with state.db.read() as session:
        service.ensure_new(session, body.key)  # before the (possibly slow) check of the directory
    spec = service.check_model(body, full=state.settings.serving_validate_full)  # sync route: a worker thread
    with state.db.transaction() as session:
        row = service.register_model(session, spec, principal)
        out = _model_out(row, request)
    state.serving.specs.put(spec)
    return out


@router.get("/v1/models", response_model=list[ModelOut])
def list_models(request: Request, _: Principal = Depends(require_analyst)) -> list[ModelOut]:
    """List registered models (``loaded`` says whether this worker holds one in memory)."""
    with request.app.state.db.read() as session:
        return [_model_out(row, request) for row in repository.list_specs(session)]


@router.get("/v1/models/{key}", response_model=ModelOut)
def get_model(key: ModelKeyPath, request: Request, _: Principal = Depends(require_analyst)) -> ModelOut:
    """Get one registered model."""
    with request.app.state.db.read() as session:
        return _model_out(service.get_or_404(session, key), request)


@router.post("/v1/experiments/{key}/predict", response_model=PredictResponse,
             responses={409: {"description": "not served, unit not in the experiment, or variant without model"},
                        503: {"description": "the variant's model failed"}})
async def predict(key: KeyPath, body: PredictRequest, request: Request,
                  _: Principal = Depends(require_sdk)) -> Response:
    """Serve inputs with the model of the variant the unit is assigned to (logs the exposure).

    The answer is ``PredictResponse`` encoded by orjson, returned as a ``Response`` so FastAPI does not validate and
    re-encode the outputs (a vector of floats per input) on the response path; ``response_model`` still documents it.
    """
    state = request.app.state
    check_attributes(body.attributes, state.settings.max_attributes_bytes, ("body", "attributes"))
    return predict_response(await state.serving.predict(key, body.unit_id, body.attributes, body.inputs))


def predict_response(result: dict[str, Any]) -> Response:
    """``/predict``'s answer to ``ServingRuntime.predict``'s ``result`` (the route's and ``PredictFastPath``'s)."""
    return Response(orjson.dumps(result), media_type="application/json")


@router.get("/v1/experiments/{key}/serving", response_model=ServingReportOut)
def serving_report(key: KeyPath, request: Request, _: Principal = Depends(require_analyst)) -> ServingReport:
    """Per-variant serving health: latency, errors, output drift (PSI) and shadow agreement."""
    state = request.app.state
    with state.db.read() as session:
        experiment = experiments_service.get_or_404(session, key)
        return service.serving_report(session, experiment, state.settings.serving_report_max_rows)
