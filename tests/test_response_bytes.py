"""The hot paths' response bytes are pinned (issue 18, item 3): ``/v1/assign`` and ``/v1/events`` answer exactly
these bytes for these fixed inputs, so an encoder change (orjson, pre-encoded fragments) cannot alter what clients
read — non-ASCII escaping, float spelling, separators, key order of the contract — without this test saying so.

Written against the stdlib ``json`` encoder before the hot paths were optimised; the experiments' salts are their
keys, so the variants are the same on every run and database.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.db.engine import Database
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

# payloads that tell encoders apart: non-ASCII (json escapes it, orjson would not), a large float (json writes
# 1e+16, orjson 1e16), a negative zero, nested lists and objects, a key order that is not sorted
PAYLOAD_V2 = {"threshold": 0.4, "label": "café ✓", "big": 1e16, "neg": -0.0, "z": [1, {"b": None, "a": True}],
              "a": "x"}
PAYLOAD_CONTROL = {"note": "日本"}


def _variants() -> list[dict[str, object]]:
    return [{"key": "control", "control": True, "weight": 0.5, "model": None, "payload": PAYLOAD_CONTROL},
            {"key": "v2", "weight": 0.5, "model": None, "payload": PAYLOAD_V2}]


# PostgreSQL keeps payloads as JSONB, which orders keys (shortest first) and stores 1e16 as the integer and -0.0
# as 0.0: the stored value differs there, not the encoder, so each backend has its own pinned payload bytes
_V2_BY_DIALECT = {
    "sqlite": b'{"threshold":0.4,"label":"caf\\u00e9 \\u2713","big":1e+16,"neg":-0.0,"z":[1,{"b":null,"a":true}],'
              b'"a":"x"}',
    "postgresql": b'{"a":"x","z":[1,{"a":true,"b":null}],"big":10000000000000000,"neg":0.0,'
                  b'"label":"caf\\u00e9 \\u2713","threshold":0.4}',
}
_CONTROL = b'{"note":"\\u65e5\\u672c"}'


def _assign_all(v2: bytes) -> dict[str, bytes]:
    return {
        "u-1": b'{"assignments":{"pinned-a":{"variant":"control","payload":' + _CONTROL + b'},"pinned-b":'
               b'{"variant":"control","payload":' + _CONTROL + b'}}}',
        "u-5": b'{"assignments":{"pinned-a":{"variant":"v2","payload":' + v2 + b'},"pinned-b":{"variant":'
               b'"control","payload":' + _CONTROL + b'}}}',
    }


def _setup(client: TestClient, keys: Keys) -> dict[str, str]:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    for key in ("pinned-a", "pinned-b"):
        create_experiment(client, admin, start=True, key=key, variants=_variants())
    return keys.headers("sdk")


def test_assign_bytes_are_pinned(client: TestClient, keys: Keys, db: Database) -> None:
    sdk = _setup(client, keys)
    expected_replies = _assign_all(_V2_BY_DIALECT[db.dialect])
    replies = {unit: client.post("/v1/assign", json={"unit_id": unit}, headers=sdk) for unit in expected_replies}
    for unit, expected in expected_replies.items():
        assert replies[unit].status_code == 200
        assert replies[unit].headers["content-type"] == "application/json"
        assert replies[unit].content == expected, replies[unit].content


def test_assign_bytes_with_keys_and_not_served(client: TestClient, keys: Keys, db: Database) -> None:
    sdk = _setup(client, keys)
    reply = client.post("/v1/assign", json={"unit_id": "u-7", "experiments": ["pinned-b", "nope", "pinned-b"]},
                        headers=sdk)
    assert reply.status_code == 200
    v2 = _V2_BY_DIALECT[db.dialect]
    assert reply.content == b'{"assignments":{"pinned-b":{"variant":"v2","payload":' + v2 + b'}},"not_served":["nope"]}'
    empty = client.post("/v1/assign", json={"unit_id": "u-7", "experiments": []}, headers=sdk)
    assert empty.content == b'{"assignments":{}}'


def test_events_bytes_are_pinned(client: TestClient, keys: Keys) -> None:
    sdk = keys.headers("sdk")
    batch = {"events": [{"event_id": f"e-{i}", "unit_id": "u", "name": "purchase", "value": 1.5,
                         "timestamp": "2026-11-23T10:00:00Z", "attributes": {"k": "é"}} for i in range(3)]}
    first = client.post("/v1/events", json=batch, headers=sdk)
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.content == b'{"accepted":3,"duplicates":0}'
    again = client.post("/v1/events", json=batch, headers=sdk)
    assert again.content == b'{"accepted":0,"duplicates":3}'
    bad = client.post("/v1/events", json={"events": [{**batch["events"][0], "value": "NaN"}]}, headers=sdk)
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "events", 0, "value"]
