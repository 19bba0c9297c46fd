"""Model serving through the service (both databases): the model registry, predictions routed by assignment,
serving events, failures, shadow runs, unloading, and the /serving monitoring report.

Models are tiny random BERTs written once per session; ``InjectingLoader`` is the seam (``create_app(...,
model_loader=...)``) through which a test makes a model slow or failing.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from api.app import create_app
from api.db.engine import Database
from api.db.tables import AuditEntry, Event, Experiment, Exposure, Prediction, utc_now
from api.settings import Settings
from bandits.bucketing import assign
from models.monitoring import label_agreement_rate, latency_percentiles, mean_cosine_similarity
from models.spec import ModelSpec
from models.variants import ModelVariant, load_variant
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics, experiment_body, register_model
from tests.factories.models import FailingVariant, SlowVariant, make_tiny_bert, tiny_spec

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TASKS = {"cls-a": "text-classification", "cls-b": "text-classification", "emb-a": "embedding", "emb-b": "embedding"}
AB = [{"key": "control", "control": True, "weight": 0.5, "model": "cls-a"},
      {"key": "v2", "weight": 0.5, "model": "cls-b"}]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two classifiers (same labels, different weights) and two embedders, on disk once per session."""
    root = tmp_path_factory.mktemp("serving-models")
    return {key: make_tiny_bert(root / key, task, seed=seed)  # type: ignore[arg-type]
            for seed, (key, task) in enumerate(TASKS.items())}


@pytest.fixture(scope="session")
def direct(tiny_models: dict[str, Path]) -> Callable[[str, list[str]], list[Any]]:
    """Call a model directly (no service, no batching with others): the reference outputs."""
    loaded: dict[str, ModelVariant] = {}

    def _predict(key: str, texts: list[str]) -> list[Any]:
        if key not in loaded:
            loaded[key] = load_variant(tiny_spec(tiny_models[key], TASKS[key], key=key))  # type: ignore[arg-type]
        return loaded[key].predict_batch(texts)

    return _predict


class InjectingLoader:
    """``load_variant`` plus per-key wrappers (slow, failing); counts loads."""

    def __init__(self) -> None:
        self.wrappers: dict[str, Callable[[ModelVariant], ModelVariant]] = {}
        self.loads: list[str] = []

    def __call__(self, spec: ModelSpec) -> ModelVariant:
        self.loads.append(spec.key)
        variant = load_variant(spec)
        wrap = self.wrappers.get(spec.key)
        return wrap(variant) if wrap is not None else variant


@dataclass
class Serving:
    client: TestClient
    keys: Keys
    db: Database
    loader: InjectingLoader
    paths: dict[str, Path]

    @property
    def sdk(self) -> dict[str, str]:
        return self.keys.headers("sdk")

    @property
    def admin(self) -> dict[str, str]:
        return self.keys.headers("admin")

    def register(self, *keys: str) -> None:
        for key in keys:
            register_model(self.client, self.admin, key, str(self.paths[key]), TASKS[key])

    def predict(self, unit: str, inputs: list[str], experiment: str = "ranker-v2", **extra: Any) -> Any:
        return self.client.post(f"/v1/experiments/{experiment}/predict",
                                json={"unit_id": unit, "inputs": inputs, **extra}, headers=self.sdk)

    def settle(self) -> None:
        """Wait for shadow runs, then write every queued serving record and exposure."""
        app: Any = self.client.app
        self.client.portal.call(app.state.serving.wait_for_shadows)  # type: ignore[union-attr]
        app.state.serving.recorder.flush()
        app.state.exposure_writer.flush()

    def count(self, table: type, *where: Any) -> int:
        with self.db.read() as session:
            return int(session.scalar(select(func.count()).select_from(table).where(*where)) or 0)


@pytest.fixture
def serving(db: Database, keys: Keys, settings: Settings, tiny_models: dict[str, Path]) -> Iterator[Serving]:
    loader = InjectingLoader()
    app = create_app(settings.model_copy(update={"serving_retain_seconds": 3600.0}), model_loader=loader)
    with TestClient(app) as client:
        create_metrics(client, keys.headers("admin"))
        yield Serving(client, keys, db, loader, tiny_models)


def _texts(unit: str, n: int = 2) -> list[str]:
    return [f"the {unit} movie {i} was good" if i % 2 else f"a cat sat on mat {unit} {i}" for i in range(n)]


def _assert_outputs_equal(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        if isinstance(w, dict):
            assert g["label"] == w["label"]
            assert g["score"] == pytest.approx(w["score"], abs=1e-5)
        else:
            np.testing.assert_allclose(g, w, atol=1e-5)


# --- registry ------------------------------------------------------------------------------------------------


def test_register_list_get_conflict_and_audit(serving: Serving) -> None:
    client, admin = serving.client, serving.admin
    body = {"key": "cls-a", "task": "text-classification", "path": str(serving.paths["cls-a"]), "dtype": "float32",
            "device": "cpu", "max_batch": 16, "max_length": 64}
    created = client.post("/v1/models", json=body, headers=serving.keys.headers("analyst"))
    assert created.status_code == 201, created.text
    assert {k: created.json()[k] for k in body} == body
    assert created.json()["pooling"] == "mean"
    assert created.json()["loaded"] is False
    assert client.post("/v1/models", json=body, headers=admin).status_code == 409
    assert client.post("/v1/models", json=body, headers=serving.sdk).status_code == 403
    assert [m["key"] for m in client.get("/v1/models", headers=admin).json()] == ["cls-a"]
    assert client.get("/v1/models/cls-a", headers=admin).json()["path"] == body["path"]
    assert client.get("/v1/models/nope", headers=admin).status_code == 404
    with serving.db.read() as session:
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "model.create")).one()
        assert audit.after is not None
        assert audit.after["key"] == "cls-a"


def test_registration_refuses_missing_or_broken_model_dirs_naming_the_field(serving: Serving, tmp_path: Path) -> None:
    client, admin = serving.client, serving.admin

    def loc_of(**fields: Any) -> list[Any]:
        body = {"key": "m", "task": "text-classification", "path": str(serving.paths["cls-a"]), "device": "cpu",
                **fields}
        response = client.post("/v1/models", json=body, headers=admin)
        assert response.status_code == 422, response.text
        return list(response.json()["detail"][0]["loc"])

    assert loc_of(path=str(tmp_path / "missing")) == ["body", "path"]
    broken = tmp_path / "broken"
    shutil.copytree(serving.paths["cls-a"], broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    assert loc_of(path=str(broken)) == ["body", "path"]
    no_config = tmp_path / "no-config"
    shutil.copytree(serving.paths["cls-a"], no_config)
    (no_config / "config.json").unlink()
    assert loc_of(path=str(no_config)) == ["body", "path"]
    assert loc_of(path=str(serving.paths["emb-a"])) == ["body", "task"]  # no classification head
    assert loc_of(max_length=100_000) == ["body", "max_length"]
    assert loc_of(dtype="int8") == ["body", "dtype"]
    assert loc_of(surprise=1) == ["body", "surprise"]
    assert client.get("/v1/models", headers=admin).json() == []


def test_variant_models_must_be_registered_and_share_a_task(serving: Serving) -> None:
    client, admin = serving.client, serving.admin
    serving.register("cls-a", "emb-a")
    response = client.post("/v1/experiments", json=_body(AB), headers=admin)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "variants", 1, "model"]
    assert "POST /v1/models" in response.json()["detail"][0]["msg"]
    mixed = [{**AB[0]}, {**AB[1], "model": "emb-a"}]
    response = client.post("/v1/experiments", json=_body(mixed), headers=admin)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "variants", 1, "model"]
    create_experiment(client, admin, variants=[{**AB[0]}, {**AB[1], "model": None}])
    patched = client.patch("/v1/experiments/ranker-v2", json={"variants": AB}, headers=admin)
    assert patched.status_code == 422
    assert patched.json()["detail"][0]["loc"] == ["body", "variants", 1, "model"]


def _body(variants: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    return experiment_body(variants=variants, **overrides)


# --- prediction ------------------------------------------------------------------------------------------------


def test_predict_serves_the_assigned_variants_model_and_logs_exposure_and_events(
    serving: Serving, direct: Callable[[str, list[str]], list[Any]]
) -> None:
    serving.register("cls-a", "cls-b")
    create_experiment(serving.client, serving.admin, start=True, variants=AB)
    models = {"control": "cls-a", "v2": "cls-b"}
    seen: dict[str, int] = {}
    latencies = {}
    for i in range(16):
        unit, inputs = f"u-{i}", _texts(f"u{i}", 1 + i % 3)
        response = serving.predict(unit, inputs)
        assert response.status_code == 200, response.text
        got = response.json()
        assigned = serving.client.post("/v1/assign", json={"unit_id": unit, "experiments": ["ranker-v2"]},
                                       headers=serving.sdk).json()["assignments"]["ranker-v2"]["variant"]
        assert got["variant"] == assigned
        assert got["model"] == models[assigned]
        _assert_outputs_equal(got["outputs"], direct(got["model"], inputs))
        assert got["latency_ms"] > 0
        seen[assigned] = seen.get(assigned, 0) + 1
        latencies[got["request_id"]] = got["latency_ms"]
    assert set(seen) == {"control", "v2"}
    serving.settle()
    assert serving.count(Exposure) == 16
    assert serving.count(Event, Event.name == "serving.request") == 16
    assert serving.count(Event, Event.name == "serving.error") == 0
    with serving.db.read() as session:
        events = session.scalars(select(Event).where(Event.name == "serving.latency_ms")).all()
        for event in events:
            request_id = event.event_id.split(":", 1)[1]
            assert event.value == pytest.approx(latencies[request_id], abs=1e-3)
            assert event.attributes["experiment"] == "ranker-v2"
        rows = session.scalars(select(Prediction)).all()
        assert len(rows) == 16
        assert all(not r.shadow and r.error is None and len(r.summary["scores"]) == r.n_inputs for r in rows)
    # Models are loaded on first use, and the registry says so.
    described = serving.client.get("/v1/models/cls-a", headers=serving.admin).json()
    assert described["loaded"] is True
    assert described["runtime"]["device"] == "cpu"


def test_predict_refusals_log_no_exposure(serving: Serving) -> None:
    client, admin = serving.client, serving.admin
    serving.register("cls-a")
    assert serving.predict("u", ["x"], experiment="nope").status_code == 404
    create_experiment(client, admin, variants=[AB[0], {**AB[1], "model": None}],
                      targeting=[{"attribute": "country", "op": "in", "values": ["US"]}])
    draft = serving.predict("u", ["x"], attributes={"country": "US"})
    assert draft.status_code == 409
    assert "'draft'" in draft.json()["detail"]
    client.post("/v1/experiments/ranker-v2/start", headers=admin)
    outside = serving.predict("u", ["x"], attributes={"country": "FR"})
    assert outside.status_code == 409
    assert "not in experiment" in outside.json()["detail"]
    units = {v: next(u for u in (f"u-{i}" for i in range(100)) if _variant_of(serving, u) == v)
             for v in ("control", "v2")}
    no_model = serving.predict(units["v2"], ["x"], attributes={"country": "US"})
    assert no_model.status_code == 409
    assert "has no model" in no_model.json()["detail"]
    too_many = serving.predict(units["control"], ["x"] * 65, attributes={"country": "US"})
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["body", "inputs"]
    assert serving.predict(units["control"], [], attributes={"country": "US"}).status_code == 422
    assert serving.predict(units["control"], ["x" * 10_001], attributes={"country": "US"}).status_code == 422
    assert client.post("/v1/experiments/ranker-v2/predict", json={"unit_id": "u", "inputs": ["x"]}).status_code == 401
    serving.settle()
    assert serving.count(Exposure) == 0
    assert serving.count(Event) == 0
    assert serving.loader.loads == []


def _variant_of(serving: Serving, unit: str) -> str:
    app: Any = serving.client.app
    result = assign(app.state.snapshots.current.experiments["ranker-v2"], unit, {"country": "US"})
    assert result is not None
    return result.variant


def test_32_concurrent_callers_get_their_own_variants_outputs(
    serving: Serving, direct: Callable[[str, list[str]], list[Any]]
) -> None:
    serving.register("cls-a", "cls-b")
    create_experiment(serving.client, serving.admin, start=True, variants=AB)
    requests = [(f"unit-{i}", _texts(f"c{i}", 1 + i % 4)) for i in range(32)]

    def call(request: tuple[str, list[str]]) -> Any:
        return serving.predict(*request)

    for _round in range(2):
        with ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(call, requests))
        for (unit, inputs), response in zip(requests, responses, strict=True):
            assert response.status_code == 200, response.text
            got = response.json()
            assert got["variant"] == _plain_variant(serving, unit)
            _assert_outputs_equal(got["outputs"], direct(got["model"], inputs))
    variants = {_plain_variant(serving, unit) for unit, _ in requests}
    assert variants == {"control", "v2"}
    app: Any = serving.client.app
    stats = [app.state.model_manager.peek(k).stats for k in ("cls-a", "cls-b")]
    assert sum(s.requests for s in stats) == 64
    assert sum(s.texts for s in stats) == 2 * sum(len(i) for _, i in requests)
    assert sum(s.batches for s in stats) < 64  # concurrent requests really shared forward passes


def _plain_variant(serving: Serving, unit: str) -> str:
    app: Any = serving.client.app
    result = assign(app.state.snapshots.current.experiments["ranker-v2"], unit, {})
    assert result is not None
    return result.variant


def test_failing_model_gives_503_and_an_error_event_while_the_other_variant_serves(serving: Serving) -> None:
    serving.loader.wrappers["cls-b"] = lambda v: FailingVariant(v.spec, message="CUDA fell over")
    serving.register("cls-a", "cls-b")
    create_experiment(serving.client, serving.admin, start=True, variants=AB)
    statuses: dict[str, list[int]] = {"control": [], "v2": []}
    for i in range(12):
        unit = f"u-{i}"
        response = serving.predict(unit, _texts(unit))
        statuses[_plain_variant(serving, unit)].append(response.status_code)
        if response.status_code == 503:
            assert response.json() == {
                "detail": "model 'cls-b' failed: forward pass failed for a batch of 2 text(s) from 1 request(s): "
                          "RuntimeError: CUDA fell over"}
    assert set(statuses["v2"]) == {503}
    assert set(statuses["control"]) == {200}
    serving.settle()
    failed = len(statuses["v2"])
    assert serving.count(Event, Event.name == "serving.error") == failed
    assert serving.count(Event, Event.name == "serving.request") == 12
    assert serving.count(Exposure) == 12  # intent to treat: a failure counts against its variant
    report = {v["variant"]: v for v in serving.client.get("/v1/experiments/ranker-v2/serving",
                                                         headers=serving.admin).json()["variants"]}
    assert report["v2"]["error_rate"] == 1.0
    assert report["v2"]["latency"] is None
    assert report["control"]["error_rate"] == 0.0


def test_a_slower_model_shows_in_the_latency_guardrail_events(serving: Serving) -> None:
    """The DESIGN.md latency metric (Σ serving.latency_ms / #serving.request per unit, joined to exposures the way
    scorecards aggregate) sees a deliberately slower variant."""
    delay = 0.06
    serving.loader.wrappers["cls-b"] = lambda v: SlowVariant(v, delay)
    serving.register("cls-a", "cls-b")
    create_experiment(serving.client, serving.admin, start=True, variants=AB)
    for i in range(12):
        assert serving.predict(f"u-{i}", ["hello world"]).status_code == 200
    serving.settle()
    with serving.db.read() as session:
        per_variant = dict(session.execute(
            select(Exposure.variant, func.sum(Event.value) / func.count())
            .join(Event, Event.unit_id == Exposure.unit_id)
            .where(Event.name == "serving.latency_ms").group_by(Exposure.variant)
        ).all())
    assert per_variant["v2"] >= delay * 1000
    assert per_variant["control"] < delay * 1000 / 2


def test_a_model_whose_directory_vanished_gives_503(serving: Serving, tmp_path: Path) -> None:
    path = tmp_path / "cls-gone"
    shutil.copytree(serving.paths["cls-a"], path)
    register_model(serving.client, serving.admin, "cls-gone", str(path))
    create_experiment(serving.client, serving.admin, start=True, variants=[{**AB[0], "model": "cls-gone"},
                                                                           {**AB[1], "model": "cls-gone"}])
    shutil.rmtree(path)
    response = serving.predict("u-1", ["hello"])
    assert response.status_code == 503
    assert response.json()["detail"].startswith("model 'cls-gone' failed: could not load: ")
    serving.settle()
    assert serving.count(Event, Event.name == "serving.error") == 1


def test_ship_rollback_stop_route_models_and_unload_unreferenced_ones(serving: Serving) -> None:
    client, admin = serving.client, serving.admin
    serving.register("cls-a", "cls-b", "emb-a", "emb-b")
    create_experiment(client, admin, start=True, variants=AB)
    create_experiment(client, admin, start=True, variants=AB, key="other")
    create_experiment(client, admin, start=True, key="emb",
                      variants=[{**AB[0], "model": "emb-a"}, {**AB[1], "model": "emb-b"}])
    units = [f"u-{i}" for i in range(12)]
    for unit in units:
        assert serving.predict(unit, ["hi"]).status_code == 200
        assert serving.predict(unit, ["hi"], experiment="emb").status_code == 200
    app: Any = client.app
    assert app.state.model_manager.loaded_keys() == ["cls-a", "cls-b", "emb-a", "emb-b"]
    shipped = client.post("/v1/experiments/ranker-v2/ship", json={"variant": "v2", "override_reason": "test"},
                          headers=admin)
    assert shipped.status_code == 200, shipped.text
    assert client.post("/v1/experiments/other/rollback", json={"reason": "too slow"}, headers=admin).status_code == 200
    for unit in units:
        shipped = serving.predict(unit, ["hi"]).json()
        assert (shipped["variant"], shipped["model"]) == ("v2", "cls-b")
        rolled_back = serving.predict(unit, ["hi"], experiment="other").json()
        assert (rolled_back["variant"], rolled_back["model"]) == ("control", "cls-a")
    assert client.portal.call(app.state.serving.retain) == []  # type: ignore[union-attr]
    assert client.post("/v1/experiments/emb/stop", headers=admin).status_code == 200
    assert client.portal.call(app.state.serving.retain) == ["emb-a", "emb-b"]  # type: ignore[union-attr]
    assert app.state.model_manager.loaded_keys() == ["cls-a", "cls-b"]
    stopped = serving.predict("u-1", ["hi"], experiment="emb")
    assert stopped.status_code == 409
    assert "'stopped'" in stopped.json()["detail"]
    assert serving.predict("u-1", ["hi"]).status_code == 200  # the shipped experiment keeps serving
    assert serving.predict("u-1", ["hi"], experiment="other").status_code == 200


# --- shadow ----------------------------------------------------------------------------------------------------


def _shadow_variants(control: str, shadow: str) -> list[dict[str, Any]]:
    return [{"key": "control", "control": True, "weight": 1.0, "model": control},
            {"key": "shadow", "weight": 0.0, "model": shadow, "shadow": True}]


def test_shadow_never_changes_the_response_adds_no_wait_and_reports_agreement(
    serving: Serving, direct: Callable[[str, list[str]], list[Any]]
) -> None:
    delay = 0.4
    serving.loader.wrappers["cls-b"] = lambda v: SlowVariant(v, delay)
    serving.register("cls-a", "cls-b")
    create_experiment(serving.client, serving.admin, start=True, variants=_shadow_variants("cls-a", "cls-b"))
    create_experiment(serving.client, serving.admin, start=True, key="plain",
                      variants=[_shadow_variants("cls-a", "cls-b")[0], {**AB[1], "weight": 0.0, "model": None}])
    inputs = {f"u-{i}": _texts(f"s{i}", 3) for i in range(10)}
    for unit, texts in inputs.items():  # warm both models up, and prime the shadow
        assert serving.predict(unit, texts, experiment="plain").status_code == 200
    serving.settle()

    def timed(unit: str, experiment: str) -> tuple[float, Any]:
        started = time.perf_counter()
        response = serving.predict(unit, inputs[unit], experiment=experiment)
        return time.perf_counter() - started, response

    with_shadow, without = [], []
    for unit, texts in inputs.items():
        plain_s, plain = timed(unit, "plain")
        shadow_s, shadowed = timed(unit, "ranker-v2")
        assert shadowed.status_code == 200
        got = shadowed.json()
        assert (got["variant"], got["model"]) == ("control", "cls-a")
        assert got["outputs"] == plain.json()["outputs"]
        _assert_outputs_equal(got["outputs"], direct("cls-a", texts))
        with_shadow.append(shadow_s)
        without.append(plain_s)
    # The shadow model sleeps 0.4 s per pass: had the caller waited for it, every call would take that long.
    assert max(with_shadow) < delay
    assert statistics.median(with_shadow) - statistics.median(without) < 0.05
    serving.settle()
    assert serving.count(Prediction, Prediction.shadow.is_(True)) == len(inputs)
    # Shadow runs are not served: no serving events for them.
    assert serving.count(Event, Event.name == "serving.request") == 3 * len(inputs)
    expected = statistics.mean(
        label_agreement_rate([o["label"] for o in direct("cls-a", t)], [o["label"] for o in direct("cls-b", t)])
        for t in inputs.values()
    )
    report = serving.client.get("/v1/experiments/ranker-v2/serving", headers=serving.admin).json()
    assert report["task"] == "text-classification"
    shadow = next(v for v in report["variants"] if v["variant"] == "shadow")
    assert shadow["shadow"] is True
    assert shadow["n"] == len(inputs)
    assert shadow["agreement_vs_control"]["measure"] == "label_agreement"
    assert shadow["agreement_vs_control"]["n"] == len(inputs)
    assert shadow["agreement_vs_control"]["mean"] == pytest.approx(expected)
    assert shadow["psi_vs_control"] is not None
    assert shadow["latency"]["p50_ms"] >= delay * 1000


def test_embedding_shadow_reports_mean_cosine_and_norms(
    serving: Serving, direct: Callable[[str, list[str]], list[Any]]
) -> None:
    serving.register("emb-a", "emb-b")
    create_experiment(serving.client, serving.admin, start=True, variants=_shadow_variants("emb-a", "emb-b"))
    inputs = {f"u-{i}": _texts(f"e{i}", 2) for i in range(6)}
    for unit, texts in inputs.items():
        response = serving.predict(unit, texts)
        assert response.status_code == 200
        _assert_outputs_equal(response.json()["outputs"], direct("emb-a", texts))
    serving.settle()
    expected = statistics.mean(mean_cosine_similarity(direct("emb-a", t), direct("emb-b", t))
                               for t in inputs.values())
    report = serving.client.get("/v1/experiments/ranker-v2/serving", headers=serving.admin).json()
    assert report["task"] == "embedding"
    control, shadow = report["variants"]
    assert control["outputs"]["norm"]["mean"] == pytest.approx(1.0, abs=1e-4)
    assert shadow["agreement_vs_control"]["measure"] == "mean_cosine"
    assert shadow["agreement_vs_control"]["mean"] == pytest.approx(expected, abs=1e-5)


# --- monitoring report -----------------------------------------------------------------------------------------


def test_serving_report_latency_drift_and_daily_series(serving: Serving) -> None:
    serving.register("cls-a", "cls-b")
    create_experiment(serving.client, serving.admin, start=True, variants=AB)
    rng = np.random.default_rng(7)
    now = utc_now()
    first = now - timedelta(days=3)
    with serving.db.read() as session:
        experiment_id = session.scalar(select(Experiment.id).where(Experiment.key == "ranker-v2"))
    rows = []

    def add(variant: str, at: Any, scores: np.ndarray, latency: float) -> None:
        rows.append({"request_id": f"r{len(rows)}", "experiment_id": experiment_id, "variant": variant,
                     "unit_id": f"u{len(rows)}", "model": "cls-a" if variant == "control" else "cls-b",
                     "latency_ms": latency, "n_inputs": len(scores), "error": None,
                     "summary": {"labels": ["positive"] * len(scores), "scores": scores.round(6).tolist()},
                     "shadow": False, "agreement": None, "created_at": at})

    latencies = rng.uniform(5, 50, 200)
    for i in range(100):  # v2's first day: scores around 0.55; later: around 0.95
        add("v2", first + timedelta(minutes=i), rng.uniform(0.5, 0.6, 4), float(latencies[i]))
        add("v2", now - timedelta(minutes=i), rng.uniform(0.9, 1.0, 4), float(latencies[100 + i]))
        add("control", now - timedelta(minutes=i), rng.uniform(0.9, 1.0, 4), 10.0)
    with serving.db.transaction() as session:
        session.execute(insert(Prediction), rows)
    response = serving.client.get("/v1/experiments/ranker-v2/serving", headers=serving.admin)
    assert response.status_code == 200, response.text
    report = {v["variant"]: v for v in response.json()["variants"]}
    v2, control = report["v2"], report["control"]
    assert v2["n"] == 200
    assert v2["n_inputs"] == 800
    assert v2["error_rate"] == 0.0
    want = latency_percentiles(latencies)
    assert v2["latency"]["p50_ms"] == pytest.approx(want.p50_ms)
    assert v2["latency"]["p95_ms"] == pytest.approx(want.p95_ms)
    assert v2["psi_vs_first_day"] > 0.25  # a major shift from its first day …
    assert v2["psi_vs_control"] < 0.1  # … to where control is now (the last 24 h of both)
    assert control["psi_vs_control"] is None
    assert control["psi_vs_first_day"] is None  # control has no day after its first yet
    assert len(v2["daily"]) >= 2  # the first day and today (more when a span crosses midnight)
    assert sum(d["n"] for d in v2["daily"]) == 200
    assert v2["outputs"]["labels"] == {"positive": 1.0}
    assert 0.5 <= v2["outputs"]["score"]["p10"] <= v2["outputs"]["score"]["p90"] <= 1.0
    json.dumps(response.json())


def test_serving_report_of_an_experiment_without_predictions(serving: Serving) -> None:
    create_experiment(serving.client, serving.admin)
    response = serving.client.get("/v1/experiments/ranker-v2/serving", headers=serving.admin)
    assert response.status_code == 200
    body = response.json()
    assert body["task"] is None
    assert [v["n"] for v in body["variants"]] == [0, 0]
    assert serving.client.get("/v1/experiments/nope/serving", headers=serving.admin).status_code == 404
    assert serving.client.get("/v1/experiments/ranker-v2/serving", headers=serving.sdk).status_code == 403


def test_a_slower_model_fails_the_latency_guardrail_in_the_decision(serving: Serving) -> None:
    """The serving events feed the same guardrail machinery as business metrics: a variant whose model is far
    slower is refused by the decision, and the scorecard shows each variant's latency p95."""
    delay = 0.05
    serving.loader.wrappers["cls-b"] = lambda v: SlowVariant(v, delay)
    serving.register("cls-a", "cls-b")
    create_experiment(serving.client, serving.admin, start=True, variants=AB)
    for i in range(40):
        assert serving.predict(f"slow-{i}", ["hello world"]).status_code == 200
    serving.settle()
    decision = serving.client.get("/v1/experiments/ranker-v2/decision", headers=serving.admin).json()
    scorecard = serving.client.get("/v1/experiments/ranker-v2/scorecard", headers=serving.admin).json()
    assert decision["decision"] == "no_ship", str([m for m in scorecard["metrics"] if m["metric"] == "latency"])[:3000]
    assert any("latency" in reason for reason in decision["reasons"]), decision["reasons"]
    scorecard = serving.client.get("/v1/experiments/ranker-v2/scorecard", headers=serving.admin).json()
    latency = next(m for m in scorecard["metrics"] if m["metric"] == "latency")
    assert latency["variants"][0]["guardrail"] == "fail"
    p95 = {v["variant"]: v["latency"]["p95_ms"] for v in scorecard["serving"]["variants"]}
    assert p95["v2"] >= delay * 1000 > p95["control"]
    shipped = serving.client.post("/v1/experiments/ranker-v2/ship", json={"variant": "v2"}, headers=serving.admin)
    assert shipped.status_code == 409
