"""Rules of the metrics catalog."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.audit import record
from api.auth.keys import Principal
from api.db.tables import Metric, utc_now
from api.errors import Conflict
from api.metrics_catalog import repository
from api.metrics_catalog.schemas import MetricCreate


def create_metric(session: Session, body: MetricCreate, principal: Principal) -> Metric:
    """Add a metric; 409 if the key exists (metrics are immutable once created, as plans refer to them)."""
    if repository.get_by_key(session, body.key) is not None:
        raise Conflict(f"metric '{body.key}' already exists")
    data = body.model_dump(mode="json")
    metric = Metric(**body.stored(), created_at=utc_now(), updated_at=utc_now())
    session.add(metric)
    session.flush()
    record(session, principal, "metric.create", experiment_id=None, after=data)
    return metric
