"""Rows written in bulk (driver ``executemany``/``COPY`` or Core ``insert``) rather than as ORM objects: their
shapes as ``TypedDict``s, one key per column they fill."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict

from api.json_types import JsonObject


class EventRow(TypedDict):
    """One row of ``events`` (``POST /v1/events`` and the serving recorder's ``serving.*`` events)."""

    event_id: str
    unit_id: str
    name: str
    value: float
    timestamp: datetime
    attributes: JsonObject
    received_at: datetime
    #: ``attributes`` already encoded as JSON text (the events service encodes once to check the size)
    attributes_json: NotRequired[str]


class PredictionRow(TypedDict):
    """One row of the prediction log (``predictions``)."""

    request_id: str
    experiment_id: int
    variant: str
    unit_id: str
    model: str
    latency_ms: float
    n_inputs: int
    error: str | None
    #: the monitoring summary of the outputs (``api.serving.report.summarise``)
    summary: Any
    shadow: bool
    agreement: float | None
    created_at: datetime
