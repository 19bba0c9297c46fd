"""What a simulation run did, day by day, next to the scenario's true effects (frozen, JSON-serialisable)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class AllocationStep(_Frozen):
    """The reply of ``POST /allocations/recompute`` that matters to a simulation."""

    action: str
    version: int
    weights: dict[str, float]
    context_weights: dict[str, dict[str, float]] | None = None
    reasons: list[str] = []
    decision: dict[str, Any] | None = None


class DayResult(_Frozen):
    """One simulated day: the units that arrived, how many each variant got (``not_in_experiment``: targeted
    or gated out), conversions per variant, the allocation step run after it and the status it left."""

    day: int
    units: int
    assigned: dict[str, int]
    not_in_experiment: int
    conversions: dict[str, int]
    step: AllocationStep | None
    status: str


class TrueEffects(_Frozen):
    """The scenario's planted effects (see ``simulator.traffic``): treatment → relative lift of the conversion
    rate; attribute → value → treatment → lift within that segment; treatment → relative latency change."""

    rel_lift: dict[str, float]
    segment_rel_lift: dict[str, dict[str, dict[str, float]]]
    latency_rel_change: dict[str, float]


class ObservedLift(_Frozen):
    """One row of the service's scorecard at the end of the run (``rel_ci`` to compare with the truth)."""

    metric: str
    role: str
    variant: str
    n: int | None
    control_n: int | None
    rel_lift: float | None
    rel_ci: list[float | None] | None


class SimulationResult(_Frozen):
    """A finished run: ``days`` simulated (fewer than planned when the experiment left ``running``), the final
    ``status``, the truth, and the scorecard rows (empty when the key may not read scorecards)."""

    scenario: str
    experiment: str
    seed: int
    days_planned: int
    days: tuple[DayResult, ...]
    status: str
    truth: TrueEffects
    observed: tuple[ObservedLift, ...] = ()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def units(self) -> int:
        """Units that arrived over the run."""
        return sum(day.units for day in self.days)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def assigned(self) -> dict[str, int]:
        """Units per variant over the run."""
        total: Counter[str] = Counter()
        for day in self.days:
            total.update(day.assigned)
        return dict(total)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def actions(self) -> list[str]:
        """The allocation step's action after each day (``updated``, ``advanced``, ``rolled_back``, …)."""
        return [day.step.action for day in self.days if day.step is not None]
