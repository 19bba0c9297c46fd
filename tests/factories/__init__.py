"""Factories for test data sent through the REST API."""

from __future__ import annotations

import copy
from typing import Any

from fastapi.testclient import TestClient

METRICS: dict[str, dict[str, Any]] = {
    "conversion": {"key": "conversion", "kind": "proportion", "event": "purchase", "aggregation": "any",
                   "direction": "higher_is_better"},
    "revenue": {"key": "revenue", "kind": "mean", "event": "purchase", "aggregation": "sum",
                "direction": "higher_is_better", "winsorize": 1000},
    "latency": {"key": "latency", "kind": "ratio", "numerator": {"event": "serving.latency_ms", "aggregation": "sum"},
                "denominator": {"event": "serving.request", "aggregation": "count"},
                "direction": "lower_is_better"},
}


def experiment_body(key: str = "ranker-v2", **overrides: Any) -> dict[str, Any]:
    """The DESIGN.md example experiment, with overrides (variants carry no model: a ``model`` must be registered
    with ``POST /v1/models`` first, see ``register_model``)."""
    body: dict[str, Any] = {
        "key": key, "name": "Ranker v2", "owner": "ana",
        "hypothesis": {"change": "serve ranker v2", "metric": "conversion", "direction": "increase",
                       "rationale": "fresher features"},
        "type": "ab",
        "allocation": {"strategy": "fixed"},
        "variants": [{"key": "control", "control": True, "weight": 0.5, "model": None, "payload": {}},
                     {"key": "v2", "weight": 0.5, "model": None, "payload": {"threshold": 0.4}}],
        "metrics": {"primary": "conversion", "secondary": ["revenue"],
                    "guardrails": [{"metric": "latency", "margin": 0.05}]},
        "design": {"alpha": 0.05, "power": 0.8, "mde": 0.05, "sequential": False, "cuped": False},
        "targeting": [],
        "traffic": 1.0, "layer": None,
    }
    body.update(copy.deepcopy(overrides))
    return body


def create_metrics(client: TestClient, headers: dict[str, str]) -> None:
    """Register the three DESIGN.md metrics."""
    for metric in METRICS.values():
        response = client.post("/v1/metrics", json=metric, headers=headers)
        assert response.status_code == 201, response.text


def create_experiment(client: TestClient, headers: dict[str, str], start: bool = False,
                      admin_headers: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """Create (and optionally start) an experiment; metrics must exist."""
    response = client.post("/v1/experiments", json=experiment_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    if start:
        response = client.post(f"/v1/experiments/{response.json()['key']}/start", headers=admin_headers or headers)
        assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def register_model(client: TestClient, headers: dict[str, str], key: str, path: str, task: str = "text-classification",
                   **fields: Any) -> dict[str, Any]:
    """Register a model spec (a CPU float32 spec unless ``fields`` say otherwise)."""
    body = {"key": key, "task": task, "path": path, "dtype": "float32", "device": "cpu", **fields}
    response = client.post("/v1/models", json=body, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result
