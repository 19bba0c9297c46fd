"""Schemas of event ingestion."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from api.schemas_common import EventName, RequestModel, UnitId

EventId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class EventIn(RequestModel):
    """One event; ``event_id`` is the idempotency key (resending never double-counts)."""


    event_id: EventId
    unit_id: UnitId
    name: EventName
    value: float = Field(1.0, allow_inf_nan=False)
    timestamp: AwareDatetime
    attributes: dict[str, Any] = Field(default_factory=dict)


class EventsIn(RequestModel):
    """A batch of up to 10,000 events, stored all or nothing."""


    events: list[EventIn] = Field(min_length=1, max_length=10_000)


class EventsOut(BaseModel):
    """Rows stored now, and rows skipped because their ``event_id`` was already stored."""

    accepted: int
    duplicates: int
