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
from api.errors import Conflict, InvalidInput, NotFound
from api.serving import report, repository
from api.serving.schemas import ModelCreate
from api.serving.wire import ServingReport, VariantReport
from models.errors import ModelSpecError
from models.spec import ModelSpec


def spec_from_row(row: ModelSpecRow) -> ModelSpec:
    """The ``models.ModelSpec`` of a registry row."""
    return ModelSpec(key=row.key, task=row.task, path=Path(row.path), dtype=row.dtype,  # type: ignore[arg-type]
                     device=row.device, max_batch=row.max_batch, max_length=row.max_length,
                     pooling=row.pooling)  # type: ignore[arg-type]


def check_model_dir(body: ModelCreate, *, full: bool) -> ModelSpec:
    """Build the spec and check its directory (blocking: call it from a worker thread).

    Raises:
        InvalidInput: naming the field at fault (``path`` for a missing or broken model directory).
    """
    from models.loading import validate_model_dir

    try:
        spec = ModelSpec.from_dict(body.model_dump())
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


def register_model(session: Session, spec: ModelSpec, principal: Principal) -> ModelSpecRow:
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
