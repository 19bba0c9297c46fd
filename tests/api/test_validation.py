"""Validation at the boundary (issue 12): non-finite numbers, integers beyond 64 bits, too many or too deeply
nested attribute keys, and timestamps outside the accepted range get a 422 naming the field on every path —
never a 500, never a stored row (both databases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.auth.endpoints import MAX_KEY_ID
from api.db.engine import Database
from api.db.tables import Event
from api.schemas_common import INT64_MAX, INT64_MIN, JsonProblem, check_json, sane_timestamp
from api.settings import Settings, get_settings
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

BIG = 2**63  # one past the largest 64-bit signed integer
YEAR_1_EAST = "0001-01-01T00:00:00+14:00"  # overflows when converted to UTC
YEAR_9999_WEST = "9999-12-31T23:59:59-14:00"  # likewise


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


# ---- the JSON rules, without a database ------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "path", "words"), [
    ({"x": float("nan")}, ["x"], "finite"),
    ({"a": {"b": [1, float("inf")]}}, ["a", "b", 1], "finite"),
    ({"x": -float("inf")}, ["x"], "finite"),
    ({"x": BIG}, ["x"], "64-bit"),
    ({"x": [INT64_MIN - 1]}, ["x", 0], "64-bit"),
    ({"x": "a\x00b"}, ["x"], "NUL"),
    ({"a\x00": 1}, ["a\x00"], "NUL"),
])
def test_check_json_names_the_first_bad_place(value: Any, path: list[str | int], words: str) -> None:
    with pytest.raises(JsonProblem) as raised:
        check_json(value)
    assert raised.value.path == path
    assert words in raised.value.message


def test_check_json_accepts_ordinary_values_and_counts_keys_at_every_level() -> None:
    check_json({"a": INT64_MAX, "b": INT64_MIN, "c": 1.5e308, "d": True, "e": None, "f": ["x", {"g": -0.0}]})
    check_json({"a": {"b": 1}}, max_depth=2, max_keys=2)
    with pytest.raises(JsonProblem, match="keys"):
        check_json({"a": {"b": 1, "c": 2}}, max_keys=2)
    with pytest.raises(JsonProblem, match="deeper than 2") as raised:
        check_json({"a": {"b": [1]}}, max_depth=2)
    assert raised.value.path == ["a", "b"]


def test_sane_timestamp_refuses_what_would_overflow_in_utc() -> None:
    settings = Settings()
    now = datetime(2026, 6, 1, tzinfo=UTC)
    for text in (YEAR_1_EAST, YEAR_9999_WEST, "1999-12-31T23:59:59Z", "2026-06-02T00:00:01Z"):
        with pytest.raises(ValueError, match="must lie between"):
            sane_timestamp(datetime.fromisoformat(text), settings, now)
    assert sane_timestamp(datetime.fromisoformat("2026-06-01T23:00:00+02:00"), settings, now) == \
        datetime(2026, 6, 1, 21, tzinfo=UTC)
    assert sane_timestamp(datetime(2000, 1, 1), settings, now) == datetime(2000, 1, 1, tzinfo=UTC)  # naive = UTC


# ---- through the service (both databases) -----------------------------------------------------------------------

def _event(**fields: Any) -> dict[str, Any]:
    return {"event_id": "e-1", "unit_id": "u-1", "name": "purchase", "timestamp": _iso(datetime.now(UTC)), **fields}


def _exposure(**fields: Any) -> dict[str, Any]:
    return {"experiment": "ranker-v2", "unit_id": "u-1", "variant": "v2", "timestamp": _iso(datetime.now(UTC)),
            **fields}


# (method, path, raw JSON body with the bad token, the 422's expected loc)
NON_FINITE_CASES: list[tuple[str, str, str, list[str | int]]] = [
    ("POST", "/v1/assign", '{"unit_id": "u", "attributes": {"x": NaN}}', ["body", "attributes", "x"]),
    ("POST", "/v1/assign", '{"unit_id": "u", "attributes": {"a": {"b": [1, 1e309]}}}',
     ["body", "attributes", "a", "b", 1]),
    ("POST", "/v1/assign", '{"unit_id": "u", "attributes": {"x": -Infinity}}', ["body", "attributes", "x"]),
    ("POST", "/v1/assign", f'{{"unit_id": "u", "attributes": {{"x": {BIG}}}}}', ["body", "attributes", "x"]),
    ("POST", "/v1/assign", f'{{"unit_id": "u", "attributes": {{"x": [{-10**30}]}}}}',
     ["body", "attributes", "x", 0]),
    ("POST", "/v1/events", '{"events": [EVENT]}'.replace("EVENT", '{"event_id": "e", "unit_id": "u", "name": "n", '
                                                          '"timestamp": "NOW", "attributes": {"x": Infinity}}'),
     ["body", "events", 0, "attributes", "x"]),
    ("POST", "/v1/events", '{"events": [EVENT]}'.replace("EVENT", '{"event_id": "e", "unit_id": "u", "name": "n", '
                                                          '"timestamp": "NOW", "value": 1e309}'),
     ["body", "events", 0, "value"]),
    ("POST", "/v1/events", '{"events": [EVENT]}'.replace("EVENT", '{"event_id": "e", "unit_id": "u", "name": "n", '
                                                          f'"timestamp": "NOW", "attributes": {{"n": {BIG}}}}}'),
     ["body", "events", 0, "attributes", "n"]),
    ("POST", "/v1/exposures", '{"exposures": [{"experiment": "ranker-v2", "unit_id": "u", "variant": "v2", '
                              '"timestamp": "NOW", "attributes": {"x": NaN}}]}',
     ["body", "exposures", 0, "attributes", "x"]),
    ("POST", "/v1/experiments/ranker-v2/predict", '{"unit_id": "u", "attributes": {"x": {"y": NaN}}, '
                                                  '"inputs": ["hi"]}', ["body", "attributes", "x", "y"]),
    ("PATCH", "/v1/experiments/draft-one", '{"variants": [{"key": "control", "control": true, "weight": 0.5}, '
                                           '{"key": "v2", "weight": 0.5, "payload": {"t": Infinity}}]}',
     ["body", "variants", 1, "payload", "t"]),
    ("PATCH", "/v1/experiments/ranker-v2", f'{{"targeting": [{{"attribute": "a", "op": "in", "values": [{BIG}]}}]}}',
     ["body", "targeting", 0, "values", 0]),
]


@pytest.fixture
def served(client: TestClient, keys: Keys) -> TestClient:
    """A running experiment ``ranker-v2`` and a draft ``draft-one``."""
    admin = keys.headers("admin")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True)
    create_experiment(client, admin, key="draft-one")
    return client


def test_non_finite_numbers_and_huge_integers_are_422_naming_the_field(served: TestClient, keys: Keys,
                                                                       db: Database) -> None:
    headers = {**keys.headers("admin"), "Content-Type": "application/json"}
    wrong = []
    for method, path, body, loc in NON_FINITE_CASES:
        response = served.request(method, path, content=body.replace("NOW", _iso(datetime.now(UTC))),
                                  headers=headers)
        locs = [error["loc"] for error in response.json()["detail"]] if response.status_code == 422 else []
        if response.status_code != 422 or loc not in locs:
            wrong.append((path, body, response.status_code, response.text[:300]))
    assert not wrong, wrong
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0


def test_integers_within_64_bits_are_accepted(served: TestClient, keys: Keys) -> None:
    sdk = keys.headers("sdk")
    body = {"unit_id": "u", "attributes": {"max": INT64_MAX, "min": INT64_MIN, "big": 1.5e308}}
    assert served.post("/v1/assign", json=body, headers=sdk).status_code == 200
    events = {"events": [_event(attributes={"n": INT64_MAX}, value=1.5e308)]}
    response = served.post("/v1/events", json=events, headers=sdk)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1


@pytest.mark.parametrize("timestamp", [YEAR_1_EAST, YEAR_9999_WEST, "1999-12-31T23:59:59Z",
                                       "9999-12-31T00:00:00Z"])
def test_timestamps_outside_the_range_are_422_on_every_path(served: TestClient, keys: Keys, db: Database,
                                                            timestamp: str) -> None:
    sdk, analyst = keys.headers("sdk"), keys.headers("analyst")
    response = served.post("/v1/events", json={"events": [_event(timestamp=timestamp)]}, headers=sdk)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "events", 0, "timestamp"]
    assert "must lie between" in response.json()["detail"][0]["msg"]
    response = served.post("/v1/exposures", json={"exposures": [_exposure(timestamp=timestamp)]}, headers=sdk)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "exposures", 0, "timestamp"]
    response = served.get("/v1/experiments/ranker-v2/scorecard", params={"as_of": timestamp}, headers=analyst)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "as_of"]
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 0


def test_the_range_ends_follow_the_settings_and_its_edges_are_accepted(served: TestClient, keys: Keys,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sdk, analyst = keys.headers("sdk"), keys.headers("analyst")
    now = datetime.now(UTC)
    soon = _iso(now + timedelta(hours=23))
    response = served.post("/v1/events", json={"events": [_event(event_id="soon", timestamp=soon),
                                                          _event(event_id="y2k", timestamp="2000-01-01T00:00:00Z")]},
                           headers=sdk)
    assert response.status_code == 200, response.text
    assert served.get("/v1/experiments/ranker-v2/scorecard", params={"as_of": soon},
                      headers=analyst).status_code == 200
    late = _iso(now + timedelta(hours=25))
    assert served.post("/v1/events", json={"events": [_event(timestamp=late)]}, headers=sdk).status_code == 422

    monkeypatch.setenv("TITRATE_TIMESTAMP_MIN", "1990-01-01T00:00:00Z")
    monkeypatch.setenv("TITRATE_TIMESTAMP_MAX_FUTURE_HOURS", "48")
    get_settings.cache_clear()
    try:
        response = served.post("/v1/events", json={"events": [_event(event_id="old", timestamp="1995-01-01T00:00:00Z"),
                                                              _event(event_id="late", timestamp=late)]}, headers=sdk)
        assert response.status_code == 200, response.text
    finally:
        get_settings.cache_clear()


def test_attribute_key_and_depth_limits(served: TestClient, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    sdk = keys.headers("sdk")
    settings = get_settings()
    many = {f"k{i}": i for i in range(settings.max_attribute_keys)}
    assert served.post("/v1/assign", json={"unit_id": "u", "attributes": many}, headers=sdk).status_code == 200
    nested: dict[str, Any] = {"leaf": 1}
    for _ in range(settings.max_attribute_depth - 1):
        nested = {"a": nested}
    assert served.post("/v1/assign", json={"unit_id": "u", "attributes": nested}, headers=sdk).status_code == 200

    too_many = {**many, "one-more": 1}
    response = served.post("/v1/assign", json={"unit_id": "u", "attributes": too_many}, headers=sdk)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "attributes"]
    assert f"more than {settings.max_attribute_keys} keys" in response.json()["detail"][0]["msg"]
    response = served.post("/v1/events", json={"events": [_event(attributes={"a": [{"b": 1}] * 60,
                                                                             "c": [{"d": 1}] * 60})]}, headers=sdk)
    assert response.status_code == 422, response.text  # nested keys count too
    assert response.json()["detail"][0]["loc"][:4] == ["body", "events", 0, "attributes"]
    deeper = {"a": nested}
    response = served.post("/v1/exposures", json={"exposures": [_exposure(attributes=deeper)]}, headers=sdk)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:5] == ["body", "exposures", 0, "attributes", "a"]
    assert "deeper than" in response.json()["detail"][0]["msg"]

    monkeypatch.setenv("TITRATE_MAX_ATTRIBUTE_KEYS", "3")
    get_settings.cache_clear()
    try:
        response = served.post("/v1/assign", json={"unit_id": "u", "attributes": {"a": 1, "b": 2, "c": 3, "d": 4}},
                               headers=sdk)
        assert response.status_code == 422, response.text
        assert "more than 3 keys" in response.json()["detail"][0]["msg"]
    finally:
        get_settings.cache_clear()


def test_path_integers_beyond_the_column_are_422_not_500(served: TestClient, keys: Keys) -> None:
    admin = keys.headers("admin")
    for too_big in ("999999999999999999999", str(INT64_MAX), str(MAX_KEY_ID + 1)):
        response = served.delete(f"/v1/keys/{too_big}", headers=admin)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["path", "key_id"]
    assert served.delete(f"/v1/keys/{MAX_KEY_ID}", headers=admin).status_code == 404


@pytest.mark.parametrize("body", [
    {"kind": "proportion", "baseline": 0.5, "mde": 1e-300, "daily_units": 1},
    {"kind": "mean", "baseline": 1.0, "mde": 0.05, "daily_units": 1e-320, "sd": 1.0},
    {"kind": "mean", "baseline": 1e300, "mde": 1e-10, "daily_units": 1, "sd": 1e300},
])
def test_design_inputs_beyond_what_can_be_counted_are_422(client: TestClient, keys: Keys,
                                                           body: dict[str, Any]) -> None:
    response = client.post("/v1/design", json=body, headers=keys.headers("analyst"))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "body"
