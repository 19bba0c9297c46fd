"""Materialised scorecard rows kept in a schema of the analysis source (``"materialise": {"schema": …}``, issue 14
item 3), on a DuckDB file and on a PostgreSQL source database (both titrate databases).

Registering creates the schema and its two tables in the source (424 with the engine's message when the source's
role may not; 422 for a name that is not an identifier or an engine without schemas to write). Refreshes then write
the per-unit rows there and none into titrate's ``scorecard_units``; the stored scorecard — aggregated in the source
— equals the live one at its ``computed_at``, and after more rows arrive an incremental refresh equals a full one.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, make_url, select, text

from api.auth.keys import Principal
from api.db.engine import Database, normalise_url
from api.db.tables import AuditEntry, ScorecardRefresh, ScorecardUnit, utc_now
from api.sources import service as sources_service
from scorecards.source_views import materialised_tables
from tests.api.sources.test_source_scorecard import assert_same_card, pg_database  # noqa: F401 — a fixture
from tests.api.sources.test_sources import EVENTS, EXPOSURES, make_lake
from tests.conftest import POSTGRES_URL, Keys
from tests.factories import create_experiment, create_metrics

SCHEMA = "titrate_cache"
NOW = utc_now().replace(microsecond=0)


def _rows(first: int, units: int, seed: int, hours: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Exposures (uid, exp, arm, ts, attrs) of experiment ``m`` for units ``first`` … (exposed in the last ``hours``)
    and events (uid, event_name, val, ts, id) for them and for the earlier units (late events of stored units)."""
    rnd = random.Random(seed)
    exposures = [(f"u{i}", "m", "control" if i % 2 else "v2", NOW - timedelta(minutes=rnd.randrange(150, 60 * hours)),
                  json.dumps({"country": rnd.choice(["US", "DE"])})) for i in range(first, first + units)]
    events = []
    for k in range(units * 2):
        unit = f"u{rnd.randrange(0, first + units)}"
        name = rnd.choice(["purchase", "serving.latency_ms", "serving.request"])
        events.append((unit, name, round(rnd.expovariate(0.05), 3), NOW - timedelta(minutes=rnd.randrange(1, 120)),
                       f"s{seed}-{k}"))
    return exposures, events


def _duckdb_source(path: Path, exposures: list[tuple[Any, ...]], events: list[tuple[Any, ...]]) -> str:
    with duckdb.connect(str(path)) as conn:
        conn.executemany("INSERT INTO exp_log VALUES (?, ?, ?, ?, ?)", exposures)
        conn.executemany("INSERT INTO ev VALUES (?, ?, ?, ?, ?)", events)
    return f"duckdb:///{path}"


def _pg_source(url: str, exposures: list[tuple[Any, ...]], events: list[tuple[Any, ...]], create: bool) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        if create:
            conn.execute(text("CREATE SCHEMA warehouse"))
            conn.execute(text("CREATE TABLE warehouse.exp_log (uid text, exp text, arm text, ts timestamptz, "
                              "attrs jsonb)"))
            conn.execute(text("CREATE TABLE warehouse.ev (uid text, event_name text, val double precision, "
                              "ts timestamptz, id text)"))
        if exposures:
            conn.execute(text("INSERT INTO warehouse.exp_log VALUES (:u, :e, :a, :t, CAST(:j AS jsonb))"),
                         [{"u": u, "e": e, "a": a, "t": t, "j": j} for u, e, a, t, j in exposures])
        if events:
            conn.execute(text("INSERT INTO warehouse.ev VALUES (:u, :n, :v, :t, :i)"),
                         [{"u": u, "n": n, "v": v, "t": t, "i": i} for u, n, v, t, i in events])
    engine.dispose()


def _loaded_source(kind: str, tmp_path: Path, pg_url: str | None, exposures: list[tuple[Any, ...]],
                   events: list[tuple[Any, ...]]) -> tuple[str, str, dict[str, Any]]:
    """A DuckDB file or a PostgreSQL database holding the rows: (where to count stored rows, URL, mappings)."""
    if kind == "duckdb":
        where = str(make_lake(tmp_path / "lake.duckdb"))
        return where, _duckdb_source(Path(where), exposures, events), {"exposures": EXPOSURES, "events": EVENTS}
    assert pg_url is not None
    _pg_source(pg_url, exposures, events, create=True)
    return pg_url, pg_url, {"exposures": {**EXPOSURES, "table": "warehouse.exp_log"},
                            "events": {**EVENTS, "table": "warehouse.ev"}}


def _stored_in_source(kind: str, where: str) -> int:
    """Rows of the materialise schema's unit table in the source."""
    if kind == "duckdb":
        with duckdb.connect(where) as conn:
            row = conn.execute(f"SELECT count(*) FROM {SCHEMA}.scorecard_units").fetchone()
        return int(row[0]) if row else 0
    engine = create_engine(where)
    with engine.connect() as conn:
        count = int(conn.execute(text(f"SELECT count(*) FROM {SCHEMA}.scorecard_units")).scalar_one())
    engine.dispose()
    return count


@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_rows_kept_in_the_sources_schema_give_the_live_scorecard_and_incremental_equals_full(
        client: TestClient, keys: Keys, db: Database, tmp_path: Path, pg_database: str | None,  # noqa: F811
        kind: str) -> None:
    if kind == "postgresql" and pg_database is None:
        pytest.skip("PostgreSQL as a source SKIPPED: TITRATE_TEST_POSTGRES_URL is not set")
    analyst, admin = keys.headers("analyst"), keys.headers("admin")
    create_metrics(client, analyst)
    where, url, mappings = _loaded_source(kind, tmp_path, pg_database, *_rows(0, 300, seed=1, hours=96))
    created = client.post("/v1/sources", json={"key": "lake", "url": url, **mappings,
                                                "materialise": {"schema": SCHEMA}}, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["materialise"] == {"schema": SCHEMA}
    assert client.get("/v1/sources/lake", headers=analyst).json()["materialise"] == {"schema": SCHEMA}
    assert _stored_in_source(kind, where) == 0  # the tables exist (created on register), empty
    create_experiment(client, analyst, start=True, admin_headers=admin, key="m", analysis={"source": "lake"})

    def card(**params: str) -> dict[str, Any]:
        response = client.get("/v1/experiments/m/scorecard", params=params, headers=analyst)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    first = card(fresh="full")
    assert sum(v["n"] + v["control_n"] for v in first["metrics"][0]["variants"]) == 300
    assert_same_card(first, card(as_of=first["computed_at"]))  # stored (aggregated in the source) == live
    assert_same_card(card(segment="country"), card(as_of=first["computed_at"], segment="country"))
    with db.read() as session:  # titrate's database keeps none of them
        assert session.scalar(select(func.count()).select_from(ScorecardUnit)) == 0
    assert _stored_in_source(kind, where) == 300

    # more rows arrive: new units and late events of stored ones, inside the lookback (TITRATE_SCORECARD_LOOKBACK_HOURS,
    # 24 h); incremental refresh == full refresh == live
    more_exposures, more_events = _rows(300, 100, seed=2, hours=20)
    if kind == "duckdb":
        _duckdb_source(Path(where), more_exposures, more_events)
    else:
        _pg_source(url, more_exposures, more_events, create=False)
    incremental = card(fresh="true")
    assert incremental["computed_at"] != first["computed_at"]
    assert sum(v["n"] + v["control_n"] for v in incremental["metrics"][0]["variants"]) == 400
    live = card(as_of=incremental["computed_at"])
    assert_same_card(incremental, live)
    full = card(fresh="full")
    assert_same_card(full, incremental)
    assert _stored_in_source(kind, where) == 400


def test_a_materialise_schema_must_be_an_identifier_on_a_duckdb_or_postgresql_source(
        client: TestClient, keys: Keys, tmp_path: Path) -> None:
    admin = keys.headers("admin")
    lake = make_lake(tmp_path / "lake.duckdb")
    for schema in ("x; DROP TABLE ev", "1abc", "", "a" * 64, "sché", 7):
        response = client.post("/v1/sources", json={"key": "s", "url": f"duckdb:///{lake}", "exposures": EXPOSURES,
                                                    "events": EVENTS, "materialise": {"schema": schema}},
                               headers=admin)
        assert response.status_code == 422, (schema, response.text)
        assert response.json()["detail"][0]["loc"] == ["body", "materialise", "schema"], response.text
    sqlite_file = tmp_path / "lake.db"
    engine = create_engine(f"sqlite:///{sqlite_file}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE exp_log (uid TEXT, exp TEXT, arm TEXT, ts TEXT, attrs TEXT)"))
        conn.execute(text("CREATE TABLE ev (uid TEXT, event_name TEXT, val REAL, ts TEXT, id TEXT)"))
    engine.dispose()
    response = client.post("/v1/sources", json={"key": "s", "url": f"sqlite:///{sqlite_file}", "exposures": EXPOSURES,
                                                "events": EVENTS, "materialise": {"schema": SCHEMA}}, headers=admin)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "materialise", "schema"]


@pytest.fixture
def reader_role(pg_database: str | None) -> Iterator[str | None]:  # noqa: F811
    """A login role of the source database that may read schema ``warehouse`` but create nothing (its URL)."""
    if pg_database is None:
        yield None
        return
    _pg_source(pg_database, [], [], create=True)
    role = f"titrate_reader_{os.getpid()}"
    admin = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        conn.execute(text(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'reader'"))
        conn.execute(text(f'GRANT USAGE ON SCHEMA warehouse TO "{role}"'))
        conn.execute(text(f'GRANT SELECT ON ALL TABLES IN SCHEMA warehouse TO "{role}"'))
    try:
        base = make_url(normalise_url(pg_database))
        yield base.set(username=role, password="reader").render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def test_a_source_that_does_not_allow_the_schema_is_a_424_with_the_engines_message(
        client: TestClient, keys: Keys, reader_role: str | None) -> None:
    if reader_role is None:
        pytest.skip("PostgreSQL as a source SKIPPED: TITRATE_TEST_POSTGRES_URL is not set")
    admin = keys.headers("admin")
    mappings = {"exposures": {**EXPOSURES, "table": "warehouse.exp_log"},
                "events": {**EVENTS, "table": "warehouse.ev"}}
    refused = client.post("/v1/sources", json={"key": "ro", "url": reader_role, **mappings,
                                               "materialise": {"schema": SCHEMA}}, headers=admin)
    assert refused.status_code == 424, refused.text
    assert SCHEMA in refused.json()["detail"], refused.text
    assert "permission denied" in refused.json()["detail"], refused.text
    assert "reader'" not in refused.text  # the password is not echoed
    # without materialise the same role registers (it only reads)
    plain = client.post("/v1/sources", json={"key": "ro", "url": reader_role, **mappings}, headers=admin)
    assert plain.status_code == 201, plain.text
    assert POSTGRES_URL


def _refresh_states(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(ScorecardRefresh)) or 0)


@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_deleting_a_source_deletes_the_rows_it_keeps_and_forgets_their_states(
        client: TestClient, keys: Keys, db: Database, tmp_path: Path, pg_database: str | None,  # noqa: F811
        kind: str) -> None:
    """Deleting a source removes its ended experiments' rows from its schema (nothing left in the user's schema)
    and their refresh states from titrate's database: registered again under the key, the source gives the
    experiment's full scorecard, never one read through the old state from a schema without its rows."""
    if kind == "postgresql" and pg_database is None:
        pytest.skip("PostgreSQL as a source SKIPPED: TITRATE_TEST_POSTGRES_URL is not set")
    analyst, admin = keys.headers("analyst"), keys.headers("admin")
    create_metrics(client, analyst)
    where, url, mappings = _loaded_source(kind, tmp_path, pg_database, *_rows(0, 200, seed=3, hours=96))
    source = {"key": "lake", "url": url, **mappings, "materialise": {"schema": SCHEMA}}
    assert client.post("/v1/sources", json=source, headers=admin).status_code == 201
    create_experiment(client, analyst, start=True, admin_headers=admin, key="m", analysis={"source": "lake"})
    first = client.get("/v1/experiments/m/scorecard", params={"fresh": "full"}, headers=analyst).json()
    assert _stored_in_source(kind, where) == 200
    assert _refresh_states(db) == 1

    refused = client.delete("/v1/sources/lake", headers=admin)  # m is running: nothing changes
    assert refused.status_code == 409, refused.text
    assert (_stored_in_source(kind, where), _refresh_states(db)) == (200, 1)

    assert client.post("/v1/experiments/m/stop", headers=admin).status_code == 200
    assert client.delete("/v1/sources/lake", headers=admin).status_code == 204
    assert (_stored_in_source(kind, where), _refresh_states(db)) == (0, 0)
    with db.read() as session:
        after = session.scalars(select(AuditEntry.after).where(AuditEntry.action == "source.delete")).one()
    assert after == {"materialised_rows": "deleted"}
    gone = client.get("/v1/experiments/m/scorecard", headers=analyst)
    assert gone.status_code == 424, gone.text

    assert client.post("/v1/sources", json=source, headers=admin).status_code == 201
    again = client.get("/v1/experiments/m/scorecard", headers=analyst)
    assert again.status_code == 200, again.text
    assert sum(v["n"] + v["control_n"] for v in again.json()["metrics"][0]["variants"]) == 200
    assert_same_card(again.json(), client.get("/v1/experiments/m/scorecard", headers=analyst,
                                              params={"as_of": again.json()["computed_at"]}).json())
    assert first["metrics"][0]["variants"] == again.json()["metrics"][0]["variants"]


def test_a_source_whose_schema_is_gone_is_still_deleted_and_the_audit_names_the_rows_left(
        client: TestClient, keys: Keys, db: Database, tmp_path: Path) -> None:
    analyst, admin = keys.headers("analyst"), keys.headers("admin")
    create_metrics(client, analyst)
    exposures, events = _rows(0, 50, seed=4, hours=96)
    lake = make_lake(tmp_path / "lake.duckdb")
    url = _duckdb_source(Path(lake), exposures, events)
    source = {"key": "lake", "url": url, "exposures": EXPOSURES, "events": EVENTS, "materialise": {"schema": SCHEMA}}
    assert client.post("/v1/sources", json=source, headers=admin).status_code == 201
    create_experiment(client, analyst, start=True, admin_headers=admin, key="m", analysis={"source": "lake"})
    assert client.get("/v1/experiments/m/scorecard", params={"fresh": "full"}, headers=analyst).status_code == 200
    assert client.post("/v1/experiments/m/stop", headers=admin).status_code == 200
    Path(lake).rename(tmp_path / "moved.duckdb")  # the source's database is gone

    assert client.delete("/v1/sources/lake", headers=admin).status_code == 204
    assert client.get("/v1/sources/lake", headers=analyst).status_code == 404
    assert _refresh_states(db) == 0
    with db.read() as session:
        after = session.scalars(select(AuditEntry.after).where(AuditEntry.action == "source.delete")).one()
    assert after is not None
    assert after["materialised_rows"].startswith("left in the source: "), after
    assert _stored_in_source("duckdb", str(tmp_path / "moved.duckdb")) == 50  # left, as the audit says


def test_deleting_a_source_forgets_the_rows_titrates_database_keeps_for_it(
        client: TestClient, keys: Keys, db: Database, tmp_path: Path) -> None:
    """Without ``materialise`` the rows are in titrate's database: deleting the source deletes them and their
    states, so a source registered again under the key on other data gives that data's scorecard (a full
    refresh), not deltas added to the old source's rows."""
    analyst, admin = keys.headers("analyst"), keys.headers("admin")
    create_metrics(client, analyst)
    old = _duckdb_source(make_lake(tmp_path / "old.duckdb"), *_rows(0, 120, seed=5, hours=96))
    assert client.post("/v1/sources", json={"key": "lake", "url": old, "exposures": EXPOSURES, "events": EVENTS},
                       headers=admin).status_code == 201
    create_experiment(client, analyst, start=True, admin_headers=admin, key="m", analysis={"source": "lake"})
    assert client.get("/v1/experiments/m/scorecard", params={"fresh": "full"}, headers=analyst).status_code == 200

    def stored_units() -> int:
        with db.read() as session:
            return int(session.scalar(select(func.count()).select_from(ScorecardUnit)) or 0)

    assert (stored_units(), _refresh_states(db)) == (120, 1)
    assert client.post("/v1/experiments/m/stop", headers=admin).status_code == 200
    assert client.delete("/v1/sources/lake", headers=admin).status_code == 204
    assert (stored_units(), _refresh_states(db)) == (0, 0)
    assert client.get("/v1/experiments/m/scorecard", headers=analyst).status_code == 424

    new = _duckdb_source(make_lake(tmp_path / "new.duckdb"), *_rows(0, 40, seed=6, hours=96))
    assert client.post("/v1/sources", json={"key": "lake", "url": new, "exposures": EXPOSURES, "events": EVENTS},
                       headers=admin).status_code == 201
    card = client.get("/v1/experiments/m/scorecard", params={"fresh": "true"}, headers=analyst).json()
    assert sum(v["n"] + v["control_n"] for v in card["metrics"][0]["variants"]) == 40
    assert_same_card(card, client.get("/v1/experiments/m/scorecard", headers=analyst,
                                      params={"as_of": card["computed_at"]}).json())


def test_a_state_stored_while_the_source_is_being_deleted_is_forgotten_with_it(
        client: TestClient, keys: Keys, db: Database, tmp_path: Path) -> None:
    """A read that refreshes an ended experiment between the release of its rows and the deletion of its source
    stores a new state; the deleting transaction forgets it too, so no state outlives its source."""
    analyst, admin = keys.headers("analyst"), keys.headers("admin")
    create_metrics(client, analyst)
    url = _duckdb_source(make_lake(tmp_path / "lake.duckdb"), *_rows(0, 30, seed=7, hours=96))
    assert client.post("/v1/sources", json={"key": "lake", "url": url, "exposures": EXPOSURES, "events": EVENTS,
                                            "materialise": {"schema": SCHEMA}}, headers=admin).status_code == 201
    create_experiment(client, analyst, start=True, admin_headers=admin, key="m", analysis={"source": "lake"})
    assert client.post("/v1/experiments/m/stop", headers=admin).status_code == 200
    assert client.get("/v1/experiments/m/scorecard", params={"fresh": "full"}, headers=analyst).status_code == 200

    released = sources_service.release_stored_rows(db, "lake")
    assert (released, _refresh_states(db)) == ("deleted", 0)
    assert client.get("/v1/experiments/m/scorecard", params={"fresh": "full"}, headers=analyst).status_code == 200
    assert _refresh_states(db) == 1  # the read in between
    with db.transaction() as session:
        sources_service.delete_source(session, "lake", Principal(0, "test", "admin", "tk_test"), released)
    assert _refresh_states(db) == 0
    assert client.get("/v1/experiments/m/scorecard", headers=analyst).status_code == 424


@pytest.mark.parametrize("made_before", [False, True])
def test_a_duckdb_schema_is_created_without_primary_keys_and_one_made_with_them_still_works(
        client: TestClient, keys: Keys, tmp_path: Path, made_before: bool) -> None:
    """DuckDB keeps a primary key in an ART index that made every full refresh's commit slow
    (``materialised_tables``: ``keyed``), so titrate creates the tables without one; a schema created with keys
    (before this change) is kept as it is and refreshes the same."""
    analyst, admin = keys.headers("analyst"), keys.headers("admin")
    create_metrics(client, analyst)
    lake = make_lake(tmp_path / "lake.duckdb")
    url = _duckdb_source(lake, *_rows(0, 60, seed=8, hours=96))
    if made_before:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
            for table in materialised_tables(SCHEMA, keyed=True):
                table.create(conn)
        engine.dispose()
    assert client.post("/v1/sources", json={"key": "lake", "url": url, "exposures": EXPOSURES, "events": EVENTS,
                                            "materialise": {"schema": SCHEMA}}, headers=admin).status_code == 201
    with duckdb.connect(str(lake)) as conn:
        keyed = conn.execute("SELECT DISTINCT table_name FROM duckdb_constraints() WHERE schema_name = ? "
                             "AND constraint_type = 'PRIMARY KEY' ORDER BY 1", [SCHEMA]).fetchall()
    assert [name for (name,) in keyed] == (
        ["scorecard_unit_values", "scorecard_unit_window_values", "scorecard_units"] if made_before else [])
    create_experiment(client, analyst, start=True, admin_headers=admin, key="m", analysis={"source": "lake"})
    full = client.get("/v1/experiments/m/scorecard", params={"fresh": "full"}, headers=analyst).json()
    _duckdb_source(lake, *_rows(60, 20, seed=9, hours=20))
    incremental = client.get("/v1/experiments/m/scorecard", params={"fresh": "true"}, headers=analyst).json()
    assert sum(v["n"] + v["control_n"] for v in incremental["metrics"][0]["variants"]) == 80
    assert_same_card(incremental, client.get("/v1/experiments/m/scorecard", params={"fresh": "full"},
                                             headers=analyst).json())
    assert full["computed_at"] != incremental["computed_at"]
    assert _stored_in_source("duckdb", str(lake)) == 80
