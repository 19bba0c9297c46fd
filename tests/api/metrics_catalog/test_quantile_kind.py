"""``kind: "quantile"`` in the metrics catalog (both databases): stored with its ``quantile``, refused (422 naming
the field) when the quantile is missing, out of (0, 1), or given for another kind; frozen in the plan, whose
document carries ``quantile`` for quantile metrics only (old plans' fingerprints are unchanged)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.db.engine import Database
from api.db.tables import Experiment
from scorecards.plan import MetricDefinition, Plan, plan_fingerprint
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics, experiment_body

P95 = {"key": "p95_latency", "kind": "quantile", "event": "serving.latency_ms", "quantile": 0.95,
       "direction": "lower_is_better"}


def test_a_quantile_metric_is_stored_and_read_back(client: TestClient, keys: Keys) -> None:
    analyst = keys.headers("analyst")
    created = client.post("/v1/metrics", json=P95, headers=analyst)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["kind"], body["quantile"], body["event"], body["aggregation"]) == ("quantile", 0.95,
                                                                                  "serving.latency_ms", None)
    assert client.get("/v1/metrics/p95_latency", headers=analyst).json()["quantile"] == 0.95
    other = client.post("/v1/metrics", json={"key": "clicks", "kind": "mean", "event": "click"}, headers=analyst)
    assert other.status_code == 201, other.text
    assert other.json()["quantile"] is None


@pytest.mark.parametrize(("change", "needle"), [
    ({"quantile": None}, "quantile"),
    ({"quantile": 0}, "quantile"),
    ({"quantile": 1}, "quantile"),
    ({"quantile": 1.5}, "quantile"),
    ({"quantile": "nan"}, "quantile"),
    ({"event": None}, "event"),
    ({"aggregation": "sum"}, "aggregation"),
    ({"winsorize": 100}, "winsorize"),
    ({"kind": "mean", "aggregation": "sum"}, "quantile"),
    ({"kind": "proportion"}, "quantile"),
])
def test_a_bad_quantile_metric_is_refused_naming_the_field(client: TestClient, keys: Keys, change: dict[str, Any],
                                                            needle: str) -> None:
    response = client.post("/v1/metrics", json={**P95, **change}, headers=keys.headers("analyst"))
    assert response.status_code == 422, response.text
    assert needle in response.text


def test_the_plan_freezes_the_quantile(client: TestClient, keys: Keys, db: Database) -> None:
    analyst = keys.headers("analyst")
    create_metrics(client, analyst)
    assert client.post("/v1/metrics", json=P95, headers=analyst).status_code == 201
    started = create_experiment(client, analyst, start=True, admin_headers=keys.headers("admin"),
                                metrics={"primary": "conversion", "secondary": [],
                                         "guardrails": [{"metric": "p95_latency", "margin": 0.05}]})
    with db.engine.connect() as conn:
        document = conn.scalar(select(Experiment.plan).where(Experiment.key == started["key"]))
    assert document is not None
    guard = document["metrics"]["guardrails"][0]
    assert (guard["key"], guard["kind"], guard["quantile"], guard["margin"]) == ("p95_latency", "quantile", 0.95, 0.05)
    assert "quantile" not in document["metrics"]["primary"][0]
    assert plan_fingerprint(document) == started["plan_fingerprint"]
    parsed = Plan.from_document(document)
    assert parsed.to_document() == document
    assert parsed.by_role("guardrail")[0].definition.quantile_spec().quantile == 0.95


def test_other_kinds_keep_their_nine_plan_fields() -> None:
    """A plan without quantile metrics is written exactly as before (the stored fingerprints in
    ``tests/scorecards/test_plan.py`` are checked against it too)."""
    d = MetricDefinition("conversion", "proportion", event="purchase", aggregation="any")
    assert "quantile" not in d.to_document()
    assert len(d.to_document()) == 9
    q = MetricDefinition("p95", "quantile", direction="lower_is_better", event="serving.latency_ms", quantile=0.95)
    assert q.to_document()["quantile"] == 0.95
    with pytest.raises(ValueError, match="quantile"):
        q.spec()
    with pytest.raises(ValueError, match="quantile"):
        _ = q.sum_kind


def test_a_bandit_cannot_optimise_a_quantile(client: TestClient, keys: Keys) -> None:
    analyst = keys.headers("analyst")
    create_metrics(client, analyst)
    assert client.post("/v1/metrics", json=P95, headers=analyst).status_code == 201
    body = experiment_body(
        hypothesis={"change": "c", "metric": "p95_latency", "direction": "decrease", "rationale": "r"},
        allocation={"strategy": "thompson"}, metrics={"primary": "p95_latency"})
    refused = client.post("/v1/experiments", json=body, headers=analyst)
    assert refused.status_code == 422, refused.text
    assert "primary" in refused.text
    assert "quantile" in refused.text
    fixed = client.post("/v1/experiments", json={**body, "allocation": {"strategy": "fixed"}}, headers=analyst)
    assert fixed.status_code == 201, fixed.text
    patched = client.patch("/v1/experiments/ranker-v2", json={"allocation": {"strategy": "thompson"}},
                           headers=analyst)
    assert patched.status_code == 422, patched.text
