"""Request/response schemas of the metrics catalog (DESIGN.md REST contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from api.schemas_common import EventName, Key, RequestModel
from scorecards.kinds import Aggregation, CatalogMetricKind, Direction


class EventAggregate(RequestModel):
    """One side of a ratio metric: an event aggregated per unit."""


    event: EventName
    aggregation: Aggregation = "sum"


class MetricCreate(RequestModel):
    """A metric definition: which event, how it is aggregated per unit, and which way is better."""


    key: Key
    kind: CatalogMetricKind
    event: EventName | None = None
    aggregation: Aggregation | None = None
    numerator: EventAggregate | None = None
    denominator: EventAggregate | None = None
    direction: Direction = "higher_is_better"
    winsorize: float | None = Field(None, gt=0, allow_inf_nan=False, description="cap on per-unit values")
    window_hours: float | None = Field(
        None, gt=0, le=24 * 365, allow_inf_nan=False, description="attribution window after first exposure"
    )
    quantile: float | None = Field(
        None, gt=0, lt=1, allow_inf_nan=False,
        description="kind 'quantile' only: the quantile q (0 < q < 1) of the per-event values of 'event'")
    over: Literal["events", "units"] | None = Field(
        None, description="kind 'quantile' only (default 'events'): the quantile of the per-event values, or of "
                          "each unit's aggregate ('aggregation', default 'sum') across units")
    description: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _check_shape(self) -> Self:
        if self.kind != "quantile" and self.quantile is not None:
            raise ValueError("'quantile' is only for kind 'quantile'")
        if self.kind != "quantile" and self.over is not None:
            raise ValueError("'over' is only for kind 'quantile'")
        if self.kind == "quantile":
            return self._check_quantile()
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

    def _check_quantile(self) -> Self:
        """The q-quantile of ``event``'s per-event values (``over`` "events", the default: no per-unit aggregation)
        or of each unit's ``aggregation`` ("sum", the default, or "count") of them (``over`` "units");
        ``scorecards.quantile``. No winsorising (a quantile is robust to outliers already).

        why ``over`` is not stored: a quantile metric has an aggregation exactly when it is over units, so the
        stored (and frozen) ``aggregation`` says which — no new column, and plans of existing metrics keep their
        documents."""
        if self.quantile is None:
            raise ValueError("a quantile metric needs 'quantile' (0 < q < 1, e.g. 0.95)")
        if self.event is None:
            raise ValueError("a quantile metric needs 'event'")
        if self.numerator is not None or self.denominator is not None:
            raise ValueError("a quantile metric takes 'event' and 'quantile', not 'numerator'/'denominator'")
        if self.over is None:
            self.over = "events"
        if self.over == "events" and self.aggregation is not None:
            raise ValueError("a quantile over events takes no 'aggregation' (use \"over\": \"units\" for a "
                             "per-unit aggregate)")
        if self.over == "units":
            if self.aggregation == "any":
                raise ValueError("a quantile over units aggregates by 'sum' or 'count', not 'any' (aggregation)")
            self.aggregation = self.aggregation or "sum"
        if self.winsorize is not None:
            raise ValueError("a quantile metric takes no 'winsorize'")
        return self

    def stored(self) -> dict[str, Any]:
        """The columns of the stored metric (every field but ``over``, which ``aggregation`` implies)."""
        data = self.model_dump(mode="json")
        data.pop("over")
        return data


class MetricOut(MetricCreate):
    """A stored metric."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    created_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _over_from_aggregation(cls, data: Any) -> Any:
        """A stored row has no ``over``: a quantile metric with an aggregation is over units, one without over
        events (see :meth:`MetricCreate._check_quantile`)."""
        if isinstance(data, dict):
            return data
        fields = {name: getattr(data, name) for name in cls.model_fields if name != "over" and hasattr(data, name)}
        if fields.get("kind") == "quantile":
            fields["over"] = "events" if fields.get("aggregation") is None else "units"
        return fields
