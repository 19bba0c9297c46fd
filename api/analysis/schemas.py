"""Request/response schemas of the analysis routes (DESIGN.md REST contract; field names fixed, extras welcome).

Every float that could not be computed is ``null`` — the JSON never holds NaN or infinity.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas_common import RequestModel
from scorecards.guardrails import GuardrailStatus
from scorecards.kinds import DecisionKind, DecisionRule, MetricRole, PowerKind


class DesignRequest(RequestModel):
    """Inputs of the sample-size calculator (relative MDE; ``sd`` is required for ``mean``)."""

    kind: PowerKind
    baseline: float = Field(allow_inf_nan=False, description="control mean (a rate in (0, 1) for proportions)")
    mde: float = Field(allow_inf_nan=False, description="relative minimum detectable effect, e.g. 0.05 for +5 %")
    alpha: float = Field(0.05, gt=0, lt=1, allow_inf_nan=False)
    power: float = Field(0.8, gt=0, lt=1, allow_inf_nan=False)
    variants: int = Field(2, ge=2, le=20)
    daily_units: float = Field(gt=0, allow_inf_nan=False)
    sd: float | None = Field(None, gt=0, allow_inf_nan=False, description="per-unit standard deviation (mean)")


class DesignOut(BaseModel):
    """Planned size: units per variant, in total, and days at the given daily traffic."""

    n_per_variant: int
    total_units: int
    days: int
    formula: str


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class VariantResultOut(_Open):
    """One treatment variant vs control on one metric."""

    variant: str
    n: int
    mean: float | None
    control_n: int
    control_mean: float | None
    abs_lift: float | None
    abs_ci: list[float | None]
    rel_lift: float | None
    rel_ci: list[float | None] = Field(description="Fieller's interval for mean / control_mean - 1 with the test's "
                                       "variances and quantile: it excludes 0 exactly when p_value < alpha; "
                                       "[null, null] when unbounded (see rel_ci_reason)")
    rel_ci_delta: list[float | None] | None = Field(None, description="the delta-method relative interval")
    rel_ci_reason: str | None = Field(None, description="'ok', or why rel_ci is not an interval: "
                                      "'unbounded_relative_ci' (control mean not distinguishable from 0), "
                                      "'zero_control_mean', ...")
    p_value: float | None
    p_value_adjusted: float | None
    significant: bool
    chance_to_beat: float | None
    expected_loss: float | None
    guardrail: GuardrailStatus | None
    mde: float | None
    power: float | None


class MetricResultOut(_Open):
    """One metric of the plan with its results per treatment variant."""

    metric: str
    role: MetricRole
    kind: str
    direction: str
    variants: list[VariantResultOut]
    pending_units: int


class SrmOut(_Open):
    """Sample ratio mismatch check of exposed units against the allocation history."""

    p_value: float | None
    ok: bool


class ScorecardOut(_Open):
    """The scorecard of an experiment as of a time."""

    experiment: str
    plan_fingerprint: str | None
    status: str
    as_of: datetime
    computed_at: datetime = Field(description="when the numbers were computed: the last refresh of the materialised "
                                              "rows (analysis as of then), or now for a live read (?as_of=)")
    srm: SrmOut
    metrics: list[MetricResultOut]
    planned_n_per_variant: int | None
    current_n: dict[str, int]
    serving: dict[str, Any] | None = Field(
        None, description="for experiments between model variants: latency p50/p95, errors, output drift (PSI) "
                          "and shadow agreement per variant (the same report as GET …/serving)")


class ExperimentOnMetricOut(_Open):
    """One experiment's results on the metric asked for."""

    experiment: str
    status: str
    role: str
    variants: list[VariantResultOut]
    srm: SrmOut
    decision: str


class CrossExperimentOut(_Open):
    """A metric compared across experiments."""

    metric: str
    experiments: list[ExperimentOnMetricOut]


class DecisionOut(_Open):
    """What to do with the experiment now, and why."""

    decision: DecisionKind
    variant: str | None
    reasons: list[str]
    rule: DecisionRule = Field(
        description="the rule that decided — bandit_stopping (P(best) >= threshold), gst (group-sequential look and "
                    "boundary), msprt, fixed_horizon or rollout_guardrails; the reasons come from that rule alone")
    plan_fingerprint: str | None


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by ``None``, recursively."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
