"""``POST /v1/assign`` names the requested experiment keys it cannot serve (issue 17 item 6: ``experiments:
["nope"]`` answered ``{}`` with nothing saying the key is unknown), without changing the reply's shape otherwise."""

from __future__ import annotations

from fastapi.testclient import TestClient
from titrate_sdk.client import parse_assignments

from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics


def test_unknown_and_unserved_keys_are_named(client: TestClient, keys: Keys) -> None:
    admin, sdk = keys.headers("admin"), keys.headers("sdk")
    create_metrics(client, admin)
    create_experiment(client, admin)  # a draft
    body = {"unit_id": "u-1", "attributes": {"country": "US"}, "experiments": ["nope", "ranker-v2", "nope"]}
    reply = client.post("/v1/assign", json=body, headers=sdk)
    assert reply.status_code == 200
    assert reply.json() == {"assignments": {}, "not_served": ["nope", "ranker-v2"]}  # each once, in asked order

    client.post("/v1/experiments/ranker-v2/start", headers=admin).raise_for_status()
    reply = client.post("/v1/assign", json=body, headers=sdk).json()
    assert reply["not_served"] == ["nope"]
    assert set(reply["assignments"]) == {"ranker-v2"}
    assert parse_assignments(reply).keys() == {"ranker-v2"}  # the SDK reads the reply as before

    # every key served (or none asked for): the contract's shape exactly
    served = client.post("/v1/assign", json={**body, "experiments": ["ranker-v2"]}, headers=sdk).json()
    assert set(served) == {"assignments"}
    everything = client.post("/v1/assign", json={"unit_id": "u-1", "attributes": {"country": "US"}},
                             headers=sdk).json()
    assert set(everything) == {"assignments"}
