"""Golden files: the scorecard and decision JSON of four seeded scenarios, compared exactly (both databases).

They pin the REST output while the scorecard is refactored (issue 13: behaviour unchanged). Each scenario seeds
fixed exposures and events straight into the tables (numpy generators with fixed seeds, deterministic unit and
event ids), runs the allocation steps in-process with a fixed ``rng_seed`` where a bandit draws, and records:

* ``ab_segment`` — an A/B test (conversion, revenue, latency guardrail) broken down by ``country``, plus the
  cross-experiment view of its primary metric;
* ``ramp_guardrail`` — a ramped roll-out that advances one step, then rolls back on a latency regression;
* ``thompson`` — a Thompson bandit (one arm excluded by its guardrail), two allocation versions, the
  stratified estimates and the bandit stopping rule in the decision;
* ``contextual`` — a contextual bandit on ``platform`` (per-value weights, the contextual stopping rule).

Volatile fields (times measured to the clock: ``as_of``, ``created_at``, hours since a version...) are replaced by
a placeholder; everything else — every float — must be equal. Each database has its own files
(``golden/sqlite``, ``golden/postgresql``): their SQL sums of the same floats differ in the last bits (summation
order), so one file cannot hold both exactly.
Regenerate after an intended change with ``TITRATE_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from api.allocation.service import run_allocation_step
from api.db.engine import Database
from api.db.tables import Event, Experiment, Exposure, utc_now
from api.experiments import repository as experiments_repository
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("TITRATE_UPDATE_GOLDEN") == "1"
VOLATILE = frozenset({"as_of", "computed_at", "created_at", "updated_at", "started_at", "ended_at", "hours_at_step",
                      "due"})
THREE_ARMS = [{"key": "control", "control": True, "weight": 0.4}, {"key": "a", "weight": 0.3},
              {"key": "b", "weight": 0.3}]
GUARDED = {"primary": "conversion", "secondary": [], "guardrails": [{"metric": "latency", "margin": 0.05}]}
ONLY_CONVERSION = {"primary": "conversion", "secondary": [], "guardrails": []}
# variant → (units, conversion rate, mean latency ms)
Arms = dict[str, tuple[int, float, float]]


def _normalise(value: Any) -> Any:
    """Volatile fields → a placeholder (recursively); the rest unchanged."""
    if isinstance(value, dict):
        return {k: "<volatile>" if k in VOLATILE else _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def _check(dialect: str, name: str, got: dict[str, Any]) -> None:
    path = GOLDEN / dialect / f"{name}.json"
    # why a JSON round trip: the comparison sees exactly what the file can hold (tuples → lists, float repr)
    got = json.loads(json.dumps(_normalise(got), allow_nan=False))
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    expected = json.loads(path.read_text())
    difference = _first_difference(got, expected)
    assert difference is None, (f"{name}: output differs from {path} at {difference} "
                                f"(TITRATE_UPDATE_GOLDEN=1 rewrites it)")


def _first_difference(got: Any, expected: Any, where: str = "$") -> str | None:
    """Where ``got`` and ``expected`` first differ: everything exactly, except floats, which may differ by
    floating-point rounding (relative 1e-9). Why: PostgreSQL may sum a column with a parallel plan whose number of
    workers depends on what else the server runs, so the order of additions, and the last bits, can vary."""
    if isinstance(got, float) and isinstance(expected, float):
        return None if math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12) else f"{where}: {got!r} != {expected!r}"
    if isinstance(got, dict) and isinstance(expected, dict):
        if got.keys() != expected.keys():
            return f"{where}: keys {sorted(got.keys() ^ expected.keys())}"
        return next((d for k in got if (d := _first_difference(got[k], expected[k], f"{where}.{k}"))), None)
    if isinstance(got, list) and isinstance(expected, list):
        if len(got) != len(expected):
            return f"{where}: {len(got)} items != {len(expected)}"
        return next((d for i, (g, e) in enumerate(zip(got, expected, strict=True))
                     if (d := _first_difference(g, e, f"{where}[{i}]"))), None)
    return None if type(got) is type(expected) and got == expected else f"{where}: {got!r} != {expected!r}"


def _insert(db: Database, key: str, exposures: list[dict[str, Any]], events: list[dict[str, Any]],
            prefix: str) -> None:
    now = utc_now()
    with db.engine.begin() as conn:
        exp_id = conn.scalar(select(Experiment.id).where(Experiment.key == key))
        conn.execute(insert(Exposure), [{**x, "experiment_id": exp_id, "source": "server"} for x in exposures])
        conn.execute(insert(Event), [{**e, "event_id": f"{key}-{prefix}-{i}", "attributes": {}, "received_at": now}
                                     for i, e in enumerate(events)])


def _seed(db: Database, key: str, arms: Arms, *, version: int = 1, seed: int = 3, prefix: str = "",
          attribute: tuple[str, list[str]] | None = None) -> None:
    """Units exposed 10 days ago under ``version``, two served requests each (latency ± 5 ms) and a purchase of
    20.0 with the arm's probability; ``attribute``: (name, values) drawn uniformly per unit."""
    rng = np.random.default_rng(seed)
    now = utc_now()
    exposures: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for variant, (units, rate, latency) in arms.items():
        for i in range(units):
            unit = f"{prefix}{variant}-{version}-{i}"
            at = now - timedelta(days=10, minutes=int(rng.integers(0, 600)))
            attributes = {} if attribute is None else {attribute[0]: str(rng.choice(attribute[1]))}
            exposures.append({"unit_id": unit, "variant": variant, "exposed_at": at, "allocation_version": version,
                              "attributes": attributes})
            for r in range(2):
                t = at + timedelta(minutes=10 + r)
                events.append({"unit_id": unit, "name": "serving.request", "value": 1.0, "timestamp": t})
                events.append({"unit_id": unit, "name": "serving.latency_ms", "timestamp": t,
                               "value": float(rng.normal(latency, 5.0))})
            boost = 2.0 if attributes.get("country") == "CA" and variant != "control" else 1.0
            if rng.random() < rate * boost:
                events.append({"unit_id": unit, "name": "purchase", "value": 20.0,
                               "timestamp": at + timedelta(hours=1)})
    _insert(db, key, exposures, events, f"{prefix}{version}")


def _seed_context(db: Database, key: str, rates: dict[str, dict[str, float]], units: int, seed: int) -> None:
    """Version-1 units per (platform, variant) cell converting at ``rates[platform][variant]``."""
    rng = np.random.default_rng(seed)
    now = utc_now()
    exposures: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for platform, by_variant in rates.items():
        for variant, rate in by_variant.items():
            for i in range(units):
                unit = f"{platform}-{variant}-{i}"
                at = now - timedelta(days=3, minutes=int(rng.integers(0, 600)))
                exposures.append({"unit_id": unit, "variant": variant, "exposed_at": at, "allocation_version": 1,
                                  "attributes": {"platform": platform}})
                if rng.random() < rate:
                    events.append({"unit_id": unit, "name": "purchase", "value": 10.0,
                                   "timestamp": at + timedelta(hours=1)})
    _insert(db, key, exposures, events, "ctx")


def _step(db: Database, key: str, seed: int | None = None) -> dict[str, Any]:
    """One allocation step in-process (``rng_seed`` fixes the Thompson draws), as the recompute route returns it."""
    with db.transaction() as session:
        experiment = experiments_repository.get(session, key, for_update=True)
        assert experiment is not None
        result = run_allocation_step(session, experiment, utc_now(), rng_seed=seed, force=True)
    return json.loads(json.dumps(asdict(result), default=str))


def _read(client: TestClient, keys: Keys, key: str, **params: Any) -> dict[str, Any]:
    headers = keys.headers("analyst")
    card = client.get(f"/v1/experiments/{key}/scorecard", params=params, headers=headers)
    assert card.status_code == 200, card.text
    decision = client.get(f"/v1/experiments/{key}/decision", headers=headers)
    assert decision.status_code == 200, decision.text
    return {"scorecard": card.json(), "decision": decision.json()}


def _ab_segment(client: TestClient, keys: Keys, db: Database) -> dict[str, Any]:
    create_experiment(client, keys.headers("admin"), start=True, key="ab-seg")
    _seed(db, "ab-seg", {"control": (500, 0.10, 100.0), "v2": (500, 0.14, 101.0)}, seed=11,
          attribute=("country", ["US", "CA", "DE"]))
    across = client.get("/v1/scorecards", params={"metric": "conversion"}, headers=keys.headers("analyst"))
    assert across.status_code == 200, across.text
    return {**_read(client, keys, "ab-seg", segment="country"), "across": across.json()}


def _ramp_guardrail(client: TestClient, keys: Keys, db: Database) -> dict[str, Any]:
    ramp = {"strategy": "ramp", "steps": [{"fraction": 0.1, "min_units": 100}, {"fraction": 0.5, "min_units": 100},
                                          {"fraction": 1.0, "min_units": 100}]}
    create_experiment(client, keys.headers("admin"), start=True, key="ramp", type="rollout", allocation=ramp,
                      metrics=GUARDED)
    _seed(db, "ramp", {"control": (400, 0.10, 100.0), "v2": (150, 0.10, 100.0)}, seed=5)
    advanced = _step(db, "ramp")
    _seed(db, "ramp", {"control": (300, 0.10, 100.0), "v2": (300, 0.10, 112.0)}, version=2, seed=6)
    before = _read(client, keys, "ramp")
    rolled_back = _step(db, "ramp")
    return {"steps": [advanced, rolled_back], "before_rollback": before, **_read(client, keys, "ramp")}


def _thompson(client: TestClient, keys: Keys, db: Database) -> dict[str, Any]:
    create_experiment(client, keys.headers("admin"), start=True, key="bandit", variants=THREE_ARMS,
                      allocation={"strategy": "thompson"}, metrics=GUARDED)
    _seed(db, "bandit", {"control": (400, 0.05, 100.0), "a": (300, 0.05, 150.0), "b": (300, 0.25, 100.0)})
    first = _step(db, "bandit", seed=1234)
    # version 2 serves a = 0, b = 0.995, control = 0.005 (the step above): units arrive in that split, or the
    # scorecard's SRM over the allocation history flags them
    _seed(db, "bandit", {"control": (3, 0.08, 100.0), "b": (400, 0.22, 100.0)}, version=2, seed=4)
    return {"steps": [first], **_read(client, keys, "bandit")}


def _contextual(client: TestClient, keys: Keys, db: Database) -> dict[str, Any]:
    arms = [{"key": "control", "control": True, "weight": 0.34}, {"key": "b", "weight": 0.33},
            {"key": "c", "weight": 0.33}]
    allocation = {"strategy": "thompson", "context": {"attribute": "platform", "values": ["ios", "android"]}}
    create_experiment(client, keys.headers("admin"), start=True, key="ctx", variants=arms, allocation=allocation,
                      metrics=ONLY_CONVERSION)
    rates = {"ios": {"control": 0.05, "b": 0.25, "c": 0.05}, "android": {"control": 0.05, "b": 0.05, "c": 0.25}}
    _seed_context(db, "ctx", rates, units=300, seed=5)
    first = _step(db, "ctx", seed=99)
    return {"steps": [first], **_read(client, keys, "ctx")}


SCENARIOS: dict[str, Callable[[TestClient, Keys, Database], dict[str, Any]]] = {
    "ab_segment": _ab_segment, "ramp_guardrail": _ramp_guardrail, "thompson": _thompson, "contextual": _contextual,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scorecard_and_decision_match_the_golden_file(client: TestClient, keys: Keys, db: Database,
                                                      name: str) -> None:
    create_metrics(client, keys.headers("admin"))
    _check(db.dialect, name, SCENARIOS[name](client, keys, db))
