"""Incremental scorecards through the service (both databases): reads answer from the last refresh with
``computed_at``, ``?fresh=true``/``full`` refresh first, the stored scorecard equals the live one at the same time
(A/B with CUPED, ratio and segments; Thompson strata; contextual cells), refresh modes, and the job's lock."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text

from api.db.engine import Database
from api.db.tables import Allocation, Event, Experiment, Exposure, utc_now
from api.incremental import repository, scheduler, service
from api.incremental.service import RefreshPolicy
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

NOW = utc_now()
ARMS = [{"key": "control", "control": True, "weight": 0.5}, {"key": "b", "weight": 0.5}]
POLICY = RefreshPolicy(lookback_hours=24.0, full_refresh_hours=24.0)
_event_ids = iter(range(10**9))


def _seed(db: Database, key: str, units: range, *, hours_ago: float, version: int = 1,
          platforms: tuple[Any, ...] = ("ios", "android", 7)) -> None:
    """Units exposed ``hours_ago`` hours before NOW (both arms, three platforms), with purchases, request/latency
    events and pre-exposure purchases (the CUPED covariate); seeded straight into the tables."""
    rng = np.random.default_rng(len(units) * 31 + units.start)
    exposures: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for i in units:
        unit = f"{key}-{i}"
        variant = "control" if i % 2 else "b"
        at = NOW - timedelta(hours=hours_ago, minutes=int(i % 50))
        platform = platforms[i % len(platforms)]
        exposures.append({"unit_id": unit, "variant": variant, "exposed_at": at, "allocation_version": version,
                          "attributes": {"platform": platform}, "source": "server"})
        for _ in range(int(rng.integers(0, 3))):
            events.append({"unit_id": unit, "name": "purchase", "value": float(rng.gamma(2.0, 10.0)),
                           "timestamp": at + timedelta(minutes=int(rng.integers(1, 120)))})
        if rng.random() < 0.5:
            events.append({"unit_id": unit, "name": "purchase", "value": float(rng.gamma(2.0, 5.0)),
                           "timestamp": at - timedelta(hours=int(rng.integers(1, 48)))})
        for _ in range(int(rng.integers(1, 4))):
            events.append({"unit_id": unit, "name": "serving.request", "value": 1.0,
                           "timestamp": at + timedelta(seconds=int(rng.integers(1, 3000)))})
            events.append({"unit_id": unit, "name": "serving.latency_ms", "value": float(rng.normal(80, 10)),
                           "timestamp": at + timedelta(seconds=int(rng.integers(1, 3000)))})
    # why IMMEDIATE on SQLite: a deferred transaction that reads, then writes, fails at once ("database is locked")
    # when a refresh running beside it (test_refresh_process) commits in between; IMMEDIATE waits for the lock
    with db.engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, conn.begin():
        exp_id = conn.scalar(select(Experiment.id).where(Experiment.key == key))
        conn.execute(insert(Exposure), [{**x, "experiment_id": exp_id} for x in exposures])
        conn.execute(insert(Event), [{**e, "event_id": f"ev-{next(_event_ids)}", "attributes": {},
                                      "received_at": NOW} for e in events])


def _add_version(db: Database, key: str, version: int, weights: dict[str, float], hours_ago: float) -> None:
    with db.engine.begin() as conn:
        exp_id = conn.scalar(select(Experiment.id).where(Experiment.key == key))
        conn.execute(insert(Allocation), [{"experiment_id": exp_id, "version": version, "weights": weights,
                                          "reason": "thompson", "seed": 1, "details": {},
                                          "created_at": NOW - timedelta(hours=hours_ago)}])


def _close(got: Any, want: Any, where: str = "$") -> None:
    """Equal JSON, floats to 1e-9 relative (the stored and live queries add in their own orders)."""
    if isinstance(want, float) and isinstance(got, float):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), where
    elif isinstance(want, dict):
        assert isinstance(got, dict), where
        assert set(got) == set(want), (where, set(got) ^ set(want))
        for k in want:
            _close(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list), where
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


def _numbers(card: dict[str, Any]) -> dict[str, Any]:
    """Everything computed from the rows (not the times)."""
    return {k: card[k] for k in ("metrics", "srm", "current_n", "excluded_rows", "segments", "planned_n_per_variant")
            if k in card}


def _get(client: TestClient, key: str, keys: Keys, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/experiments/{key}/scorecard", params=params, headers=keys.headers("analyst"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_reads_answer_from_the_last_refresh_and_fresh_refreshes(client: TestClient, keys: Keys,
                                                                 db: Database) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="inc", variants=ARMS,
                      design={"alpha": 0.05, "power": 0.8, "mde": 0.05, "sequential": False, "cuped": True,
                              "cuped_lookback_days": 3})
    _seed(db, "inc", range(0, 400), hours_ago=30)

    first = _get(client, "inc", keys)  # never refreshed: refreshed on this read
    computed_at = datetime.fromisoformat(first["computed_at"])
    assert first["as_of"] == first["computed_at"]
    assert sum(first["current_n"].values()) == 400
    _close(_numbers(_get(client, "inc", keys, as_of=first["computed_at"])), _numbers(first))

    _seed(db, "inc", range(400, 500), hours_ago=2)  # new units and events, within the lookback
    again = _get(client, "inc", keys)
    assert again["computed_at"] == first["computed_at"]
    assert _numbers(again) == _numbers(first)
    segments = _get(client, "inc", keys, segment="platform")
    assert segments["computed_at"] == first["computed_at"]

    sdk = client.get("/v1/experiments/inc/scorecard", params={"fresh": "true"}, headers=keys.headers("sdk"))
    assert sdk.status_code == 403
    bad = client.get("/v1/experiments/inc/scorecard", params={"fresh": "yes please"},
                     headers=keys.headers("analyst"))
    assert bad.status_code == 422
    assert "fresh" in bad.text

    fresh = _get(client, "inc", keys, fresh="true")
    assert datetime.fromisoformat(fresh["computed_at"]) > computed_at
    assert sum(fresh["current_n"].values()) == 500
    live = _get(client, "inc", keys, as_of=fresh["computed_at"])
    assert datetime.fromisoformat(live["computed_at"]) >= datetime.fromisoformat(fresh["computed_at"])
    _close(_numbers(fresh), _numbers(live))
    assert any(v["cuped"] is not None for m in fresh["metrics"] for v in m["variants"])
    # the segment breakdown from the stored rows equals the live one
    by_platform = _get(client, "inc", keys, segment="platform")
    _close(_numbers(by_platform), _numbers(_get(client, "inc", keys, segment="platform", as_of=fresh["computed_at"])))
    assert {row["value"] for row in by_platform["segments"]} == {"ios", "android", "7"}

    full = _get(client, "inc", keys, fresh="full")
    _close(_numbers(full), _numbers(_get(client, "inc", keys, as_of=full["computed_at"])))
    decision = client.get("/v1/experiments/inc/decision", headers=keys.headers("analyst"))
    assert decision.status_code == 200, decision.text
    across = client.get("/v1/scorecards", params={"metric": "conversion"}, headers=keys.headers("analyst"))
    assert across.status_code == 200, across.text
    (entry,) = across.json()["experiments"]
    _close(entry["variants"], full["metrics"][0]["variants"])


def test_thompson_strata_and_contextual_cells_from_the_stored_rows(client: TestClient, keys: Keys,
                                                                   db: Database) -> None:
    create_metrics(client, keys.headers("admin"))
    only_conversion = {"primary": "conversion", "secondary": [], "guardrails": []}
    create_experiment(client, keys.headers("admin"), start=True, key="ts", variants=ARMS,
                      allocation={"strategy": "thompson"}, metrics=only_conversion)
    create_experiment(client, keys.headers("admin"), start=True, key="ctx", variants=ARMS, metrics=only_conversion,
                      allocation={"strategy": "thompson", "context": {"attribute": "platform",
                                                                      "values": ["ios", "android"]}})
    for key in ("ts", "ctx"):
        _add_version(db, key, 2, {"control": 0.2, "b": 0.8}, hours_ago=20)
        _seed(db, key, range(0, 300), hours_ago=40)
        _seed(db, key, range(300, 600), hours_ago=10, version=2)
        stored = _get(client, key, keys, fresh="true")
        live = _get(client, key, keys, as_of=stored["computed_at"])
        _close(_numbers(stored), _numbers(live))
        assert stored["metrics"][0]["variants"][0]["stratified"]["versions"] == [1, 2]
    cells = _get(client, "ctx", keys)["metrics"][0]["variants"][0]["stratified"]["strata"]
    assert {(c["version"], c["platform"]) for c in cells} >= {(1, "ios"), (2, "android")}


def _experiment(db: Database, key: str) -> Experiment:
    with db.read() as session:
        experiment = session.scalars(select(Experiment).where(Experiment.key == key)).one()
        session.expunge(experiment)  # readable after the read session rolls back
        return experiment


def test_refresh_modes_and_watermark(client: TestClient, keys: Keys, db: Database) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="modes", variants=ARMS)
    _seed(db, "modes", range(0, 50), hours_ago=5)
    experiment = _experiment(db, "modes")
    t = utc_now()
    first = service.refresh(db, experiment, POLICY, now=t)
    assert (first.mode, first.units_recomputed) == ("full", 50)
    assert first.state.watermark == first.state.computed_at == first.state.last_full_at == t
    second = service.refresh(db, experiment, POLICY, now=t + timedelta(minutes=1))
    assert second.mode == "incremental"
    assert second.units_recomputed == 50  # every unit has events dated within the lookback
    assert second.state.last_full_at == t
    third = service.refresh(db, experiment, RefreshPolicy(lookback_hours=0.0, full_refresh_hours=24.0),
                            now=t + timedelta(minutes=2))
    assert (third.mode, third.units_recomputed) == ("incremental", 0)  # nothing dated after the last refresh
    due = service.refresh(db, experiment, POLICY, now=t + timedelta(hours=25))
    assert due.mode == "full"
    assert (due.units_recomputed, due.units_written) == (50, 0)  # nothing changed: the full refresh writes nothing
    with db.engine.begin() as conn:  # a purchase dated before the lookback, for one unit: only a full refresh sees it
        unit = conn.scalar(select(Exposure.unit_id).where(Exposure.experiment_id == experiment.id).limit(1))
        conn.execute(insert(Event), [{"event_id": "late-one", "unit_id": unit, "name": "purchase", "value": 3.0,
                                      "timestamp": NOW - timedelta(hours=4), "attributes": {}, "received_at": NOW}])
    assert service.refresh(db, experiment, POLICY, now=t + timedelta(hours=25, minutes=1)).units_recomputed == 0
    late = service.refresh(db, experiment, POLICY, full=True, now=t + timedelta(hours=25, minutes=2))
    assert (late.mode, late.units_written) == ("full", 1)
    assert service.refresh(db, experiment, POLICY, full=True, now=t + timedelta(hours=26)).mode == "full"
    with db.read() as session:
        state = repository.state(session, experiment.id)
    assert state is not None
    assert state.computed_at == t + timedelta(hours=26)
    # stored components other than the plan's: the next refresh is a full one
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE scorecard_refreshes SET components = :c WHERE experiment_id = :e"),
                     {"c": '["other"]', "e": experiment.id})
    assert service.refresh(db, experiment, POLICY, now=t + timedelta(hours=27)).mode == "full"


def test_a_refresh_that_finds_a_newer_one_stored_keeps_it(client: TestClient, keys: Keys, db: Database) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="race", variants=ARMS)
    _seed(db, "race", range(0, 20), hours_ago=5)
    experiment = _experiment(db, "race")
    t = utc_now()
    service.refresh(db, experiment, POLICY, now=t)
    other: list[service.RefreshResult] = []

    def racing(session: Any) -> Any:
        # another replica refreshes after this one read the state and before it stores its rows
        other.append(service.refresh(db, experiment, POLICY, now=t + timedelta(minutes=2)))
        return service.own_tables(session)

    mine = service.refresh(db, experiment, POLICY, now=t + timedelta(minutes=1), source=racing)
    assert mine.mode == "skipped"
    assert mine.state == other[0].state
    with db.read() as session:
        assert repository.state(session, experiment.id) == other[0].state


def test_the_job_refreshes_running_experiments_one_replica_at_a_time(client: TestClient, keys: Keys,
                                                                     db: Database) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="job", variants=ARMS)
    create_experiment(client, keys.headers("admin"), key="draft", variants=ARMS)
    _seed(db, "job", range(0, 20), hours_ago=5)
    # the job runs in titrate refresh-worker by default, not in the service process (test_refresh_process.py)
    assert client.app.state.refresh_scheduler is None  # type: ignore[attr-defined]
    if db.dialect == "postgresql":
        with db.engine.connect() as holder:  # another replica holds the job lock
            assert repository.try_job_lock(holder)
            assert scheduler.run_round(db, POLICY).ran is False
            repository.job_unlock(holder)
    result = scheduler.run_round(db, POLICY)
    assert result.ran
    assert set(result.refreshed) == {"job"}
    assert result.refreshed["job"].units_recomputed == 20
    assert not result.failed


def test_the_job_keeps_paused_experiments_fresh(client: TestClient, keys: Keys, db: Database) -> None:
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="held", variants=ARMS)
    assert client.post("/v1/experiments/held/pause", headers=keys.headers("admin")).status_code == 200
    assert set(scheduler.run_round(db, POLICY).refreshed) == {"held"}


def test_an_incremental_refresh_adds_the_events_that_arrived_whatever_their_date(client: TestClient, keys: Keys,
                                                                                 db: Database) -> None:
    """Titrate's own tables: the next refresh adds only the events received since the last one (units with none
    are not touched), late ones included (dated before the lookback), and equals the live scorecard."""
    create_metrics(client, keys.headers("admin"))
    create_experiment(client, keys.headers("admin"), start=True, key="delta", variants=ARMS,
                      design={"alpha": 0.05, "power": 0.8, "mde": 0.05, "sequential": False, "cuped": True,
                              "cuped_lookback_days": 3})
    _seed(db, "delta", range(0, 200), hours_ago=40)
    experiment = _experiment(db, "delta")
    first = service.refresh(db, experiment, POLICY)
    assert first.mode == "full"
    with db.engine.begin() as conn:
        units = list(conn.scalars(select(Exposure.unit_id).where(Exposure.experiment_id == experiment.id)
                                  .order_by(Exposure.unit_id).limit(5)))
        conn.execute(insert(Event), [
            {"event_id": f"delta-{i}-{j}", "unit_id": unit, "name": name, "value": 4.0 + j, "attributes": {},
             "timestamp": NOW - timedelta(hours=39 - j), "received_at": utc_now()}  # 36-39 h late: beyond 24 h
            for i, unit in enumerate(units) for j, name in enumerate(("purchase", "serving.request", "purchase"))])
    second = service.refresh(db, experiment, POLICY)
    assert (second.mode, second.units_recomputed, second.units_written) == ("incremental", 5, 5)
    stored = _get(client, "delta", keys)
    assert datetime.fromisoformat(stored["computed_at"]) == second.state.computed_at
    _close(_numbers(stored), _numbers(_get(client, "delta", keys, as_of=stored["computed_at"])))
    assert service.refresh(db, experiment, POLICY).units_recomputed == 0  # nothing new arrived
