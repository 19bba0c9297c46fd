"""A p95 latency guardrail (``kind: "quantile"``) through the REST scorecard and decision (both databases).

Exposures and latency events are seeded straight into the tables; the scorecard's numbers are checked against
``scorecards.compare_quantiles`` / ``quantile_guardrail`` on histograms built in numpy from the same raw rows
(``histogram_from_events``, the SQL's reference), on a live read (``as_of``) and on the materialised read (no
``as_of``: the quantile is computed live beside the stored sums)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from api.db.engine import Database
from api.db.tables import Event, Experiment, Exposure, utc_now
from scorecards.quantile import compare_quantiles, histogram_from_events, quantile_guardrail
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

NOW = utc_now()
P95 = {"key": "p95_latency", "kind": "quantile", "event": "serving.latency_ms", "quantile": 0.95,
       "direction": "lower_is_better"}
UNITS = 600


def _seed(db: Database, slowdown: float, seed: int = 3) -> dict[str, tuple[list[str], list[float]]]:
    """UNITS units per arm, each with Poisson(5) requests whose latencies share a per-unit level (log-normal);
    v2's latencies are ``slowdown`` times control's. Returns variant → (unit per event, value per event)."""
    rng = np.random.default_rng(seed)
    exposures: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    raw: dict[str, tuple[list[str], list[float]]] = {"control": ([], []), "v2": ([], [])}
    for variant in ("control", "v2"):
        for i in range(UNITS):
            unit = f"{variant}-{i}"
            at = NOW - timedelta(days=3, minutes=int(rng.integers(0, 600)))
            exposures.append({"unit_id": unit, "variant": variant, "exposed_at": at, "allocation_version": 1,
                              "attributes": {}, "source": "server"})
            level = rng.normal(0.0, 0.3)
            for _ in range(int(rng.poisson(5))):
                value = float(np.exp(np.log(100.0) + level + rng.normal(0.0, 0.4))) * (
                    slowdown if variant == "v2" else 1.0)
                events.append({"event_id": f"ev-{len(events)}", "unit_id": unit, "name": "serving.latency_ms",
                               "value": value, "timestamp": at + timedelta(hours=float(rng.uniform(0, 24))),
                               "attributes": {}, "received_at": NOW})
                raw[variant][0].append(unit)
                raw[variant][1].append(value)
            # before exposure: never counts
            events.append({"event_id": f"ev-{len(events)}", "unit_id": unit, "name": "serving.latency_ms",
                           "value": 1e6, "timestamp": at - timedelta(hours=1), "attributes": {}, "received_at": NOW})
    with db.engine.begin() as conn:
        exp_id = conn.scalar(select(Experiment.id).where(Experiment.key == "ranker-v2"))
        conn.execute(insert(Exposure), [{**x, "experiment_id": exp_id} for x in exposures])
        conn.execute(insert(Event), events)
    return raw


def _start(client: TestClient, keys: Keys, **overrides: Any) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    assert client.post("/v1/metrics", json=P95, headers=admin).status_code == 201
    create_experiment(client, admin, start=True, **{
        "metrics": {"primary": "conversion", "secondary": [],
                    "guardrails": [{"metric": "p95_latency", "margin": 0.05}]}, **overrides})


def _p95(card: dict[str, Any]) -> dict[str, Any]:
    metric = next(m for m in card["metrics"] if m["metric"] == "p95_latency")
    assert (metric["role"], metric["kind"]) == ("guardrail", "quantile")
    variant: dict[str, Any] = metric["variants"][0]
    return variant


@pytest.mark.parametrize("live", [True, False])
def test_a_slower_variant_fails_the_p95_guardrail(client: TestClient, keys: Keys, db: Database, live: bool) -> None:
    _start(client, keys)
    raw = _seed(db, slowdown=1.25)
    analyst = keys.headers("analyst")
    params = {"as_of": (utc_now() + timedelta(seconds=-1)).isoformat()} if live else {}
    response = client.get("/v1/experiments/ranker-v2/scorecard", params=params, headers=analyst)
    assert response.status_code == 200, response.text
    p95 = _p95(response.json())

    control, v2 = (histogram_from_events(*raw[k]) for k in ("control", "v2"))
    ref = compare_quantiles(control, v2, 0.95, 0.05, direction="lower_is_better")
    assert (p95["n"], p95["control_n"]) == (v2.units, control.units)  # units with at least one event
    assert p95["mean"] == pytest.approx(ref.treatment_mean, rel=1e-9)
    assert p95["control_mean"] == pytest.approx(ref.control_mean, rel=1e-9)
    assert p95["abs_ci"] == pytest.approx(list(ref.abs_ci), rel=1e-9)
    assert p95["rel_ci"] == pytest.approx(list(ref.rel_ci), rel=1e-9)
    assert p95["p_value"] == pytest.approx(ref.p_value, rel=1e-6, abs=1e-12)
    assert 0.2 < p95["rel_lift"] < 0.3  # +25 % planted, within the 0.5 % buckets and noise

    guard = quantile_guardrail(control, v2, 0.95, 0.05, 0.05, direction="lower_is_better")
    assert guard.status == "fail"
    assert p95["guardrail"] == "fail"
    assert p95["guardrail_detail"]["margin"] == 0.05

    decision = client.get("/v1/experiments/ranker-v2/decision", params=params, headers=analyst).json()
    assert decision["decision"] == "no_ship"
    assert any("p95_latency" in r for r in decision["reasons"]), decision["reasons"]


def test_a_rollout_with_a_slower_p95_rolls_back(client: TestClient, keys: Keys, db: Database) -> None:
    _start(client, keys, type="rollout")
    _seed(db, slowdown=1.25)
    decision = client.get("/v1/experiments/ranker-v2/decision", headers=keys.headers("analyst")).json()
    assert decision["decision"] == "rollback"
    assert decision["variant"] == "v2"


def test_an_equal_p95_passes_its_guardrail(client: TestClient, keys: Keys, db: Database) -> None:
    _start(client, keys)
    _seed(db, slowdown=1.0)
    card = client.get("/v1/experiments/ranker-v2/scorecard", headers=keys.headers("analyst")).json()
    p95 = _p95(card)
    assert p95["guardrail"] in ("pass", "inconclusive")
    assert p95["abs_ci"][0] < 0.0 < p95["abs_ci"][1]
    decision = client.get("/v1/experiments/ranker-v2/decision", headers=keys.headers("analyst")).json()
    assert not any("p95_latency" in r and "fail" in r for r in decision["reasons"])


def test_the_materialised_scorecard_computes_the_quantile_on_every_read(client: TestClient, keys: Keys,
                                                                        db: Database) -> None:
    """No ``as_of``: the stored per-unit sums answer as of the last refresh, but the quantile is recomputed at each
    read (no memo), so events stored since — dated before that refresh — move it."""
    _start(client, keys)
    _seed(db, slowdown=1.0)
    analyst = keys.headers("analyst")
    first = _p95(client.get("/v1/experiments/ranker-v2/scorecard", headers=analyst).json())
    with db.engine.begin() as conn:
        exp_id = conn.scalar(select(Experiment.id).where(Experiment.key == "ranker-v2"))
        units = conn.scalars(select(Exposure.unit_id).where(Exposure.experiment_id == exp_id,
                                                            Exposure.variant == "v2")).all()
        conn.execute(insert(Event), [{"event_id": f"late-{i}", "unit_id": u, "name": "serving.latency_ms",
                                      "value": 10_000.0, "timestamp": NOW - timedelta(hours=1), "attributes": {},
                                      "received_at": utc_now()} for i, u in enumerate(units[:200])])
    second = _p95(client.get("/v1/experiments/ranker-v2/scorecard", headers=analyst).json())
    assert second["control_mean"] == first["control_mean"]
    assert second["mean"] > 1.5 * first["mean"]
