"""``GET /v1/sdk/config`` sends a large document gzipped to clients that accept gzip (issue 18, item 5: 10,000
experiments make a 3.4 MB document, 103 kB gzipped); the same JSON, ETag and 304 either way; small documents as
before."""

from __future__ import annotations

import gzip

from fastapi.testclient import TestClient

from api.assignment.snapshot import GZIP_MIN_BYTES
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics


def _variants(blob: str) -> list[dict[str, object]]:
    return [{"key": "control", "control": True, "weight": 0.5, "model": None, "payload": {}},
            {"key": "v2", "weight": 0.5, "model": None, "payload": {"blob": blob}}]


def test_large_document_is_gzipped_for_clients_that_accept_it(client: TestClient, keys: Keys) -> None:
    admin, sdk = keys.headers("admin"), keys.headers("sdk")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True, key="big", variants=_variants("x" * GZIP_MIN_BYTES))

    plain = client.get("/v1/sdk/config", headers={**sdk, "Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert "content-encoding" not in plain.headers
    assert len(plain.content) >= GZIP_MIN_BYTES

    zipped = client.get("/v1/sdk/config", headers={**sdk, "Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert int(zipped.headers["content-length"]) < len(plain.content) // 10  # the blob compresses well
    assert zipped.content == plain.content  # httpx decoded it: the same document, byte for byte
    assert zipped.headers["etag"] == plain.headers["etag"]

    refused = client.get("/v1/sdk/config", headers={**sdk, "Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers

    unchanged = client.get("/v1/sdk/config", headers={**sdk, "Accept-Encoding": "gzip",
                                                      "If-None-Match": plain.headers["etag"]})
    assert unchanged.status_code == 304


def test_small_document_is_sent_as_before(client: TestClient, keys: Keys) -> None:
    admin, sdk = keys.headers("admin"), keys.headers("sdk")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True, key="small")
    reply = client.get("/v1/sdk/config", headers={**sdk, "Accept-Encoding": "gzip"})
    assert "content-encoding" not in reply.headers
    assert "vary" not in reply.headers
    assert reply.json()["experiments"][0]["key"] == "small"


def test_gzip_is_deterministic() -> None:
    from api.assignment.snapshot import gzip_document

    document = b'{"x":"' + b"y" * GZIP_MIN_BYTES + b'"}'
    first = gzip_document(document)
    assert first is not None
    assert first == gzip_document(document)  # no timestamp: replicas send the same bytes
    assert gzip.decompress(first) == document
    assert gzip_document(b"{}") is None
