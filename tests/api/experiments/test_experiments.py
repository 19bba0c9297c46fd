"""Registry, validation, lifecycle, frozen plan and audit through the REST API (both databases)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Keys
from tests.factories import METRICS, create_experiment, create_metrics, experiment_body


def test_create_and_get_the_design_example(client: TestClient, keys: Keys) -> None:
    create_metrics(client, keys.headers("analyst"))
    created = create_experiment(client, keys.headers("analyst"))
    assert created["status"] == "draft"
    assert created["hypothesis_text"] == (
        "If we serve ranker v2, then conversion will increase because fresher features.")
    fetched = client.get("/v1/experiments/ranker-v2", headers=keys.headers("analyst")).json()
    assert fetched["variants"][1]["payload"] == {"threshold": 0.4}
    assert fetched["metrics"] == {"primary": "conversion", "secondary": ["revenue"],
                                  "guardrails": [{"metric": "latency", "margin": 0.05}]}
    listed = client.get("/v1/experiments", headers=keys.headers("analyst")).json()
    assert [e["key"] for e in listed] == ["ranker-v2"]


def _error_locations(response: object) -> list[list[object]]:
    return [e["loc"] for e in response.json()["detail"]]  # type: ignore[attr-defined]


def test_validation_errors_name_the_field(client: TestClient, keys: Keys) -> None:
    headers = keys.headers("analyst")
    create_metrics(client, headers)
    cases = {
        "weights": experiment_body(variants=[{"key": "control", "control": True, "weight": 0.6},
                                             {"key": "v2", "weight": 0.5}]),
        "two controls": experiment_body(variants=[{"key": "a", "control": True, "weight": 0.5},
                                                  {"key": "b", "control": True, "weight": 0.5}]),
        "bad op": experiment_body(targeting=[{"attribute": "country", "op": "like", "values": ["US"]}]),
        "traffic": experiment_body(traffic=1.5),
        "alpha": experiment_body(design={"alpha": 0.0}),
    }
    for name, body in cases.items():
        response = client.post("/v1/experiments", json=body, headers=headers)
        assert response.status_code == 422, (name, response.text)
    response = client.post("/v1/experiments", json=experiment_body(traffic=1.5), headers=headers)
    assert ["body", "traffic"] in _error_locations(response)
    unknown = experiment_body(metrics={"primary": "conversion", "secondary": ["nope"]})
    response = client.post("/v1/experiments", json=unknown, headers=headers)
    assert response.status_code == 422
    assert _error_locations(response) == [["body", "metrics", "secondary", 0]]
    assert "nope" in response.text


def test_metric_validation(client: TestClient, keys: Keys) -> None:
    headers = keys.headers("analyst")
    bad = {"key": "r", "kind": "ratio", "event": "x", "direction": "higher_is_better"}
    assert client.post("/v1/metrics", json=bad, headers=headers).status_code == 422
    assert client.post("/v1/metrics", json=METRICS["conversion"], headers=headers).status_code == 201
    assert client.post("/v1/metrics", json=METRICS["conversion"], headers=headers).status_code == 409
    assert client.get("/v1/metrics/nope", headers=headers).status_code == 404


def test_lifecycle_and_invalid_transitions(client: TestClient, keys: Keys) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    create_experiment(client, admin)
    paused = client.post("/v1/experiments/ranker-v2/pause", headers=admin)
    assert paused.status_code == 409
    assert "'draft'" in paused.json()["detail"]
    assert client.post("/v1/experiments/ranker-v2/start", headers=admin).json()["status"] == "running"
    assert client.post("/v1/experiments/ranker-v2/pause", headers=admin).json()["status"] == "paused"
    assert client.post("/v1/experiments/ranker-v2/resume", headers=admin).json()["status"] == "running"
    # No data yet: the decision is keep_running, so shipping is refused (409 with the reasons) ...
    refused = client.post("/v1/experiments/ranker-v2/ship", json={"variant": "v2"}, headers=admin)
    assert refused.status_code == 409
    assert refused.json()["detail"]["decision"] == "keep_running"
    assert refused.json()["detail"]["reasons"]
    # ... unless an admin overrides, which is audited.
    shipped = client.post("/v1/experiments/ranker-v2/ship", json={"variant": "v2", "override_reason": "launch day"},
                          headers=admin).json()
    assert shipped["status"] == "shipped"
    assert shipped["shipped_variant"] == "v2"
    again = client.post("/v1/experiments/ranker-v2/start", headers=admin)
    assert again.status_code == 409
    assert "'shipped'" in again.json()["detail"]
    actions = [row["action"] for row in client.get("/v1/experiments/ranker-v2/audit", headers=admin).json()]
    assert actions == ["experiment.create", "experiment.start", "experiment.pause", "experiment.resume",
                       "experiment.ship"]
    audit = client.get("/v1/experiments/ranker-v2/audit", headers=admin).json()
    assert audit[-1]["reason"] == "launch day"


def test_rollback_sends_everyone_to_control(client: TestClient, keys: Keys) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True)
    assert client.post("/v1/experiments/ranker-v2/rollback", json={}, headers=admin).status_code == 422
    response = client.post("/v1/experiments/ranker-v2/rollback", json={"reason": "latency"}, headers=admin)
    assert response.json()["status"] == "rolled_back"
    for unit in range(50):
        body = {"unit_id": f"u{unit}", "experiments": ["ranker-v2"]}
        got = client.post("/v1/assign", json=body, headers=keys.headers("sdk")).json()
        assert got["assignments"]["ranker-v2"]["variant"] == "control"
    audit = client.get("/v1/experiments/ranker-v2/audit", headers=admin).json()
    assert audit[-1]["reason"] == "latency"
    assert audit[-1]["before"]["status"] == "running"
    assert audit[-1]["after"]["status"] == "rolled_back"


def test_start_freezes_and_fingerprints_the_plan(client: TestClient, keys: Keys) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    draft = create_experiment(client, admin)
    assert draft["plan_fingerprint"] is None
    edited = client.patch("/v1/experiments/ranker-v2", json={"design": {"mde": 0.1}}, headers=admin)
    assert edited.status_code == 200
    assert edited.json()["design"]["mde"] == 0.1
    started = client.post("/v1/experiments/ranker-v2/start", headers=admin).json()
    assert len(started["plan_fingerprint"]) == 64
    for frozen in ({"design": {"mde": 0.2}}, {"salt": "other"},
                   {"metrics": {"primary": "conversion"}},
                   {"variants": [{"key": "control", "control": True, "weight": 1.0}, {"key": "v2", "weight": 0.0}]}):
        response = client.patch("/v1/experiments/ranker-v2", json=frozen, headers=admin)
        assert response.status_code == 409, frozen
        assert "running" in response.json()["detail"]
    ok = client.patch("/v1/experiments/ranker-v2", json={"traffic": 0.5, "owner": "bo"}, headers=admin)
    assert ok.status_code == 200
    after = client.get("/v1/experiments/ranker-v2", headers=admin).json()
    assert after["plan_fingerprint"] == started["plan_fingerprint"]
    assert after["traffic"] == 0.5


def test_fingerprint_depends_on_the_plan(client: TestClient, keys: Keys) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    first = create_experiment(client, admin, start=True, key="a", salt="same")
    second = create_experiment(client, admin, start=True, key="b", salt="same")
    third = create_experiment(client, admin, start=True, key="c", salt="same", design={"mde": 0.07})
    assert first["plan_fingerprint"] == second["plan_fingerprint"]
    assert first["plan_fingerprint"] != third["plan_fingerprint"]


def test_layers_claim_disjoint_ranges_and_refuse_when_full(client: TestClient, keys: Keys) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    a = create_experiment(client, admin, start=True, key="a", layer="search", traffic=0.6)
    b = create_experiment(client, admin, start=True, key="b", layer="search", traffic=0.4)
    assert a["layer_range"] == [0, 6000]
    assert b["layer_range"] == [6000, 10000]
    create_experiment(client, admin, key="c", layer="search", traffic=0.1)
    full = client.post("/v1/experiments/c/start", headers=admin)
    assert full.status_code == 409
    assert "layer 'search'" in full.json()["detail"]
    assert client.patch("/v1/experiments/a", json={"traffic": 0.7}, headers=admin).status_code == 409
    client.post("/v1/experiments/b/stop", headers=admin)
    assert client.post("/v1/experiments/c/start", headers=admin).json()["layer_range"] == [6000, 7000]


def test_ramp_starts_at_its_first_step(client: TestClient, keys: Keys) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    ramp = {"strategy": "ramp", "steps": [{"fraction": 0.05, "min_units": 100}, {"fraction": 1.0}]}
    started = create_experiment(client, admin, start=True, type="rollout", allocation=ramp)
    weights = {v["key"]: v["current_weight"] for v in started["variants"]}
    assert weights == {"control": 0.95, "v2": 0.05}
    history = client.get("/v1/experiments/ranker-v2/allocations", headers=admin).json()
    assert [h["version"] for h in history] == [1]
    bad = experiment_body(key="r2", allocation={"strategy": "ramp", "steps": [{"fraction": 0.5}, {"fraction": 0.2}]})
    assert client.post("/v1/experiments", json=bad, headers=admin).status_code == 422
