"""Rules of the model registry (register, look up) and the serving report; whether an experiment's variants name
registered models is checked by the experiment registry (``api.experiments.variant_models``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.audit import record
from api.auth.keys import Principal
from api.db.tables import Experiment, ModelSpecRow, utc_now
from api.errors import Conflict, DomainError, InvalidInput, NotFound
from api.serving import report, repository
from api.serving.schemas import ModelCreate
from api.serving.wire import ServingReport, VariantReport
from models.errors import ModelSpecError
from models.remote import Endpoint, EndpointCheckError, RemoteModelSpec, check_endpoint
from models.spec import ModelSpec

AnySpec = ModelSpec | RemoteModelSpec
#: Fields of a local variant a remote one must not set (DESIGN.md: "no path/dtype/device").
_LOCAL_ONLY = ("path", "dtype", "device", "max_length", "pooling")


class EndpointFailed(DomainError):
    """The inference server named by a remote variant failed the registration check (424 Failed Dependency):
    unreachable, not ready, or failing. The detail names the field and quotes the server."""

    status_code = 424

    def __init__(self, field: tuple[str | int, ...], message: str) -> None:
        super().__init__([{"loc": list(field), "msg": message, "type": "dependency_error"}])


def spec_from_row(row: ModelSpecRow) -> AnySpec:
    """The ``models.ModelSpec`` (or ``models.remote.RemoteModelSpec``, when it has an endpoint) of a registry row."""
    if row.endpoint is not None:
        return RemoteModelSpec(key=row.key, task=row.task, endpoint=Endpoint.from_dict(row.endpoint),  # type: ignore[arg-type]
                               max_batch=row.max_batch)
    return ModelSpec(key=row.key, task=row.task, path=Path(row.path or ""), dtype=row.dtype,  # type: ignore[arg-type]
                     device=row.device or "auto", max_batch=row.max_batch, max_length=row.max_length or 128,
                     pooling=row.pooling)  # type: ignore[arg-type]


def _loc(field: str) -> tuple[str, ...]:
    """``"endpoint.headers.Authorization"`` → ``("body", "endpoint", "headers", "Authorization")``."""
    return ("body", *field.split(".", 2))


def check_model(body: ModelCreate, *, full: bool) -> AnySpec:
    """Build the spec and check it: a local model's directory, or a remote model's server (blocking: call it from a
    worker thread).

    Raises:
        InvalidInput: naming the field at fault (``path`` for a missing or broken model directory; ``endpoint.model``
            for a model the server does not know, ``endpoint.input_name``/``output_name`` for wrong tensor names).
        EndpointFailed: the server is unreachable, not ready or failing (424), quoting it.
    """
    if body.endpoint is None:
        if body.path is None:
            raise InvalidInput(("body", "path"), "a model needs a local 'path' or a remote 'endpoint'")
        return check_model_dir(body, full=full)
    if body.path is not None:
        raise InvalidInput(("body", "path"), "a remote model (with 'endpoint') has no 'path'")
    local = sorted(set(_LOCAL_ONLY) & body.model_fields_set)
    if local:
        raise InvalidInput(("body", local[0]), "a remote model (with 'endpoint') has no "
                           f"'{local[0]}': the inference server decides it")
    try:
        endpoint = Endpoint.from_dict(body.endpoint.model_dump())
        spec = RemoteModelSpec(key=body.key, task=body.task, endpoint=endpoint, max_batch=body.max_batch)
        return check_endpoint(spec)
    except ModelSpecError as exc:
        raise InvalidInput(_loc(exc.field), exc.message) from None
    except EndpointCheckError as exc:
        if exc.status == 424:
            raise EndpointFailed(_loc(exc.field), exc.message) from None
        raise InvalidInput(_loc(exc.field), exc.message) from None


def check_model_dir(body: ModelCreate, *, full: bool) -> ModelSpec:
    """Build the spec and check its directory (blocking: call it from a worker thread).

    Raises:
        InvalidInput: naming the field at fault (``path`` for a missing or broken model directory).
    """
    from models.loading import validate_model_dir

    try:
        spec = ModelSpec.from_dict(body.model_dump(exclude={"endpoint"}))
        validate_model_dir(spec, full=full)
    except ModelSpecError as exc:
        raise InvalidInput(("body", exc.field), exc.message) from None
    return spec


def get_or_404(session: Session, key: str) -> ModelSpecRow:
    """The registered model or a 404 naming it."""
    row = repository.get_spec(session, key)
    if row is None:
        raise NotFound(f"no model '{key}'")
    return row


def ensure_new(session: Session, key: str) -> None:
    """409 when ``key`` is registered already (models are immutable: experiments' results refer to them)."""
    if repository.get_spec(session, key) is not None:
        raise Conflict(f"model '{key}' already exists: model specs are immutable, register a new key")


def register_model(session: Session, spec: AnySpec, principal: Principal) -> ModelSpecRow:
    """Store a checked spec with an audit row; 409 when the key is taken."""
    ensure_new(session, spec.key)
    data = spec.to_dict()
    row = ModelSpecRow(**data, created_at=utc_now())
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # a concurrent registration of the same key won the race
        raise Conflict(f"model '{spec.key}' already exists: model specs are immutable, register a new key") from None
    record(session, principal, "model.create", experiment_id=None, after=data)
    return row


def serving_report(session: Session, experiment: Experiment, max_rows: int) -> ServingReport:
    """Per variant: requests, errors, latency percentiles, output distribution, drift (PSI) against control and
    against its own first day, shadow agreement with control, and a daily series."""
    variants = list(experiment.variants)
    specs = repository.get_specs(session, [v.model for v in variants if v.model is not None])
    task = next((specs[v.model].task for v in variants if v.model is not None and v.model in specs), None)
    totals = repository.prediction_totals(session, experiment.id)
    control = next((v for v in variants if v.is_control), None)

    def rows_of(key: str, shadow: bool) -> Sequence[Any]:
        return repository.recent_predictions(session, experiment.id, key, shadow, max_rows)

    control_rows = rows_of(control.key, False) if control is not None else []
    newest = [t["last_at"] for t in totals.values() if t["last_at"] is not None]
    window_start = max(newest) - report.FIRST_DAY if newest else None
    out: list[VariantReport] = []
    for variant in variants:
        variant_totals = totals.get((variant.key, variant.shadow))
        is_control = control is not None and variant.key == control.key
        rows = control_rows if is_control else rows_of(variant.key, variant.shadow)
        first_day_rows: Sequence[Any] = []
        if variant_totals is not None and variant_totals["first_at"] is not None:
            first_at = variant_totals["first_at"]
            first_day_rows = repository.recent_predictions(session, experiment.id, variant.key, variant.shadow,
                                                           max_rows, since=first_at, before=first_at + report.FIRST_DAY)
        out.append(report.variant_report(
            variant=variant.key, model=variant.model, shadow=variant.shadow, control=is_control, task=task,
            totals=variant_totals, rows=rows, first_day_rows=first_day_rows,
            control_rows=None if is_control else control_rows, window_start=window_start,
        ))
    return {"experiment": experiment.key, "status": experiment.status, "task": task,
            "window_rows_per_variant": max_rows, "variants": out}
