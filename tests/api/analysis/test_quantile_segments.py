"""Quantile metrics in the segments breakdown (``?segment=``), both databases, live and materialised reads.

Before issue 16 item 3's remainder a quantile metric was silently left out of the segment rows; now each value of
the attribute carries its per-value estimate: ``compare_quantiles`` on the histograms of that value's raw rows
(numpy, the SQL's reference), with BH across the values and the opposite-move flag like any metric."""

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
P95 = {"key": "p95_latency", "kind": "quantile", "event": "serving.latency_ms", "quantile": 0.95,
       "direction": "lower_is_better"}
P50_SPEND = {"key": "p50_spend", "kind": "quantile", "event": "purchase", "quantile": 0.5, "over": "units",
             "direction": "higher_is_better"}
SLOWDOWN = {"DE": 1.5, "FR": 1.0, None: 1.0}


Raw = dict[Any, dict[str, tuple[list[str], list[float]]]]


def _seed(db: Database) -> tuple[Raw, dict[Any, dict[str, list[float]]]]:
    """300 units per arm, country DE / FR / absent in turn; latencies as in test_quantile_metric with v2 1.5× slower
    in DE only; purchases Poisson(2) × Exponential(mean 30). Returns country → variant → (unit per event, latency)
    and country → variant → per-unit spend."""
    rng = np.random.default_rng(8)
    exposures: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    raw: Raw = {c: {"control": ([], []), "v2": ([], [])}
                                                                for c in SLOWDOWN}
    spend: dict[Any, dict[str, list[float]]] = {c: {"control": [], "v2": []} for c in SLOWDOWN}
    for variant in ("control", "v2"):
        for i in range(300):
            unit, country = f"{variant}-{i}", ("DE", "FR", None)[i % 3]
            at = NOW - timedelta(days=3, minutes=int(rng.integers(0, 600)))
            exposures.append({"unit_id": unit, "variant": variant, "exposed_at": at, "allocation_version": 1,
                              "attributes": {} if country is None else {"country": country}, "source": "server"})
            level = rng.normal(0.0, 0.3)
            for _ in range(int(rng.poisson(5))):
                value = float(np.exp(np.log(100.0) + level + rng.normal(0.0, 0.4))) * (
                    SLOWDOWN[country] if variant == "v2" else 1.0)
                events.append({"event_id": f"ev-{len(events)}", "unit_id": unit, "name": "serving.latency_ms",
                               "value": value, "timestamp": at + timedelta(hours=float(rng.uniform(0, 24))),
                               "attributes": {}, "received_at": NOW})
                raw[country][variant][0].append(unit)
                raw[country][variant][1].append(value)
            purchases = [float(v) for v in rng.exponential(30.0, int(rng.poisson(2)))]
            events += [{"event_id": f"ev-{len(events) + k}", "unit_id": unit, "name": "purchase", "value": v,
                        "timestamp": at + timedelta(hours=2 + k), "attributes": {}, "received_at": NOW}
                       for k, v in enumerate(purchases)]
            spend[country][variant].append(sum(purchases))
    with db.engine.begin() as conn:
        exp_id = conn.scalar(select(Experiment.id).where(Experiment.key == "ranker-v2"))
        conn.execute(insert(Exposure), [{**x, "experiment_id": exp_id} for x in exposures])
        conn.execute(insert(Event), events)
    return raw, spend


@pytest.mark.parametrize("live", [True, False])
def test_segments_carry_each_values_quantile_estimate(client: TestClient, keys: Keys, db: Database,
                                                      live: bool) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    for metric in (P95, P50_SPEND):
        assert client.post("/v1/metrics", json=metric, headers=admin).status_code == 201
    create_experiment(client, admin, start=True, metrics={
        "primary": "conversion", "secondary": ["p50_spend"], "guardrails": [{"metric": "p95_latency", "margin": 0.05}]})
    raw, spend = _seed(db)
    params: dict[str, str] = {"segment": "country"}
    if live:
        params["as_of"] = (utc_now() + timedelta(seconds=-1)).isoformat()
    response = client.get("/v1/experiments/ranker-v2/scorecard", params=params, headers=keys.headers("analyst"))
    assert response.status_code == 200, response.text
    rows = {row["value"]: row for row in response.json()["segments"]}
    assert set(rows) == {"DE", "FR", None}
    for country, row in rows.items():
        metrics = {m["metric"]: m for m in row["metrics"]}
        assert {"conversion", "p95_latency", "p50_spend"} <= set(metrics)
        got = metrics["p95_latency"]["variants"][0]
        c, t = (histogram_from_events(*raw[country][v]) for v in ("control", "v2"))
        ref = compare_quantiles(c, t, 0.95, 0.05, direction="lower_is_better")
        assert (got["n"], got["control_n"]) == (t.units, c.units)
        assert got["mean"] == pytest.approx(ref.treatment_mean, rel=1e-9)
        assert got["control_mean"] == pytest.approx(ref.control_mean, rel=1e-9)
        assert got["abs_ci"] == pytest.approx(list(ref.abs_ci), rel=1e-9)
        assert got["rel_ci"] == pytest.approx(list(ref.rel_ci), rel=1e-9)
        assert got["p_value"] == pytest.approx(ref.p_value, rel=1e-6, abs=1e-12)
        assert got["p_value_adjusted"] is not None
        units = metrics["p50_spend"]["variants"][0]
        cu, tu = (histogram_from_events(np.arange(100), np.asarray(spend[country][v])) for v in ("control", "v2"))
        ref_u = compare_quantiles(cu, tu, 0.5, 0.05, direction="higher_is_better")
        assert (units["n"], units["control_n"]) == (100, 100)
        assert units["mean"] == pytest.approx(ref_u.treatment_mean, rel=1e-9)
        assert units["abs_ci"] == pytest.approx(list(ref_u.abs_ci), rel=1e-9)
    de = {m["metric"]: m for m in rows["DE"]["metrics"]}["p95_latency"]["variants"][0]
    assert de["rel_lift"] > 0.3  # the planted +50 % in DE
    assert de["p_value"] < 0.001
