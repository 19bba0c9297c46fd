"""Run a scenario against a live titrate service, one simulated day at a time.

Each simulated day: the day's units arrive (``simulator.traffic``); each is assigned through the Python SDK
(``Client.get_variant`` with its attributes: local evaluation, exposure logged) or through
``POST /v1/experiments/{key}/predict`` (the service assigns, serves the model and records its latency); their
outcomes are drawn from the true effects and tracked (``Client.track``); the SDK is flushed and, after the
exposure writer has had ``settle_seconds``, the allocation step runs if the scenario asks for it
(``POST /allocations/recompute``, admin: ramps advance or roll back, bandits update). The run stops early when
the experiment leaves ``running``.

Simulated days are compressed in wall-clock time: a "day" lasts as long as sending its units takes, and events
and exposures carry the real time they were sent — so a ramp's ``min_hours`` is measured in real hours, and the
allocation step is forced past a bandit's ``update_every_minutes`` cadence (a simulated day has passed).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from titrate_sdk import Client

from simulator import traffic
from simulator.options import DriverOptions
from simulator.registration import ensure_registered
from simulator.result import AllocationStep, DayResult, ObservedLift, SimulationResult, TrueEffects
from simulator.scenario import Scenario

#: ``get_variant``'s answer for a unit the experiment does not include (no variant key is empty).
_NOT_IN = ""


class SimulationError(RuntimeError):
    """The scenario cannot run against this service (missing or stopped experiment, mismatched variants)."""


def truth_of(scenario: Scenario) -> TrueEffects:
    """The scenario's planted effects, as the result reports them."""
    has_conversion = scenario.conversion is not None
    return TrueEffects(
        rel_lift=traffic.true_relative_lift(scenario) if has_conversion else {},
        segment_rel_lift={name: traffic.true_segment_lift(scenario, name) for name in scenario.population.attributes}
        if has_conversion else {},
        latency_rel_change=traffic.true_latency_change(scenario))


def _experiment(http: httpx.Client, scenario: Scenario) -> dict[str, Any]:
    """The experiment document, checked against the scenario (exists, running, same variants)."""
    response = http.get(f"/v1/experiments/{scenario.experiment}")
    if response.status_code == 404:
        raise SimulationError(f"experiment {scenario.experiment!r} does not exist: register it first "
                              "(--register with a scenario that has a registration)")
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    variants = sorted(v["key"] for v in document["variants"])
    if variants != sorted(scenario.variants):
        raise SimulationError(f"experiment {scenario.experiment!r} has variants {variants}; the scenario simulates "
                              f"{sorted(scenario.variants)}")
    if document["status"] != "running":
        raise SimulationError(f"experiment {scenario.experiment!r} is {document['status']!r}, not running")
    return document


def _step(http: httpx.Client, key: str) -> AllocationStep:
    # force: the simulated day has passed even though the wall clock says seconds (module docstring).
    response = http.post(f"/v1/experiments/{key}/allocations/recompute", params={"force": "true"})
    response.raise_for_status()
    body = response.json()
    return AllocationStep(action=body["action"], version=body["version"], weights=body["weights"],
                          context_weights=body.get("context_weights"), reasons=body.get("reasons") or [],
                          decision=body.get("decision"))


def _observed(http: httpx.Client, key: str) -> tuple[ObservedLift, ...]:
    response = http.get(f"/v1/experiments/{key}/scorecard")
    if response.status_code in (401, 403):
        return ()  # an sdk key may run a simulation but not read scorecards
    response.raise_for_status()
    return tuple(
        ObservedLift(metric=metric["metric"], role=metric["role"], variant=row["variant"], n=row.get("n"),
                     control_n=row.get("control_n"), rel_lift=row.get("rel_lift"), rel_ci=row.get("rel_ci"))
        for metric in response.json()["metrics"] for row in metric["variants"])


class _Assigner:
    """Assigns one unit, by the SDK or by ``/predict``; returns ``_NOT_IN`` when the experiment excludes it."""

    def __init__(self, scenario: Scenario, sdk: Client, http: httpx.Client, rng: np.random.Generator) -> None:
        self.scenario = scenario
        self.sdk = sdk
        self.http = http
        self.rng = rng

    def __call__(self, unit: str, attributes: dict[str, str]) -> str:
        key = self.scenario.experiment
        if self.scenario.assignment == "sdk":
            return self.sdk.get_variant(key, unit, attributes, default=_NOT_IN)
        text = self.scenario.predict_inputs[int(self.rng.integers(len(self.scenario.predict_inputs)))]
        response = self.http.post(f"/v1/experiments/{key}/predict",
                                  json={"unit_id": unit, "attributes": attributes, "inputs": [text]})
        if response.status_code == 409:
            return _NOT_IN  # not in the experiment (targeting, traffic) or no longer served
        response.raise_for_status()
        return str(response.json()["variant"])


def _track(sdk: Client, scenario: Scenario, units: list[str], variants: list[str],
           outcomes: traffic.Outcomes) -> None:
    """Send each assigned unit's outcome events (conversion with its value; simulated serving latency)."""
    events = scenario.serving_events
    for i, (unit, variant) in enumerate(zip(units, variants, strict=True)):
        if variant == _NOT_IN:
            continue
        if scenario.conversion is not None and outcomes.converted[i]:
            sdk.track(unit, scenario.conversion.event, value=round(float(outcomes.value[i]), 2))
        if outcomes.latency_ms is not None:
            sdk.track(unit, events.request, value=1.0)
            sdk.track(unit, events.latency_ms, value=float(outcomes.latency_ms[i]))


def stop_note(day: int, days_planned: int, status: str, step: AllocationStep | None) -> str:
    """Why a simulation ended before its last day (0-based ``day``): a roll-out the guardrail rule rolled back is
    named as such with the step's reason, any other status (stopped, shipped, completed) as the status it left."""
    after = f"after day {day + 1} of {days_planned}"
    rest = "; the remaining days are not simulated" if day + 1 < days_planned else ""
    if status == "rolled_back":
        why = [*((step.decision or {}).get("reasons") or []), *step.reasons] if step is not None else []
        cause = f" — {why[0]}" if why else ""
        return f"rolled back on purpose {after}: a guardrail was significantly worse than control{cause}{rest}"
    return f"ended {after}: the experiment is {status.replace('_', ' ')}{rest}"


def run_scenario(scenario: Scenario, base_url: str, api_key: str,
                 options: DriverOptions | None = None) -> SimulationResult:
    """Simulate ``scenario.days`` days of traffic against the service at ``base_url`` (module docstring).

    Args:
        scenario: the validated scenario (its ``seed`` seeds every draw).
        base_url: the service root, e.g. ``http://127.0.0.1:8000``.
        api_key: an admin key (registration, the allocation step); an sdk key suffices for a scenario without
            ``allocation_step`` run with ``register_missing=False``.
        options: the driver's settings (defaults: ``DriverOptions()``).

    Returns:
        The frozen per-day record with the truth and, unless disabled, the final scorecard rows.

    Raises:
        SimulationError: the experiment is missing, not running, or has other variants than the scenario.
        httpx.HTTPError: the service refused a request or could not be reached.
    """
    options = options or DriverOptions()
    rng = np.random.default_rng(scenario.seed)
    prefix = options.unit_prefix or f"{scenario.experiment}-{scenario.seed}"
    headers = {"Authorization": f"Bearer {api_key}"}
    days: list[DayResult] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with httpx.Client(base_url=base_url, headers=headers, timeout=options.timeout_seconds) as http:
        if options.register_missing and scenario.registration is not None:
            ensure_registered(http, scenario.registration)
        status = _experiment(http, scenario)["status"]
        with Client(base_url, api_key, flush_interval=options.flush_interval, timeout=options.timeout_seconds) as sdk, \
                Progress(*columns, console=Console(stderr=True), disable=options.quiet) as progress:
            assign = _Assigner(scenario, sdk, http, rng)
            overall = progress.add_task(f"{scenario.name}: days", total=scenario.days)
            for day in range(scenario.days):
                sdk.refresh()  # the allocation the previous day's step published
                visitors = traffic.draw_day(scenario, day, rng)
                units = [f"{prefix}-{day}-{i}" for i in range(visitors.count)]
                today = progress.add_task(f"{scenario.name}: day {day + 1} units", total=visitors.count)
                variants: list[str] = []
                for i, unit in enumerate(units):
                    variants.append(assign(unit, visitors.attributes_of(i)))
                    progress.advance(today)
                outcomes = traffic.draw_outcomes(scenario, np.array(variants, dtype=np.str_), visitors.attributes,
                                                 rng)
                _track(sdk, scenario, units, variants, outcomes)
                sdk.flush(timeout=options.timeout_seconds)
                time.sleep(options.settle_seconds)  # exposures reach the database within the writer's period
                step = _step(http, scenario.experiment) if scenario.allocation_step else None
                status = http.get(f"/v1/experiments/{scenario.experiment}").raise_for_status().json()["status"]
                in_experiment = [v for v in variants if v != _NOT_IN]
                converted = Counter(v for v, c in zip(variants, outcomes.converted, strict=True) if c and v != _NOT_IN)
                days.append(DayResult(day=day, units=visitors.count, assigned=dict(Counter(in_experiment)),
                                      not_in_experiment=len(variants) - len(in_experiment),
                                      conversions=dict(converted), step=step, status=status))
                progress.remove_task(today)
                progress.advance(overall)
                if status != "running":
                    # why: the bar stays at day/total; without a word it reads as stalled rather than stopped
                    note = stop_note(day, scenario.days, status, step)
                    progress.update(overall, description=f"{scenario.name}: {note.split(':')[0]}")
                    if not options.quiet:
                        progress.console.print(f"{scenario.name}: {note}")
                    break
        observed = _observed(http, scenario.experiment) if options.read_scorecard else ()
    return SimulationResult(scenario=scenario.name, experiment=scenario.experiment, seed=scenario.seed,
                            days_planned=scenario.days, days=tuple(days), status=status, truth=truth_of(scenario),
                            observed=observed)
