"""Pure, seeded, vectorised draws of a scenario's traffic and outcomes, and its true effects.

Every random draw takes the ``numpy.random.Generator`` passed in, so the same seed gives the same units,
attributes and outcomes (variant assignment is deterministic hashing, done by the service's SDK). Nothing here
does I/O.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from simulator.scenario import ArrivalProcess, Latency, Population, PurchaseValue, Scenario

StrArray = npt.NDArray[np.str_]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Visitors:
    """One day's arrivals: ``count`` units and, per population attribute, an array of ``count`` values."""

    count: int
    attributes: Mapping[str, StrArray]

    def attributes_of(self, i: int) -> dict[str, str]:
        """The attributes of unit ``i`` as the SDK takes them."""
        return {name: str(values[i]) for name, values in self.attributes.items()}


@dataclass(frozen=True)
class Outcomes:
    """What the units did: ``converted`` (bool, shape ``(n,)``), ``value`` of each conversion (0 where none),
    and ``latency_ms`` per unit when the scenario simulates serving latency (else ``None``)."""

    converted: BoolArray
    value: FloatArray
    latency_ms: FloatArray | None


def expected_arrivals(arrivals: ArrivalProcess, day: int) -> float:
    """Mean arrivals on simulated day ``day`` (0-based): ``units_per_day × weekly[day mod 7]``."""
    multiplier = 1.0 if arrivals.weekly is None else arrivals.weekly[day % 7]
    return arrivals.units_per_day * multiplier


def expected_units(scenario: Scenario) -> float:
    """Mean units over the whole scenario (the sum of the daily means)."""
    return math.fsum(expected_arrivals(scenario.arrivals, day) for day in range(scenario.days))


def draw_arrival_count(arrivals: ArrivalProcess, day: int, rng: np.random.Generator) -> int:
    """Units arriving on ``day``: Poisson with the day's mean, or that mean rounded (``process="fixed"``)."""
    mean = expected_arrivals(arrivals, day)
    if arrivals.process == "fixed":
        return round(mean)
    return int(rng.poisson(mean))


def draw_visitors(population: Population, count: int, rng: np.random.Generator) -> Visitors:
    """``count`` units whose attributes are drawn independently, each from its categorical shares."""
    attributes: dict[str, StrArray] = {}
    for name, shares in population.attributes.items():
        values = np.array(list(shares), dtype=np.str_)
        p = np.array(list(shares.values()), dtype=np.float64)
        attributes[name] = rng.choice(values, size=count, p=p / p.sum())  # renormalise the 1e-6 tolerance
    return Visitors(count, attributes)


def draw_day(scenario: Scenario, day: int, rng: np.random.Generator) -> Visitors:
    """The units of simulated day ``day``: their number, then their attributes."""
    return draw_visitors(scenario.population, draw_arrival_count(scenario.arrivals, day, rng), rng)


def unit_effects(scenario: Scenario, variants: StrArray, attributes: Mapping[str, StrArray]) -> FloatArray:
    """Each unit's relative effect: its variant's ``effect``, replaced by the first matching segment's."""
    effects = np.zeros(len(variants), dtype=np.float64)
    for key, truth in scenario.variants.items():
        in_variant = variants == key
        effects[in_variant] = truth.effect
        assigned = np.zeros(len(variants), dtype=np.bool_)
        for segment in truth.segments:  # in order: a unit takes the first segment it matches
            match = in_variant & ~assigned & (attributes[segment.attribute] == segment.value)
            effects[match] = segment.effect
            assigned |= match
    return effects


def conversion_rates(scenario: Scenario, variants: StrArray, attributes: Mapping[str, StrArray]) -> FloatArray:
    """Each unit's true conversion probability, ``base_rate × (1 + effect)`` (0 without a conversion)."""
    if scenario.conversion is None:
        return np.zeros(len(variants), dtype=np.float64)
    return scenario.conversion.base_rate * (1.0 + unit_effects(scenario, variants, attributes))


def _lognormal(value: PurchaseValue, n: int, rng: np.random.Generator) -> FloatArray:
    # Log-normal with the given mean m and sd s: σ² = ln(1 + s²/m²), μ = ln m − σ²/2 (moments of the
    # log-normal), so the arithmetic mean is exactly m — revenue lifts stay those of the conversion rate.
    sigma2 = math.log1p((value.sd / value.mean) ** 2)
    return rng.lognormal(math.log(value.mean) - sigma2 / 2, math.sqrt(sigma2), size=n)


def draw_latency(latencies: Mapping[str, Latency], variants: StrArray, rng: np.random.Generator) -> FloatArray:
    """Per-unit latency (ms) of its variant: gamma with shape (m/s)² and scale s²/m (mean m, sd s; positive,
    right-skewed like real latencies); a variant with sd 0 always takes exactly its mean."""
    mean = np.zeros(len(variants), dtype=np.float64)
    sd = np.zeros(len(variants), dtype=np.float64)
    for key, latency in latencies.items():
        mean[variants == key] = latency.mean_ms
        sd[variants == key] = latency.sd_ms
    random = sd > 0
    safe_mean, safe_sd = np.where(random, mean, 1.0), np.where(random, sd, 1.0)  # no 0/0 where sd = 0
    draws = rng.gamma((safe_mean / safe_sd) ** 2, safe_sd**2 / safe_mean)
    return np.where(random, draws, mean)


def draw_outcomes(scenario: Scenario, variants: StrArray, attributes: Mapping[str, StrArray],
                  rng: np.random.Generator) -> Outcomes:
    """Draw each unit's conversion (Bernoulli with its true rate), purchase value and serving latency.

    Args:
        scenario: the true effects.
        variants: shape ``(n,)``, each unit's variant key.
        attributes: attribute → shape ``(n,)`` values (``Visitors.attributes``).
        rng: the generator; a fixed number of draws per unit, whatever converts, keeps streams aligned.
    """
    n = len(variants)
    converted = rng.random(n) < conversion_rates(scenario, variants, attributes)
    value = np.zeros(n, dtype=np.float64)
    if scenario.conversion is not None:
        value = np.where(converted, _lognormal(scenario.conversion.value, n, rng), 0.0)
    latencies = {k: v.latency for k, v in scenario.variants.items() if v.latency is not None}
    latency_ms = draw_latency(latencies, variants, rng) if latencies else None
    return Outcomes(converted, value, latency_ms)


def _cells(population: Population, fixed: Mapping[str, str]) -> list[tuple[float, dict[str, str]]]:
    """Every combination of attribute values with its probability (attributes are independent), within the
    ``fixed`` attribute values (their probability renormalised to 1)."""
    names = list(population.attributes)
    choices = [[fixed[name]] if name in fixed else list(population.attributes[name]) for name in names]
    cells = []
    for values in itertools.product(*choices):
        weight = math.prod(1.0 if name in fixed else population.attributes[name][value]
                           for name, value in zip(names, values, strict=True))
        cells.append((weight, dict(zip(names, values, strict=True))))
    return cells


def true_conversion_rate(scenario: Scenario, variant: str, within: Mapping[str, str] | None = None) -> float:
    """The variant's population-weighted conversion rate Σ_cells P(cell) · rate(variant, cell), over the units
    whose attributes equal ``within`` (every unit when ``None``)."""
    cells = _cells(scenario.population, within or {})
    total = math.fsum(weight for weight, _ in cells)
    rates = [
        weight * float(conversion_rates(scenario, np.array([variant], dtype=np.str_),
                                        {k: np.array([v], dtype=np.str_) for k, v in attrs.items()})[0])
        for weight, attrs in cells]
    return math.fsum(rates) / total if total > 0 else math.nan


def true_relative_lift(scenario: Scenario, within: Mapping[str, str] | None = None) -> dict[str, float]:
    """Each treatment's true relative lift of the conversion rate over control, rate_t / rate_c − 1 (the
    scorecard's ``rel_lift`` of a proportion metric, and of the purchase-value mean, whose value distribution is
    the same in every variant), over the whole population or the ``within`` segment."""
    control = true_conversion_rate(scenario, scenario.control, within)
    return {key: true_conversion_rate(scenario, key, within) / control - 1 if control > 0 else math.nan
            for key in scenario.treatments}


def true_segment_lift(scenario: Scenario, attribute: str) -> dict[str, dict[str, float]]:
    """Attribute value → treatment → true relative lift among the units with that value."""
    return {value: true_relative_lift(scenario, {attribute: value})
            for value in scenario.population.attributes[attribute]}


def true_latency_quantile_change(scenario: Scenario, q: float) -> dict[str, float]:
    """Each treatment's true relative change of the q-quantile of per-request latency, Q_t(q) / Q_c(q) − 1 (the
    ``rel_lift`` of a quantile metric): latencies are gamma with shape (mean/sd)² and scale sd²/mean (a constant
    when sd is 0); empty when the scenario simulates no latency."""
    control = scenario.variants[scenario.control].latency
    if control is None:
        return {}

    def quantile(latency: Latency) -> float:
        if latency.sd_ms == 0:
            return latency.mean_ms
        shape, scale = (latency.mean_ms / latency.sd_ms) ** 2, latency.sd_ms ** 2 / latency.mean_ms
        return float(stats.gamma.ppf(q, shape, scale=scale))

    return {key: quantile(latency) / quantile(control) - 1 for key in scenario.treatments
            if (latency := scenario.variants[key].latency) is not None}


def true_latency_change(scenario: Scenario) -> dict[str, float]:
    """Each treatment's true relative change of mean latency, mean_t / mean_c − 1 (the ``rel_lift`` of a
    latency ratio metric); empty when the scenario simulates no latency."""
    control = scenario.variants[scenario.control].latency
    if control is None:
        return {}
    return {key: latency.mean_ms / control.mean_ms - 1 for key in scenario.treatments
            if (latency := scenario.variants[key].latency) is not None}
