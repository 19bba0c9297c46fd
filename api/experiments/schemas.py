"""Request/response schemas of the experiment registry (DESIGN.md REST contract; field names fixed)."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from api.json_types import JsonObject
from api.schemas_common import Key, RequestModel
from scorecards.kinds import AllocationStrategy as Strategy
from scorecards.kinds import ExperimentType, HypothesisDirection, RampMode
from scorecards.plan import (
    DEFAULT_ALPHA,
    DEFAULT_CUPED_LOOKBACK_DAYS,
    DEFAULT_MDE,
    DEFAULT_POWER,
    DEFAULT_PROB_BEST_TO_SHIP,
)

Status = Literal["draft", "running", "paused", "shipped", "rolled_back", "stopped"]
Operator = Literal["eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte"]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
JsonScalar = Annotated[str, StringConstraints(max_length=1000)] | bool | int | float

MAX_VARIANTS = 20
#: the most planned looks of a group-sequential design
MAX_LOOKS = 50


class Hypothesis(RequestModel):
    """"If we [change], then [metric] will [direction] because [rationale]"."""


    change: ShortText
    metric: Key
    direction: HypothesisDirection
    rationale: ShortText


def render_hypothesis(hypothesis: dict[str, Any]) -> str:
    """The hypothesis as the sentence people read."""
    return (f"If we {hypothesis['change']}, then {hypothesis['metric']} will {hypothesis['direction']} "
            f"because {hypothesis['rationale']}.")


class RampStep(RequestModel):
    """One step of a ramped roll-out: the share of eligible units on the non-control variant(s)."""


    fraction: float = Field(gt=0, le=1, allow_inf_nan=False)
    min_units: int = Field(0, ge=0)
    min_hours: float = Field(0, ge=0, allow_inf_nan=False)
    #: wait until every guardrail's test has this power to detect a harm of its margin (data so far)
    min_power: float | None = Field(None, gt=0, lt=1, allow_inf_nan=False)


ContextValue = Annotated[str, StringConstraints(min_length=1, max_length=200)]
MAX_CONTEXT_VALUES = 50


class ContextSpec(RequestModel):
    """Contextual Thompson sampling: a posterior and weights per declared value of one categorical attribute
    (e.g. ``platform``); units whose value is missing or not declared get the pooled weights."""


    attribute: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    values: list[ContextValue] = Field(min_length=1, max_length=MAX_CONTEXT_VALUES)

    @model_validator(mode="after")
    def _check_unique(self) -> Self:
        if len(set(self.values)) != len(self.values):
            raise ValueError("context values must be unique")
        return self


class AllocationSpec(RequestModel):
    """How traffic is split: fixed weights, a ramp schedule or a Thompson-sampling bandit (optionally contextual)."""


    strategy: Strategy = "fixed"
    steps: list[RampStep] | None = Field(None, min_length=1, max_length=20)
    mode: RampMode = "auto"
    floor: float | None = Field(None, ge=0, lt=1, allow_inf_nan=False)
    top_two: bool = False
    update_every_minutes: float | None = Field(None, gt=0, allow_inf_nan=False)
    update_every_events: int | None = Field(None, gt=0)
    prob_best_to_ship: float = Field(DEFAULT_PROB_BEST_TO_SHIP, gt=0.5, lt=1)
    context: ContextSpec | None = None

    @model_validator(mode="after")
    def _check_strategy(self) -> Self:
        if self.strategy == "ramp":
            if not self.steps:
                raise ValueError("a ramp needs 'steps'")
            fractions = [s.fraction for s in self.steps]
            if any(b <= a for a, b in zip(fractions, fractions[1:], strict=False)):
                raise ValueError("ramp step fractions must increase")
        elif self.steps is not None:
            raise ValueError("'steps' only apply to strategy 'ramp'")
        if self.strategy != "thompson" and (self.floor is not None or self.top_two):
            raise ValueError("'floor' and 'top_two' only apply to strategy 'thompson'")
        if self.strategy != "thompson" and self.context is not None:
            raise ValueError("'context' only applies to strategy 'thompson'")
        return self


class VariantIn(RequestModel):
    """A variant: its key, weight, optional model variant and the payload clients receive."""


    key: Key
    control: bool = False
    weight: float = Field(ge=0, le=1, allow_inf_nan=False)
    model: Key | None = None
    payload: JsonObject = Field(default_factory=dict)
    shadow: bool = False
    description: str | None = Field(None, max_length=2000)


class Guardrail(RequestModel):
    """A guardrail metric with its relative non-inferiority margin (0.05 = 5 % worse at most)."""


    metric: Key
    margin: float = Field(gt=0, le=1, allow_inf_nan=False)


class MetricsByRole(RequestModel):
    """Exactly one primary metric, any secondary metrics, and guardrails."""


    primary: Key
    secondary: list[Key] = Field(default_factory=list, max_length=50)
    guardrails: list[Guardrail] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _check_unique(self) -> Self:
        if self.primary in self.secondary:
            raise ValueError(f"'{self.primary}' is the primary metric and cannot also be secondary")
        if len(set(self.secondary)) != len(self.secondary):
            raise ValueError("secondary metrics repeat")
        guardrail_keys = [g.metric for g in self.guardrails]
        if len(set(guardrail_keys)) != len(guardrail_keys):
            raise ValueError("guardrail metrics repeat")
        return self


class Design(RequestModel):
    """The statistical design: alpha, power and the relative minimum detectable effect."""


    alpha: float = Field(DEFAULT_ALPHA, gt=0, le=0.5, allow_inf_nan=False)
    power: float = Field(DEFAULT_POWER, ge=0.5, lt=1, allow_inf_nan=False)
    mde: float = Field(DEFAULT_MDE, gt=0, le=10, allow_inf_nan=False, description="relative minimum detectable effect")
    sequential: bool | Literal["msprt", "gst"] = Field(
        False, description="false: fixed horizon; true or 'msprt': always-valid mSPRT (look at any time); 'gst': "
                           "group-sequential (Lan-DeMets alpha-spending over planned looks)")
    looks: StrictInt | list[date] | None = Field(
        None, description="'gst' only: the planned number of looks (equally spaced in information), or their dates")
    spending: Literal["obrien_fleming", "pocock"] | None = Field(
        None, description="'gst' only: the alpha-spending function (default obrien_fleming)")
    cuped: bool = False
    cuped_lookback_days: float = Field(DEFAULT_CUPED_LOOKBACK_DAYS, gt=0, le=365, allow_inf_nan=False)

    @field_validator("looks")
    @classmethod
    def _check_looks(cls, looks: int | list[date] | None, info: ValidationInfo) -> int | list[date] | None:
        if looks is None:
            return None
        if info.data.get("sequential") != "gst":
            raise ValueError("looks applies only to sequential 'gst'")
        if isinstance(looks, int):
            if not 1 <= looks <= MAX_LOOKS:
                raise ValueError(f"looks must be between 1 and {MAX_LOOKS}")
        elif not 1 <= len(looks) <= MAX_LOOKS or any(b <= a for a, b in zip(looks, looks[1:], strict=False)):
            raise ValueError(f"looks dates must be strictly increasing, 1 to {MAX_LOOKS} of them")
        return looks

    @field_validator("spending")
    @classmethod
    def _check_spending(cls, spending: str | None, info: ValidationInfo) -> str | None:
        if spending is not None and info.data.get("sequential") != "gst":
            raise ValueError("spending applies only to sequential 'gst'")
        return spending

    @model_validator(mode="after")
    def _gst_needs_looks(self) -> Self:
        if self.sequential == "gst":
            if self.looks is None:
                raise ValueError("looks: sequential 'gst' needs looks (a planned count or a list of dates)")
            if self.spending is None:
                self.spending = "obrien_fleming"
        return self

    @model_serializer(mode="wrap")
    def _without_unset_gst_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # why: a design without group-sequential looks is stored exactly as before (no null keys added)
        out: dict[str, Any] = handler(self)
        return {k: v for k, v in out.items() if k not in ("looks", "spending") or v is not None}


class Condition(RequestModel):
    """A targeting condition on a unit attribute (spec/bucketing.md §3.2)."""


    attribute: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    op: Operator
    values: list[JsonScalar] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _check_values(self) -> Self:
        if self.op in ("gt", "gte", "lt", "lte"):
            value = self.values[0]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"'{self.op}' compares numbers: values[0] must be a finite number")
        for value in self.values:
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("values must be finite")
        return self


def _check_variants(variants: list[VariantIn] | None) -> list[VariantIn] | None:
    """The rules across the variants (unique keys, one control, shadows, weights summing to 1), as a validator of
    the ``variants`` field: a 422's ``loc`` is ``["body", "variants"]`` and its ``msg`` the rule alone (a custom
    error, so no "Value error, " prefix)."""
    if variants is None:
        return None
    keys = [v.key for v in variants]
    if len(set(keys)) != len(keys):
        raise _variants_error("variant keys must be unique")
    controls = [v for v in variants if v.control]
    if len(controls) != 1:
        raise _variants_error(f"exactly one variant must be the control (found {len(controls)})")
    for v in variants:
        if v.shadow and (v.control or v.weight != 0 or v.model is None):
            raise _variants_error(f"shadow variant '{v.key}' needs weight 0, a model, and cannot be the control")
    total = math.fsum(v.weight for v in variants)
    if abs(total - 1.0) > 1e-9:
        raise _variants_error(f"variant weights must sum to 1 (they sum to {total:.10g})")
    return variants


def _variants_error(message: str) -> PydanticCustomError:
    # why a custom error: a ValueError's msg reads "Value error, <message>"; the braces are escaped because the
    # message is a template
    return PydanticCustomError("value_error", message.replace("{", "{{").replace("}", "}}"))


class AnalysisSpec(RequestModel):
    """Where the experiment's exposures and events are analysed: a registered analysis source (POST /v1/sources);
    without it titrate's own tables."""

    source: Key


class ExperimentCreate(RequestModel):
    """Register a hypothesis-driven experiment (starts as a draft)."""


    key: Key
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    owner: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: str | None = Field(None, max_length=5000)
    hypothesis: Hypothesis
    type: ExperimentType = "ab"
    allocation: AllocationSpec = Field(default_factory=AllocationSpec)
    variants: list[VariantIn] = Field(min_length=2, max_length=MAX_VARIANTS)
    metrics: MetricsByRole
    design: Design = Field(default_factory=Design)
    targeting: list[Condition] = Field(default_factory=list, max_length=50)
    traffic: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    layer: Key | None = None
    salt: Key | None = None
    analysis: AnalysisSpec | None = None

    _variants = field_validator("variants")(_check_variants)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.hypothesis.metric != self.metrics.primary:
            raise ValueError(f"hypothesis.metric '{self.hypothesis.metric}' must be the primary metric "
                             f"'{self.metrics.primary}'")
        served = [v for v in self.variants if not v.shadow]
        if self.allocation.strategy == "thompson" and self.allocation.floor is not None:
            if self.allocation.floor * len(served) > 1:
                raise ValueError("allocation.floor × number of variants must not exceed 1")
        return self


class ExperimentUpdate(RequestModel):
    """Edit an experiment. Drafts can change anything; running experiments only name, owner, description,
    targeting and traffic (the analysis plan, variants and salt are frozen once started)."""


    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    owner: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    description: str | None = Field(None, max_length=5000)
    hypothesis: Hypothesis | None = None
    type: ExperimentType | None = None
    allocation: AllocationSpec | None = None
    variants: list[VariantIn] | None = Field(None, min_length=2, max_length=MAX_VARIANTS)
    metrics: MetricsByRole | None = None
    design: Design | None = None
    targeting: list[Condition] | None = Field(None, max_length=50)
    traffic: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    layer: Key | None = None
    salt: Key | None = None
    analysis: AnalysisSpec | None = None

    _variants = field_validator("variants")(_check_variants)


class ShipRequest(RequestModel):
    """Ship a variant to everyone eligible; ``override_reason`` is required to override a refusal."""


    variant: Key
    override_reason: str | None = Field(None, min_length=1, max_length=5000)


class RollbackRequest(RequestModel):
    """Send everyone back to control, with a reason for the audit log."""


    reason: Annotated[str, StringConstraints(min_length=1, max_length=5000)]


class VariantOut(BaseModel):
    """A variant as stored, with the weight of the allocation in force."""

    key: str
    control: bool
    weight: float
    current_weight: float
    model: str | None
    payload: JsonObject
    shadow: bool
    description: str | None = None


class AllocationOut(BaseModel):
    """One version of an experiment's allocation."""

    version: int
    weights: dict[str, float]
    context_weights: dict[str, dict[str, float]] | None = None
    reason: str
    seed: int | None
    details: dict[str, Any]
    created_at: datetime


class ExperimentOut(BaseModel):
    """An experiment with its status, frozen plan fingerprint and the allocation in force."""

    key: str
    name: str
    owner: str
    description: str | None
    hypothesis: Hypothesis
    hypothesis_text: str
    type: ExperimentType
    status: Status
    allocation: AllocationSpec
    variants: list[VariantOut]
    metrics: MetricsByRole
    design: Design
    targeting: list[Condition]
    traffic: float
    layer: str | None
    layer_range: tuple[int, int] | None
    salt: str
    analysis: AnalysisSpec | None = Field(None, description="the analysis source the scorecard reads (None: titrate's "
                                                             "own tables)")
    plan_fingerprint: str | None
    shipped_variant: str | None
    allocation_version: int | None
    exposure_mismatches: int
    exposures_dropped: int = Field(0, description="exposures acknowledged but dropped: the in-memory queue was full")
    exposures_dead_lettered: int = Field(
        0, description="exposures the database refused, kept in dead_letters (GET /v1/dead-letters)")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


class AuditOut(BaseModel):
    """One audit row."""

    at: datetime
    actor: str
    action: str
    before: JsonObject | None
    after: JsonObject | None
    reason: str | None
