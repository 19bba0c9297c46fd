"""How the simulation driver talks to the service (its settings, with their defaults)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DriverOptions(BaseModel):
    """How the driver talks to the service.

    ``register_missing``: create the scenario's ``registration`` when missing (and start a draft).
    ``settle_seconds``: wait after each day's flush so the service's batched exposure writer has written the
    exposures the allocation step and the scorecard read. ``unit_prefix``: unit ids are ``{unit_prefix}-{day}-{i}``
    (default ``{experiment}-{seed}``: a re-run with the same seed re-sends the same units).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    register_missing: bool = True
    settle_seconds: float = Field(default=0.5, ge=0)
    flush_interval: float = Field(default=0.1, gt=0)
    timeout_seconds: float = Field(default=60.0, gt=0)
    unit_prefix: str | None = None
    read_scorecard: bool = True
    quiet: bool = False
