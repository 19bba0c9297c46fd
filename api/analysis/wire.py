"""The wire shapes of the scorecard REST JSON (DESIGN.md ``GET /scorecard``, ``GET /scorecards``, ``GET /decision``).

``TypedDict``s, not models: they type the plain dicts ``api.analysis.serialise`` builds (zero runtime cost, the JSON
is unchanged); the pydantic response models in ``api.analysis.schemas`` stay the OpenAPI contract. Floats may be
NaN/inf until ``api.analysis.schemas.finite`` turns them into null.
"""

from __future__ import annotations

from datetime import datetime
from typing import NotRequired, TypedDict

from api.serving.wire import ServingReport
from scorecards.kinds import DecisionKind, DecisionRule


class ComparisonJson(TypedDict):
    """One treatment against control: the fields shared by a scorecard variant and a segment cell."""

    variant: str
    n: int
    mean: float | None
    control_n: int
    control_mean: float | None
    abs_lift: float | None
    abs_ci: list[float | None]
    rel_lift: float | None
    rel_ci: list[float | None]
    p_value: float | None
    p_value_adjusted: float | None
    significant: bool
    chance_to_beat: float | None
    #: the delta-method relative interval (rel_ci is Fieller's); why rel_ci is null ("ok" when it is an interval)
    rel_ci_delta: list[float | None]
    rel_ci_reason: str


class GuardrailDetailJson(TypedDict):
    """The non-inferiority test behind a guardrail verdict."""

    margin: float
    non_inferiority_bound: float | None
    non_inferiority_p_value: float | None
    regression_p_value: float | None
    sequential: bool
    rel_std_error: float | None
    reason: str
    description: str


class CupedJson(TypedDict):
    """The CUPED adjustment applied to one variant's comparison."""

    theta: float
    correlation: float
    variance_reduction: float
    reason: str
    lookback_hours: float | None
    unadjusted_mean: float | None
    unadjusted_control_mean: float | None


class ArmJson(TypedDict):
    """One treatment's stratified (or naive pooled) estimates; every field null when not estimable."""

    method: str | None
    mean: float | None
    mean_ci: list[float | None]
    control_mean: float | None
    abs_lift: float | None
    abs_ci: list[float | None]
    rel_lift: float | None
    rel_ci: list[float | None]
    p_value: float | None


class StratifiedJson(ArmJson):
    """Adaptive allocation: the estimates stratified by allocation version, beside the naive pooled ones."""

    versions: list[int]
    n_by_version: list[int]
    control_n_by_version: list[int]
    naive: ArmJson
    #: contextual bandits: ``{"version": v, <context attribute>: value}`` per stratum
    strata: NotRequired[list[dict[str, int | str | None]]]
    #: contextual bandits: the effect within each context value, beside the pooled one
    context: NotRequired[StratifiedContextJson]


class ContextEffectJson(ArmJson):
    """A treatment's adaptively weighted effect within one context value, with its units and control's."""

    n: int
    control_n: int


class StratifiedContextJson(TypedDict):
    """The effects per value of the contextual bandit's attribute (as the allocation's ``context``: ``attribute``,
    ``values`` by value); ``others`` is the units outside the declared values (pooled weights), null if none."""

    attribute: str
    values: dict[str, ContextEffectJson]
    others: ContextEffectJson | None


class VariantJson(ComparisonJson):
    """One treatment variant on one metric of the scorecard."""

    expected_loss: float | None
    test: str
    std_error: float | None
    reason: str
    guardrail: str | None
    guardrail_detail: GuardrailDetailJson | None
    mde: float | None
    power: float | None
    pending_units: int
    cuped: CupedJson | None
    stratified: NotRequired[StratifiedJson]


class MetricJson(TypedDict):
    """One metric of the frozen plan with its results per treatment variant."""

    metric: str
    role: str
    kind: str
    direction: str
    margin: float | None
    window_hours: float | None
    variants: list[VariantJson]
    pending_units: int


class SrmJson(TypedDict):
    """Sample ratio mismatch of the exposed units against the allocation history."""

    p_value: float | None
    ok: bool
    test: str
    threshold: float
    observed: dict[str, int]
    expected: dict[str, float] | None
    sequential_p_value: float | None
    reason: str
    other_variants: NotRequired[dict[str, int]]


class SegmentCellJson(ComparisonJson):
    """One treatment in one segment, flagged when it moves opposite to the overall effect."""

    opposite: bool


class SegmentMetricJson(TypedDict):
    """One metric's cells in one segment."""

    metric: str
    role: str
    variants: list[SegmentCellJson]


class SegmentRowJson(TypedDict):
    """One value of the segment attribute."""

    segment: str
    value: str | None
    current_n: dict[str, int]
    metrics: list[SegmentMetricJson]


class OppositeSegmentJson(TypedDict):
    """A segment whose lift is significantly opposite to the overall lift."""

    value: str | None
    metric: str
    variant: str
    abs_lift: float | None
    overall_abs_lift: float | None
    p_value_adjusted: float | None


class SrmDrillDownJson(TypedDict):
    """SRM within one value of the segment attribute."""

    value: str | None
    observed: dict[str, int]
    p_value: float | None
    p_value_adjusted: float | None
    mismatch: bool


class SegmentsJson(TypedDict):
    """The breakdown by one exposure attribute (empty without ``?segment=``)."""

    segments: list[SegmentRowJson]
    segment_attribute: str | None
    opposite_segments: NotRequired[list[OppositeSegmentJson]]
    srm_drill_down: NotRequired[list[SrmDrillDownJson]]


class AdaptiveNoteJson(TypedDict, total=False):
    """Present only for adaptively allocated experiments."""

    adaptive_allocation: str


class ExcludedRowsJson(TypedDict):
    """Rows the scorecard left out (unparseable or out-of-range)."""

    exposures: int
    events: int


class GroupSequentialJson(TypedDict):
    """Where a group-sequential design (design.sequential "gst") stands at this read."""

    look: int  # 0 before the first planned look
    looks_planned: int
    information_fraction: float
    fractions: list[float]
    boundary: float  # |z| at or above it is significant at this look
    alpha_spent: float
    final: bool
    spending: str


class GroupSequentialNoteJson(TypedDict, total=False):
    """The ``group_sequential`` key, present only for group-sequential designs."""

    group_sequential: GroupSequentialJson


class ScorecardJson(TypedDict):
    """The REST scorecard (``GET /v1/experiments/{key}/scorecard``)."""

    experiment: str
    plan_fingerprint: str | None
    status: str
    type: str
    as_of: datetime
    #: when the numbers were computed: the last refresh of the materialised rows, or now for a live read
    computed_at: datetime
    alpha: float
    sequential: bool | str
    cuped_applied: bool
    control: str
    srm: SrmJson
    metrics: list[MetricJson]
    planned_n_per_variant: int | None
    planned_n_reached: bool | None
    current_n: dict[str, int]
    segments: list[SegmentRowJson]
    segment_attribute: str | None
    opposite_segments: NotRequired[list[OppositeSegmentJson]]
    srm_drill_down: NotRequired[list[SrmDrillDownJson]]
    adaptive_allocation: NotRequired[str]
    group_sequential: NotRequired[GroupSequentialJson]
    excluded_rows: ExcludedRowsJson
    multiple_testing: str
    #: added by the endpoint for experiments between model variants: the serving report (``api.serving.report``)
    serving: NotRequired[ServingReport]


class CrossSrmJson(TypedDict):
    """The SRM flag of one experiment in the cross-experiment view."""

    p_value: float | None
    ok: bool


class ExperimentOnMetricJson(TypedDict):
    """One experiment's results on the metric asked for (``GET /v1/scorecards``)."""

    experiment: str
    status: str
    type: str
    role: str
    kind: str
    plan_fingerprint: str | None
    started_at: datetime | None
    ended_at: datetime | None
    shipped_variant: str | None
    control: str
    variants: list[VariantJson]
    pending_units: int
    srm: CrossSrmJson
    decision: DecisionKind
    decision_variant: str | None


class CrossExperimentJson(TypedDict):
    """A metric compared across experiments."""

    metric: str
    experiments: list[ExperimentOnMetricJson]


class DecisionJson(TypedDict):
    """The REST decision (``GET /v1/experiments/{key}/decision``)."""

    decision: DecisionKind
    variant: str | None
    reasons: list[str]
    #: the rule that decided (its reasons come from that rule alone)
    rule: DecisionRule
    plan_fingerprint: str | None
