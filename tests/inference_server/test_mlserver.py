"""Remote model variants on a real inference server (MLServer on loopback, ``conftest.py``), on both databases:
routing by assignment, outputs equal to the local variant's for the same model, a slow remote candidate rolled
back by the ramp's latency guardrail, a dead endpoint giving 503 + ``serving.error`` behind an open breaker, and a
remote shadow that never delays the served call."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.db.engine import Database
from api.db.tables import Event, Exposure, Prediction
from api.settings import Settings
from models.shipped import shipped_minilm_spec
from models.variants import ModelVariant, load_variant
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics
from tests.inference_server.conftest import MODELS, MLServer
from tests.inference_server.harness import Remote, TcpProxy

TEXTS = ["a cat sat on the mat", "the movie was great", "how do I reset my password?"]
AB = [{"key": "control", "control": True, "weight": 0.5, "model": "minilm-remote"},
      {"key": "v2", "weight": 0.5, "model": "minilm-slow-remote"}]


@pytest.fixture(scope="session")
def local_minilm() -> ModelVariant:
    """The same shipped MiniLM as a local variant in this process: the reference outputs."""
    return load_variant(shipped_minilm_spec(device="cpu"))


@pytest.fixture
def served(db: Database, keys: Keys, settings: Settings, mlserver: MLServer) -> Iterator[Remote]:
    app = create_app(settings.model_copy(update={"serving_retain_seconds": 3600.0,
                                                  "serving_remote_breaker_failures": 2,
                                                  "serving_remote_breaker_reset_seconds": 3600.0}))
    with TestClient(app) as client:
        create_metrics(client, keys.headers("admin"))
        remote = Remote(client, keys, db, mlserver.url)
        for name in MODELS:
            response = remote.register(f"{name}-remote", name, timeout_ms=5000)
            assert response.status_code == 201, response.text
        yield remote


def test_routing_by_assignment_with_outputs_equal_to_the_local_variant(served: Remote,
                                                                      local_minilm: ModelVariant) -> None:
    create_experiment(served.client, served.admin, start=True, variants=AB)
    seen = set()
    for i in range(12):
        unit = f"u-{i}"
        texts = [f"{t} ({unit})" for t in TEXTS]
        response = served.predict(unit, texts)
        assert response.status_code == 200, response.text
        body = response.json()
        variant = served.variant_of(unit)
        assert (body["variant"], body["model"]) == (variant, {"control": "minilm-remote",
                                                              "v2": "minilm-slow-remote"}[variant])
        seen.add(variant)
        # the same weights, code, torch and transformers in MLServer's process: equal to float tolerance
        np.testing.assert_allclose(np.array(body["outputs"]), np.array(local_minilm.predict_batch(texts)),
                                   atol=1e-5)
    assert seen == {"control", "v2"}
    served.settle()
    assert served.count(Event, Event.name == "serving.request") == 12
    assert served.count(Exposure) == 12


def test_a_slow_remote_candidate_is_rolled_back_by_the_ramp_latency_guardrail(served: Remote) -> None:
    ramp = {"strategy": "ramp", "steps": [{"fraction": 0.5, "min_units": 100}, {"fraction": 1.0, "min_units": 100}]}
    create_experiment(served.client, served.admin, start=True, type="rollout", allocation=ramp, variants=AB,
                      metrics={"primary": "conversion", "secondary": [],
                               "guardrails": [{"metric": "latency", "margin": 0.05}]})
    variants = []
    for i in range(60):
        response = served.predict(f"r-{i}", TEXTS[:1])
        assert response.status_code == 200, response.text
        variants.append(response.json()["variant"])
    assert variants.count("v2") >= 5, variants
    served.settle()
    step = served.client.post("/v1/experiments/ranker-v2/allocations/recompute", headers=served.admin)
    assert step.status_code == 200, step.text
    card = served.client.get("/v1/experiments/ranker-v2/scorecard", headers=served.admin).json()
    latency = next(m for m in card["metrics"] if m["metric"] == "latency")
    assert step.json()["action"] == "rolled_back", (step.json(), latency)
    assert "latency" in str(step.json()["reasons"])
    experiment = served.client.get("/v1/experiments/ranker-v2", headers=served.admin).json()
    assert experiment["status"] == "rolled_back"
    app: Any = served.client.app
    deadline = time.monotonic() + 10  # the snapshot refreshes within config_refresh_seconds
    while app.state.snapshots.current.experiments["ranker-v2"].status != "rolled_back":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for i in range(10):
        body = served.predict(f"after-{i}", TEXTS[:1]).json()
        assert (body["variant"], body["model"]) == ("control", "minilm-remote")


def test_a_dead_endpoint_gives_503_and_serving_error_fast_behind_the_breaker(served: Remote,
                                                                            mlserver: MLServer) -> None:
    port = int(mlserver.url.rsplit(":", 1)[1])
    proxy = TcpProxy(port)
    try:
        response = served.client.post("/v1/models", headers=served.admin, json={
            "key": "minilm-proxied", "task": "embedding",
            "endpoint": {"url": proxy.url, "protocol": "v2", "model": "minilm", "timeout_ms": 5000}})
        assert response.status_code == 201, response.text
        create_experiment(served.client, served.admin, start=True, variants=[
            {**AB[0], "weight": 1.0, "model": "minilm-proxied"}, {**AB[1], "weight": 0.0, "model": None}])
        assert served.predict("u-0", TEXTS).status_code == 200
    finally:
        proxy.stop()  # the endpoint dies
    details = []
    for i in range(1, 6):
        response = served.predict(f"u-{i}", TEXTS)
        assert response.status_code == 503, response.text
        details.append(response.json()["detail"])
    assert all(d.startswith("model 'minilm-proxied' failed: ") and proxy.url in d for d in details), details
    assert "circuit breaker open" in details[-1], details
    app: Any = served.client.app
    state = app.state.model_manager.variant("minilm-proxied").endpoint_state
    attempts = state.attempts
    assert served.predict("u-9", TEXTS).status_code == 503
    assert state.attempts == attempts  # open: no request leaves
    served.settle()
    assert served.count(Event, Event.name == "serving.error") == 6
    assert served.count(Event, Event.name == "serving.request") == 7


def test_a_remote_shadow_never_delays_responses(served: Remote) -> None:
    delay_s = MODELS["minilm-shadow"] / 1000
    create_experiment(served.client, served.admin, start=True, variants=[
        {"key": "control", "control": True, "weight": 1.0, "model": "minilm-remote"},
        {"key": "shadow", "weight": 0.0, "model": "minilm-shadow-remote", "shadow": True}])
    assert served.predict("warm", TEXTS).status_code == 200
    served.settle()
    timings = []
    for i in range(6):
        started = time.perf_counter()
        response = served.predict(f"u-{i}", TEXTS)
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200
        assert response.json()["model"] == "minilm-remote"
    # had the calls waited for their shadow, each would take at least 500 ms. why the median, not the slowest:
    # one call of six took 1.2 s on a loaded machine (a fresh-clone run) with nothing waiting on the shadow
    assert statistics.median(timings) < delay_s, timings
    served.settle()
    assert served.count(Prediction, Prediction.shadow.is_(True), Prediction.error.is_(None)) == 7
    report = served.client.get("/v1/experiments/ranker-v2/serving", headers=served.admin).json()
    shadow = next(v for v in report["variants"] if v["variant"] == "shadow")
    assert shadow["agreement_vs_control"]["mean"] == pytest.approx(1.0, abs=1e-5)  # the same model
    assert shadow["latency"]["p50_ms"] >= delay_s * 1000
