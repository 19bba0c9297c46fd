"""Event ingestion: idempotency, all-or-nothing validation, finite numbers (both databases)."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.db.engine import Database
from api.db.tables import Event
from tests.conftest import Keys


def events(n: int, prefix: str = "e", **overrides: object) -> list[dict[str, object]]:
    """``n`` valid events with ids ``{prefix}-{i}``."""
    return [{"event_id": f"{prefix}-{i}", "unit_id": f"u-{i % 97}", "name": "purchase", "value": float(i % 13),
             "timestamp": "2026-11-23T10:00:00Z", "attributes": {"i": i}, **overrides} for i in range(n)]


def _count(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def test_resending_never_double_counts(client: TestClient, keys: Keys, db: Database) -> None:
    sdk = keys.headers("sdk")
    batch = events(500)
    assert client.post("/v1/events", json={"events": batch}, headers=sdk).json() == {"accepted": 500, "duplicates": 0}
    assert client.post("/v1/events", json={"events": batch}, headers=sdk).json() == {"accepted": 0, "duplicates": 500}
    mixed = batch[:100] + events(50, prefix="new")
    assert client.post("/v1/events", json={"events": mixed}, headers=sdk).json() == {"accepted": 50, "duplicates": 100}
    assert _count(db) == 550
    # a stored event last, after new ones (PostgreSQL's plain insert gets as far as it, then inserts skipping it)
    late = events(50, prefix="late") + batch[-1:]
    assert client.post("/v1/events", json={"events": late}, headers=sdk).json() == {"accepted": 50, "duplicates": 1}
    assert _count(db) == 600


def test_a_batch_with_a_stored_event_stores_the_same_values_as_one_without(client: TestClient, keys: Keys,
                                                                           db: Database) -> None:
    # PostgreSQL writes a new batch by COPY straight into events, and one that meets a stored event_id through a
    # staging table and ON CONFLICT: both must store the same values (attributes as JSON objects, not strings)
    sdk = keys.headers("sdk")
    kinds = [{"unit_id": "ü-1", "value": 1e-300, "timestamp": "2026-11-23T12:00:00+05:30",
              "attributes": {"é": ["日本", None, True, {"deep": [1.5, -2]}], "big": 2**62, "q": "a\"b\\c"}},
             {"unit_id": "u-2", "value": -7.25, "timestamp": "1999-12-31T23:59:59.123456-08:00", "attributes": {}},
             {"unit_id": "u-3", "value": 1.0, "timestamp": "2026-11-23T10:00:00Z", "attributes": {"x": "\u2028"}}]
    def batch(prefix: str) -> list[dict[str, object]]:
        return [{"event_id": f"{prefix}-{i}", "name": "purchase", **kind} for i, kind in enumerate(kinds)]
    assert client.post("/v1/events", json={"events": batch("new")}, headers=sdk).json() == {
        "accepted": 3, "duplicates": 0}
    mixed = batch("mixed") + batch("new")[:1]
    assert client.post("/v1/events", json={"events": mixed}, headers=sdk).json() == {"accepted": 3, "duplicates": 1}

    def stored(prefix: str) -> list[tuple[object, ...]]:
        with db.read() as session:
            rows = session.scalars(select(Event).where(Event.event_id.like(f"{prefix}-%")).order_by(Event.event_id))
            return [(r.event_id.split("-", 1)[1], r.unit_id, r.name, r.value, r.timestamp, r.attributes)
                    for r in rows]
    assert stored("new") == stored("mixed")
    assert [row[5] for row in stored("new")] == [kind["attributes"] for kind in kinds]
    assert stored("new")[0][4].isoformat() == "2026-11-23T06:30:00+00:00"


def test_repeats_inside_one_batch_count_as_duplicates(client: TestClient, keys: Keys, db: Database) -> None:
    batch = events(3) + events(3)
    response = client.post("/v1/events", json={"events": batch}, headers=keys.headers("sdk"))
    assert response.json() == {"accepted": 3, "duplicates": 3}
    assert _count(db) == 3


def test_one_bad_row_rejects_the_batch_and_names_row_and_field(client: TestClient, keys: Keys, db: Database) -> None:
    sdk = keys.headers("sdk")
    for field, bad in (("value", "NaN"), ("value", "Infinity"), ("timestamp", "2026-11-23T10:00:00"),
                       ("unit_id", ""), ("event_id", "x" * 129), ("value", "abc")):
        batch = events(10)
        batch[7][field] = bad
        response = client.post("/v1/events", json={"events": batch}, headers=sdk)
        assert response.status_code == 422, (field, bad)
        assert response.json()["detail"][0]["loc"][:4] == ["body", "events", 7, field]
    # JSON numbers too large for a double arrive as inf: refused as well.
    raw = (b'{"events": [{"event_id": "a", "unit_id": "u", "name": "n", "value": 1e999, '
           b'"timestamp": "2026-11-23T10:00:00Z"}]}')
    response = client.post("/v1/events", content=raw, headers={**sdk, "content-type": "application/json"})
    assert response.status_code == 422
    assert _count(db) == 0


def test_batch_limits(client: TestClient, keys: Keys) -> None:
    sdk = keys.headers("sdk")
    assert client.post("/v1/events", json={"events": []}, headers=sdk).status_code == 422
    too_many = client.post("/v1/events", json={"events": events(10_001)}, headers=sdk)
    assert too_many.status_code == 422
    assert client.post("/v1/events", json={"events": events(10_000)}, headers=sdk).json()["accepted"] == 10_000


def test_events_keep_their_fields(client: TestClient, keys: Keys, db: Database) -> None:
    event_id = uuid.uuid4().hex
    body = {"events": [{"event_id": event_id, "unit_id": "u-123", "name": "purchase", "value": 12.5,
                        "timestamp": "2026-11-23T12:00:00+02:00", "attributes": {"sku": "a"}}]}
    client.post("/v1/events", json=body, headers=keys.headers("sdk"))
    with db.read() as session:
        row = session.scalars(select(Event)).one()
        assert (row.event_id, row.unit_id, row.name, row.value, row.attributes) == (
            event_id, "u-123", "purchase", 12.5, {"sku": "a"})
        assert row.timestamp.isoformat() == "2026-11-23T10:00:00+00:00"


def test_nul_characters_are_refused_at_the_edge(client: TestClient, keys: Keys, db: Database) -> None:
    # PostgreSQL cannot store NUL in text or JSONB: it must be a 422 naming the field, not a 500.
    sdk = keys.headers("sdk")
    for field, bad in (("unit_id", "u\x00"), ("attributes", {"k": "v\x00"}), ("attributes", {"k\x00": 1})):
        batch = events(3)
        batch[1][field] = bad
        response = client.post("/v1/events", json={"events": batch}, headers=sdk)
        assert response.status_code == 422, (field, response.text)
        assert response.json()["detail"][0]["loc"][:4] == ["body", "events", 1, field]
    assert client.get("/v1/experiments/a%00b", headers=keys.headers("admin")).status_code == 422
    assert _count(db) == 0
