"""Acceptance of issue 12 through the service: poison requests of every kind are refused at the edge and never
stop exposure logging — 10,000 valid acknowledged exposures all reach the scorecard (both databases).

The writer-level half (poison rows that got past the edge are split out into ``dead_letters`` while the rest is
written) is ``tests/api/assignment/test_exposure_writer.py::test_poison_rows_never_block_10k_valid_ones``; the other
defects of the issue are replayed where their fix lives: ``test_validation.py`` (non-finite numbers, huge
integers, extreme timestamps, path integers), ``test_bad_stored_rows.py`` (rows stored by older versions),
``test_limits.py`` (body and batch sizes), ``test_faults.py`` (database faults), ``test_durability.py``
(SIGKILL), ``test_roles.py`` (PATCH needs admin), ``test_cli.py`` (one-line CLI mistakes) and ``tests/ui/``
(console sign-in). Hostile ``/v1/sources`` requests (issue 14) are refused naming the field, and nothing in a column
name or a ``sql`` mapping runs as SQL."""

from __future__ import annotations

from typing import Any

import duckdb
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.db.engine import Database
from api.db.tables import DeadLetter, Exposure
from tests.api.sources.test_sources import EVENTS, EXPOSURES, make_lake, with_columns
from tests.api.sources.test_sources import body as source_body
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics, experiment_body

POISON_EXPOSURES: list[dict[str, Any]] = [
    {"timestamp": "0001-01-01T00:00:00+14:00"},
    {"timestamp": "9999-12-31T23:59:59-14:00"},
    {"timestamp": "9999-06-01T00:00:00Z"},
    {"attributes": {"x": float("nan")}},
    {"attributes": {"x": float("inf")}},
    {"attributes": {"nested": {"y": [float("-inf")]}}},
    {"attributes": {"big": 10**30}},
    {"unit_id": "u" * 300},
]


def _raw_json(body: dict[str, Any]) -> str:
    """JSON as a hostile client writes it: ``NaN``/``Infinity`` tokens, and ``1e309`` for one of the infinities."""
    import json

    return json.dumps(body, allow_nan=True).replace("-Infinity", "-1e309")


def test_poison_requests_are_refused_and_never_block_10k_valid_exposures(
    client: TestClient, keys: Keys, db: Database
) -> None:
    admin, sdk = keys.headers("admin"), {**keys.headers("sdk"), "Content-Type": "application/json"}
    create_metrics(client, admin)
    create_experiment(client, admin, start=True)
    valid_exposure = {"experiment": "ranker-v2", "unit_id": "sdk-u", "variant": "control",
                      "timestamp": "2026-11-23T10:00:00Z", "attributes": {}}
    statuses = []
    for i in range(10_000):
        if i % 1000 == 500:  # interleave poison of every kind on every path with the valid traffic
            for j, poison in enumerate(POISON_EXPOSURES):
                exposure = {**valid_exposure, "unit_id": f"poison-{i}-{j}", **poison}
                statuses.append(client.post("/v1/exposures", content=_raw_json({"exposures": [exposure]}),
                                            headers=sdk).status_code)
                attributes = poison.get("attributes", {"x": float("nan")})
                statuses.append(client.post("/v1/assign", content=_raw_json(
                    {"unit_id": f"poison-assign-{i}-{j}", "attributes": attributes}), headers=sdk).status_code)
                event = {"event_id": f"e-{i}-{j}", "unit_id": "u", "name": "purchase", "value": 1.0,
                         "timestamp": poison.get("timestamp", "2026-11-23T10:00:00Z"), "attributes": attributes}
                statuses.append(client.post("/v1/events", content=_raw_json({"events": [event]}),
                                            headers=sdk).status_code)
        response = client.post("/v1/assign", json={"unit_id": f"u-{i}"}, headers=sdk)
        assert response.status_code == 200, response.text
        assert "ranker-v2" in response.json()["assignments"]
    assert set(statuses) == {422}, statuses
    client.app.state.exposure_writer.flush()  # type: ignore[attr-defined]

    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Exposure)) == 10_000
        assert session.scalar(select(func.count()).select_from(DeadLetter)) == 0  # the edge refused every poison
    card = client.get("/v1/experiments/ranker-v2/scorecard", headers=admin)
    assert card.status_code == 200, card.text
    [treatment] = card.json()["metrics"][0]["variants"]
    assert treatment["n"] + treatment["control_n"] == 10_000
    segment = client.get("/v1/experiments/ranker-v2/scorecard?segment=country", headers=admin)
    assert segment.status_code == 200, segment.text


# ------------------------------------------------------------------------------------ hostile /v1/sources (issue 14)

_COLUMNS_SQL = 'val"; DROP TABLE ev; --'


def _hostile_sources(lake: str) -> dict[str, tuple[dict[str, Any] | str, int, list[str | int] | None]]:
    """name → (body or raw JSON text, expected status, the field a 422 must name)."""
    def body(**overrides: Any) -> dict[str, Any]:
        return {"key": "s", "url": f"duckdb:///{lake}", "exposures": EXPOSURES, "events": EVENTS, **overrides}

    def sql(query: str) -> dict[str, Any]:
        return body(events={"sql": query, "columns": EVENTS["columns"]})

    ev = ["body", "events"]
    return {
        "SQL in a column name": (body(events=with_columns(EVENTS, value=_COLUMNS_SQL)), 422,
                                 [*ev, "columns", "value"]),
        "SQL in a table name": (body(events={**EVENTS, "table": "ev; DROP TABLE ev"}), 422, [*ev, "table"]),
        "a column name with a lone surrogate": (body(events=with_columns(EVENTS, value="\ud800")), 422,
                                                [*ev, "columns", "value"]),
        "a unicode column name": (body(events=with_columns(EVENTS, value="vål😀")), 422, [*ev, "columns", "value"]),
        "a huge integer as a column": (body(events=with_columns(EVENTS, value=10**30)), 422,
                                       [*ev, "columns", "value"]),  # type: ignore[arg-type]
        "NaN as the key": (_raw_json(body(key=float("nan"))), 422, ["body", "key"]),
        "Infinity as the URL": (_raw_json(body(url=float("inf"))), 422, ["body", "url"]),
        "a URL with a lone surrogate": (body(url="duckdb:///\ud800"), 422, ["body", "url"]),
        "a URL with NUL": (body(url="duckdb:///a\x00b"), 422, ["body", "url"]),
        "an empty table name": (body(events={**EVENTS, "table": "."}), 422, [*ev, "table"]),
        "a second statement": (sql("SELECT * FROM ev; DROP TABLE ev"), 422, [*ev, "sql"]),
        "a write": (sql("WITH x AS (DELETE FROM ev RETURNING *) SELECT * FROM x"), 422, [*ev, "sql"]),
        "a ')' leaving the subquery": (sql("SELECT * FROM ev) AS q, (SELECT 1"), 422, [*ev, "sql"]),
        "an unclosed '('": (sql("SELECT * FROM (SELECT * FROM ev"), 422, [*ev, "sql"]),
        "an unterminated string": (sql("SELECT * FROM ev WHERE id = '"), 422, [*ev, "sql"]),
        "20,000 quotes": (sql("SELECT " + "'" * 19_990), 422, None),
        "an oversized body": (sql("SELECT * FROM ev " + " " * 3_000_000), 413, None),
    }


def test_hostile_source_requests_are_refused_naming_the_field_and_never_run(
        client: TestClient, keys: Keys, tmp_path: Any) -> None:
    admin = {**keys.headers("admin"), "Content-Type": "application/json"}
    lake = make_lake(tmp_path / "lake.duckdb")
    for name, (body, status, loc) in _hostile_sources(str(lake)).items():
        content = body if isinstance(body, str) else _raw_json(body)
        response = client.post("/v1/sources", content=content, headers=admin)
        assert response.status_code == status, (name, response.text[:500])
        if loc is not None:
            assert response.json()["detail"][0]["loc"] == loc, (name, response.text[:500])
    with duckdb.connect(str(lake), read_only=True) as conn:  # nothing in a name or a query ran
        assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'ev'").fetchone() == (1,)
    for path in ("/v1/sources/%00", "/v1/sources/" + "a" * 300, "/v1/sources/%F0%9F%98%80", "/v1/sources/%ED%A0%80",
                 "/v1/sources/x'%20OR%20'1'='1"):
        for method in ("GET", "DELETE"):
            assert client.request(method, path, headers=admin).status_code in (404, 422), (method, path)
    assert client.get("/v1/sources", headers=admin).json() == []

    # experiments with a hostile analysis block: 422 at analysis(.source), and a real source still works
    create_metrics(client, admin)
    for analysis, loc in (({"source": "nope"}, ["body", "analysis", "source"]),
                          ({"source": float("nan")}, ["body", "analysis", "source"]),
                          ({"source": 10**30}, ["body", "analysis", "source"]),
                          ({"source": "\ud800"}, ["body", "analysis", "source"]),
                          ({"source": "lake'; DROP TABLE ev; --"}, ["body", "analysis", "source"]),
                          ({"source": "lake", "sql": "SELECT 1"}, ["body", "analysis", "sql"]),
                          ("lake", ["body", "analysis"])):
        response = client.post("/v1/experiments", content=_raw_json(experiment_body(key="e1", analysis=analysis)),
                               headers=admin)
        assert response.status_code == 422, (analysis, response.text[:500])
        assert response.json()["detail"][0]["loc"] == loc, (analysis, response.text[:500])
    assert client.post("/v1/sources", json=source_body("lake", f"duckdb:///{lake}"), headers=admin).status_code == 201
    create_experiment(client, admin, key="e1", analysis={"source": "lake"})
    assert client.get("/v1/experiments/e1/scorecard", headers=admin).status_code in (200, 409)
