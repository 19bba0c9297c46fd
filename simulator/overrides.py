"""Command-line style changes to a scenario (``titrate simulate --days … --lift …``), re-validated."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from simulator.scenario import Latency, Scenario


class Overrides(BaseModel):
    """Changes to apply to a scenario; ``None`` leaves the scenario's value.

    ``lift``: the relative effect of every treatment (one for an A/B; all arms alike for a multi-arm scenario).
    ``harm_segment``: ``(attribute, value)`` where every treatment has ``harm_effect`` instead (it takes
    precedence over the scenario's own segment effects). ``slower_ms``: every treatment's mean latency is
    control's plus this (a scenario without latency gets ``Latency()`` for control first).
    ``experiment``: drive (and register) the experiment under this key instead.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: int | None = None
    units_per_day: float | None = None
    lift: float | None = None
    harm_segment: tuple[str, str] | None = None
    harm_effect: float = Field(default=-0.5)
    slower_ms: float | None = None
    seed: int | None = None
    allocation_step: bool | None = None
    experiment: str | None = None


def apply_overrides(scenario: Scenario, overrides: Overrides) -> Scenario:
    """The scenario with ``overrides`` applied, validated again (raises ``pydantic.ValidationError``)."""
    data: dict[str, Any] = scenario.model_dump()
    for name in ("days", "seed", "allocation_step"):
        if (value := getattr(overrides, name)) is not None:
            data[name] = value
    if overrides.units_per_day is not None:
        data["arrivals"]["units_per_day"] = overrides.units_per_day
    control = data["variants"][scenario.control]
    treatments = [data["variants"][key] for key in scenario.treatments]
    for truth in treatments:
        if overrides.lift is not None:
            truth["effect"] = overrides.lift
        if overrides.harm_segment is not None:
            attribute, value = overrides.harm_segment
            kept = [s for s in truth["segments"] if (s["attribute"], s["value"]) != (attribute, value)]
            truth["segments"] = [{"attribute": attribute, "value": value, "effect": overrides.harm_effect}, *kept]
    if overrides.slower_ms is not None:
        control["latency"] = control["latency"] or Latency().model_dump()
        for truth in treatments:
            truth["latency"] = {**control["latency"], "mean_ms": control["latency"]["mean_ms"] + overrides.slower_ms}
    if overrides.experiment is not None:
        data["experiment"] = overrides.experiment
        if data["registration"] is not None:
            data["registration"]["experiment"] = {**data["registration"]["experiment"], "key": overrides.experiment}
    return Scenario.model_validate(data)
