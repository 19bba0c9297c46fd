"""Request/response schemas of the metrics catalog (DESIGN.md REST contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Self

from pydantic import ConfigDict, Field, model_validator

from api.schemas_common import EventName, Key, RequestModel
from scorecards.kinds import Aggregation, Direction, MetricKind


class EventAggregate(RequestModel):
    """One side of a ratio metric: an event aggregated per unit."""


    event: EventName
    aggregation: Aggregation = "sum"


class MetricCreate(RequestModel):
    """A metric definition: which event, how it is aggregated per unit, and which way is better."""


    key: Key
    kind: MetricKind
    event: EventName | None = None
    aggregation: Aggregation | None = None
    numerator: EventAggregate | None = None
    denominator: EventAggregate | None = None
    direction: Direction = "higher_is_better"
    winsorize: float | None = Field(None, gt=0, allow_inf_nan=False, description="cap on per-unit values")
    window_hours: float | None = Field(
        None, gt=0, le=24 * 365, allow_inf_nan=False, description="attribution window after first exposure"
    )
    description: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        if self.kind == "ratio":
            if self.numerator is None or self.denominator is None:
                raise ValueError("a ratio metric needs 'numerator' and 'denominator'")
            if self.event is not None or self.aggregation is not None:
                raise ValueError("a ratio metric takes 'numerator'/'denominator', not 'event'/'aggregation'")
            return self
        if self.event is None:
            raise ValueError(f"a {self.kind} metric needs 'event'")
        if self.numerator is not None or self.denominator is not None:
            raise ValueError(f"a {self.kind} metric takes 'event', not 'numerator'/'denominator'")
        if self.kind == "proportion":
            if self.aggregation not in (None, "any"):
                raise ValueError("a proportion metric counts units with at least one event: aggregation 'any'")
            self.aggregation = "any"
        elif self.aggregation is None:
            self.aggregation = "sum"
        elif self.aggregation == "any":
            raise ValueError("aggregation 'any' makes a proportion: use kind 'proportion'")
        return self


class MetricOut(MetricCreate):
    """A stored metric."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    created_at: datetime
