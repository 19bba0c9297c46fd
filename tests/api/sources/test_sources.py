"""Analysis sources through the REST API (both titrate databases): registration, roles, masking, ``${ENV}``, the
checks on create (422 naming the missing or mistyped column, 422 for SQL that is not a read-only SELECT, 424 for an
unreachable source or unknown driver, 503 for a slow one — each within the timeout) and the experiment's
``analysis`` field (422 for an unknown source, frozen once started, DELETE refused while it is read)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text

from api.app import create_app
from api.db.engine import normalise_url
from api.settings import Settings
from api.sources import service
from tests.conftest import POSTGRES_URL, Keys
from tests.factories import create_experiment, create_metrics, experiment_body

EXPOSURES = {"table": "exp_log", "columns": {"unit_id": "uid", "experiment": "exp", "variant": "arm",
                                             "timestamp": "ts", "attributes": "attrs"}}
EVENTS = {"table": "ev", "columns": {"unit_id": "uid", "name": "event_name", "value": "val", "timestamp": "ts",
                                     "event_id": "id"}}


def make_lake(path: Path) -> Path:
    """A DuckDB file with the DESIGN.md example's tables (empty) and a text-typed decoy table."""
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE exp_log (uid VARCHAR, exp VARCHAR, arm VARCHAR, ts TIMESTAMPTZ, attrs JSON)")
        conn.execute("CREATE TABLE ev (uid VARCHAR, event_name VARCHAR, val DOUBLE, ts TIMESTAMPTZ, id VARCHAR)")
        conn.execute("CREATE TABLE ev_text (uid VARCHAR, event_name VARCHAR, val VARCHAR, ts VARCHAR, id VARCHAR)")
        conn.execute("INSERT INTO ev_text VALUES ('u1', 'purchase', '3.5', '2026-03-02T09:30:00Z', 'e1')")
        conn.execute("CREATE TABLE ev_int (uid INTEGER, event_name VARCHAR, val DOUBLE, ts TIMESTAMPTZ, id VARCHAR)")
    return path


def body(key: str, url: str, exposures: dict[str, Any] | None = None, events: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    """A POST /v1/sources body (the DESIGN.md example's mapping unless overridden)."""
    return {"key": key, "url": url, "exposures": exposures or EXPOSURES, "events": events or EVENTS}


def with_columns(mapping: dict[str, Any], **columns: str | None) -> dict[str, Any]:
    """``mapping`` with some columns renamed (None: left out)."""
    merged = {**mapping["columns"], **columns}
    return {**{k: v for k, v in mapping.items() if k != "columns"},
            "columns": {k: v for k, v in merged.items() if v is not None}}


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    return make_lake(tmp_path / "lake.duckdb")


@pytest.fixture
def admin(client: TestClient, keys: Keys) -> dict[str, str]:
    return keys.headers("admin")


def _detail_loc(response: Any) -> list[Any]:
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    return list(detail[0]["loc"])


# -------------------------------------------------------------------------------------------------- registry


def test_register_list_get_and_delete_a_duckdb_source(client: TestClient, keys: Keys, admin: dict[str, str],
                                                      lake: Path) -> None:
    created = client.post("/v1/sources", json=body("lake", f"duckdb:///{lake}"), headers=admin)
    assert created.status_code == 201, created.text
    out = created.json()
    assert out["key"] == "lake"
    assert out["url"] == f"duckdb:///{lake}"
    assert out["exposures"] == EXPOSURES
    assert out["events"] == EVENTS
    analyst = keys.headers("analyst")
    assert [s["key"] for s in client.get("/v1/sources", headers=analyst).json()] == ["lake"]
    assert client.get("/v1/sources/lake", headers=analyst).json() == out
    assert client.post("/v1/sources", json=body("lake", f"duckdb:///{lake}"), headers=admin).status_code == 409
    assert client.delete("/v1/sources/lake", headers=admin).status_code == 204
    assert client.get("/v1/sources/lake", headers=analyst).status_code == 404
    assert client.delete("/v1/sources/lake", headers=admin).status_code == 404


def test_an_analyst_may_read_but_not_register_or_delete(client: TestClient, keys: Keys, admin: dict[str, str],
                                                        lake: Path) -> None:
    analyst, sdk = keys.headers("analyst"), keys.headers("sdk")
    assert client.post("/v1/sources", json=body("lake", f"duckdb:///{lake}"), headers=analyst).status_code == 403
    assert client.post("/v1/sources", json=body("lake", f"duckdb:///{lake}"), headers=admin).status_code == 201
    assert client.delete("/v1/sources/lake", headers=analyst).status_code == 403
    assert client.get("/v1/sources", headers=sdk).status_code == 403
    assert client.get("/v1/sources").status_code == 401
    assert client.get("/v1/sources/lake", headers=analyst).status_code == 200


def test_env_references_are_stored_unexpanded_and_passwords_masked(client: TestClient, keys: Keys,
                                                                   admin: dict[str, str], lake: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TITRATE_TEST_LAKE", str(lake))
    created = client.post("/v1/sources", json=body("env", "duckdb:///${TITRATE_TEST_LAKE}"), headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["url"] == "duckdb:///${TITRATE_TEST_LAKE}"
    # the URL is expanded at use, from the environment of that moment
    monkeypatch.delenv("TITRATE_TEST_LAKE")
    missing = client.post("/v1/sources", json=body("env2", "duckdb:///${TITRATE_TEST_LAKE}"), headers=admin)
    assert missing.status_code == 422
    assert _detail_loc(missing) == ["body", "url"]
    assert "TITRATE_TEST_LAKE" in missing.text


def test_masking_rules() -> None:
    assert service.masked("postgresql://ana:hunter2@db:5432/lake") == "postgresql://ana:***@db:5432/lake"
    assert service.masked("postgresql://ana:${PG_PASSWORD}@db/lake") == "postgresql://ana:${PG_PASSWORD}@db/lake"
    assert service.masked("postgresql://ana:x${PG_PASSWORD}@db/lake") == "postgresql://ana:***@db/lake"
    assert service.masked("postgresql://${PG_USER}@${PG_HOST}:5432/lake") == "postgresql://${PG_USER}@${PG_HOST}:5432/lake"
    assert service.masked("duckdb:////data/lake.duckdb") == "duckdb:////data/lake.duckdb"
    assert service.expand("a${X}b${Y}", {"X": "1", "Y": "2"}) == "a1b2"
    with pytest.raises(service.MissingVariable, match="'Z'"):
        service.expand("${Z}", {})


@pytest.mark.skipif(not POSTGRES_URL, reason="needs TITRATE_TEST_POSTGRES_URL (a PostgreSQL source)")
def test_get_masks_a_stored_password(client: TestClient, keys: Keys, admin: dict[str, str],
                                     pg_lake: str) -> None:
    url = make_url(pg_lake).set(password="s3cret-pw")  # the test server trusts local connections: any password
    created = client.post("/v1/sources", json=body("pg", url.render_as_string(hide_password=False),
                                                   *pg_mappings()), headers=admin)
    assert created.status_code == 201, created.text
    shown = client.get("/v1/sources/pg", headers=keys.headers("analyst")).json()["url"]
    assert "s3cret-pw" not in shown
    assert ":***@" in shown
    assert "s3cret-pw" not in client.get("/v1/sources", headers=admin).text


# ------------------------------------------------------------------------------------------ checks on create


@pytest.mark.parametrize(("exposures", "events", "loc"), [
    (with_columns(EXPOSURES, timestamp="when"), EVENTS, ["body", "exposures", "columns", "timestamp"]),
    (EXPOSURES, with_columns(EVENTS, value="amount"), ["body", "events", "columns", "value"]),
    (EXPOSURES, with_columns(EVENTS, event_id="nope"), ["body", "events", "columns", "event_id"]),
    ({**EXPOSURES, "table": "no_such_table"}, EVENTS, ["body", "exposures", "table"]),
    (EXPOSURES, {**EVENTS, "table": "ev_text"}, ["body", "events", "columns", "value"]),
    (EXPOSURES, {**with_columns(EVENTS, value="uid"), "table": "ev"}, ["body", "events", "columns", "value"]),
    (with_columns(EXPOSURES, timestamp="arm"), EVENTS, ["body", "exposures", "columns", "timestamp"]),
    (EXPOSURES, {"sql": "SELECT uid, event_name, val, ts FROM ev", "columns": EVENTS["columns"]},
     ["body", "events", "columns", "event_id"]),
])
def test_a_missing_or_mistyped_column_is_a_422_naming_it(client: TestClient, admin: dict[str, str], lake: Path,
                                                         exposures: dict[str, Any], events: dict[str, Any],
                                                         loc: list[Any]) -> None:
    response = client.post("/v1/sources", json=body("bad", f"duckdb:///{lake}", exposures, events), headers=admin)
    assert response.status_code == 422, response.text
    assert _detail_loc(response) == loc
    assert client.get("/v1/sources/bad", headers=admin).status_code == 404  # nothing stored


def test_required_columns_and_one_of_table_or_sql_are_checked_by_the_schema(client: TestClient,
                                                                              admin: dict[str, str],
                                                                              lake: Path) -> None:
    no_unit = with_columns(EXPOSURES, unit_id=None)
    response = client.post("/v1/sources", json=body("s", f"duckdb:///{lake}", no_unit), headers=admin)
    assert response.status_code == 422
    assert _detail_loc(response) == ["body", "exposures", "columns", "unit_id"]
    both = {**EVENTS, "sql": "SELECT * FROM ev"}
    response = client.post("/v1/sources", json=body("s", f"duckdb:///{lake}", events=both), headers=admin)
    assert response.status_code == 422
    assert _detail_loc(response)[:2] == ["body", "events"]
    response = client.post("/v1/sources", json=body("s", "not a url"), headers=admin)
    assert response.status_code == 422
    assert _detail_loc(response) == ["body", "url"]


@pytest.mark.parametrize(("patch", "loc"), [
    ({"key": "bad key!"}, ["body", "key"]),
    ({"url": "x" * 2001}, ["body", "url"]),
    ({"url": 42}, ["body", "url"]),
    ({"exposures": {**EXPOSURES, "columns": {**EXPOSURES["columns"], "unit_id": "u\x00id"}}},
     ["body", "exposures", "columns", "unit_id"]),
    ({"events": {"sql": "SELECT 1\x00", "columns": EVENTS["columns"]}}, ["body", "events", "sql"]),
    ({"events": {**EVENTS, "columns": {**EVENTS["columns"], "value": ""}}}, ["body", "events", "columns", "value"]),
    ({"events": {**EVENTS, "extra": 1}}, ["body", "events", "extra"]),
])
def test_poisoned_bodies_are_a_422_naming_the_field(client: TestClient, admin: dict[str, str], lake: Path,
                                                   patch: dict[str, Any], loc: list[Any]) -> None:
    response = client.post("/v1/sources", json={**body("p", f"duckdb:///{lake}"), **patch}, headers=admin)
    assert response.status_code == 422, response.text
    assert _detail_loc(response)[:len(loc)] == loc
    assert client.get("/v1/sources/bad%20key!", headers=admin).status_code == 422


@pytest.mark.parametrize("sql", [
    "DELETE FROM ev",
    "SELECT * FROM ev; DROP TABLE ev",
    "WITH gone AS (DELETE FROM ev RETURNING *) SELECT * FROM gone",
    "INSERT INTO ev SELECT * FROM ev",
    "CREATE TABLE x AS SELECT * FROM ev",
    "ATTACH 'other.duckdb'",
    "COPY ev TO 'out.csv'",
])
def test_sql_that_is_not_one_read_only_select_is_refused(client: TestClient, admin: dict[str, str], lake: Path,
                                                         sql: str) -> None:
    events = {"sql": sql, "columns": EVENTS["columns"]}
    response = client.post("/v1/sources", json=body("s", f"duckdb:///{lake}", events=events), headers=admin)
    assert response.status_code == 422, response.text
    assert _detail_loc(response) == ["body", "events", "sql"]
    with duckdb.connect(str(lake), read_only=True) as conn:  # nothing ran
        assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'ev'").fetchone() == (1,)


def test_a_read_only_select_with_quoted_keywords_is_accepted(client: TestClient, admin: dict[str, str],
                                                             lake: Path) -> None:
    events = {"sql": "-- the 'delete' events are ours\nWITH e AS (SELECT uid, event_name, val, ts, id FROM ev "
                     "WHERE event_name <> 'delete; drop') SELECT * FROM e -- all of them\n;",
              "columns": EVENTS["columns"]}
    response = client.post("/v1/sources", json=body("s", f"duckdb:///{lake}", events=events), headers=admin)
    assert response.status_code == 201, response.text


def _parquet_events(path: Path) -> Path:
    """One event row as a Parquet file at ``path`` (written by a DuckDB of its own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect() as conn:
        conn.execute(f"COPY (SELECT 'u1' AS uid, 'purchase' AS event_name, 2.5::DOUBLE AS val, "
                     f"TIMESTAMPTZ '2026-03-02 09:30:00+00' AS ts, 'e1' AS id) TO '{path}' (FORMAT parquet)")
    return path


def test_a_duckdb_source_reads_files_only_where_it_is_allowed(client: TestClient, admin: dict[str, str],
                                                             lake: Path, tmp_path: Path) -> None:
    beside = _parquet_events(lake.parent / "events.parquet")
    elsewhere = _parquet_events(tmp_path.parent / f"{tmp_path.name}-elsewhere" / "events.parquet")
    columns = EVENTS["columns"]
    ok = client.post("/v1/sources", json=body("beside", f"duckdb:///{lake}", events={
        "sql": f"SELECT * FROM read_parquet('{beside}')", "columns": columns}), headers=admin)
    assert ok.status_code == 201, ok.text
    for key, sql in (("passwd", "SELECT 'u' AS uid, 'n' AS event_name, 1.0 AS val, now() AS ts, column0 AS id "
                                "FROM read_csv('/etc/passwd', header = false)"),
                     ("outside", f"SELECT * FROM read_parquet('{elsewhere}')")):
        refused = client.post("/v1/sources", json=body(key, f"duckdb:///{lake}", events={"sql": sql,
                                                                                          "columns": columns}),
                              headers=admin)
        assert refused.status_code == 422, refused.text
        assert _detail_loc(refused) == ["body", "events", "sql"]
        assert "disabled by configuration" in refused.text
        assert client.get(f"/v1/sources/{key}", headers=admin).status_code == 404


def test_allowed_directories_widen_what_a_duckdb_source_reads(settings: Settings, keys: Keys, lake: Path,
                                                              tmp_path: Path) -> None:
    elsewhere = _parquet_events(tmp_path.parent / f"{tmp_path.name}-data" / "events.parquet")
    widened = settings.model_copy(update={"source_duckdb_allowed_directories": [f"{elsewhere.parent}/"]})
    with TestClient(create_app(widened)) as widened_client:
        response = widened_client.post("/v1/sources", json=body("wide", f"duckdb:///{lake}", events={
            "sql": f"SELECT * FROM read_parquet('{elsewhere}')", "columns": EVENTS["columns"]}),
            headers=keys.headers("admin"))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://postgres@127.0.0.1:1/lake",  # nothing listens on port 1
    "nosuchdialect://host/db",
    "duckdb:////no/such/dir/lake.duckdb",
    "sqlite:////no/such/dir/lake.db",
    "chdb://",  # chDB's own exception class (outside PEP 249's), or without chDB an unknown dialect
])
def test_an_unreachable_source_or_unknown_driver_is_a_424_with_the_engines_message(
        client: TestClient, admin: dict[str, str], url: str) -> None:
    started = time.monotonic()
    response = client.post("/v1/sources", json=body("gone", url), headers=admin)
    assert response.status_code == 424, response.text
    assert "gone" in response.json()["detail"]
    assert len(response.json()["detail"]) > 30
    assert time.monotonic() - started < 30  # bounded by the connect timeout (5 s), never a hang
    assert not Path("/no/such/dir").exists()


def test_a_sqlite_source_accepts_iso_text_and_refuses_other_text(client: TestClient, admin: dict[str, str],
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "lake.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE exp_log (uid TEXT, exp TEXT, arm TEXT, ts TEXT, attrs TEXT)")
        conn.execute("CREATE TABLE ev (uid TEXT, event_name TEXT, val REAL, ts TEXT, id TEXT)")
        conn.execute("INSERT INTO ev VALUES ('u1', 'purchase', 2.5, '2026-03-02T09:30:00Z', 'e1')")
        conn.execute("CREATE TABLE ev_bad (uid TEXT, event_name TEXT, val REAL, ts TEXT, id TEXT)")
        conn.execute("INSERT INTO ev_bad VALUES ('u1', 'purchase', 2.5, 'yesterday', 'e1')")
        conn.execute("CREATE TABLE ev_val (uid TEXT, event_name TEXT, val TEXT, ts TEXT, id TEXT)")
        conn.execute("INSERT INTO ev_val VALUES ('u1', 'purchase', 'lots', '2026-03-02 09:30:00', 'e1')")
    conn.close()
    ok = client.post("/v1/sources", json=body("lite", f"sqlite:///{path}"), headers=admin)
    assert ok.status_code == 201, ok.text
    for table, column in (("ev_bad", "timestamp"), ("ev_val", "value")):
        response = client.post("/v1/sources", json=body("bad", f"sqlite:///{path}", events={**EVENTS, "table": table}),
                               headers=admin)
        assert response.status_code == 422, response.text
        assert _detail_loc(response) == ["body", "events", "columns", column]


# ----------------------------------------------------------------------------------------- slow sources: 503


@pytest.fixture
def quick_client(db: Any, settings: Settings) -> Iterator[TestClient]:
    """The app with a 0.5 s statement timeout on sources."""
    quick = settings.model_copy(update={"source_statement_timeout_seconds": 0.5})
    with TestClient(create_app(quick)) as test_client:
        yield test_client


def test_a_slow_duckdb_source_is_a_503_within_the_timeout(quick_client: TestClient, keys: Keys, lake: Path) -> None:
    slow = {"sql": "SELECT uid, event_name, val, ts, id FROM ev, (SELECT count(*) AS n FROM range(100000000000) a) "
                   "WHERE n > 0",
            "columns": EVENTS["columns"]}
    started = time.monotonic()
    response = quick_client.post("/v1/sources", json=body("slow", f"duckdb:///{lake}", events=slow),
                                 headers=keys.headers("admin"))
    assert response.status_code == 503, response.text
    assert "did not answer in time" in response.json()["detail"]
    assert time.monotonic() - started < 20


# ---------------------------------------------------------------------------------- a PostgreSQL source schema


def pg_mappings(schema: str = "lake") -> tuple[dict[str, Any], dict[str, Any]]:
    return ({**EXPOSURES, "table": f"{schema}.exp_log"}, {**EVENTS, "table": f"{schema}.ev"})


@pytest.fixture
def pg_lake() -> Iterator[str]:
    """A schema ``lake`` in a database of its own on the test PostgreSQL server, with the example tables; its URL."""
    if not POSTGRES_URL:
        pytest.skip("needs TITRATE_TEST_POSTGRES_URL (a PostgreSQL source)")
    base = make_url(normalise_url(POSTGRES_URL))
    name = f"{base.database}_lake_{os.getpid()}"
    admin_engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA lake"))
        conn.execute(text("CREATE TABLE lake.exp_log (uid text, exp text, arm text, ts timestamptz, attrs jsonb)"))
        conn.execute(text("CREATE TABLE lake.ev (uid text, event_name text, val double precision, "
                          "ts timestamp, id text)"))
        conn.execute(text("CREATE TABLE lake.ev_int (uid bigint, event_name text, val double precision, "
                          "ts timestamp, id text)"))
    engine.dispose()
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()


def test_a_postgresql_schema_is_a_source_and_a_slow_query_is_a_503(quick_client: TestClient, keys: Keys,
                                                                  pg_lake: str) -> None:
    admin = keys.headers("admin")
    exposures, events = pg_mappings()
    ok = quick_client.post("/v1/sources", json=body("pg", pg_lake, exposures, events), headers=admin)
    assert ok.status_code == 201, ok.text
    mistyped = quick_client.post("/v1/sources", json=body("pg2", pg_lake, with_columns(exposures, timestamp="arm"),
                                                          events), headers=admin)
    assert mistyped.status_code == 422
    assert _detail_loc(mistyped) == ["body", "exposures", "columns", "timestamp"]
    int_units = quick_client.post("/v1/sources", headers=admin,
                                  json=body("pg3", pg_lake, exposures, {**events, "table": "lake.ev_int"}))
    assert int_units.status_code == 422, int_units.text
    assert _detail_loc(int_units) == ["body", "events", "columns", "unit_id"]  # text = integer: not comparable
    slow = {"sql": "SELECT uid, event_name, val, ts, id, pg_sleep(3) AS nap FROM lake.ev "
                   "UNION ALL SELECT 'u', 'n', 1.0, now()::timestamp, 'i', pg_sleep(3)",
            "columns": EVENTS["columns"]}
    started = time.monotonic()
    response = quick_client.post("/v1/sources", json=body("slow", pg_lake, exposures, slow), headers=admin)
    assert response.status_code == 503, response.text
    assert "statement timeout" in response.json()["detail"]
    assert time.monotonic() - started < 3  # the 0.5 s statement timeout, not the 3 s sleep

    # slow only once rows arrive: registered while the table is empty, then the scorecard read is a 503
    sleepy = {"sql": "SELECT uid, event_name, val, ts, id FROM lake.ev WHERE pg_sleep(1) IS NOT NULL",
              "columns": EVENTS["columns"]}
    ok = quick_client.post("/v1/sources", json=body("sleepy", pg_lake, exposures, sleepy), headers=admin)
    assert ok.status_code == 201, ok.text
    engine = create_engine(pg_lake)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO lake.exp_log VALUES ('u1', 'slow', 'control', now() - interval '1 day', '{}')"))
        conn.execute(text("INSERT INTO lake.ev VALUES ('u1', 'purchase', 1.0, now() - interval '1 hour', 'e1'), "
                          "('u1', 'purchase', 2.0, now() - interval '1 hour', 'e2')"))
    engine.dispose()
    analyst = keys.headers("analyst")
    create_metrics(quick_client, analyst)
    create_experiment(quick_client, analyst, start=True, admin_headers=admin, key="slow",
                      analysis={"source": "sleepy"})
    started = time.monotonic()
    as_of = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    card = quick_client.get("/v1/experiments/slow/scorecard", params={"as_of": as_of}, headers=analyst)
    assert card.status_code == 503, card.text
    assert "sleepy" in card.json()["detail"]
    assert card.headers["Retry-After"]
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------------- experiments name a source


def test_an_experiment_names_a_registered_source_frozen_once_started(client: TestClient, keys: Keys,
                                                                     admin: dict[str, str], lake: Path) -> None:
    analyst = keys.headers("analyst")
    create_metrics(client, analyst)
    unknown = client.post("/v1/experiments", json={**_experiment("e1"), "analysis": {"source": "lake"}},
                          headers=analyst)
    assert unknown.status_code == 422
    assert _detail_loc(unknown) == ["body", "analysis", "source"]
    assert client.post("/v1/sources", json=body("lake", f"duckdb:///{lake}"), headers=admin).status_code == 201
    created = create_experiment(client, analyst, key="e1", analysis={"source": "lake"})
    assert created["analysis"] == {"source": "lake"}
    plain = create_experiment(client, analyst, key="e2")
    assert plain["analysis"] is None
    # a draft may change or drop its source; a 422 for an unknown one
    patched = client.patch("/v1/experiments/e2", json={"analysis": {"source": "nope"}}, headers=analyst)
    assert patched.status_code == 422
    assert _detail_loc(patched) == ["body", "analysis", "source"]
    patched = client.patch("/v1/experiments/e2", json={"analysis": {"source": "lake"}}, headers=analyst)
    assert patched.status_code == 200
    assert patched.json()["analysis"] == {"source": "lake"}
    # DELETE refused while an experiment that has not ended reads the source
    refused = client.delete("/v1/sources/lake", headers=admin)
    assert refused.status_code == 409
    assert "e1" in refused.text
    assert "e2" in refused.text
    assert client.post("/v1/experiments/e1/start", headers=admin).status_code == 200
    frozen = client.patch("/v1/experiments/e1", json={"analysis": None}, headers=analyst)
    assert frozen.status_code == 409
    assert "analysis" in frozen.text
    assert client.patch("/v1/experiments/e2", json={"analysis": None}, headers=analyst).json()["analysis"] is None
    assert client.post("/v1/experiments/e1/stop", headers=admin).status_code == 200
    assert client.delete("/v1/sources/lake", headers=admin).status_code == 204
    # the ended experiment still names it; reading its scorecard now says the source is gone (424, not 500)
    card = client.get("/v1/experiments/e1/scorecard", params={"as_of": "2026-01-01T00:00:00Z"}, headers=analyst)
    assert card.status_code == 424, card.text
    assert "not registered" in card.json()["detail"]


def _experiment(key: str) -> dict[str, Any]:
    return experiment_body(key)
