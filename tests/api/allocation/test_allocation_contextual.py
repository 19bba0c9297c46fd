"""Contextual Thompson sampling through the service (both databases): per-platform weights from per-platform
data, served by ``/v1/assign`` and the SDK alike (spec §3.6), with SRM and stratified estimates that follow the
weights each (allocation version, platform) cell was assigned under.

Exposures and events of allocation version 1 are seeded straight into the tables; on iOS arm ``b`` converts
five times as often as the others, on Android arm ``c`` does — pooled, ``b`` and ``c`` look alike.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import stats
from sqlalchemy import func, insert, select
from titrate_sdk import Client

from api.db.engine import Database
from api.db.tables import Event, Experiment, Exposure, utc_now
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

NOW = utc_now()
ARMS = [{"key": "control", "control": True, "weight": 0.34}, {"key": "b", "weight": 0.33},
        {"key": "c", "weight": 0.33}]
CONTEXTUAL = {"strategy": "thompson", "context": {"attribute": "platform", "values": ["ios", "android"]}}
ONLY_CONVERSION = {"primary": "conversion", "secondary": [], "guardrails": []}
# platform → variant → conversion rate
RATES = {"ios": {"control": 0.05, "b": 0.25, "c": 0.05}, "android": {"control": 0.05, "b": 0.05, "c": 0.25}}


def _seed(db: Database, key: str, units_per_cell: int | dict[str, int] = 300, seed: int = 5,
          rates_by_platform: dict[str, dict[str, float]] | None = None) -> None:
    """Exposures of version 1 and purchases per (platform, variant) cell; ``units_per_cell`` per platform or one
    number for all."""
    rng = np.random.default_rng(seed)
    exposures: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for platform, rates in (rates_by_platform or RATES).items():
        cell_units = units_per_cell[platform] if isinstance(units_per_cell, dict) else units_per_cell
        for variant, rate in rates.items():
            for i in range(cell_units):
                unit = f"{platform}-{variant}-{i}"
                at = NOW - timedelta(days=3, minutes=int(rng.integers(0, 600)))
                exposures.append({"unit_id": unit, "variant": variant, "exposed_at": at, "allocation_version": 1,
                                  "attributes": {"platform": platform}, "source": "server"})
                if rng.random() < rate:
                    events.append({"unit_id": unit, "name": "purchase", "value": 10.0,
                                   "timestamp": at + timedelta(hours=1)})
    with db.engine.begin() as conn:
        exp_id = conn.scalar(select(Experiment.id).where(Experiment.key == key))
        conn.execute(insert(Exposure), [{**x, "experiment_id": exp_id} for x in exposures])
        conn.execute(insert(Event), [{**e, "event_id": f"{key}-{i}", "attributes": {}, "received_at": NOW}
                                     for i, e in enumerate(events)])


def _exposures(db: Database, key: str) -> int:
    with db.read() as session:
        exp_id = session.scalar(select(Experiment.id).where(Experiment.key == key))
        return int(session.scalar(select(func.count()).select_from(Exposure)
                                  .where(Exposure.experiment_id == exp_id)) or 0)


@pytest.mark.parametrize(("allocation", "field"), [
    ({"strategy": "fixed", "context": {"attribute": "platform", "values": ["ios"]}}, "allocation"),
    ({"strategy": "thompson", "context": {"attribute": "platform", "values": ["ios", "ios"]}}, "context"),
    ({"strategy": "thompson", "context": {"attribute": "platform", "values": []}}, "values"),
    ({"strategy": "thompson", "context": {"attribute": "", "values": ["ios"]}}, "attribute"),
])
def test_invalid_context_is_a_422_naming_the_field(client: TestClient, keys: Keys, allocation: dict[str, Any],
                                                   field: str) -> None:
    create_metrics(client, keys.headers("admin"))
    from tests.factories import experiment_body

    body = experiment_body(key="bad-context", variants=ARMS, allocation=allocation, metrics=ONLY_CONVERSION)
    response = client.post("/v1/experiments", json=body, headers=keys.headers("admin"))
    assert response.status_code == 422, response.text
    assert any(field in ".".join(str(p) for p in error["loc"]) for error in response.json()["detail"]), response.text


def test_contextual_bandit_serves_each_platform_its_own_weights(client: TestClient, keys: Keys,
                                                                db: Database) -> None:
    admin, analyst, sdk = keys.headers("admin"), keys.headers("analyst"), keys.headers("sdk")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True, key="ctx", variants=ARMS, allocation=CONTEXTUAL,
                      metrics=ONLY_CONVERSION)
    _seed(db, "ctx")

    step = client.post("/v1/experiments/ctx/allocations/recompute", headers=admin)
    assert step.status_code == 200, step.text
    result = step.json()
    assert result["action"] == "updated"
    assert result["version"] == 2
    by_platform = result["context_weights"]
    assert max(by_platform["ios"], key=by_platform["ios"].get) == "b"
    assert by_platform["ios"]["b"] > 0.9
    assert max(by_platform["android"], key=by_platform["android"].get) == "c"
    assert by_platform["android"]["c"] > 0.9
    assert result["weights"]["control"] < 0.05  # pooled: b and c share the traffic of undeclared platforms
    assert result["details"]["context"]["values"]["ios"]["leader"] == "b"
    history = client.get("/v1/experiments/ctx/allocations", headers=analyst).json()
    assert history[-1]["context_weights"] == by_platform
    assert history[0]["context_weights"] is None

    config = client.get("/v1/sdk/config", headers=sdk).json()
    assert config["spec_version"] == 2
    (doc,) = [e for e in config["experiments"] if e["key"] == "ctx"]
    assert doc["context"]["attribute"] == "platform"
    assert doc["context"]["weights"]["ios"] == [by_platform["ios"][v["key"]] for v in doc["variants"]]

    # the server (/v1/assign) and the SDK (local evaluation of the same document) give every unit the same
    # variant, and each platform's split follows its own weights
    sdk_client = Client("http://127.0.0.1:9", "unused", start=False, log_exposures=False)
    assert sdk_client.set_config(config)
    served: dict[str, list[str]] = {"ios": [], "android": [], "web": []}
    for platform, units in (("ios", 400), ("android", 400), ("web", 300)):
        for i in range(units):
            unit, attributes = f"new-{platform}-{i}", {"platform": platform}
            response = client.post("/v1/assign", json={"unit_id": unit, "attributes": attributes,
                                                       "experiments": ["ctx"]}, headers=sdk)
            variant = response.json()["assignments"]["ctx"]["variant"]
            assert sdk_client.get_variant("ctx", unit, attributes) == variant
            served[platform].append(variant)
    assert sdk_client.assign_many("ctx", [f"new-ios-{i}" for i in range(400)], {"platform": "ios"}) == served["ios"]
    sdk_client.close()
    for platform, weights in (("ios", by_platform["ios"]), ("android", by_platform["android"]),
                              ("web", result["weights"])):
        for variant in ARMS:  # exact binomial test of each arm's share (tiny floored shares break chi-square)
            observed = served[platform].count(variant["key"])
            test = stats.binomtest(observed, len(served[platform]), weights[variant["key"]])
            assert test.pvalue > 1e-3, (platform, variant["key"], observed, weights)

    deadline = time.monotonic() + 10
    while _exposures(db, "ctx") < 1800 + 1100 and time.monotonic() < deadline:
        time.sleep(0.05)
    card = client.get("/v1/experiments/ctx/scorecard", headers=analyst).json()
    # SRM expectations follow the weights of each (version, platform) cell: the skewed version-2 splits are
    # not a mismatch
    assert card["srm"]["ok"], card["srm"]
    assert card["srm"]["p_value"] > 1e-3, card["srm"]
    assert card["srm"]["observed"] == {v["key"]: 600 + sum(s.count(v["key"]) for s in served.values())
                                       for v in ARMS}
    assert "contextual bandit on 'platform'" in card["adaptive_allocation"]
    (primary,) = [m for m in card["metrics"] if m["role"] == "primary"]
    entry = next(v for v in primary["variants"] if v["variant"] == "b")["stratified"]
    assert {"version": 1, "platform": "ios"} in entry["strata"]
    assert {"version": 2, "platform": "web"} in entry["strata"]
    assert entry["versions"] == [1, 2]


def test_contextual_updates_are_reproducible_from_the_stored_seed(client: TestClient, keys: Keys,
                                                                  db: Database) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True, key="ctx-seed", variants=ARMS, allocation=CONTEXTUAL,
                      metrics=ONLY_CONVERSION)
    _seed(db, "ctx-seed", units_per_cell=60)
    from api.allocation.service import run_allocation_step
    from api.experiments import repository

    with db.transaction() as session:
        experiment = repository.get(session, "ctx-seed", for_update=True)
        assert experiment is not None
        first = run_allocation_step(session, experiment, NOW, rng_seed=1234)
        session.rollback()
    with db.transaction() as session:
        experiment = repository.get(session, "ctx-seed", for_update=True)
        assert experiment is not None
        again = run_allocation_step(session, experiment, NOW, rng_seed=1234)
    assert again.context_weights == first.context_weights
    assert again.weights == first.weights
    assert set(first.context_weights or {}) == {"ios", "android"}


def test_a_non_string_context_value_gets_the_pooled_weights_and_is_counted_so(client: TestClient, keys: Keys,
                                                                              db: Database) -> None:
    """Declared value "1" (a string); clients that send the number 1 are assigned with the pooled weights (spec
    §3.6), and the SRM check and the strata count them as such — not as the cell of "1"."""
    admin, analyst, sdk = keys.headers("admin"), keys.headers("analyst"), keys.headers("sdk")
    create_metrics(client, admin)
    allocation = {"strategy": "thompson", "context": {"attribute": "platform", "values": ["ios", "1"]}}
    create_experiment(client, admin, start=True, key="ctx-num", variants=ARMS, allocation=allocation,
                      metrics=ONLY_CONVERSION)
    # "1": arm b converts five times as often — its weights go almost all to b; pooled, b and c share
    _seed(db, "ctx-num", rates_by_platform={"1": RATES["ios"], "ios": RATES["android"]})
    step = client.post("/v1/experiments/ctx-num/allocations/recompute", headers=admin).json()
    assert step["context_weights"]["1"]["b"] > 0.9
    assert step["weights"]["b"] < 0.8
    served = []
    for i in range(600):
        response = client.post("/v1/assign", json={"unit_id": f"num-{i}", "attributes": {"platform": 1},
                                                   "experiments": ["ctx-num"]}, headers=sdk)
        served.append(response.json()["assignments"]["ctx-num"]["variant"])
    assert stats.binomtest(served.count("b"), 600, step["weights"]["b"]).pvalue > 1e-3  # the pooled weights
    deadline = time.monotonic() + 10
    while _exposures(db, "ctx-num") < 1800 + 600 and time.monotonic() < deadline:
        time.sleep(0.05)
    card = client.get("/v1/experiments/ctx-num/scorecard", headers=analyst).json()
    assert card["srm"]["ok"], card["srm"]  # expected counts from the pooled weights for these units
    (primary,) = [m for m in card["metrics"] if m["role"] == "primary"]
    strata = primary["variants"][0]["stratified"]["strata"]
    assert {"version": 2, "platform": None} in strata
    assert {"version": 2, "platform": "1"} not in strata


@pytest.mark.parametrize(("android_best", "decision"), [("b", "ship"), ("c", "keep_running")])
def test_a_contextual_bandit_ships_one_arm_only_if_every_value_agrees(client: TestClient, keys: Keys, db: Database,
                                                                       android_best: str, decision: str) -> None:
    """iOS has most of the traffic and prefers b, so the pooled posterior says ship b. If Android prefers c with
    confidence, shipping b everywhere would undo what the contextual policy learned: keep running instead."""
    admin = keys.headers("admin")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True, key="ctx-stop", variants=ARMS, allocation=CONTEXTUAL,
                      metrics=ONLY_CONVERSION)
    android = {v: (0.30 if v == android_best else 0.05) for v in ("control", "b", "c")}
    _seed(db, "ctx-stop", units_per_cell={"ios": 2000, "android": 400},
          rates_by_platform={"ios": {"control": 0.05, "b": 0.25, "c": 0.05}, "android": android})
    step = client.post("/v1/experiments/ctx-stop/allocations/recompute", headers=admin).json()
    assert step["details"]["prob_best"]["b"] > 0.95  # pooled: b
    assert step["details"]["context"]["values"]["android"]["leader"] == android_best
    assert step["decision"]["decision"] == decision, step["decision"]
    if decision == "ship":
        assert step["decision"]["variant"] == "b"
        assert "also leads within every platform value" in step["decision"]["reasons"][-1]
    else:
        assert "android: c (1.00)" in step["decision"]["reasons"][-1]
    scorecard_decision = client.get("/v1/experiments/ctx-stop/decision", headers=keys.headers("analyst")).json()
    assert (scorecard_decision["decision"] == "ship") == (decision == "ship")
