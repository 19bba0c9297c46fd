"""ORM tables (SQLAlchemy 2 typed mappings). ``migrations/`` always agrees with this module."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from api.db.base import Base, BigIntPK
from api.db.types import JSONType, UTCDateTime
from api.json_types import JsonObject


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


ROLES = ("sdk", "analyst", "admin")
EXPERIMENT_STATUSES = ("draft", "running", "paused", "shipped", "rolled_back", "stopped")


class ApiKey(Base):
    """An API key, stored as the SHA-256 of the secret (keys are 256-bit random, so no slow hash is needed)."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("role IN ('sdk', 'analyst', 'admin')", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Metric(Base):
    """A metric of the catalog: how per-unit values are computed from events."""

    __tablename__ = "metrics"
    __table_args__ = (CheckConstraint("kind IN ('proportion', 'mean', 'ratio', 'quantile')", name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    event: Mapped[str | None] = mapped_column(String(200), nullable=True)
    aggregation: Mapped[str | None] = mapped_column(String(16), nullable=True)
    numerator: Mapped[JsonObject | None] = mapped_column(JSONType, nullable=True)
    denominator: Mapped[JsonObject | None] = mapped_column(JSONType, nullable=True)
    direction: Mapped[str] = mapped_column(String(32))
    winsorize: Mapped[float | None] = mapped_column(Float, nullable=True)
    window_hours: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: kind "quantile" only: which quantile of the per-event values (0 < q < 1)
    quantile: Mapped[float | None] = mapped_column(Float, nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, onupdate=utc_now)


class Experiment(Base):
    """A registered experiment; its frozen analysis plan lives in ``plan`` once started."""

    __tablename__ = "experiments"
    __table_args__ = (
        CheckConstraint(
            "status IN ('draft', 'running', 'paused', 'shipped', 'rolled_back', 'stopped')", name="status"
        ),
        CheckConstraint("type IN ('ab', 'rollout')", name="type"),
        CheckConstraint("traffic > 0 AND traffic <= 1", name="traffic"),
        Index("ix_experiments_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    hypothesis: Mapped[dict[str, Any]] = mapped_column(JSONType)
    allocation: Mapped[dict[str, Any]] = mapped_column(JSONType)
    design: Mapped[dict[str, Any]] = mapped_column(JSONType)
    targeting: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    traffic: Mapped[float] = mapped_column(Float, default=1.0)
    layer: Mapped[str | None] = mapped_column(String(100), nullable=True)
    layer_start: Mapped[int | None] = mapped_column(Integer, nullable=True)
    layer_end: Mapped[int | None] = mapped_column(Integer, nullable=True)
    salt: Mapped[str] = mapped_column(String(200))
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    plan_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    shipped_variant: Mapped[str | None] = mapped_column(String(100), nullable=True)
    exposure_mismatches: Mapped[int] = mapped_column(BigInteger, default=0)
    # Exposures this service acknowledged but could not store: dropped while the in-memory queue was full, or
    # refused by the database and moved to ``dead_letters`` (health of the experiment's data; 0 when all is well).
    exposures_dropped: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    exposures_dead_lettered: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The analysis source this experiment's scorecard reads (``analysis_sources.key``; None: titrate's own tables).
    # No foreign key: an ended experiment keeps naming a source that may since have been deleted.
    analysis_source: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, onupdate=utc_now)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    variants: Mapped[list[Variant]] = relationship(
        back_populates="experiment", lazy="raise", order_by="Variant.position", cascade="all, delete-orphan"
    )
    metric_links: Mapped[list[ExperimentMetric]] = relationship(
        back_populates="experiment", lazy="raise", order_by="ExperimentMetric.position",
        cascade="all, delete-orphan",
    )


class Variant(Base):
    """One arm of an experiment; ``position`` is its bucket order (spec/bucketing.md §3.5)."""

    __tablename__ = "variants"
    __table_args__ = (UniqueConstraint("experiment_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer)
    is_control: Mapped[bool] = mapped_column(Boolean, default=False)
    weight: Mapped[float] = mapped_column(Float)
    model: Mapped[str | None] = mapped_column(String(100), nullable=True)
    payload: Mapped[JsonObject] = mapped_column(JSONType)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)

    experiment: Mapped[Experiment] = relationship(back_populates="variants", lazy="raise")


class ExperimentMetric(Base):
    """A catalog metric attached to an experiment in a role (primary, secondary, guardrail)."""

    __tablename__ = "experiment_metrics"
    __table_args__ = (
        UniqueConstraint("experiment_id", "metric_id", "role"),
        CheckConstraint("role IN ('primary', 'secondary', 'guardrail')", name="role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    metric_id: Mapped[int] = mapped_column(ForeignKey("metrics.id", ondelete="RESTRICT"))
    role: Mapped[str] = mapped_column(String(16))
    margin: Mapped[float | None] = mapped_column(Float, nullable=True)
    position: Mapped[int] = mapped_column(Integer)

    experiment: Mapped[Experiment] = relationship(back_populates="metric_links", lazy="raise")
    metric: Mapped[Metric] = relationship(lazy="raise")


class Allocation(Base):
    """A versioned allocation of traffic between variants; assignment uses the newest version."""

    __tablename__ = "allocations"
    __table_args__ = (UniqueConstraint("experiment_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    weights: Mapped[dict[str, float]] = mapped_column(JSONType)
    #: contextual bandits: context value → variant → weight (units with another value get ``weights``)
    context_weights: Mapped[dict[str, dict[str, float]] | None] = mapped_column(JSONType, nullable=True)
    reason: Mapped[str] = mapped_column(String(200))
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class Exposure(Base):
    """A unit's first exposure to an experiment: the variant, allocation version and attributes then."""

    __tablename__ = "exposures"
    __table_args__ = (
        UniqueConstraint("experiment_id", "unit_id"),
        Index("ix_exposures_experiment_variant", "experiment_id", "variant"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    unit_id: Mapped[str] = mapped_column(String(256))
    variant: Mapped[str] = mapped_column(String(100))
    allocation_version: Mapped[int] = mapped_column(Integer)
    exposed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attributes: Mapped[JsonObject] = mapped_column(JSONType)
    source: Mapped[str] = mapped_column(String(16), default="server")


class Event(Base):
    """A tracked event; ``event_id`` is the client's idempotency key."""

    __tablename__ = "events"
    # why (name, timestamp): an incremental scorecard refresh finds the units with new events of the plan's event
    # names by a range scan instead of reading every event (api/incremental).
    __table_args__ = (Index("ix_events_unit_name_ts", "unit_id", "name", "timestamp"),
                      Index("ix_events_name_ts", "name", "timestamp"),
                      # why: an incremental scorecard refresh reads the events received since its watermark
                      Index("ix_events_received_at", "received_at"))

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    unit_id: Mapped[str] = mapped_column(String(256))
    name: Mapped[str] = mapped_column(String(200))
    value: Mapped[float] = mapped_column(Float)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    attributes: Mapped[JsonObject] = mapped_column(JSONType)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class ScorecardUnit(Base):
    """A materialised per-unit row of an experiment's scorecard (``scorecards.incremental``): the unit's usable
    exposure at the last refresh and how many of its events had a non-finite value; its component values are in
    :class:`ScorecardUnitValue`."""

    __tablename__ = "scorecard_units"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    unit_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    variant: Mapped[str] = mapped_column(String(100))
    allocation_version: Mapped[int] = mapped_column(Integer)
    exposed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attributes: Mapped[JsonObject] = mapped_column(JSONType)
    excluded_events: Mapped[int] = mapped_column(Integer)


class ScorecardUnitValue(Base):
    """One nonzero per-unit component value (``component``: ``scorecards.incremental.component_text``) of a
    materialised scorecard row; a component without a row is 0."""

    __tablename__ = "scorecard_unit_values"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    unit_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    component: Mapped[str] = mapped_column(String(512), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class ScorecardUnitWindowValue(Base):
    """One nonzero per-unit component value of the events an analysis source may still add to: those dated after
    the experiment's ``settled_through`` (``scorecards.incremental``; ``component`` as in
    :class:`ScorecardUnitValue`, or ``excluded_events``). A unit's value is its settled value plus this one (a max
    for ``any`` components); every refresh replaces all these rows of the experiment."""

    __tablename__ = "scorecard_unit_window_values"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    unit_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    component: Mapped[str] = mapped_column(String(512), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class ScorecardRefresh(Base):
    """The refresh state of an experiment's materialised scorecard: the rows are the analysis as of
    ``computed_at``; the next incremental refresh adds the events received after ``watermark`` (titrate's own
    tables) or, on an analysis source, adds the events dated from ``settled_through`` to its new cutoff and
    replaces the window values;
    ``components`` are the stored component keys (a plan with others needs a full refresh)."""

    __tablename__ = "scorecard_refreshes"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    watermark: Mapped[datetime] = mapped_column(UTCDateTime)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_full_at: Mapped[datetime] = mapped_column(UTCDateTime)
    mode: Mapped[str] = mapped_column(String(16))
    components: Mapped[list[str]] = mapped_column(JSONType)
    excluded_exposures: Mapped[int] = mapped_column(BigInteger)
    units_recomputed: Mapped[int] = mapped_column(BigInteger)
    #: An analysis source's rows: the stored values count the events dated at or before this time, and
    #: :class:`ScorecardUnitWindowValue` those dated after it (None: no window rows — titrate's own tables, whose
    #: refreshes read events by arrival, or a state stored before the split, which the next refresh replaces whole).
    settled_through: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The default scorecard of this state as REST JSON, written in the refresh's own transaction (None: not
    #: published; a read builds it), and what else it depends on (``card_key``: status and allocation history).
    #: Deferred: reading the state does not load it.
    card: Mapped[str | None] = mapped_column(Text, nullable=True, deferred=True)
    card_key: Mapped[str | None] = mapped_column(String(200), nullable=True, deferred=True)
    #: When a plain read last needed the card (the refresh job publishes only for experiments read lately).
    card_wanted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, deferred=True)


class AnalysisSource(Base):
    """A user's database holding exposures and events to analyse in place (DESIGN.md "Analysis sources").

    ``url`` is stored as given, ``${ENV}`` references unexpanded (secrets stay in the environment); ``exposures``
    and ``events`` are the mappings: ``{"table": ..., "sql": ..., "columns": {titrate name: source column}}``.
    """

    __tablename__ = "analysis_sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    url: Mapped[str] = mapped_column(Text)
    exposures: Mapped[dict[str, Any]] = mapped_column(JSONType)
    events: Mapped[dict[str, Any]] = mapped_column(JSONType)
    #: ``{"schema": name}``: the materialised scorecard rows live in that schema of the source (None: in titrate's)
    materialise: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class DeadLetter(Base):
    """A row a background writer could not store because the database refused that row (not because the database
    was unavailable): kept here with the error so one bad row never blocks the others, and an admin can see it.

    ``payload`` is the row as JSON text (non-finite numbers kept as ``NaN``/``Infinity`` tokens, so it is plain
    text, not a JSON column); ``experiment_id`` is a plain number, not a foreign key, so a row naming a deleted
    experiment can still be kept."""

    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_kind_created_at", "kind", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    experiment_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    payload: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class AuditEntry(Base):
    """Who did what to which experiment, with the state before and after."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_experiment_at", "experiment_id", "at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    experiment_id: Mapped[int | None] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), nullable=True
    )
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    before: Mapped[JsonObject | None] = mapped_column(JSONType, nullable=True)
    after: Mapped[JsonObject | None] = mapped_column(JSONType, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class ConfigVersion(Base):
    """One row: bumped in the same transaction as any change to what assignment serves."""

    __tablename__ = "config_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, onupdate=utc_now)


class ModelSpecRow(Base):
    """A registered model variant spec; immutable once registered, like metrics.

    A local variant (``models.ModelSpec``) has ``path``, ``dtype``, ``device``, ``max_length`` and ``pooling``; a
    remote one (``models.remote.RemoteModelSpec``) has ``endpoint`` instead (its ``${ENV}`` header references
    stored unexpanded) and NULL there.
    """

    __tablename__ = "model_specs"
    __table_args__ = (
        CheckConstraint("task IN ('text-classification', 'embedding')", name="task"),
        CheckConstraint("dtype IN ('float32', 'bfloat16', 'float16')", name="dtype"),
        CheckConstraint("pooling IN ('mean', 'cls')", name="pooling"),
        CheckConstraint("max_batch >= 1 AND max_length >= 1", name="limits"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    task: Mapped[str] = mapped_column(String(32))
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    dtype: Mapped[str | None] = mapped_column(String(16), nullable=True)
    device: Mapped[str | None] = mapped_column(String(32), nullable=True)
    max_batch: Mapped[int] = mapped_column(Integer)
    max_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pooling: Mapped[str | None] = mapped_column(String(16), nullable=True)
    endpoint: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class Prediction(Base):
    """One served (or shadow) prediction request: who, which variant and model, how fast, and a summary of
    the outputs for monitoring (scores and labels, or embedding norms); ``request_id`` pairs a shadow run
    with the control request it copied."""

    __tablename__ = "predictions"
    __table_args__ = (Index("ix_predictions_experiment_variant_created", "experiment_id", "variant", "created_at"),
                      Index("ix_predictions_created_at", "created_at"))  # the retention purge

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64))
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    variant: Mapped[str] = mapped_column(String(100))
    unit_id: Mapped[str] = mapped_column(String(256))
    model: Mapped[str] = mapped_column(String(100))
    latency_ms: Mapped[float] = mapped_column(Float)
    n_inputs: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    agreement: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
