"""The allocation updater through the REST API and the scheduler round (both databases).

Exposures and events are seeded straight into the tables (a few hundred units per arm), then
``POST /allocations/recompute`` or ``scheduler.run_round`` runs the step the scheduler runs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import stats
from sqlalchemy import func, insert, select, text, update

from api.allocation import scheduler
from api.allocation.service import run_allocation_step
from api.app import create_app
from api.db.engine import Database
from api.db.tables import Allocation, Event, Experiment, Exposure, utc_now
from api.experiments import repository as experiments_repository
from api.settings import Settings
from bandits.thompson import thompson_allocation
from scorecards import SampleStats
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

NOW = utc_now()
THREE_ARMS = [{"key": "control", "control": True, "weight": 0.4}, {"key": "a", "weight": 0.3},
              {"key": "b", "weight": 0.3}]
RAMP = {"strategy": "ramp", "steps": [{"fraction": 0.1, "min_units": 100}, {"fraction": 0.5, "min_units": 100},
                                      {"fraction": 1.0, "min_units": 100}]}
GUARDED = {"primary": "conversion", "secondary": [], "guardrails": [{"metric": "latency", "margin": 0.05}]}


def _seed(db: Database, key: str, arms: dict[str, tuple[int, float, float]], version: int = 1,
          seed: int = 3, prefix: str = "", *, days_ago: int = 10, latency_sd: float = 5.0,
          purchase_value: float = 20.0) -> None:
    """``arms``: variant → (units, conversion rate, mean latency ms); units exposed ``days_ago`` days ago under
    ``version``, each with two served requests (latency ± ``latency_sd`` ms) and a purchase with the arm's
    probability."""
    rng = np.random.default_rng(seed)
    exposures: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for variant, (units, rate, latency) in arms.items():
        for i in range(units):
            unit = f"{prefix}{variant}-{version}-{i}"
            at = NOW - timedelta(days=days_ago, minutes=int(rng.integers(0, 600)))
            exposures.append({"unit_id": unit, "variant": variant, "exposed_at": at, "allocation_version": version,
                              "attributes": {}, "source": "server"})
            for r in range(2):
                t = at + timedelta(minutes=10 + r)
                events.append({"unit_id": unit, "name": "serving.request", "value": 1.0, "timestamp": t})
                events.append({"unit_id": unit, "name": "serving.latency_ms", "timestamp": t,
                               "value": float(rng.normal(latency, latency_sd))})
            if rng.random() < rate:
                events.append({"unit_id": unit, "name": "purchase", "value": purchase_value,
                               "timestamp": at + timedelta(hours=1)})
    with db.engine.begin() as conn:
        exp_id = conn.scalar(select(Experiment.id).where(Experiment.key == key))
        conn.execute(insert(Exposure), [{**x, "experiment_id": exp_id} for x in exposures])
        conn.execute(insert(Event), [{**e, "event_id": f"{key}-{prefix}{version}-{i}", "attributes": {},
                                      "received_at": NOW} for i, e in enumerate(events)])


def _start(client: TestClient, keys: Keys, key: str, **overrides: Any) -> None:
    if not client.get("/v1/metrics", headers=keys.headers("admin")).json():
        create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key=key, **overrides)


def _recompute(client: TestClient, keys: Keys, key: str, **params: Any) -> dict[str, Any]:
    response = client.post(f"/v1/experiments/{key}/allocations/recompute", params=params,
                           headers=keys.headers("admin"))
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    return out


def _assign(client: TestClient, keys: Keys, key: str, prefix: str, n: int) -> dict[str, str]:
    out = {}
    for i in range(n):
        response = client.post("/v1/assign", json={"unit_id": f"{prefix}-{i}", "experiments": [key]},
                               headers=keys.headers("sdk"))
        out[f"{prefix}-{i}"] = response.json()["assignments"][key]["variant"]
    return out


def _audit(client: TestClient, keys: Keys, key: str, action: str) -> list[dict[str, Any]]:
    rows = client.get(f"/v1/experiments/{key}/audit", headers=keys.headers("analyst")).json()
    return [r for r in rows if r["action"] == action]


def _versions(db: Database, key: str) -> list[int]:
    with db.read() as session:
        exp_id = session.scalar(select(Experiment.id).where(Experiment.key == key))
        return list(session.scalars(select(Allocation.version).where(Allocation.experiment_id == exp_id)
                                    .order_by(Allocation.version)))


def _age_allocations(db: Database, key: str, hours: float) -> None:
    """Pretend the current allocation was published ``hours`` ago (cadence and min_hours are measured to it)."""
    with db.engine.begin() as conn:
        exp_id = conn.scalar(select(Experiment.id).where(Experiment.key == key))
        conn.execute(update(Allocation).where(Allocation.experiment_id == exp_id)
                     .values(created_at=utc_now() - timedelta(hours=hours)))


# --- Thompson sampling -------------------------------------------------------------------------------------


def test_thompson_moves_traffic_to_the_best_arm_and_excludes_a_guardrail_failure(
        client: TestClient, keys: Keys, db: Database) -> None:
    _start(client, keys, "bandit", variants=THREE_ARMS, allocation={"strategy": "thompson"}, metrics=GUARDED)
    # a: same conversion as control but 50 % slower (latency guardrail fails); b: 5x the conversion, same latency
    _seed(db, "bandit", {"control": (400, 0.05, 100.0), "a": (300, 0.05, 150.0), "b": (300, 0.25, 100.0)})

    step = _recompute(client, keys, "bandit")
    assert step["action"] == "updated"
    assert step["new_version"] is True
    assert step["version"] == 2
    weights = step["weights"]
    assert weights["a"] == 0.0
    assert weights["b"] > 0.9
    assert weights["control"] >= 0.01 / 2 - 1e-12  # the default floor, 1 %/K over the live arms
    assert sum(weights.values()) == pytest.approx(1.0)
    assert step["decision"]["decision"] == "ship"
    assert step["decision"]["variant"] == "b"
    assert [e["variant"] for e in step["details"]["excluded"]] == ["a"]
    assert step["details"]["prob_best"]["b"] > 0.95

    excluded = _audit(client, keys, "bandit", "allocation.exclude")
    assert len(excluded) == 1
    assert "latency" in excluded[0]["reason"]
    assert "variant a" in excluded[0]["reason"]
    assert "%" in excluded[0]["reason"]  # the numbers: relative lift, bound, margin
    assert "latency" in excluded[0]["after"]["guardrails"]

    history = client.get("/v1/experiments/bandit/allocations", headers=keys.headers("analyst")).json()
    assert [(h["version"], h["reason"]) for h in history] == [(1, "start"), (2, "thompson")]
    assert history[1]["seed"] is not None
    assert history[1]["details"]["decision"]["decision"] == "ship"
    assert history[1]["details"]["posterior"]["b"]["n"] == 300

    # The snapshot serves version 2: nobody gets a, most get b, and every exposure records version 2.
    config = client.get("/v1/sdk/config", headers=keys.headers("sdk")).json()
    doc = next(e for e in config["experiments"] if e["key"] == "bandit")
    assert doc["allocation_version"] == 2
    assert {v["key"]: v["weight"] for v in doc["variants"]} == pytest.approx(weights)
    seen: Counter[str] = Counter()
    for i in range(400):
        body = {"unit_id": f"new-{i}", "experiments": ["bandit"]}
        response = client.post("/v1/assign", json=body, headers=keys.headers("sdk"))
        seen[response.json()["assignments"]["bandit"]["variant"]] += 1
    assert seen["a"] == 0
    assert seen["b"] > 340
    deadline = time.monotonic() + 5
    while True:
        with db.read() as session:
            versions = dict(session.execute(
                select(Exposure.allocation_version, func.count()).where(Exposure.unit_id.like("new-%"))
                .group_by(Exposure.allocation_version)).all())
        if sum(versions.values()) == 400 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert versions == {2: 400}

    # The stopping rule is the decision of a thompson experiment, so the ship guard lets b ship.
    decision = client.get("/v1/experiments/bandit/decision", headers=keys.headers("analyst")).json()
    assert decision["decision"] == "ship"
    assert decision["variant"] == "b"
    assert "bandit stopping rule" in decision["reasons"][0]

    # A second update keeps a excluded without a second audit row.
    again = _recompute(client, keys, "bandit")
    assert again["version"] == 3
    assert again["weights"]["a"] == 0.0
    assert len(_audit(client, keys, "bandit", "allocation.exclude")) == 1
    shipped = client.post("/v1/experiments/bandit/ship", json={"variant": "b"}, headers=keys.headers("admin"))
    assert shipped.status_code == 200, shipped.text


def test_thompson_step_is_seeded_and_reproducible(client: TestClient, keys: Keys, db: Database) -> None:
    _start(client, keys, "seeded", allocation={"strategy": "thompson", "floor": 0.05, "top_two": True},
           metrics={"primary": "conversion", "secondary": [], "guardrails": []})
    _seed(db, "seeded", {"control": (200, 0.10, 100.0), "v2": (200, 0.14, 100.0)})
    with db.transaction() as session:
        experiment = experiments_repository.get(session, "seeded", for_update=True)
        assert experiment is not None
        result = run_allocation_step(session, experiment, utc_now(), rng_seed=1234)
    assert result.new_version
    assert result.details["top_two"] is True
    with db.read() as session:
        row = experiments_repository.latest_allocations(session, [experiment.id])[experiment.id]
        seed, reason, weights, posterior = row.seed, row.reason, dict(row.weights), row.details["posterior"]
    assert seed == 1234
    assert reason == "thompson"
    # Recompute the decision from the stored seed and the same sufficient statistics: bit for bit.
    sums: dict[str, SampleStats] = {}
    with db.read() as session:
        exp_id = experiment.id
        units = dict(session.execute(select(Exposure.unit_id, Exposure.variant)
                                     .where(Exposure.experiment_id == exp_id)).all())
        buyers = set(session.scalars(select(Event.unit_id).where(Event.name == "purchase")))
    for variant in ("control", "v2"):
        n = sum(1 for v in units.values() if v == variant)
        s = float(sum(1 for u, v in units.items() if v == variant and u in buyers))
        sums[variant] = SampleStats(n, s, s)
        assert posterior[variant]["n"] == n
    again = thompson_allocation([sums["control"], sums["v2"]], "proportion", rng=1234, floor=0.05, top_two=True)
    assert weights == {"control": again.weights[0], "v2": again.weights[1]}
    assert min(weights.values()) >= 0.05 - 1e-12


def test_thompson_cadence_batches_updates(client: TestClient, keys: Keys, db: Database) -> None:
    _start(client, keys, "batched", allocation={"strategy": "thompson", "update_every_minutes": 60,
                                                "update_every_events": 500},
           metrics={"primary": "conversion", "secondary": [], "guardrails": []})
    _seed(db, "batched", {"control": (100, 0.1, 100.0), "v2": (100, 0.1, 100.0)})
    step = _recompute(client, keys, "batched")
    assert step["action"] == "not_due"
    assert step["new_version"] is False
    assert "200 of 500 new exposures" in step["reasons"][0]
    _seed(db, "batched", {"control": (150, 0.1, 100.0), "v2": (150, 0.1, 100.0)}, prefix="more-")
    step = _recompute(client, keys, "batched")
    assert step["action"] == "updated"
    assert "500 of 500" in step["details"]["due"]
    assert _recompute(client, keys, "batched")["action"] == "not_due"  # nothing new under version 2
    _age_allocations(db, "batched", 2)
    assert _recompute(client, keys, "batched")["version"] == 3
    assert _recompute(client, keys, "batched", force="true")["version"] == 4
    assert _versions(db, "batched") == [1, 2, 3, 4]


# --- Ramped roll-outs ---------------------------------------------------------------------------------------


def test_ramp_advances_when_minimums_met_and_reaches_full_traffic(client: TestClient, keys: Keys,
                                                                  db: Database) -> None:
    _start(client, keys, "ramped", type="rollout", allocation=RAMP, metrics=GUARDED,
           design={"alpha": 0.05, "power": 0.8, "mde": 1.0, "sequential": False, "cuped": False})
    held = _recompute(client, keys, "ramped")
    assert held["action"] == "held"
    assert held["version"] == 1
    assert "0 of 100 units" in held["reasons"][0]

    _seed(db, "ramped", {"control": (270, 0.1, 100.0), "v2": (30, 0.1, 100.0)})  # the 90/10 split of step 0
    treated_before = {u for u, v in _assign(client, keys, "ramped", "probe", 300).items() if v == "v2"}
    assert 10 <= len(treated_before) <= 60  # ~10 % at the first step
    step = _recompute(client, keys, "ramped")
    assert step["action"] == "advanced"
    assert step["version"] == 2
    assert step["weights"] == pytest.approx({"control": 0.5, "v2": 0.5})
    assert step["details"]["step"] == 1
    assert _recompute(client, keys, "ramped")["action"] == "held"  # no units yet under version 2
    after = _assign(client, keys, "ramped", "probe", 300)
    assert all(after[u] == "v2" for u in treated_before)  # ramping up never moves a treated unit back
    assert 100 <= sum(v == "v2" for v in after.values()) <= 200  # ~50 % now

    _seed(db, "ramped", {"control": (150, 0.1, 100.0), "v2": (150, 0.1, 100.0)}, version=2)
    assert _recompute(client, keys, "ramped")["weights"] == pytest.approx({"control": 0.0, "v2": 1.0})
    _seed(db, "ramped", {"v2": (200, 0.1, 100.0)}, version=3)
    done = _recompute(client, keys, "ramped")
    assert done["action"] == "completed"
    assert done["version"] == 3

    history = client.get("/v1/experiments/ramped/allocations", headers=keys.headers("analyst")).json()
    assert [(h["version"], h["reason"], h["weights"]["v2"]) for h in history] == [
        (1, "start", pytest.approx(0.1)), (2, "ramp", 0.5), (3, "ramp", 1.0)]
    assert len(_audit(client, keys, "ramped", "allocation.advance")) == 2
    experiment = client.get("/v1/experiments/ramped", headers=keys.headers("analyst")).json()
    assert experiment["status"] == "running"
    decision = client.get("/v1/experiments/ramped/decision", headers=keys.headers("analyst")).json()
    assert decision["decision"] == "ship", decision
    assert decision["variant"] == "v2"


def test_a_power_gated_ramp_step_waits_until_a_harm_of_the_margin_would_be_detected(
        client: TestClient, keys: Keys, db: Database) -> None:
    gated = {"strategy": "ramp", "steps": [{"fraction": 0.1, "min_units": 100, "min_power": 0.8},
                                           {"fraction": 1.0, "min_units": 100}]}
    _start(client, keys, "gated", type="rollout", allocation=gated, metrics=GUARDED)
    # noisy latency (sd 60 ms per request around 100 ms): 300 units cannot see a 5 % harm yet
    _seed(db, "gated", {"control": (270, 0.1, 100.0), "v2": (30, 0.1, 100.0)}, latency_sd=60.0)
    held = _recompute(client, keys, "gated")
    assert held["action"] == "held"
    (reason,) = [r for r in held["reasons"] if "power" in r]
    assert reason.startswith("guardrail latency: power to detect a harm of its margin 0.")
    power = held["details"]["guardrail_power"]["latency"]
    assert 0.0 < power < 0.8
    # the same test's numbers: Φ(margin / SE − z₀.₉₅) with the scorecard's standard error of the relative lift
    card = client.get("/v1/experiments/gated/scorecard", headers=keys.headers("analyst")).json()
    latency = next(m for m in card["metrics"] if m["metric"] == "latency")["variants"][0]
    se = latency["guardrail_detail"]["rel_std_error"]
    assert power == pytest.approx(float(stats.norm.cdf(0.05 / se - stats.norm.ppf(0.95))), rel=1e-9)
    # more units at the same step shrink the standard error until the step may advance
    _seed(db, "gated", {"control": (3000, 0.1, 100.0), "v2": (3000, 0.1, 100.0)}, latency_sd=60.0, prefix="more-")
    advanced = _recompute(client, keys, "gated")
    assert advanced["action"] == "advanced", advanced["reasons"]
    assert advanced["details"]["previous"]["guardrail_power"]["latency"] >= 0.8


def test_ramp_rolls_back_automatically_when_a_guardrail_fails(client: TestClient, keys: Keys,
                                                              db: Database) -> None:
    _start(client, keys, "ramped", type="rollout", allocation=RAMP, metrics=GUARDED)
    # Fewer units than min_units: a failing guardrail rolls back anyway, at once.
    _seed(db, "ramped", {"control": (60, 0.1, 100.0), "v2": (30, 0.1, 120.0)})
    step = _recompute(client, keys, "ramped")
    assert step["action"] == "rolled_back"
    assert step["decision"]["decision"] == "rollback"
    assert step["weights"] == {"control": 1.0, "v2": 0.0}

    experiment = client.get("/v1/experiments/ramped", headers=keys.headers("analyst")).json()
    assert experiment["status"] == "rolled_back"
    rollback = _audit(client, keys, "ramped", "experiment.rollback")
    assert len(rollback) == 1
    assert "latency" in rollback[0]["reason"]
    assert "fail" in rollback[0]["reason"]
    assert "%" in rollback[0]["reason"]
    history = client.get("/v1/experiments/ramped/allocations", headers=keys.headers("analyst")).json()
    assert history[-1]["reason"] == "rollback"
    for i in range(50):
        response = client.post("/v1/assign", json={"unit_id": f"after-{i}", "experiments": ["ramped"]},
                               headers=keys.headers("sdk"))
        assert response.json()["assignments"]["ramped"]["variant"] == "control"
    response = client.post("/v1/experiments/ramped/allocations/recompute", headers=keys.headers("admin"))
    assert response.status_code == 409


def test_ramp_suggest_mode_proposes_instead_of_advancing(client: TestClient, keys: Keys, db: Database) -> None:
    _start(client, keys, "suggested", type="rollout", allocation={**RAMP, "mode": "suggest"}, metrics=GUARDED)
    _seed(db, "suggested", {"control": (150, 0.1, 100.0), "v2": (150, 0.1, 100.0)})
    for _ in range(2):
        step = _recompute(client, keys, "suggested")
        assert step["action"] == "suggested"
        assert step["version"] == 1
        assert step["new_version"] is False
        assert step["details"]["proposal"]["suggested_step"] == 1
    suggestions = _audit(client, keys, "suggested", "allocation.suggest")
    assert len(suggestions) == 1  # one row per version, not one per round
    assert suggestions[0]["after"]["fraction"] == 0.5
    assert _versions(db, "suggested") == [1]
    accepted = _recompute(client, keys, "suggested", accept="true")  # an admin accepts the suggestion
    assert (accepted["action"], accepted["version"], accepted["new_version"]) == ("advanced", 2, True)
    assert accepted["weights"] == {"control": 0.5, "v2": 0.5}
    assert _versions(db, "suggested") == [1, 2]


def test_recompute_on_fixed_paused_and_unknown(client: TestClient, keys: Keys) -> None:
    _start(client, keys, "plain")
    step = _recompute(client, keys, "plain")
    assert step["action"] == "none"
    assert step["new_version"] is False
    admin = keys.headers("admin")
    client.post("/v1/experiments/plain/pause", headers=admin)
    assert client.post("/v1/experiments/plain/allocations/recompute", headers=admin).status_code == 409
    assert client.post("/v1/experiments/nope/allocations/recompute", headers=admin).status_code == 404


# --- Scheduler: one updater at a time -----------------------------------------------------------------------


def test_two_updaters_started_together_publish_one_version(client: TestClient, keys: Keys, db: Database) -> None:
    _start(client, keys, "bandit", allocation={"strategy": "thompson", "update_every_minutes": 60},
           metrics={"primary": "conversion", "secondary": [], "guardrails": []})
    _start(client, keys, "ramped", type="rollout", allocation=RAMP, metrics=GUARDED)
    _seed(db, "bandit", {"control": (200, 0.1, 100.0), "v2": (200, 0.2, 100.0)})
    _seed(db, "ramped", {"control": (150, 0.1, 100.0), "v2": (150, 0.1, 100.0)})
    _age_allocations(db, "bandit", 2)

    databases = [Database(db.url), Database(db.url)]  # two replicas: separate engines and pools
    barrier = threading.Barrier(2)
    results: list[scheduler.RoundResult] = []

    def _updater(database: Database) -> None:
        barrier.wait()
        results.append(scheduler.run_round(database))

    threads = [threading.Thread(target=_updater, args=(d,)) for d in databases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for d in databases:
        d.dispose()
    assert len(results) == 2
    assert _versions(db, "bandit") == [1, 2]
    assert _versions(db, "ramped") == [1, 2]
    published = [s for r in results for s in r.steps if s.new_version]
    assert sorted(s.experiment for s in published) == ["bandit", "ramped"]


def test_replicas_rounds_without_a_cadence_publish_once_per_interval(client: TestClient, keys: Keys,
                                                                     db: Database) -> None:
    """Three replicas whose scheduler rounds (interval 30 s) follow each other: one version, not three."""
    _start(client, keys, "bandit", allocation={"strategy": "thompson"},
           metrics={"primary": "conversion", "secondary": [], "guardrails": []})
    _seed(db, "bandit", {"control": (200, 0.1, 100.0), "v2": (200, 0.2, 100.0)})
    _age_allocations(db, "bandit", 1)
    databases = [Database(db.url) for _ in range(3)]
    replicas = [scheduler.AllocationScheduler(d, None, interval_seconds=30.0) for d in databases]
    rounds = [replica.run_once() for replica in replicas]
    assert _versions(db, "bandit") == [1, 2]
    assert [s.action for r in rounds for s in r.steps] == ["updated", "not_due", "not_due"]
    assert "at most one version per 27 s" in rounds[1].steps[0].reasons[0]
    _age_allocations(db, "bandit", 1)  # an interval later, the next round publishes again
    assert [s.action for s in replicas[2].run_once().steps] == ["updated"]
    assert _versions(db, "bandit") == [1, 2, 3]
    # the admin's recompute is not a scheduled round: it runs the step now
    assert _recompute(client, keys, "bandit")["action"] == "updated"
    for database in databases:
        database.dispose()


def test_round_waits_or_skips_while_another_updater_holds_the_lock(client: TestClient, keys: Keys,
                                                                    db: Database) -> None:
    _start(client, keys, "bandit", allocation={"strategy": "thompson"},
           metrics={"primary": "conversion", "secondary": [], "guardrails": []})
    if db.dialect == "sqlite":
        # SQLite: one writer at a time (BEGIN IMMEDIATE). A round started while another writer holds the lock
        # waits for it and then publishes exactly one version.
        with db.transaction() as blocker:
            blocker.execute(text("SELECT 1"))
            rounds: list[Any] = []
            worker = threading.Thread(target=lambda: rounds.append(scheduler.run_round(db)))
            worker.start()
            time.sleep(0.5)
            assert _versions_raw(blocker, "bandit") == [1]  # nothing published while we hold the lock
        worker.join(timeout=30)
        assert rounds
        assert rounds[0].ran
        assert _versions(db, "bandit") == [1, 2]
        return
    with db.engine.connect() as other:
        assert other.scalar(text(f"SELECT pg_try_advisory_lock({scheduler.ADVISORY_LOCK_KEY})"))
        assert scheduler.run_round(db).ran is False
        assert _versions(db, "bandit") == [1]
        other.scalar(text(f"SELECT pg_advisory_unlock({scheduler.ADVISORY_LOCK_KEY})"))
        other.commit()
    result = scheduler.run_round(db)
    assert result.ran
    assert _versions(db, "bandit") == [1, 2]


def test_a_failing_step_leaves_the_last_good_allocation(client: TestClient, keys: Keys, db: Database,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _start(client, keys, "bandit", allocation={"strategy": "thompson"},
           metrics={"primary": "conversion", "secondary": [], "guardrails": []})
    _start(client, keys, "other", allocation={"strategy": "thompson"},
           metrics={"primary": "conversion", "secondary": [], "guardrails": []})
    from api.allocation import service

    real = service.thompson_allocation

    def _crash_for_bandit(*args: Any, **kwargs: Any) -> Any:
        if _crash.is_set():  # the first step of the round (bandit, the older experiment) crashes
            _crash.clear()
            raise RuntimeError("boom mid-step")
        return real(*args, **kwargs)

    _crash = threading.Event()
    _crash.set()
    monkeypatch.setattr(service, "thompson_allocation", _crash_for_bandit)
    with db.engine.begin() as conn:  # the config-version bump must roll back with the failed step
        before = conn.scalar(text("SELECT version FROM config_version"))
    result = scheduler.run_round(db)
    assert set(result.skipped) == {"bandit"}
    assert "RuntimeError" in result.skipped["bandit"]
    assert _versions(db, "bandit") == [1]  # the crashed step published nothing
    assert _versions(db, "other") == [1, 2]
    with db.engine.begin() as conn:
        assert conn.scalar(text("SELECT version FROM config_version")) == before + 1


def test_the_lifespan_runs_the_scheduler(db: Database, keys: Keys, settings: Settings) -> None:
    fast = settings.model_copy(update={"scheduler_interval_seconds": 0.1})
    with TestClient(create_app(fast)) as client:
        _start(client, keys, "bandit", allocation={"strategy": "thompson"},
               metrics={"primary": "conversion", "secondary": [], "guardrails": []})
        deadline = time.monotonic() + 10
        while len(_versions(db, "bandit")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_versions(db, "bandit")) >= 2
        assert client.app.state.allocation_scheduler.rounds >= 1  # type: ignore[attr-defined]


def test_a_version_conflict_means_another_updater_won(client: TestClient, keys: Keys, db: Database,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _start(client, keys, "bandit", allocation={"strategy": "thompson"},
           metrics={"primary": "conversion", "secondary": [], "guardrails": []})
    assert _recompute(client, keys, "bandit")["version"] == 2
    from api.allocation import service

    # A stale read of the newest version (as a second updater racing past the locks would see it): publishing
    # version 2 again hits the (experiment_id, version) unique constraint.
    def _stale(session: Any, ids: Any) -> dict[int, Allocation]:
        return {ids[0]: experiments_repository.allocation_history(session, ids[0])[0]}

    monkeypatch.setattr(service.experiments_repository, "latest_allocations", _stale)
    result = scheduler.run_round(db)
    assert "another updater" in result.skipped["bandit"]
    response = client.post("/v1/experiments/bandit/allocations/recompute", headers=keys.headers("admin"))
    assert response.status_code == 409
    assert "another allocation updater" in response.json()["detail"]
    monkeypatch.undo()
    assert _versions(db, "bandit") == [1, 2]


FIVE_STEPS = {"strategy": "ramp", "steps": [{"fraction": f, "min_units": 2000}
                                            for f in (0.01, 0.05, 0.2, 0.5, 1.0)]}


def _drive_ramp(client: TestClient, keys: Keys, db: Database, key: str, v2_latency: float) -> list[dict[str, Any]]:
    """Seed 2,000 units per ramp step split exactly by the weights in force (per-request latency sd 20 ms, control
    100 ms), run the step after each batch, until the ramp completes or rolls back."""
    steps: list[dict[str, Any]] = []
    weights, version = {"control": 0.99, "v2": 0.01}, 1
    for batch in range(8):
        n_v2 = round(2000 * weights["v2"])
        _seed_latency(db, key, {"control": (2000 - n_v2, 100.0), "v2": (n_v2, v2_latency)}, version, seed=batch)
        step = _recompute(client, keys, key)
        steps.append(step)
        if step["action"] in ("rolled_back", "completed"):
            break
        weights, version = step["weights"], step["version"]
    return steps


def _seed_latency(db: Database, key: str, arms: dict[str, tuple[int, float]], version: int, seed: int) -> None:
    """Units exposed a day ago with a 10 % purchase rate and latency ± 20 ms (the ramp-driving scenario)."""
    _seed(db, key, {v: (units, 0.1, latency) for v, (units, latency) in arms.items()}, version, seed,
          days_ago=1, latency_sd=20.0, purchase_value=1.0)


def test_ramp_rolls_back_a_5_percent_guardrail_regression_before_half_traffic(client: TestClient, keys: Keys,
                                                                            db: Database) -> None:
    _start(client, keys, "slower", type="rollout", allocation=FIVE_STEPS, metrics=GUARDED)
    steps = _drive_ramp(client, keys, db, "slower", v2_latency=105.0)
    assert steps[-1]["action"] == "rolled_back", [s["action"] for s in steps]
    history = client.get("/v1/experiments/slower/allocations", headers=keys.headers("analyst")).json()
    assert max(h["weights"]["v2"] for h in history) < 0.5
    assert client.get("/v1/experiments/slower", headers=keys.headers("analyst")).json()["status"] == "rolled_back"


def test_a_harmless_ramp_reaches_full_traffic_and_ships(client: TestClient, keys: Keys, db: Database) -> None:
    _start(client, keys, "harmless", type="rollout", allocation=FIVE_STEPS, metrics=GUARDED,
           design={"alpha": 0.05, "power": 0.8, "mde": 0.5, "sequential": False, "cuped": False})
    steps = _drive_ramp(client, keys, db, "harmless", v2_latency=100.0)
    assert [s["action"] for s in steps] == ["advanced"] * 4 + ["completed"]
    assert steps[-1]["weights"] == {"control": 0.0, "v2": 1.0}
    decision = client.get("/v1/experiments/harmless/decision", headers=keys.headers("analyst")).json()
    assert decision["decision"] == "ship", decision


def _versions_raw(session: Any, key: str) -> list[int]:
    """Allocation versions read inside an open session (the lock holder's view)."""
    rows = session.execute(text(
        "SELECT a.version FROM allocations a JOIN experiments e ON e.id = a.experiment_id "
        "WHERE e.key = :key ORDER BY a.version"), {"key": key}).all()
    return [int(r[0]) for r in rows]
