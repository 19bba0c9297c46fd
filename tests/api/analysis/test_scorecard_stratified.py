"""Scorecard of a Thompson experiment: estimates stratified by allocation version (both databases).

An A/A bandit whose weights moved from 50/50 to 10/90 while the base rate doubled: pooling each arm's units
(the naive estimate) credits the arm that got the late traffic with the late base rate (Simpson's paradox);
stratifying by allocation version does not. Exposures, events and the second allocation version are seeded
straight into the tables with exact conversion counts, so the expected numbers are known in closed form.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from api.db.engine import Database
from api.db.tables import Allocation, Event, Experiment, Exposure, utc_now
from scorecards.bandit_inference import adaptive_estimates, adaptive_ratio_estimates
from scorecards.stratified import naive_estimates
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

NOW = utc_now()
ARMS = [{"key": "control", "control": True, "weight": 0.5}, {"key": "treatment", "weight": 0.5}]
ONLY_CONVERSION = {"primary": "conversion", "secondary": [], "guardrails": []}
# version → variant → (units, converted): v1 50/50 at 10 %, v2 10/90 at 20 % — the same rate in both arms
CELLS = {1: {"control": (1000, 100), "treatment": (1000, 100)},
         2: {"control": (200, 40), "treatment": (1800, 360)}}


def _seed(db: Database, key: str, cells: dict[int, dict[str, tuple[int, int]]],
          weights: dict[int, dict[str, float]]) -> None:
    exposures: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for version, arms in cells.items():
        for variant, (units, converted) in arms.items():
            for i in range(units):
                unit = f"{variant}-{version}-{i}"
                at = NOW - timedelta(days=10 - version, minutes=i % 600)
                exposures.append({"unit_id": unit, "variant": variant, "exposed_at": at,
                                  "allocation_version": version, "attributes": {}, "source": "server"})
                if i < converted:
                    events.append({"unit_id": unit, "name": "purchase", "value": 20.0,
                                   "timestamp": at + timedelta(hours=1)})
    with db.engine.begin() as conn:
        exp_id = conn.scalar(select(Experiment.id).where(Experiment.key == key))
        for version, w in weights.items():
            conn.execute(insert(Allocation), [{"experiment_id": exp_id, "version": version, "weights": w,
                                              "reason": "thompson", "seed": 1, "details": {},
                                              "created_at": NOW - timedelta(days=10 - version)}])
        conn.execute(insert(Exposure), [{**x, "experiment_id": exp_id} for x in exposures])
        conn.execute(insert(Event), [{**e, "event_id": f"{key}-{i}", "attributes": {}, "received_at": NOW}
                                     for i, e in enumerate(events)])


def _start(client: TestClient, keys: Keys, key: str, strategy: str) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key=key, variants=ARMS,
                      allocation={"strategy": strategy}, metrics=ONLY_CONVERSION)


def _counts() -> tuple[np.ndarray, np.ndarray]:
    n = np.array([[CELLS[v][k][0] for k in ("control", "treatment")] for v in (1, 2)], dtype=float)
    total = np.array([[CELLS[v][k][1] for k in ("control", "treatment")] for v in (1, 2)], dtype=float)
    return n, total


def test_thompson_scorecard_is_stratified_by_allocation_version(client: TestClient, keys: Keys,
                                                                db: Database) -> None:
    _start(client, keys, "aa-bandit", "thompson")
    _seed(db, "aa-bandit", CELLS, {2: {"control": 0.1, "treatment": 0.9}})

    response = client.get("/v1/experiments/aa-bandit/scorecard", headers=keys.headers("analyst"))
    assert response.status_code == 200, response.text
    card = response.json()
    assert card["adaptive_allocation"].startswith("estimates stratified by allocation version with adaptive")
    (primary,) = [m for m in card["metrics"] if m["role"] == "primary"]
    (entry,) = primary["variants"]
    strat, naive = entry["stratified"], entry["stratified"]["naive"]

    # A/A: within each version both arms convert at the same rate, so the stratified lift is 0 ...
    assert strat["method"] == "adaptive_weighted"
    assert strat["versions"] == [1, 2]
    assert strat["n_by_version"] == [1000, 1800]
    assert strat["control_n_by_version"] == [1000, 200]
    assert strat["rel_lift"] == pytest.approx(0.0, abs=1e-12)
    assert strat["rel_ci"][0] < 0.0 < strat["rel_ci"][1]
    assert strat["abs_ci"][0] < 0.0 < strat["abs_ci"][1]
    assert strat["p_value"] > 0.5
    # ... while pooling the versions credits the treatment with v2's higher base rate (≈ +41 %, CI excludes 0).
    assert naive["method"] == "naive"
    assert naive["rel_lift"] > 0.3
    assert naive["rel_ci"][0] > 0.0
    assert naive["p_value"] < 0.001
    # The existing pooled fields are unchanged (and show the same bias).
    assert entry["n"] == 2800
    assert entry["control_n"] == 1200
    assert entry["mean"] == pytest.approx(460 / 2800)
    assert entry["control_mean"] == pytest.approx(140 / 1200)
    assert entry["rel_lift"] == pytest.approx((460 / 2800) / (140 / 1200) - 1.0)
    assert card["srm"]["ok"] is True  # the SRM check follows the allocation history (10/90 in v2)

    # Same numbers as scorecards.bandit_inference / scorecards.stratified on the same counts (0/1: Σy² = Σy).
    n, total = _counts()
    adaptive = adaptive_estimates(n, total, total)
    naive_est = naive_estimates(n, total, total)
    assert strat["control_mean"] == pytest.approx(adaptive.control_mean[1])
    assert naive["control_mean"] == pytest.approx(naive_est.mean[0])
    for got, est in ((strat, adaptive.pooled), (naive, naive_est)):
        assert got["mean"] == pytest.approx(est.mean[1])
        assert got["mean_ci"] == pytest.approx([est.mean_ci_low[1], est.mean_ci_high[1]])
        assert got["abs_lift"] == pytest.approx(est.abs_lift[1], abs=1e-12)
        assert got["abs_ci"] == pytest.approx([est.abs_ci_low[1], est.abs_ci_high[1]])
        assert got["rel_lift"] == pytest.approx(est.rel_lift[1], abs=1e-12)
        assert got["rel_ci"] == pytest.approx([est.rel_ci_low[1], est.rel_ci_high[1]])
        assert got["p_value"] == pytest.approx(est.p_value[1])
    assert strat["mean"] - strat["control_mean"] == pytest.approx(strat["abs_lift"], abs=1e-12)


def test_fixed_allocation_scorecard_has_no_stratified_block(client: TestClient, keys: Keys, db: Database) -> None:
    _start(client, keys, "fixed-ab", "fixed")
    _seed(db, "fixed-ab", {1: {"control": (50, 5), "treatment": (50, 6)}}, {})

    card = client.get("/v1/experiments/fixed-ab/scorecard", headers=keys.headers("analyst")).json()
    assert "adaptive_allocation" not in card
    assert all("stratified" not in v for m in card["metrics"] for v in m["variants"])


def test_ratio_primary_is_stratified_with_the_delta_method(client: TestClient, keys: Keys, db: Database) -> None:
    """A latency-per-request bandit (ratio primary): the ratio of the adaptively weighted means with the linearised
    (delta-method) variance — the same numbers as ``scorecards.bandit_inference`` on the same sums."""
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="latency-bandit", variants=ARMS,
                      allocation={"strategy": "thompson"},
                      hypothesis={"change": "let a bandit pick the faster server", "metric": "latency",
                                  "direction": "decrease", "rationale": "traffic flows to the faster one"},
                      metrics={"primary": "latency", "secondary": [], "guardrails": []})
    rng = np.random.default_rng(4)
    # version → variant → (units, ms per request): A/A within each version, latency doubles in version 2
    plan = {1: {"control": (120, 40.0), "treatment": (120, 40.0)}, 2: {"control": (30, 80.0), "treatment": (210, 80.0)}}
    exposures: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    sums = {f: np.zeros((2, 2)) for f in ("n", "sy", "syy", "sx", "sxx", "sxy")}
    for version, arms in plan.items():
        for k, (variant, (units, per_request)) in enumerate(arms.items()):
            for i in range(units):
                unit = f"{variant}-{version}-{i}"
                at = NOW - timedelta(days=10 - version, minutes=i % 600)
                exposures.append({"unit_id": unit, "variant": variant, "exposed_at": at,
                                  "allocation_version": version, "attributes": {}, "source": "server"})
                latencies = rng.normal(per_request, 5.0, int(rng.integers(1, 4)))
                for j, ms in enumerate(latencies):
                    t = at + timedelta(minutes=1 + j)
                    events.append({"unit_id": unit, "name": "serving.request", "value": 1.0, "timestamp": t})
                    events.append({"unit_id": unit, "name": "serving.latency_ms", "value": float(ms), "timestamp": t})
                x, y = float(len(latencies)), float(latencies.sum())
                for field, value in (("n", 1.0), ("sy", y), ("syy", y * y), ("sx", x), ("sxx", x * x), ("sxy", x * y)):
                    sums[field][version - 1, k] += value
    with db.engine.begin() as conn:
        exp_id = conn.scalar(select(Experiment.id).where(Experiment.key == "latency-bandit"))
        conn.execute(insert(Allocation), [{"experiment_id": exp_id, "version": 2, "reason": "thompson", "seed": 1,
                                          "weights": {"control": 0.125, "treatment": 0.875}, "details": {},
                                          "created_at": NOW - timedelta(days=8)}])
        conn.execute(insert(Exposure), [{**x, "experiment_id": exp_id} for x in exposures])
        conn.execute(insert(Event), [{**e, "event_id": f"lat-{i}", "attributes": {}, "received_at": NOW}
                                     for i, e in enumerate(events)])

    card = client.get("/v1/experiments/latency-bandit/scorecard", headers=keys.headers("analyst")).json()
    assert "delta-method" in card["adaptive_allocation"]
    (primary,) = [m for m in card["metrics"] if m["role"] == "primary"]
    strat = primary["variants"][0]["stratified"]
    expected = adaptive_ratio_estimates(*sums.values()).pooled
    assert strat["abs_lift"] == pytest.approx(expected.abs_lift[1], rel=1e-9)
    assert strat["rel_ci"] == pytest.approx([expected.rel_ci_low[1], expected.rel_ci_high[1]], rel=1e-9)
    assert strat["abs_ci"][0] < 0.0 < strat["abs_ci"][1]  # A/A: no latency difference within any version
    # pooled, the treatment got most of the slow version-2 traffic: it looks ≈ 50 % slower
    assert strat["naive"]["rel_lift"] > 0.3
    assert strat["naive"]["abs_ci"][0] > 0.0
