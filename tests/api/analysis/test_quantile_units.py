"""Per-unit quantile metrics (``"over": "units"``) through the catalog and the REST scorecard, both databases.

The catalog takes ``over`` ("events", the default, or "units") on quantile metrics only, with an ``aggregation``
("sum" by default, or "count") exactly when over units; the plan freezes it as that aggregation. The scorecard's
median of per-unit spend is ``compare_quantiles`` on numpy histograms of each exposed unit's sum (0 without
purchases), on live and materialised reads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from api.db.engine import Database
from api.db.tables import Event, Experiment, Exposure, utc_now
from scorecards.quantile import compare_quantiles, histogram_from_events
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

NOW = utc_now()
P50_SPEND = {"key": "p50_spend", "kind": "quantile", "event": "purchase", "quantile": 0.5, "over": "units",
             "direction": "higher_is_better"}
P95 = {"key": "p95_latency", "kind": "quantile", "event": "serving.latency_ms", "quantile": 0.95,
       "direction": "lower_is_better"}


def test_over_units_is_stored_as_its_aggregation_and_read_back(client: TestClient, keys: Keys) -> None:
    analyst = keys.headers("analyst")
    created = client.post("/v1/metrics", json=P50_SPEND, headers=analyst)
    assert created.status_code == 201, created.text
    assert (created.json()["over"], created.json()["aggregation"]) == ("units", "sum")
    assert client.get("/v1/metrics/p50_spend", headers=analyst).json()["over"] == "units"
    counted = client.post("/v1/metrics", json={**P50_SPEND, "key": "p90_orders", "quantile": 0.9,
                                               "aggregation": "count"}, headers=analyst)
    assert (counted.json()["over"], counted.json()["aggregation"]) == ("units", "count")
    events = client.post("/v1/metrics", json=P95, headers=analyst)
    assert (events.json()["over"], events.json()["aggregation"]) == ("events", None)
    listed = {m["key"]: m["over"] for m in client.get("/v1/metrics", headers=analyst).json()}
    assert listed == {"p50_spend": "units", "p90_orders": "units", "p95_latency": "events"}
    mean = client.post("/v1/metrics", json={"key": "clicks", "kind": "mean", "event": "click"}, headers=analyst)
    assert mean.json()["over"] is None


@pytest.mark.parametrize(("body", "needle"), [
    ({**P50_SPEND, "over": "sessions"}, "over"),
    ({**P50_SPEND, "aggregation": "any"}, "aggregation"),
    ({**P95, "aggregation": "sum"}, "aggregation"),
    ({**P95, "over": "events", "aggregation": "count"}, "aggregation"),
    ({"key": "clicks", "kind": "mean", "event": "click", "over": "units"}, "over"),
    ({**P50_SPEND, "winsorize": 100}, "winsorize"),
])
def test_a_bad_over_is_refused_naming_the_field(client: TestClient, keys: Keys, body: dict[str, Any],
                                                 needle: str) -> None:
    response = client.post("/v1/metrics", json=body, headers=keys.headers("analyst"))
    assert response.status_code == 422, response.text
    assert needle in response.text


def test_the_plan_freezes_over_units_as_the_aggregation(client: TestClient, keys: Keys, db: Database) -> None:
    _start(client, keys)
    with db.engine.connect() as conn:
        document = conn.scalar(select(Experiment.plan).where(Experiment.key == "ranker-v2"))
    metric = document["metrics"]["secondary"][0]
    assert (metric["kind"], metric["aggregation"], metric["quantile"]) == ("quantile", "sum", 0.5)
    assert "over" not in metric  # the aggregation says it; documents of events quantiles are unchanged


def _start(client: TestClient, keys: Keys) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    assert client.post("/v1/metrics", json=P50_SPEND, headers=admin).status_code == 201
    create_experiment(client, admin, start=True, metrics={"primary": "conversion", "secondary": ["p50_spend"],
                                                          "guardrails": []})


def _seed(db: Database, lift: float) -> dict[str, list[float]]:
    """400 units per arm, a quarter without purchases, Poisson(3) purchases of Exponential(mean 30) otherwise;
    v2's values ``lift`` times control's. Returns variant → per-unit sums (0 for units without purchases)."""
    rng = np.random.default_rng(5)
    exposures: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    sums: dict[str, list[float]] = {"control": [], "v2": []}
    for variant in ("control", "v2"):
        for i in range(400):
            unit = f"{variant}-{i}"
            at = NOW - timedelta(days=3, minutes=int(rng.integers(0, 600)))
            exposures.append({"unit_id": unit, "variant": variant, "exposed_at": at, "allocation_version": 1,
                              "attributes": {}, "source": "server"})
            n = 0 if i % 4 == 0 else int(rng.poisson(3))
            values = [float(v) * (lift if variant == "v2" else 1.0) for v in rng.exponential(30.0, n)]
            events += [{"event_id": f"ev-{len(events) + k}", "unit_id": unit, "name": "purchase", "value": v,
                        "timestamp": at + timedelta(hours=1 + k), "attributes": {}, "received_at": NOW}
                       for k, v in enumerate(values)]
            sums[variant].append(sum(values))
    with db.engine.begin() as conn:
        exp_id = conn.scalar(select(Experiment.id).where(Experiment.key == "ranker-v2"))
        conn.execute(insert(Exposure), [{**x, "experiment_id": exp_id} for x in exposures])
        conn.execute(insert(Event), events)
    return sums


@pytest.mark.parametrize("live", [True, False])
def test_the_scorecard_compares_the_median_of_per_unit_spend(client: TestClient, keys: Keys, db: Database,
                                                             live: bool) -> None:
    _start(client, keys)
    sums = _seed(db, lift=1.4)
    params = {"as_of": (utc_now() + timedelta(seconds=-1)).isoformat()} if live else {}
    response = client.get("/v1/experiments/ranker-v2/scorecard", params=params, headers=keys.headers("analyst"))
    assert response.status_code == 200, response.text
    metric = next(m for m in response.json()["metrics"] if m["metric"] == "p50_spend")
    assert metric["kind"] == "quantile"
    got = metric["variants"][0]
    control, v2 = (histogram_from_events(np.arange(400), np.asarray(sums[k])) for k in ("control", "v2"))
    ref = compare_quantiles(control, v2, 0.5, 0.05, direction="higher_is_better")
    assert (got["n"], got["control_n"]) == (400, 400)  # every exposed unit, purchases or not
    assert got["control_mean"] == pytest.approx(float(np.median(sums["control"])), rel=0.01)
    assert got["mean"] == pytest.approx(ref.treatment_mean, rel=1e-9)
    assert got["abs_ci"] == pytest.approx(list(ref.abs_ci), rel=1e-9)
    assert got["p_value"] == pytest.approx(ref.p_value, rel=1e-6, abs=1e-12)
    assert got["rel_lift"] > 0.0  # +40 % planted on every purchase; the median moves less (a quarter are 0)
