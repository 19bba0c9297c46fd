"""Schemas of event ingestion."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from api.json_types import JsonObject
from api.schemas_common import Timestamp, check_attributes_json

# Why patterns instead of the generic RequestModel check: a batch has up to 10,000 rows, and a pattern is
# checked inside pydantic-core, while a Python validator per field would cost ~60k calls per batch.
_NO_NUL = r"^[^\x00]*$"
EventId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_NO_NUL)]
UnitIdNoNul = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=_NO_NUL)]
EventNameNoNul = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_NO_NUL)]


class EventIn(BaseModel):
    """One event; ``event_id`` is the idempotency key (resending never double-counts).

    The contract of ``POST /v1/events`` (OpenAPI, refusals). The route validates a batch with
    :func:`api.events.parsing.parse_events`, which checks these rules once per batch and comes back here for any
    batch it cannot clear: a rule added here must be added there too (its property test compares the two).
    """

    model_config = ConfigDict(extra="forbid")

    event_id: EventId
    unit_id: UnitIdNoNul
    name: EventNameNoNul
    value: float = Field(1.0, allow_inf_nan=False)
    timestamp: Timestamp
    attributes: JsonObject = Field(default_factory=dict)

    @field_validator("attributes", mode="after")
    @classmethod
    def _attributes_rules(cls, value: JsonObject) -> JsonObject:
        # no NUL, finite numbers, 64-bit integers, the attribute key and depth limits (api.schemas_common)
        return check_attributes_json(value)


class EventsIn(BaseModel):
    """A batch of up to 10,000 events, stored all or nothing (the route refuses more than
    ``TITRATE_MAX_EVENTS_PER_BATCH``, which may set a lower ceiling)."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=10_000)


class EventsOut(BaseModel):
    """Rows stored now, and rows skipped because their ``event_id`` was already stored."""

    accepted: int
    duplicates: int
