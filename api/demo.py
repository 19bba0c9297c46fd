"""``titrate demo``: start the service on the configured database, register an A/B experiment, drive seeded
traffic through the Python SDK (local assignment, batched exposures and events) and report the result.

This is the foundation's demo; the full main job (three scenarios on real model variants, the console) grows
here with its own issue.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.progress import track
from sqlalchemy import func, select

from api.app import create_app
from api.auth.keys import create_api_key
from api.db.engine import Database
from api.db.tables import Event, Experiment, Exposure
from api.settings import Settings
from scorecards import SampleStats, compare

EXPERIMENT = {
    "key": "demo-checkout", "name": "One-page checkout", "owner": "demo",
    "hypothesis": {"change": "ship the one-page checkout", "metric": "conversion", "direction": "increase",
                   "rationale": "fewer steps lose fewer buyers"},
    "type": "ab", "allocation": {"strategy": "fixed"},
    "variants": [{"key": "control", "control": True, "weight": 0.5}, {"key": "one-page", "weight": 0.5}],
    "metrics": {"primary": "conversion"}, "design": {"alpha": 0.05, "power": 0.8, "mde": 0.1},
}
METRIC = {"key": "conversion", "kind": "proportion", "event": "purchase", "direction": "higher_is_better"}
TRUE_RATES = {"control": 0.10, "one-page": 0.12}
SERVING_EXPERIMENT = {
    "key": "demo-minilm-bf16", "name": "MiniLM in bfloat16", "owner": "demo",
    "hypothesis": {"change": "serve all-MiniLM-L6-v2 in bfloat16", "metric": "latency", "direction": "decrease",
                   "rationale": "half the memory traffic per forward pass"},
    "type": "rollout", "allocation": {"strategy": "fixed"},
    "variants": [{"key": "float32", "control": True, "weight": 0.5, "model": "minilm-f32"},
                 {"key": "bfloat16", "weight": 0.5, "model": "minilm-bf16"}],
    "metrics": {"primary": "latency", "guardrails": [{"metric": "errors", "margin": 0.05}]},
    "design": {"alpha": 0.05, "power": 0.8, "mde": 0.1},
}
SERVING_METRICS = [
    {"key": "latency", "kind": "ratio", "numerator": {"event": "serving.latency_ms", "aggregation": "sum"},
     "denominator": {"event": "serving.request", "aggregation": "count"}, "direction": "lower_is_better"},
    {"key": "errors", "kind": "ratio", "numerator": {"event": "serving.error", "aggregation": "count"},
     "denominator": {"event": "serving.request", "aggregation": "count"}, "direction": "lower_is_better"},
]
QUERIES = ["cheap flights to lisbon", "how to fix a bike chain", "best ramen near me", "python asyncio tutorial",
           "weather tomorrow", "running shoes for flat feet", "learn spanish fast", "vegan lasagna recipe"]


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured."""

    units: int
    exposures: dict[str, int]
    conversions: dict[str, int]
    rel_lift: float
    rel_ci: tuple[float, float]
    p_value: float
    true_rel_lift: float


class _Server(threading.Thread):
    def __init__(self, settings: Settings, host: str, port: int) -> None:
        super().__init__(daemon=True)
        config = uvicorn.Config(create_app(settings), host=host, port=port, log_level="warning", log_config=None)
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        self.server.run()

    def stop(self) -> None:
        self.server.should_exit = True
        self.join(timeout=30)


def _ensure_experiment(base_url: str, key: str) -> None:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        if http.get(f"/v1/metrics/{METRIC['key']}").status_code == 404:
            http.post("/v1/metrics", json=METRIC).raise_for_status()
        current = http.get(f"/v1/experiments/{EXPERIMENT['key']}")
        if current.status_code == 404:
            http.post("/v1/experiments", json=EXPERIMENT).raise_for_status()
            current = http.get(f"/v1/experiments/{EXPERIMENT['key']}")
        if current.json()["status"] == "draft":
            http.post(f"/v1/experiments/{EXPERIMENT['key']}/start").raise_for_status()


def _simulate(base_url: str, key: str, units: int, seed: int, run: int) -> None:
    from titrate_sdk import Client

    rng = random.Random(f"{seed}-{run}")
    with Client(base_url, key, flush_interval=0.2, poll_interval=1.0) as client:
        for i in track(range(units), description="simulating visitors"):
            unit = f"visitor-{seed}-{run}-{i}"
            variant = client.get_variant(EXPERIMENT["key"], unit, attributes={"country": rng.choice(["US", "DE"])})
            if rng.random() < TRUE_RATES.get(variant, 0.0):
                client.track(unit, "purchase", value=round(rng.uniform(5, 80), 2))
        client.flush(timeout=60)


def _serve_minilm(base_url: str, key: str, requests: int, seed: int) -> dict[str, Any]:
    """Register the real all-MiniLM-L6-v2 (shipped inside a PyPI package) as float32 and bfloat16 variants, send
    requests through ``/predict``, and return the serving report (latency per variant, drift, errors)."""
    from models.shipped import shipped_minilm_path

    path = str(shipped_minilm_path())
    rng = random.Random(seed)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
        for dtype, model_key in (("float32", "minilm-f32"), ("bfloat16", "minilm-bf16")):
            if http.get(f"/v1/models/{model_key}").status_code == 404:
                http.post("/v1/models", json={"key": model_key, "task": "embedding", "path": path, "dtype": dtype,
                                              "device": "auto", "max_batch": 32, "max_length": 128}).raise_for_status()
        for metric in SERVING_METRICS:
            if http.get(f"/v1/metrics/{metric['key']}").status_code == 404:
                http.post("/v1/metrics", json=metric).raise_for_status()
        current = http.get(f"/v1/experiments/{SERVING_EXPERIMENT['key']}")
        if current.status_code == 404:
            http.post("/v1/experiments", json=SERVING_EXPERIMENT).raise_for_status()
            current = http.get(f"/v1/experiments/{SERVING_EXPERIMENT['key']}")
        if current.json()["status"] == "draft":
            http.post(f"/v1/experiments/{SERVING_EXPERIMENT['key']}/start").raise_for_status()
        for i in track(range(requests), description="serving MiniLM"):
            body = {"unit_id": f"reader-{seed}-{i}", "inputs": [rng.choice(QUERIES)]}
            http.post(f"/v1/experiments/{SERVING_EXPERIMENT['key']}/predict", json=body).raise_for_status()
        time.sleep(1.0)
        report: dict[str, Any] = http.get(f"/v1/experiments/{SERVING_EXPERIMENT['key']}/serving").json()
    return report


def _previous_exposures(db: Database) -> int:
    """Exposures already recorded: a repeated demo on the same database simulates new visitors."""
    with db.read() as session:
        return int(session.scalar(
            select(func.count()).select_from(Exposure).join(Experiment, Experiment.id == Exposure.experiment_id)
            .where(Experiment.key == EXPERIMENT["key"])) or 0)


def _measure(db: Database) -> DemoResult:
    """Per-variant exposed units and converting units (the scorecard API will replace this query)."""
    with db.read() as session:
        experiment_id = session.scalar(select(Experiment.id).where(Experiment.key == EXPERIMENT["key"]))
        exposures = dict(session.execute(
            select(Exposure.variant, func.count()).where(Exposure.experiment_id == experiment_id)
            .group_by(Exposure.variant)).all())
        converted = select(Event.unit_id).where(Event.name == "purchase").distinct().subquery()
        conversions = dict(session.execute(
            select(Exposure.variant, func.count()).join(converted, converted.c.unit_id == Exposure.unit_id)
            .where(Exposure.experiment_id == experiment_id).group_by(Exposure.variant)).all())
    stats = {v: SampleStats(n=exposures.get(v, 0), sum=float(conversions.get(v, 0)),
                            sum_squares=float(conversions.get(v, 0))) for v in TRUE_RATES}
    result = compare(stats["control"], stats["one-page"], kind="proportion", alpha=0.05)
    return DemoResult(units=sum(exposures.values()), exposures=exposures, conversions=conversions,
                      rel_lift=result.rel_lift, rel_ci=tuple(result.rel_ci), p_value=result.p_value,  # type: ignore[arg-type]
                      true_rel_lift=TRUE_RATES["one-page"] / TRUE_RATES["control"] - 1)


def run_demo(settings: Settings, *, host: str, port: int, units: int, seed: int, headless: bool,
             model_requests: int = 120) -> dict[str, Any]:
    """Run the demo and return its JSON summary; unless headless, keep serving until interrupted."""
    console = Console(stderr=True)
    db = Database(settings.database_url)
    with db.transaction() as session:
        _, key = create_api_key(session, "admin", "demo")
    server = _Server(settings, host, port)
    server.start()
    base_url = f"http://{host}:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    _ensure_experiment(base_url, key)
    _simulate(base_url, key, units, seed, run=_previous_exposures(db))
    time.sleep(max(0.5, settings.exposure_flush_seconds * 3))
    result = _measure(db)
    summary = {"scenarios": [{"scenario": "ab-checkout", "experiment": EXPERIMENT["key"], "units": result.units,
                              "exposures": result.exposures, "conversions": result.conversions,
                              "rel_lift": round(result.rel_lift, 4),
                              "rel_ci": [round(x, 4) for x in result.rel_ci], "p_value": result.p_value,
                              "true_rel_lift": round(result.true_rel_lift, 4)}]}
    if model_requests > 0:
        report = _serve_minilm(base_url, key, model_requests, seed)
        latency = {v["variant"]: (v.get("latency") or {}) for v in report.get("variants", [])}
        summary["scenarios"].append({
            "scenario": "minilm-float32-vs-bfloat16", "experiment": SERVING_EXPERIMENT["key"],
            "requests": model_requests,
            "latency_p50_ms": {k: v.get("p50_ms") for k, v in latency.items()},
            "latency_p95_ms": {k: v.get("p95_ms") for k, v in latency.items()},
            "errors": {v["variant"]: v.get("errors") for v in report.get("variants", [])}})
        for variant, stats in latency.items():
            if stats:
                console.print(f"[bold]{SERVING_EXPERIMENT['key']}[/] {variant}: p50 {stats.get('p50_ms', 0):.1f} ms, "
                              f"p95 {stats.get('p95_ms', 0):.1f} ms over {stats.get('n')} predictions")
    console.print(f"[bold]demo-checkout[/]: {result.units} exposed units, relative lift "
                  f"{result.rel_lift:+.1%} (95% CI {result.rel_ci[0]:+.1%} … {result.rel_ci[1]:+.1%}), "
                  f"p = {result.p_value:.2g}; true lift {result.true_rel_lift:+.1%}")
    if not headless:
        console.print(f"service at {base_url} (OpenAPI: {base_url}/docs); admin key: {key}\nCtrl-C to stop.")
        try:
            while server.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    server.stop()
    db.dispose()
    print(json.dumps(summary))
    return summary
