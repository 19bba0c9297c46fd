"""End to end: an experiment analysed on an analysis source gives the scorecard of the same rows sent through
titrate's own API (both titrate databases; every number to 1e-9 relative).

One data set (1200 units over two variants, attributes with a country, purchases, latency and request events for
the conversion / revenue / latency-guardrail metrics of ``tests.factories``, some events sent twice under one
event id) is sent through ``POST /v1/exposures`` and ``POST /v1/events`` for experiment ``builtin``. The rows titrate
stored are then written, in user-shaped tables (other column names, other experiments' rows, later repeat
exposures, the repeated events), into a DuckDB file and into a schema of a PostgreSQL database; experiments
``lake`` and ``pg`` name those sources. Their scorecards (plain and by country, at a fixed ``as_of`` and from the
last refresh) equal ``builtin``'s, SRM included; the decision and the ship guard decide the same; a source that
disappears answers 424. A Thompson bandit on a source updates its weights from the source's rows.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, select, text

from api.allocation.service import run_allocation_step
from api.db.engine import Database, normalise_url
from api.db.tables import Experiment, Exposure, utc_now
from api.experiments import repository as experiments_repository
from bandits.thompson import thompson_allocation
from scorecards import SampleStats
from tests.api.sources.test_sources import EVENTS, EXPOSURES
from tests.conftest import POSTGRES_URL, Keys
from tests.factories import create_experiment, create_metrics

UNITS = 1200
NOW = utc_now().replace(microsecond=0)
AS_OF = NOW - timedelta(minutes=1)
#: Fields that name the experiment or the moment rather than its numbers.
IDENTITY = frozenset({"experiment", "key", "plan_fingerprint", "as_of", "computed_at", "created_at", "started_at",
                      "updated_at", "hours_at_step"})


def _send(client: TestClient, sdk: dict[str, str], db: Database) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
    """The data set through the API for experiment ``builtin``; returns the stored exposures (unit, variant,
    exposed_at, attributes) and every event row sent (duplicates included)."""
    rnd = random.Random(14)
    at = {f"u{i}": NOW - timedelta(seconds=rnd.randrange(2 * 3600, 10 * 86400)) for i in range(UNITS)}
    country = {u: rnd.choice(["US", "CA", "DE", None]) for u in at}
    for variant in ("control", "v2"):  # the server keeps the one its own assignment agrees with
        batch = [{"experiment": "builtin", "unit_id": u, "variant": variant, "timestamp": t.isoformat(),
                  "attributes": {} if country[u] is None else {"country": country[u]}} for u, t in at.items()]
        response = client.post("/v1/exposures", json={"exposures": batch}, headers=sdk)
        assert response.status_code == 200, response.text
    deadline = time.monotonic() + 60
    while True:  # the exposure writer stores asynchronously (TITRATE_EXPOSURE_FLUSH_SECONDS)
        with db.read() as session:
            exp_id = session.scalar(select(Experiment.id).where(Experiment.key == "builtin"))
            stored = session.execute(select(Exposure.unit_id, Exposure.variant, Exposure.exposed_at,
                                            Exposure.attributes).where(Exposure.experiment_id == exp_id)).all()
        if len(stored) == UNITS or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(stored) == UNITS
    events: list[dict[str, Any]] = []
    for i, unit in enumerate(at):
        for k in range(rnd.randrange(0, 6)):
            name = rnd.choice(["purchase", "serving.latency_ms", "serving.request", "other"])
            when = min(at[unit] + timedelta(seconds=rnd.randrange(-3600, 3 * 86400)), NOW - timedelta(minutes=2))
            value = round(rnd.expovariate(0.02), 3) if name != "serving.request" else 1.0
            events.append({"event_id": f"e{i}-{k}", "unit_id": unit, "name": name, "value": value,
                           "timestamp": when.isoformat()})
    events += [dict(e) for e in events[::7]]  # resent: titrate stores each id once, the sources hold both rows
    for start in range(0, len(events), 2000):
        response = client.post("/v1/events", json={"events": events[start:start + 2000]}, headers=sdk)
        assert response.status_code == 200, response.text
    return [tuple(row) for row in stored], events


def _user_rows(key: str, stored: list[tuple[Any, ...]], events: list[dict[str, Any]]
               ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows as a user's tables hold them for experiment ``key``: exposures (uid, exp, arm, ts, attrs) with a
    later repeat exposure of every third unit and another experiment's rows; events (uid, event_name, val, ts, id)."""
    exposures: list[tuple[Any, ...]] = []
    for i, (unit, variant, exposed_at, attributes) in enumerate(stored):
        exposures.append((unit, key, variant, exposed_at, json.dumps(attributes)))
        if i % 3 == 0:
            exposures.append((unit, key, "v2" if variant == "control" else "control",
                              exposed_at + timedelta(hours=1), "{}"))
        if i % 5 == 0:
            exposures.append((unit, "another-experiment", "control", exposed_at - timedelta(days=1), "{}"))
    rows = [(e["unit_id"], e["name"], e["value"], datetime.fromisoformat(e["timestamp"]), e["event_id"])
            for e in events]
    return exposures, rows


def _lake_file(path: Path, exposures: list[tuple[Any, ...]], events: list[tuple[Any, ...]]) -> Path:
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE exp_log (uid VARCHAR, exp VARCHAR, arm VARCHAR, ts TIMESTAMPTZ, attrs JSON)")
        conn.execute("CREATE TABLE ev (uid VARCHAR, event_name VARCHAR, val DOUBLE, ts TIMESTAMPTZ, id VARCHAR)")
        conn.executemany("INSERT INTO exp_log VALUES (?, ?, ?, ?, ?)", exposures)
        conn.executemany("INSERT INTO ev VALUES (?, ?, ?, ?, ?)", events)
    return path


@pytest.fixture
def pg_database() -> Iterator[str | None]:
    """An empty database of its own on the test PostgreSQL server (its URL), or None without one."""
    if not POSTGRES_URL:
        yield None
        return
    base = make_url(normalise_url(POSTGRES_URL))
    name = f"{base.database}_src_{os.getpid()}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _pg_lake(url: str, exposures: list[tuple[Any, ...]], events: list[tuple[Any, ...]]) -> None:
    """The user-shaped tables in schema ``warehouse`` (jsonb attributes, events' ts without time zone, in UTC)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA warehouse"))
        conn.execute(text("CREATE TABLE warehouse.exp_log (uid text, exp text, arm text, ts timestamptz, "
                          "attrs jsonb)"))
        conn.execute(text("CREATE TABLE warehouse.ev (uid text, event_name text, val double precision, "
                          "ts timestamp, id text)"))
        conn.execute(text("INSERT INTO warehouse.exp_log VALUES (:u, :e, :a, :t, CAST(:j AS jsonb))"),
                     [{"u": u, "e": e, "a": a, "t": t, "j": j} for u, e, a, t, j in exposures])
        conn.execute(text("INSERT INTO warehouse.ev VALUES (:u, :n, :v, :t, :i)"),
                     [{"u": u, "n": n, "v": v, "t": t.replace(tzinfo=None), "i": i} for u, n, v, t, i in events])
    engine.dispose()


def assert_same_card(got: Any, want: Any, path: str = "") -> None:
    """Equal JSON except identity fields; floats to 1e-9 relative (the engines add in their own order)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), path
        assert set(got) == set(want), (path, set(got) ^ set(want))
        for key, value in want.items():
            if key not in IDENTITY:
                assert_same_card(got[key], value, f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list), path
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_card(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, int | float), path
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(got) and math.isnan(want)), (
            path, got, want)
    else:
        assert got == want, (path, got, want)


def test_a_source_experiments_scorecard_equals_the_same_rows_sent_through_the_api(
        client: TestClient, keys: Keys, db: Database, tmp_path: Path, pg_database: str | None) -> None:
    analyst, admin, sdk = keys.headers("analyst"), keys.headers("admin"), keys.headers("sdk")
    create_metrics(client, analyst)
    create_experiment(client, analyst, start=True, admin_headers=admin, key="builtin")
    stored, events = _send(client, sdk, db)

    lake_rows = _user_rows("lake", stored, events)
    lake = _lake_file(tmp_path / "lake.duckdb", *lake_rows)
    sources = {"lake": {"key": "lake", "url": f"duckdb:///{lake}", "exposures": EXPOSURES, "events": EVENTS}}
    if pg_database is not None:
        _pg_lake(pg_database, *_user_rows("pg", stored, events))
        sources["pg"] = {"key": "pg", "url": pg_database,
                         "exposures": {**EXPOSURES, "table": "warehouse.exp_log"},
                         "events": {**EVENTS, "table": "warehouse.ev"}}
    for source in sources.values():
        response = client.post("/v1/sources", json=source, headers=admin)
        assert response.status_code == 201, response.text
        create_experiment(client, analyst, start=True, admin_headers=admin, key=source["key"],
                          analysis={"source": source["key"]})

    params = {"as_of": AS_OF.isoformat()}
    want = client.get("/v1/experiments/builtin/scorecard", params=params, headers=analyst)
    assert want.status_code == 200, want.text
    card = want.json()
    assert sum(v["n"] for m in card["metrics"][:1] for v in m["variants"]) > 0
    by_country = client.get("/v1/experiments/builtin/scorecard", params={**params, "segment": "country"},
                            headers=analyst).json()
    for key in sources:
        got = client.get(f"/v1/experiments/{key}/scorecard", params=params, headers=analyst)
        assert got.status_code == 200, got.text
        assert_same_card(got.json(), card)
        segmented = client.get(f"/v1/experiments/{key}/scorecard", params={**params, "segment": "country"},
                               headers=analyst)
        assert segmented.status_code == 200, segmented.text
        assert_same_card(segmented.json(), by_country)
    # reads without as_of (the last refresh of the materialised rows, api/incremental) and the decision agree too
    latest = client.get("/v1/experiments/builtin/scorecard", headers=analyst).json()
    decision = client.get("/v1/experiments/builtin/decision", headers=analyst).json()
    for key in sources:
        got = client.get(f"/v1/experiments/{key}/scorecard", headers=analyst)
        assert got.status_code == 200, got.text
        assert_same_card(got.json(), latest)
        assert_same_card(client.get(f"/v1/experiments/{key}/decision", headers=analyst).json(), decision)

    # the ship guard decides from the same numbers (a live read, now)
    guarded = {key: client.post(f"/v1/experiments/{key}/ship", json={"variant": "v2"}, headers=admin)
               for key in ("builtin", *sources)}
    assert guarded["builtin"].status_code in (200, 409), guarded["builtin"].text
    for key in sources:
        assert guarded[key].status_code == guarded["builtin"].status_code, guarded[key].text
        if guarded[key].status_code == 409:
            got_detail, want_detail = guarded[key].json()["detail"], guarded["builtin"].json()["detail"]
            assert (got_detail["decision"], got_detail["reasons"]) == (want_detail["decision"],
                                                                        want_detail["reasons"])

    # a source that disappears: 424 with the engine's message, never a 500
    lake.rename(tmp_path / "moved.duckdb")
    gone = client.get("/v1/experiments/lake/scorecard", params=params, headers=analyst)
    assert gone.status_code == 424, gone.text
    assert "lake" in gone.json()["detail"]
    if pg_database is None:
        pytest.skip("the DuckDB source was checked; the PostgreSQL source needs TITRATE_TEST_POSTGRES_URL")


def test_a_bandit_on_a_source_updates_from_the_sources_rows(client: TestClient, keys: Keys, db: Database,
                                                             tmp_path: Path) -> None:
    analyst, admin = keys.headers("analyst"), keys.headers("admin")
    create_metrics(client, analyst)
    rnd = random.Random(3)
    exposures: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    converted = {"control": 0, "v2": 0}
    for i in range(400):
        variant = "control" if i % 2 else "v2"
        at = NOW - timedelta(hours=rnd.randrange(2, 48))
        exposures.append((f"u{i}", "bandit", variant, at, "{}"))
        if rnd.random() < (0.10 if variant == "control" else 0.20):
            converted[variant] += 1
            events.append((f"u{i}", "purchase", 1.0, at + timedelta(minutes=5), f"p{i}"))
    lake = _lake_file(tmp_path / "lake.duckdb", exposures, events)
    response = client.post("/v1/sources", json={"key": "lake", "url": f"duckdb:///{lake}", "exposures": EXPOSURES,
                                                "events": EVENTS}, headers=admin)
    assert response.status_code == 201, response.text
    create_experiment(client, analyst, start=True, admin_headers=admin, key="bandit",
                      allocation={"strategy": "thompson", "floor": 0.05},
                      metrics={"primary": "conversion", "secondary": [], "guardrails": []},
                      analysis={"source": "lake"})
    with db.transaction() as session:
        experiment = experiments_repository.get(session, "bandit", for_update=True)
        assert experiment is not None
        result = run_allocation_step(session, experiment, utc_now(), rng_seed=1234, force=True)
    assert result.new_version, result
    with db.read() as session:
        row = experiments_repository.latest_allocations(session, [experiment.id])[experiment.id]
        weights, posterior = dict(row.weights), row.details["posterior"]
    sums = [SampleStats(200, float(converted[v]), float(converted[v])) for v in ("control", "v2")]
    assert [posterior[v]["n"] for v in ("control", "v2")] == [200, 200]  # titrate's own tables hold none of them
    again = thompson_allocation(sums, "proportion", rng=1234, floor=0.05)
    assert weights == {"control": again.weights[0], "v2": again.weights[1]}
