"""What a simulated experiment looks like: who arrives, how many, and what each variant truly does.

A :class:`Scenario` is a frozen pydantic model, loadable from JSON (``Scenario.model_validate_json``). Every
default lives here or in :mod:`simulator.presets`. Validation errors name the field (pydantic's ``loc``, or the
dotted path in the message for rules spanning several fields), so a bad scenario file is rejected with a
message the user can act on.

The outcome model (see :mod:`simulator.traffic` for the draws):

* a unit converts with probability ``conversion.base_rate × (1 + effect)``, where ``effect`` is its
  variant's ``effect`` unless one of the variant's ``segments`` matches the unit's attributes (the first
  matching segment's ``effect`` replaces it); a conversion carries a purchase value (log-normal);
* a variant with ``latency`` makes each unit send one ``serving.request`` and one ``serving.latency_ms``
  (gamma-distributed with that mean and standard deviation).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

#: Tolerance on shares summing to 1 (JSON decimals such as 0.6 + 0.25 + 0.15 are not exact in binary).
_SHARE_TOLERANCE = 1e-6
#: A non-empty key (the service checks its own key pattern when the experiment is registered).
Key = Annotated[str, StringConstraints(min_length=1)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _shares_sum_to_one(shares: dict[str, float]) -> dict[str, float]:
    if not shares:
        raise ValueError("needs at least one value")
    negative = sorted(value for value, share in shares.items() if share < 0)
    if negative:
        raise ValueError(f"shares must be >= 0 (negative: {', '.join(negative)})")
    total = math.fsum(shares.values())
    if abs(total - 1.0) > _SHARE_TOLERANCE:
        raise ValueError(f"shares sum to {total:g}; they must sum to 1")
    return shares


#: Value → share of the population; shares are >= 0 and sum to 1.
Shares = Annotated[dict[str, float], AfterValidator(_shares_sum_to_one)]


class Population(_Frozen):
    """Who arrives: each attribute's values and their shares, drawn independently per unit.

    Example: ``{"attributes": {"country": {"US": 0.6, "DE": 0.25, "FR": 0.15},
    "platform": {"ios": 0.4, "android": 0.4, "web": 0.2}}}``.
    """

    attributes: dict[Key, Shares] = Field(default_factory=dict)


class ArrivalProcess(_Frozen):
    """How many units arrive on simulated day ``d``: Poisson with mean ``units_per_day × weekly[d mod 7]``
    (``process="fixed"``: that mean, rounded, exactly). Without ``weekly`` every day has the same mean."""

    units_per_day: float = Field(gt=0)
    process: Literal["poisson", "fixed"] = "poisson"
    weekly: tuple[float, float, float, float, float, float, float] | None = None

    @model_validator(mode="after")
    def _weekly_non_negative(self) -> ArrivalProcess:
        if self.weekly is not None and min(self.weekly) < 0:
            raise ValueError("arrivals.weekly: multipliers must be >= 0")
        return self


class PurchaseValue(_Frozen):
    """Value of a conversion (e.g. revenue): log-normal with this mean and standard deviation."""

    mean: float = Field(default=40.0, gt=0)
    sd: float = Field(default=20.0, ge=0)


class Conversion(_Frozen):
    """The outcome event: a unit converts (one ``event`` whose value is the purchase value) with probability
    ``base_rate × (1 + effect of its variant and segment)``."""

    event: str = Field(default="purchase", min_length=1)
    base_rate: float = Field(ge=0, le=1)
    value: PurchaseValue = PurchaseValue()


class Latency(_Frozen):
    """Per-request serving latency of a variant in milliseconds (gamma: positive, with this mean and sd)."""

    mean_ms: float = Field(default=40.0, gt=0)
    sd_ms: float = Field(default=8.0, ge=0)


class SegmentEffect(_Frozen):
    """The variant's relative effect for units whose ``attribute`` equals ``value`` (replaces the variant's
    ``effect`` there), e.g. ``{"attribute": "country", "value": "DE", "effect": -0.5}``."""

    attribute: str
    value: str
    effect: float = Field(gt=-1)


class VariantTruth(_Frozen):
    """What a variant truly does: the relative effect on the conversion rate (``0.2`` = 20 % more conversions,
    ``-1 < effect``), per-segment overrides (the first match wins) and its serving latency."""

    effect: float = Field(default=0.0, gt=-1)
    segments: tuple[SegmentEffect, ...] = ()
    latency: Latency | None = None


class ServingEvents(_Frozen):
    """Names of the events a variant with ``latency`` sends (the service's own /predict uses the same)."""

    request: str = Field(default="serving.request", min_length=1)
    latency_ms: str = Field(default="serving.latency_ms", min_length=1)


class Registration(_Frozen):
    """What ``--register`` creates when missing (REST bodies as DESIGN.md fixes them): metrics, model variant
    specs, and the experiment (started if it is a draft)."""

    metrics: tuple[dict[str, Any], ...] = ()
    models: tuple[dict[str, Any], ...] = ()
    experiment: dict[str, Any]


class Scenario(_Frozen):
    """A simulated experiment: traffic, true effects per variant, and how the driver runs it.

    ``assignment``: ``"sdk"`` assigns through ``titrate_sdk.Client.get_variant`` (local evaluation, exposures
    logged); ``"predict"`` through ``POST /v1/experiments/{key}/predict`` with one of ``predict_inputs`` (the
    service assigns, serves the variant's model and records its latency itself). ``allocation_step``: run
    ``POST /allocations/recompute`` after every simulated day (ramps advance or roll back, bandits update).
    """

    name: Key
    experiment: Key
    days: int = Field(ge=1, le=3650)
    seed: int = 0
    population: Population = Population()
    arrivals: ArrivalProcess
    conversion: Conversion | None = None
    control: Key
    variants: dict[Key, VariantTruth]
    serving_events: ServingEvents = ServingEvents()
    assignment: Literal["sdk", "predict"] = "sdk"
    predict_inputs: tuple[str, ...] = ()
    allocation_step: bool = False
    registration: Registration | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        self._check_variants()
        self._check_segments()
        self._check_rates()
        self._check_serving()
        self._check_registration()
        return self

    def _check_variants(self) -> None:
        if len(self.variants) < 2:
            raise ValueError("variants: an experiment needs at least two variants")
        if self.control not in self.variants:
            raise ValueError(f"control: {self.control!r} is not one of the variants ({', '.join(self.variants)})")

    def _check_segments(self) -> None:
        for key, truth in self.variants.items():
            for i, segment in enumerate(truth.segments):
                where = f"variants.{key}.segments.{i}"
                shares = self.population.attributes.get(segment.attribute)
                if shares is None:
                    raise ValueError(f"{where}.attribute: {segment.attribute!r} is not a population attribute "
                                     f"({', '.join(self.population.attributes) or 'none'})")
                if segment.value not in shares:
                    raise ValueError(f"{where}.value: {segment.value!r} is not a value of "
                                     f"{segment.attribute!r} ({', '.join(shares)})")

    def _check_rates(self) -> None:
        if self.conversion is None:
            return
        base = self.conversion.base_rate
        for key, truth in self.variants.items():
            effects = [(f"variants.{key}.effect", truth.effect)] + [
                (f"variants.{key}.segments.{i}.effect", s.effect) for i, s in enumerate(truth.segments)]
            for where, effect in effects:
                if base * (1 + effect) > 1:
                    raise ValueError(f"{where}: conversion rate {base:g} × (1 + {effect:g}) = "
                                     f"{base * (1 + effect):g} exceeds 1")

    def _check_serving(self) -> None:
        with_latency = [k for k, v in self.variants.items() if v.latency is not None]
        if with_latency and len(with_latency) != len(self.variants):
            missing = ", ".join(k for k in self.variants if k not in with_latency)
            raise ValueError(f"variants: latency is given for some variants but not for {missing}; "
                             "give it for all or none")
        if self.assignment == "predict":
            if not self.predict_inputs:
                raise ValueError("predict_inputs: the predict assignment needs at least one input text")
            if with_latency:
                raise ValueError("variants.*.latency: with the predict assignment the service measures latency; "
                                 "remove the simulated latency")
        elif self.conversion is None and not with_latency:
            raise ValueError("conversion: an sdk scenario needs a conversion or variant latencies to simulate")

    def _check_registration(self) -> None:
        if self.registration is None:
            return
        body = self.registration.experiment
        if body.get("key") != self.experiment:
            raise ValueError(f"registration.experiment.key: {body.get('key')!r} differs from experiment "
                             f"{self.experiment!r}")
        registered = body.get("variants") or []
        keys = [v.get("key") for v in registered if isinstance(v, dict)]
        if sorted(map(str, keys)) != sorted(self.variants):
            raise ValueError(f"registration.experiment.variants: keys {keys} differ from the scenario's variants "
                             f"{list(self.variants)}")
        controls = [v.get("key") for v in registered if isinstance(v, dict) and v.get("control")]
        if controls != [self.control]:
            raise ValueError(f"registration.experiment.variants: the control is {controls}, the scenario's "
                             f"is {self.control!r}")

    @property
    def treatments(self) -> tuple[str, ...]:
        """The non-control variants, in scenario order."""
        return tuple(k for k in self.variants if k != self.control)
