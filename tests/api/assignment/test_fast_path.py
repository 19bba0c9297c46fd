"""``POST /v1/assign``'s fast path (``api/assignment/fast_path.py``): a success is answered beside the router and
still timed under its route template; every refusal is the full stack's answer, exactly as before."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics


def _count(client: TestClient, status: int) -> float:
    text = client.get("/metrics").text
    match = re.search(rf'titrate_request_seconds_count\{{method="POST",route="/v1/assign",status="{status}"\}} (\S+)',
                      text)
    return float(match.group(1)) if match else 0.0


def test_success_is_timed_under_the_route_template(client: TestClient, keys: Keys) -> None:
    admin, sdk = keys.headers("admin"), keys.headers("sdk")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True)
    before = _count(client, 200)
    for i in range(3):
        assert client.post("/v1/assign", json={"unit_id": f"u-{i}"}, headers=sdk).status_code == 200
    assert _count(client, 200) == before + 3


def test_refusals_keep_their_shape(client: TestClient, keys: Keys) -> None:
    sdk = keys.headers("sdk")
    keyless = client.post("/v1/assign", json={"unit_id": "u"})
    assert keyless.status_code == 401
    assert keyless.headers["www-authenticate"] == "Bearer"
    assert "missing API key" in keyless.json()["detail"]
    wrong = client.post("/v1/assign", json={"unit_id": "u"}, headers={"Authorization": "Bearer tk_nope"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "invalid or revoked API key"
    invalid = client.post("/v1/assign", json={"unit_id": ""}, headers=sdk)
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "unit_id"]
    not_json = client.post("/v1/assign", content=b"{", headers={**sdk, "content-type": "application/json"})
    assert not_json.status_code == 422
    unknown = client.post("/v1/assign", json={"unit_id": "u", "extra": 1}, headers=sdk)
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "extra"]
    assert _count(client, 422) >= 3
    assert client.get("/v1/assign", headers=sdk).status_code == 405  # other methods: the router, as before
