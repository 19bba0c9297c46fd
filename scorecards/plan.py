"""The analysis plan frozen when an experiment starts: a typed, frozen :class:`Plan` and its fingerprint.

The stored form is a JSON document (``experiments.plan``, serialisation ``v1``)::

    {"hypothesis": {...}, "type": "ab", "allocation": {...}, "salt": "...",
     "variants": [{"key", "control", "shadow"}],
     "metrics": {"primary": [definition], "secondary": [definition], "guardrails": [definition + "margin"]},
     "design": {"alpha", "power", "mde", "sequential", "cuped", "cuped_lookback_days"},  # + "looks", "spending" (gst)
     "decision_rule": "titrate-decision-v1"}          # + "analysis": {"source": key} only when one is named

and the fingerprint is the SHA-256 of its canonical JSON (sorted keys, no whitespace, UTF-8). A stored fingerprint is
verified against the stored document as it is (:func:`plan_fingerprint`), so plans written by older code — with
fewer design keys, say — stay valid; :meth:`Plan.from_document` fills what they lack from the defaults below, the
one place where the analysis' defaults live. :meth:`Plan.to_document` writes serialisation v1: for a document
written by the current code, ``Plan.from_document(d).to_document() == d`` (numbers are kept as given, never
coerced, so the canonical JSON — and the fingerprint — is byte-identical).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

from scorecards.aggregates import EventAggregate, MetricSpec
from scorecards.kinds import (
    Aggregation,
    AllocationStrategy,
    CatalogMetricKind,
    Direction,
    ExperimentType,
    HypothesisDirection,
    MetricKind,
    MetricRole,
    RampMode,
)
from scorecards.quantile import QuantileSpec

#: Bumped whenever the decision rule in ``scorecards`` changes meaning, so old fingerprints stay honest.
DECISION_RULE = "titrate-decision-v1"
DEFAULT_ALPHA = 0.05
DEFAULT_POWER = 0.8
DEFAULT_MDE = 0.05
DEFAULT_CUPED_LOOKBACK_DAYS = 14
DEFAULT_DIRECTION: Direction = "higher_is_better"
DEFAULT_HYPOTHESIS_DIRECTION: HypothesisDirection = "increase"
DEFAULT_PROB_BEST_TO_SHIP = 0.95
#: Plan document key of each metric role (the REST ``metrics`` object spells guardrails in the plural).
ROLE_KEYS: tuple[tuple[str, MetricRole], ...] = (("primary", "primary"), ("secondary", "secondary"),
                                                ("guardrails", "guardrail"))


def plan_fingerprint(document: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the plan document's canonical JSON: sorted keys, no whitespace, non-ASCII kept (UTF-8)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def event_aggregate(d: Mapping[str, Any] | None) -> EventAggregate | None:
    """One side of a ratio metric from its document ``{"event", "aggregation"}`` (None stays None)."""
    if d is None:
        return None
    return EventAggregate(d["event"], cast(Aggregation, d.get("aggregation") or "sum"))


def _aggregate_document(a: EventAggregate | None) -> dict[str, Any] | None:
    return None if a is None else {"event": a.event, "aggregation": a.aggregation}


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    """The parts of a catalog metric that change what is measured (the REST metric fields)."""

    key: str
    kind: CatalogMetricKind
    direction: Direction = DEFAULT_DIRECTION
    event: str | None = None
    aggregation: Aggregation | None = None
    numerator: EventAggregate | None = None
    denominator: EventAggregate | None = None
    winsorize: float | None = None
    window_hours: float | None = None
    #: kind "quantile" only: q of the q-quantile of ``event``'s per-event values (per-unit aggregates when
    #: ``aggregation`` is set: REST ``"over": "units"``)
    quantile: float | None = None

    @classmethod
    def from_document(cls, d: Mapping[str, Any]) -> MetricDefinition:
        """From a plan/catalog definition; a missing or null ``direction`` is ``higher_is_better``."""
        return cls(key=d["key"], kind=d["kind"], direction=d.get("direction") or DEFAULT_DIRECTION,
                   event=d.get("event"), aggregation=d.get("aggregation"),
                   numerator=event_aggregate(d.get("numerator")), denominator=event_aggregate(d.get("denominator")),
                   winsorize=d.get("winsorize"), window_hours=d.get("window_hours"), quantile=d.get("quantile"))

    def to_document(self) -> dict[str, Any]:
        """The nine fields of the plan document (nulls included), plus ``quantile`` for a quantile metric only (so
        the documents — and fingerprints — of plans without one are as before)."""
        out = {"key": self.key, "kind": self.kind, "event": self.event, "aggregation": self.aggregation,
               "numerator": _aggregate_document(self.numerator),
               "denominator": _aggregate_document(self.denominator), "direction": self.direction,
               "winsorize": self.winsorize, "window_hours": self.window_hours}
        if self.kind == "quantile":
            out["quantile"] = self.quantile
        return out

    @property
    def sum_kind(self) -> MetricKind:
        """The kind of a metric computed from per-unit sums (every kind but "quantile", which raises)."""
        if self.kind == "quantile":
            raise ValueError(f"metric {self.key!r} is a quantile metric (no per-unit sums)")
        return self.kind

    @property
    def is_quantile(self) -> bool:
        """Whether this is a quantile metric (computed from a histogram of events, not from per-unit sums)."""
        return self.kind == "quantile"

    def quantile_spec(self) -> QuantileSpec:
        """What the quantile SQL needs (:func:`scorecards.quantile.quantile_query`); quantile metrics only."""
        if self.kind != "quantile" or self.event is None or self.quantile is None:
            raise ValueError(f"metric {self.key!r} is not a quantile metric with an event and a quantile")
        # why aggregation: a quantile metric with one (REST "over": "units") is over per-unit aggregates
        return QuantileSpec(self.key, self.event, float(self.quantile), self.window_hours, self.aggregation)

    def spec(self, cuped_lookback_hours: float | None = None) -> MetricSpec:
        """What the SQL needs; ``cuped_lookback_hours`` also aggregates the pre-exposure covariate (not ratios).
        Not for quantile metrics (:meth:`quantile_spec`)."""
        if self.kind == "quantile":
            raise ValueError(f"metric {self.key!r} is a quantile metric: use quantile_spec()")
        spec = MetricSpec.from_definition(self.to_document())
        if cuped_lookback_hours is not None and spec.kind != "ratio":
            spec = replace(spec, cuped_lookback_hours=cuped_lookback_hours)
        return spec


@dataclass(frozen=True, slots=True)
class PlannedMetric:
    """A metric in its role; ``margin``: the relative non-inferiority margin (guardrails only)."""

    role: MetricRole
    definition: MetricDefinition
    margin: float | None = None

    @property
    def key(self) -> str:
        """The metric key."""
        return self.definition.key


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """"If we [change], then [metric] will [direction] because [rationale]"."""

    change: str
    metric: str
    direction: HypothesisDirection
    rationale: str


@dataclass(frozen=True, slots=True)
class PlanDesign:
    """The statistical design (defaults for keys an older document lacks: alpha 0.05, power 0.8, no MDE, fixed
    horizon, no CUPED, a 14-day CUPED lookback)."""

    alpha: float = DEFAULT_ALPHA
    power: float = DEFAULT_POWER
    mde: float | None = DEFAULT_MDE
    #: False (fixed horizon), True or "msprt" (always-valid mSPRT), "gst" (group-sequential)
    sequential: bool | str = False
    cuped: bool = False
    cuped_lookback_days: float = DEFAULT_CUPED_LOOKBACK_DAYS
    #: "gst" only: the planned number of looks, or their ISO dates
    looks: int | tuple[str, ...] | None = None
    #: "gst" only: "obrien_fleming" | "pocock"
    spending: str | None = None

    @classmethod
    def from_document(cls, d: Mapping[str, Any] | None) -> PlanDesign:
        """From the plan's ``design`` (absent or null keys take the defaults; an absent ``mde`` is none)."""
        d = d or {}
        sequential = d.get("sequential")
        looks = d.get("looks")
        return cls(alpha=d.get("alpha") or DEFAULT_ALPHA, power=d.get("power") or DEFAULT_POWER, mde=d.get("mde"),
                   sequential=sequential if isinstance(sequential, str) else bool(sequential),
                   cuped=bool(d.get("cuped")),
                   cuped_lookback_days=d.get("cuped_lookback_days") or DEFAULT_CUPED_LOOKBACK_DAYS,
                   looks=tuple(looks) if isinstance(looks, list | tuple) else looks, spending=d.get("spending"))

    def to_document(self) -> dict[str, Any]:
        """The six keys, plus ``looks`` and ``spending`` when set (so fixed and mSPRT plans are stored as before)."""
        out: dict[str, Any] = {"alpha": self.alpha, "power": self.power, "mde": self.mde, "sequential": self.sequential,
                               "cuped": self.cuped, "cuped_lookback_days": self.cuped_lookback_days}
        if self.looks is not None:
            out["looks"] = list(self.looks) if isinstance(self.looks, tuple) else self.looks
        if self.spending is not None:
            out["spending"] = self.spending
        return out

    @property
    def sequential_method(self) -> str | None:
        """None (fixed horizon), "msprt" (``sequential`` true or "msprt") or "gst"."""
        if self.sequential == "gst":
            return "gst"
        return "msprt" if self.sequential else None

    @property
    def looks_planned(self) -> int:
        """K, the planned number of group-sequential looks (1 when none are set)."""
        if isinstance(self.looks, tuple):
            return len(self.looks)
        return int(self.looks) if self.looks else 1

    @property
    def cuped_applied(self) -> bool:
        """CUPED adjusts fixed-horizon comparisons only (no always-valid or group-sequential CUPED here yet)."""
        return self.cuped and not self.sequential

    @property
    def cuped_lookback_hours(self) -> float | None:
        """The covariate's lookback in hours when CUPED applies, else None."""
        return float(self.cuped_lookback_days) * 24.0 if self.cuped_applied else None


@dataclass(frozen=True, slots=True)
class RampStepPlan:
    """One ramp step: the non-control share and the gates before the next one."""

    fraction: float
    min_units: int = 0
    min_hours: float = 0
    min_power: float | None = None


@dataclass(frozen=True, slots=True)
class ContextPlan:
    """Contextual Thompson sampling: one posterior per declared value of one exposure attribute."""

    attribute: str
    values: tuple[str, ...]


# the allocation document's keys written only when set (the API stores it with ``exclude_none``)
_OPTIONAL_ALLOCATION = ("steps", "floor", "update_every_minutes", "update_every_events", "context")


@dataclass(frozen=True, slots=True)
class AllocationPlan:
    """How traffic is split (REST ``allocation``): fixed, a ramp schedule, or a (contextual) Thompson bandit."""

    strategy: AllocationStrategy = "fixed"
    steps: tuple[RampStepPlan, ...] | None = None
    mode: RampMode = "auto"
    floor: float | None = None
    top_two: bool = False
    update_every_minutes: float | None = None
    update_every_events: int | None = None
    prob_best_to_ship: float = DEFAULT_PROB_BEST_TO_SHIP
    context: ContextPlan | None = None

    @classmethod
    def from_document(cls, d: Mapping[str, Any] | None) -> AllocationPlan:
        """From the plan's ``allocation`` (absent keys take the defaults)."""
        d = d or {}
        steps = d.get("steps")
        context = d.get("context")
        return cls(strategy=d.get("strategy") or "fixed",
                   steps=None if steps is None else tuple(RampStepPlan(**s) for s in steps),
                   mode=d.get("mode") or "auto", floor=d.get("floor"), top_two=bool(d.get("top_two")),
                   update_every_minutes=d.get("update_every_minutes"), update_every_events=d.get("update_every_events"),
                   prob_best_to_ship=d.get("prob_best_to_ship") or DEFAULT_PROB_BEST_TO_SHIP,
                   context=None if context is None else ContextPlan(context["attribute"], tuple(context["values"])))

    def to_document(self) -> dict[str, Any]:
        """The REST ``allocation`` object; unset optional keys are left out (as the API stores it)."""
        out: dict[str, Any] = {
            "strategy": self.strategy, "mode": self.mode, "top_two": self.top_two,
            "prob_best_to_ship": self.prob_best_to_ship, "floor": self.floor,
            "update_every_minutes": self.update_every_minutes, "update_every_events": self.update_every_events,
            "steps": None if self.steps is None else [
                {k: v for k, v in (("fraction", s.fraction), ("min_units", s.min_units), ("min_hours", s.min_hours),
                                   ("min_power", s.min_power)) if v is not None} for s in self.steps],
            "context": None if self.context is None else {"attribute": self.context.attribute,
                                                          "values": list(self.context.values)},
        }
        return {k: v for k, v in out.items() if k not in _OPTIONAL_ALLOCATION or v is not None}

    @property
    def context_attribute(self) -> str | None:
        """The contextual bandit's attribute, or None."""
        return None if self.context is None else self.context.attribute


@dataclass(frozen=True, slots=True)
class PlanVariant:
    """A variant as the analysis sees it: shadow variants are served no traffic and never compared."""

    key: str
    control: bool = False
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the analysis depends on, frozen when the experiment started.

    ``metrics`` are in role order (primary, secondary, guardrails); ``analysis_source`` names a registered analysis
    source (DESIGN.md "Analysis sources") or None for the built-in tables; ``fingerprint`` is
    :func:`plan_fingerprint` of the document the plan was read from (or of :meth:`to_document` when built in code).
    """

    type: ExperimentType
    hypothesis: Hypothesis | None
    allocation: AllocationPlan
    salt: str | None
    variants: tuple[PlanVariant, ...]
    metrics: tuple[PlannedMetric, ...]
    design: PlanDesign
    decision_rule: str = DECISION_RULE
    analysis_source: str | None = None
    fingerprint: str = ""

    @classmethod
    def from_document(cls, d: Mapping[str, Any]) -> Plan:
        """Read a stored plan document (any version this module has written); ``fingerprint`` is over ``d``."""
        hypothesis = d.get("hypothesis")
        metrics = d.get("metrics") or {}
        return cls(
            type=d["type"],
            hypothesis=None if hypothesis is None else Hypothesis(
                change=hypothesis.get("change", ""), metric=hypothesis.get("metric", ""),
                direction=hypothesis.get("direction") or DEFAULT_HYPOTHESIS_DIRECTION,
                rationale=hypothesis.get("rationale", "")),
            allocation=AllocationPlan.from_document(d.get("allocation")),
            salt=d.get("salt"),
            variants=tuple(PlanVariant(v["key"], bool(v.get("control")), bool(v.get("shadow")))
                           for v in d["variants"]),
            metrics=tuple(PlannedMetric(role, MetricDefinition.from_document(m),
                                        m.get("margin") if role == "guardrail" else None)
                          for plan_key, role in ROLE_KEYS for m in metrics.get(plan_key) or []),
            design=PlanDesign.from_document(d.get("design")),
            decision_rule=d.get("decision_rule") or DECISION_RULE,
            analysis_source=(d.get("analysis") or {}).get("source"),
            fingerprint=plan_fingerprint(d),
        )

    def to_document(self) -> dict[str, Any]:
        """Serialisation v1 (see the module docstring); ``analysis`` only when a source is named."""
        h = self.hypothesis
        document: dict[str, Any] = {
            "hypothesis": None if h is None else {"change": h.change, "metric": h.metric, "direction": h.direction,
                                                  "rationale": h.rationale},
            "type": self.type, "allocation": self.allocation.to_document(), "salt": self.salt,
            "variants": [{"key": v.key, "control": v.control, "shadow": v.shadow} for v in self.variants],
            "metrics": {plan_key: [{**m.definition.to_document(), **({"margin": m.margin} if role == "guardrail"
                                                                     else {})}
                                   for m in self.metrics if m.role == role] for plan_key, role in ROLE_KEYS},
            "design": self.design.to_document(), "decision_rule": self.decision_rule,
        }
        if self.analysis_source is not None:
            document["analysis"] = {"source": self.analysis_source}
        return document

    def sealed(self) -> Plan:
        """This plan with ``fingerprint`` set from :meth:`to_document` (what starting an experiment stores)."""
        return replace(self, fingerprint=plan_fingerprint(self.to_document()))

    @property
    def hypothesis_direction(self) -> HypothesisDirection:
        """The hypothesised move of the primary metric ("increase" when the plan has no hypothesis)."""
        return DEFAULT_HYPOTHESIS_DIRECTION if self.hypothesis is None else self.hypothesis.direction

    @property
    def served(self) -> tuple[str, ...]:
        """Keys of the variants served traffic (not shadow), control first."""
        return (self.control, *self.treatments)

    @property
    def control(self) -> str:
        """The control variant's key."""
        return next(v.key for v in self.variants if v.control and not v.shadow)

    @property
    def treatments(self) -> tuple[str, ...]:
        """Keys of the served non-control variants, in plan order."""
        return tuple(v.key for v in self.variants if not v.shadow and not v.control)

    @property
    def primary(self) -> PlannedMetric:
        """The primary metric."""
        return next(m for m in self.metrics if m.role == "primary")

    def by_role(self, role: MetricRole) -> tuple[PlannedMetric, ...]:
        """The metrics of one role, in plan order."""
        return tuple(m for m in self.metrics if m.role == role)

    def uses_metric(self, key: str) -> bool:
        """Whether ``key`` is one of the plan's metrics (any role)."""
        return any(m.key == key for m in self.metrics)
