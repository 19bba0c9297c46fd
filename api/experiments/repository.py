"""Queries of the experiment registry (the only module here that builds SELECTs on its tables)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql.base import ExecutableOption

# The config version lives below every domain (api.db.config_version); re-exported for the registry's users.
from api.db.config_version import bump_config_version as bump_config_version
from api.db.config_version import config_version as config_version
from api.db.tables import Allocation, Experiment, ExperimentMetric, ModelSpecRow

LIVE_STATUSES = ("running", "paused")
SERVED_STATUSES = ("running", "shipped", "rolled_back")


def _with_children() -> tuple[ExecutableOption, ...]:
    return (
        selectinload(Experiment.variants),
        selectinload(Experiment.metric_links).selectinload(ExperimentMetric.metric),
    )


def get(session: Session, key: str, *, for_update: bool = False) -> Experiment | None:
    """The experiment called ``key`` with its variants and metrics, or None."""
    stmt = (select(Experiment).where(Experiment.key == key).options(*_with_children())
            .execution_options(populate_existing=True))
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def list_experiments(session: Session, statuses: Sequence[str] | None = None) -> list[Experiment]:
    """Experiments (optionally of some statuses) with children, newest first."""
    stmt = select(Experiment).options(*_with_children()).order_by(Experiment.id.desc())
    if statuses:
        stmt = stmt.where(Experiment.status.in_(statuses))
    return list(session.scalars(stmt))


def latest_allocations(session: Session, experiment_ids: Sequence[int]) -> dict[int, Allocation]:
    """The newest allocation of each experiment."""
    if not experiment_ids:
        return {}
    newest = (
        select(Allocation.experiment_id, func.max(Allocation.version).label("version"))
        .where(Allocation.experiment_id.in_(experiment_ids))
        .group_by(Allocation.experiment_id)
        .subquery()
    )
    stmt = select(Allocation).join(
        newest, (Allocation.experiment_id == newest.c.experiment_id) & (Allocation.version == newest.c.version)
    )
    return {a.experiment_id: a for a in session.scalars(stmt)}


def allocation_history(session: Session, experiment_id: int) -> list[Allocation]:
    """Every allocation version of an experiment, oldest first."""
    return list(session.scalars(
        select(Allocation).where(Allocation.experiment_id == experiment_id).order_by(Allocation.version)
    ))


def allocation_history_key(session: Session, experiment_id: int) -> tuple[int, int | None]:
    """How many allocation versions the experiment has and the newest one (what changes when one is published)."""
    count, newest = session.execute(select(func.count(), func.max(Allocation.version))
                                    .where(Allocation.experiment_id == experiment_id)).one()
    return int(count), None if newest is None else int(newest)


def layer_ranges(session: Session, layer: str, exclude_id: int | None = None) -> list[tuple[int, int]]:
    """Bucket ranges held by live (running or paused) experiments of a layer."""
    stmt = select(Experiment.layer_start, Experiment.layer_end).where(
        Experiment.layer == layer, Experiment.status.in_(LIVE_STATUSES),
        Experiment.layer_start.is_not(None), Experiment.layer_end.is_not(None),
    )
    if exclude_id is not None:
        stmt = stmt.where(Experiment.id != exclude_id)
    return sorted((int(s or 0), int(e or 0)) for s, e in session.execute(stmt).all())


def model_tasks(session: Session, keys: Sequence[str]) -> dict[str, str]:
    """The task of each registered model among ``keys`` (unregistered keys are absent) — the one read of the model
    registry the experiment registry needs (validating variants' models)."""
    if not keys:
        return {}
    rows = session.execute(select(ModelSpecRow.key, ModelSpecRow.task).where(ModelSpecRow.key.in_(set(keys))))
    return {key: task for key, task in rows}
