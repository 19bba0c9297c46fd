"""Property-based fuzzing from the OpenAPI schema (schemathesis strategies driven by hypothesis):
no generated input makes the registry, assignment or event endpoints answer 5xx (both databases)."""

from __future__ import annotations

import re

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

FUZZED = re.compile(r"^/v1/(metrics|experiments|assign|events|exposures|sdk|keys)")


def test_no_server_errors_on_generated_requests(client: TestClient, keys: Keys) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True)
    create_experiment(client, admin, key="draft-one")
    app = client.app

    async def without_lifespan(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        # The app is already started by the `client` fixture; answer lifespan messages here so schemathesis'
        # own test client does not start a second copy of the background threads.
        if scope["type"] == "lifespan":
            while True:
                message = await receive()  # type: ignore[operator]
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})  # type: ignore[operator]
                if kind == "shutdown":
                    return
        await app(scope, receive, send)  # type: ignore[arg-type]

    schema = schemathesis.openapi.from_asgi("/openapi.json", without_lifespan)
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = [op for op in operations if FUZZED.match(op.path)]
    assert len(fuzzed) >= 15, [op.path for op in operations]
    failures: list[str] = []
    statuses: list[int] = []
    for operation in fuzzed:

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            response = case.call(headers=admin)
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.body!r} → {response.status_code}")

        check()
    assert not failures, failures[:5]
    assert len(statuses) >= 10 * len(fuzzed)
    assert any(200 <= s < 300 for s in statuses)
    assert any(s == 422 for s in statuses)
