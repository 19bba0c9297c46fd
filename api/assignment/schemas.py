"""Schemas of assignment, SDK exposures and the SDK config."""

from __future__ import annotations

from pydantic import BaseModel, Field

from api.json_types import JsonObject
from api.schemas_common import Key, RequestModel, Timestamp, UnitId


class AssignRequest(RequestModel):
    """Which variants does this unit get? ``experiments`` absent = every running, shipped or rolled-back
    experiment it is eligible for."""


    unit_id: UnitId
    attributes: JsonObject = Field(default_factory=dict)
    experiments: list[Key] | None = Field(None, max_length=1000)


class AssignedVariant(BaseModel):
    """The variant a unit gets and its payload."""

    variant: str
    payload: JsonObject


class AssignResponse(BaseModel):
    """Assignments by experiment key (experiments the unit is not in are absent)."""

    assignments: dict[str, AssignedVariant]
    not_served: list[str] | None = Field(
        None, description="requested keys of no running, shipped or rolled-back experiment (unknown, or a draft, "
                          "paused or stopped one); absent when every requested key is served")


class ExposureIn(RequestModel):
    """An exposure an SDK logged after assigning locally."""


    experiment: Key
    unit_id: UnitId
    variant: Key
    timestamp: Timestamp
    attributes: JsonObject = Field(default_factory=dict)


class ExposuresIn(RequestModel):
    """A batch of SDK exposures."""


    exposures: list[ExposureIn] = Field(min_length=1, max_length=10_000)


class ExposuresOut(BaseModel):
    """How the batch was taken: stored as new, already known, disagreeing with the server, or unknown."""

    accepted: int
    duplicates: int
    mismatches: int
    unknown: int
