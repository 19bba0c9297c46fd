"""One size rule for attributes on every path (``api.attributes``): compact JSON, counted in UTF-8 bytes — a
payload at the limit is accepted by ``/v1/assign``, ``/v1/exposures`` and ``/v1/events`` alike, one byte more is
a 422 naming the field on each (it used to count differently on the assignment and event paths)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Keys

LIMIT = 8192  # the default TITRATE_MAX_ATTRIBUTES_BYTES
# {"k":"…"} is 8 bytes around the value; "é" is two UTF-8 bytes
AT_LIMIT = [{"k": "x" * (LIMIT - 8)}, {"k": "é" * ((LIMIT - 8) // 2)}]
OVER = [{"k": "x" * (LIMIT - 7)}, {"k": "é" * ((LIMIT - 8) // 2) + "x"}]


def _post(client: TestClient, keys: Keys, path: str, attributes: dict[str, Any]) -> Any:
    body: dict[str, Any]
    if path == "/v1/assign":
        body = {"unit_id": "u-1", "attributes": attributes}
    elif path == "/v1/exposures":
        body = {"exposures": [{"experiment": "unknown-exp", "unit_id": "u-1", "variant": "control",
                               "timestamp": "2026-11-23T10:00:00Z", "attributes": attributes}]}
    else:
        body = {"events": [{"event_id": f"e-{len(str(attributes))}", "unit_id": "u-1", "name": "purchase",
                            "value": 1.0, "timestamp": "2026-11-23T10:00:00Z", "attributes": attributes}]}
    return client.post(path, json=body, headers=keys.headers("sdk"))


@pytest.mark.parametrize("path", ["/v1/assign", "/v1/exposures", "/v1/events"])
def test_every_path_applies_the_same_byte_limit(client: TestClient, keys: Keys, path: str) -> None:
    for attributes in AT_LIMIT:
        response = _post(client, keys, path, attributes)
        assert response.status_code == 200, (path, response.text[:300])
    field = {"/v1/assign": "attributes", "/v1/exposures": "exposures.0.attributes",
             "/v1/events": "events.0.attributes"}[path]
    for attributes in OVER:
        response = _post(client, keys, path, attributes)
        assert response.status_code == 422, (path, response.text[:300])
        (error,) = response.json()["detail"]
        assert ".".join(str(p) for p in error["loc"]).endswith(field)
        assert f"exceed {LIMIT} bytes" in error["msg"]
