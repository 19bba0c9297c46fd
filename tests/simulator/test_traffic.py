"""The simulator's pure parts: seeded draws match the scenario, true lifts match hand computations, presets and
overrides stay valid, bad scenarios are rejected naming the field."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from simulator import traffic
from simulator.overrides import Overrides, apply_overrides
from simulator.presets import PRESETS, checkout_ab, headline_bandit, ranker_rollout
from simulator.scenario import Scenario

N = 100_000


def _scenario(**changes: Any) -> dict[str, Any]:
    """A small valid scenario document, with top-level ``changes``."""
    doc: dict[str, Any] = {
        "name": "t", "experiment": "t", "days": 3, "arrivals": {"units_per_day": 100},
        "population": {"attributes": {"country": {"US": 0.5, "DE": 0.3, "FR": 0.2},
                                      "platform": {"ios": 0.6, "web": 0.4}}},
        "conversion": {"base_rate": 0.2},
        "control": "control",
        "variants": {"control": {}, "b": {"effect": 0.5, "segments": [
            {"attribute": "country", "value": "DE", "effect": -0.5},
            {"attribute": "platform", "value": "web", "effect": 1.0}]}},
    }
    doc.update(changes)
    return doc


def _errors(doc: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        Scenario.model_validate(doc)
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in info.value.errors())


def _random_variants(scenario: Scenario, n: int, rng: np.random.Generator) -> traffic.StrArray:
    return rng.choice(np.array(list(scenario.variants), dtype=np.str_), size=n)


def test_attribute_shares_match_the_population_within_chi_square_tolerance() -> None:
    scenario = Scenario.model_validate(_scenario())
    visitors = traffic.draw_visitors(scenario.population, N, np.random.default_rng(1))
    assert visitors.count == N
    for name, shares in scenario.population.attributes.items():
        values = visitors.attributes[name]
        observed = [int(np.sum(values == value)) for value in shares]
        assert sum(observed) == N
        expected = [N * share for share in shares.values()]
        assert stats.chisquare(observed, expected).pvalue > 0.001, (name, observed)
    assert visitors.attributes_of(0).keys() == {"country", "platform"}


def test_outcome_rates_per_variant_and_segment_match_the_true_effects() -> None:
    scenario = Scenario.model_validate(_scenario())
    rng = np.random.default_rng(2)
    visitors = traffic.draw_visitors(scenario.population, 4 * N, rng)
    variants = _random_variants(scenario, visitors.count, rng)
    outcomes = traffic.draw_outcomes(scenario, variants, visitors.attributes, rng)
    country, platform = visitors.attributes["country"], visitors.attributes["platform"]
    # b: +50 %, except DE (first segment: -50 %, also on the web) and the web elsewhere (+100 %).
    cells = {("control", None): (variants == "control", 0.2),
             ("b", "US-ios"): ((variants == "b") & (country == "US") & (platform == "ios"), 0.3),
             ("b", "DE-web"): ((variants == "b") & (country == "DE") & (platform == "web"), 0.1),
             ("b", "FR-web"): ((variants == "b") & (country == "FR") & (platform == "web"), 0.4)}
    for cell, (mask, rate) in cells.items():
        n = int(mask.sum())
        observed = outcomes.converted[mask].mean()
        assert abs(observed - rate) < 4 * math.sqrt(rate * (1 - rate) / n), (cell, observed, rate)
    for variant in scenario.variants:
        mask = variants == variant
        rate = traffic.true_conversion_rate(scenario, variant)
        assert abs(outcomes.converted[mask].mean() - rate) < 4 * math.sqrt(rate * (1 - rate) / mask.sum())
    values = outcomes.value[outcomes.converted]
    assert (values > 0).all()
    assert (outcomes.value[~outcomes.converted] == 0).all()
    assert abs(values.mean() - 40.0) < 4 * 20.0 / math.sqrt(len(values))  # the PurchaseValue default mean
    assert outcomes.latency_ms is None


def test_latency_draws_have_each_variants_mean_and_sd() -> None:
    scenario = ranker_rollout()
    rng = np.random.default_rng(3)
    variants = _random_variants(scenario, N, rng)
    latency = traffic.draw_latency({k: v.latency for k, v in scenario.variants.items() if v.latency}, variants, rng)
    for key, truth in scenario.variants.items():
        assert truth.latency is not None
        sample = latency[variants == key]
        assert abs(sample.mean() - truth.latency.mean_ms) < 4 * truth.latency.sd_ms / math.sqrt(len(sample))
        assert sample.std(ddof=1) == pytest.approx(truth.latency.sd_ms, rel=0.03)
        assert (sample > 0).all()
    assert traffic.true_latency_change(scenario) == {"ranker-v3": pytest.approx(0.3)}
    # the p95 guardrail's truth: the ratio of the gamma quantiles, which the samples' p95 approaches
    p95 = {key: float(np.quantile(latency[variants == key], 0.95)) for key in scenario.variants}
    (change,) = traffic.true_latency_quantile_change(scenario, 0.95).values()
    assert change == pytest.approx(p95["ranker-v3"] / p95["control"] - 1, abs=0.01)
    assert 0.15 < change < 0.3  # a gamma's upper tail is relatively thinner at the larger mean


def test_true_lift_matches_a_hand_computation() -> None:
    scenario = Scenario.model_validate(_scenario())
    # b's rate by cell (first matching segment wins): DE → 0.2·0.5 = 0.1 whatever the platform;
    # US, FR on ios (0.6) → 0.2·1.5 = 0.3; on the web (0.4) → 0.2·2 = 0.4.
    rate_b = 0.3 * 0.1 + 0.7 * (0.6 * 0.3 + 0.4 * 0.4)
    assert traffic.true_conversion_rate(scenario, "b") == pytest.approx(rate_b)
    assert traffic.true_relative_lift(scenario) == {"b": pytest.approx(rate_b / 0.2 - 1)}
    by_country = traffic.true_segment_lift(scenario, "country")
    assert by_country["DE"]["b"] == pytest.approx(-0.5)
    assert by_country["US"]["b"] == pytest.approx((0.6 * 0.3 + 0.4 * 0.4) / 0.2 - 1)
    # The preset: +45 % outside Germany (75 % of units), −50 % in it.
    assert traffic.true_relative_lift(checkout_ab()) == {"one-page": pytest.approx(0.75 * 0.45 - 0.25 * 0.5)}
    assert traffic.true_relative_lift(headline_bandit()) == pytest.approx(
        {"bold": 0.2, "question": 0.4, "number": 1.0})


def test_arrivals_follow_the_daily_rate_and_weekly_rhythm() -> None:
    scenario = checkout_ab()
    rng = np.random.default_rng(4)
    assert traffic.expected_units(scenario) == pytest.approx(7 * scenario.arrivals.units_per_day)
    for day in (0, 5):
        counts = np.array([traffic.draw_arrival_count(scenario.arrivals, day, rng) for _ in range(2000)])
        mean = traffic.expected_arrivals(scenario.arrivals, day)
        assert abs(counts.mean() - mean) < 4 * math.sqrt(mean / len(counts))
        assert counts.var(ddof=1) == pytest.approx(mean, rel=0.1)  # Poisson: variance = mean
    fixed = Scenario.model_validate(_scenario(arrivals={"units_per_day": 10.4, "process": "fixed"}))
    assert traffic.draw_arrival_count(fixed.arrivals, 0, rng) == 10


def test_the_same_seed_gives_the_same_draws() -> None:
    scenario = ranker_rollout()

    def draws(seed: int) -> tuple[list[str], list[bool], list[float]]:
        rng = np.random.default_rng(seed)
        visitors = traffic.draw_day(scenario, 0, rng)
        variants = _random_variants(scenario, visitors.count, rng)
        outcomes = traffic.draw_outcomes(scenario, variants, visitors.attributes, rng)
        assert outcomes.latency_ms is not None
        return (visitors.attributes["country"].tolist(), outcomes.converted.tolist(), outcomes.latency_ms.tolist())

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"minilm-serving"}))
def test_presets_are_valid_and_survive_a_json_round_trip(name: str) -> None:
    scenario = PRESETS[name]()
    assert Scenario.model_validate_json(scenario.model_dump_json()) == scenario
    assert scenario.registration is not None
    assert scenario.registration.experiment["key"] == scenario.experiment
    assert set(scenario.population.attributes) == {"country", "platform"}


def test_overrides_change_the_scenario_and_are_validated() -> None:
    changed = apply_overrides(checkout_ab(), Overrides(days=2, units_per_day=50, lift=0.1, seed=9,
                                                       harm_segment=("platform", "web"), slower_ms=12,
                                                       allocation_step=True, experiment="x-2"))
    assert (changed.days, changed.arrivals.units_per_day, changed.seed, changed.allocation_step) == (2, 50, 9, True)
    treatment = changed.variants["one-page"]
    assert treatment.effect == 0.1
    assert [(s.attribute, s.value, s.effect) for s in treatment.segments] == [
        ("platform", "web", -0.5), ("country", "DE", -0.5)]
    assert traffic.true_latency_change(changed) == {"one-page": pytest.approx(12 / 40)}
    assert changed.experiment == "x-2"
    assert changed.registration is not None
    assert changed.registration.experiment["key"] == "x-2"
    with pytest.raises(ValidationError, match="segments.0.value"):
        apply_overrides(checkout_ab(), Overrides(harm_segment=("country", "XX")))
    with pytest.raises(ValidationError, match="variants.one-page.effect"):
        apply_overrides(checkout_ab(), Overrides(lift=-2))


@pytest.mark.parametrize(("change", "field"), [
    ({"population": {"attributes": {"country": {"US": 0.5, "DE": 0.4}}}}, "population.attributes.country"),
    ({"population": {"attributes": {"country": {"US": 1.2, "DE": -0.2}}}}, "population.attributes.country"),
    ({"conversion": {"base_rate": 1.5}}, "conversion.base_rate"),
    ({"conversion": {"base_rate": 0.8}}, "variants.b.effect"),  # 0.8 × 1.5 > 1
    ({"control": "nope"}, "control"),
    ({"days": 0}, "days"),
    ({"arrivals": {"units_per_day": -1}}, "arrivals.units_per_day"),
    ({"arrivals": {"units_per_day": 5, "weekly": [1, 1, 1]}}, "arrivals.weekly"),
    ({"variants": {"control": {}, "b": {"effect": -1}}}, "variants.b.effect"),
    ({"variants": {"control": {}, "b": {"segments": [{"attribute": "age", "value": "30", "effect": 0}]}}},
     "variants.b.segments.0.attribute"),
    ({"variants": {"control": {"latency": {"mean_ms": 5}}, "b": {}}}, "variants"),
    ({"variants": {"control": {}}}, "variants"),
    ({"assignment": "predict"}, "predict_inputs"),
    ({"colour": "red"}, "colour"),
])
def test_invalid_scenarios_are_rejected_naming_the_field(change: dict[str, Any], field: str) -> None:
    assert field in _errors(_scenario(**change))


def test_a_registration_must_describe_the_same_experiment() -> None:
    body = {"key": "t", "variants": [{"key": "control", "control": True}, {"key": "c"}]}
    assert "registration.experiment.variants" in _errors(_scenario(registration={"experiment": body}))
    body = {"key": "other", "variants": [{"key": "control", "control": True}, {"key": "b"}]}
    assert "registration.experiment.key" in _errors(_scenario(registration={"experiment": body}))
