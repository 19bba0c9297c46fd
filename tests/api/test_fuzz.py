"""Property-based fuzzing from the OpenAPI schema (schemathesis strategies driven by hypothesis): no generated input
makes the registry, assignment, event, analysis, analysis-source or key endpoints answer 5xx (both databases).
Experiments may carry an ``analysis`` block; a DuckDB analysis source (``lake``) is registered first, so reads of a
source and experiments naming it are reachable.

Half of the generated requests are poisoned (issue 12) in one drawn place of the body and one parameter, the rest
staying as schemathesis made it: a number becomes NaN, ±Infinity, ``1e309`` or an integer beyond 64 bits; a
``timestamp`` becomes an extreme one (years 1 and 9999 with ±14:00 offsets, which overflow when converted to UTC);
another string becomes one of those, number-like text, SQL or (in a body) a lone surrogate; a free-form object
(attributes, payload) gains such a value under a new key; a path or query parameter gets the same values as text.
Every poisoned request must be refused or served — never a 5xx."""

from __future__ import annotations

import json
import math
import pathlib
import re
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core import NotSet

from tests.api.sources.test_sources import body as source_body
from tests.api.sources.test_sources import make_lake
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics

FUZZED = re.compile(r"^/v1/(metrics|experiments|assign|events|exposures|sdk|keys|scorecards|design|dead-letters|"
                    r"sources)")
_RAW_1E309 = "\ue000raw-1e309\ue000"  # a marker json.dumps keeps as a string, then swapped for the bare token
POISON_NUMBERS: tuple[Any, ...] = (math.nan, math.inf, -math.inf, _RAW_1E309, 2**63, -(2**63) - 1, 10**30)
EXTREME_TIMESTAMPS = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z",
                      "9999-12-31T23:59:59Z")
POISON_TEXT: tuple[Any, ...] = (*EXTREME_TIMESTAMPS, "999999999999999999999", "-9223372036854775809", "NaN",
                                "Infinity", "1e309", "x'; DROP TABLE events; --")
#: In a body a string may also be a lone surrogate (``"\\ud800"`` in the JSON text; a URL cannot carry one).
POISON_BODY_TEXT: tuple[Any, ...] = (*POISON_TEXT, "\ud800")
FREE_FORM = {"attributes", "payload"}


Path = tuple[str | int, ...]


def _targets(value: Any, path: Path = ()) -> list[tuple[Path, str]]:
    """Where a poison can go: every number and string leaf, and every free-form object (a new key). Timestamps and
    free-form objects are listed three times: they are where the service used to fail."""
    if isinstance(value, dict):
        out = [t for k, v in value.items() for t in _targets(v, (*path, k))]
        if path and path[-1] in FREE_FORM:
            out += [(path, "object")] * 3
        return out
    if isinstance(value, list):
        return [t for i, v in enumerate(value) for t in _targets(v, (*path, i))]
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        return [(path, "number")]
    if isinstance(value, str):
        return [(path, "timestamp")] * 3 if path and path[-1] == "timestamp" else [(path, "string")]
    return []


def _poison_one(body: Any, draw: Any) -> Any:
    """``body`` with one drawn place poisoned (so the rest stays as valid as schemathesis made it, and the poison
    is what the service must handle)."""
    targets = _targets(body)
    if not targets:
        return body
    path, kind = draw(st.sampled_from(targets))
    poison = draw(st.sampled_from({"number": POISON_NUMBERS, "timestamp": EXTREME_TIMESTAMPS,
                                   "string": POISON_BODY_TEXT, "object": POISON_NUMBERS + EXTREME_TIMESTAMPS}[kind]))
    body = json.loads(json.dumps(body))  # a copy
    if not path:
        return poison
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    if kind == "object":
        parent[path[-1]]["poison"] = poison
    else:
        parent[path[-1]] = poison
    return body


def _json_text(body: Any) -> str:
    """JSON as a careless client writes it: NaN/Infinity tokens (json.dumps' default) and a bare ``1e309``."""
    return json.dumps(body).replace(json.dumps(_RAW_1E309), "1e309")


def test_no_server_errors_on_generated_requests(client: TestClient, keys: Keys, tmp_path: pathlib.Path) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    lake = make_lake(tmp_path / "lake.duckdb")
    assert client.post("/v1/sources", json=source_body("lake", f"duckdb:///{lake}"), headers=admin).status_code == 201
    create_experiment(client, admin, start=True)
    create_experiment(client, admin, key="draft-one")
    create_experiment(client, admin, key="on-lake", analysis={"source": "lake"})
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
    poisoned_statuses: list[int] = []
    for operation in fuzzed:

        @given(case=operation.as_strategy(), data=st.data())
        @settings(max_examples=20, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case, data: st.DataObject) -> None:
            if not data.draw(st.booleans(), label="poison"):
                response = case.call(headers=admin)
                statuses.append(response.status_code)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} {case.body!r} → {response.status_code}")
                return
            draw = data.draw
            # one parameter and one place in the body poisoned
            path_parameters, query = dict(case.path_parameters or {}), dict(case.query or {})
            params = [(path_parameters, k) for k in path_parameters] + [(query, k) for k in query]
            if params:
                where, name = draw(st.sampled_from(params))
                where[name] = draw(st.sampled_from(POISON_TEXT))
            path = case.operation.path.format(**path_parameters)
            headers = dict(admin)
            content = None
            if not isinstance(case.body, NotSet | bytes | None):
                content = _json_text(_poison_one(case.body, draw))
                headers["Content-Type"] = "application/json"
            answer = client.request(case.method, path, params=query, content=content, headers=headers)
            carried = (path_parameters != (case.path_parameters or {}) or query != (case.query or {})
                       or (content is not None and content != json.dumps(case.body)))
            if carried:
                poisoned_statuses.append(answer.status_code)
            if answer.status_code >= 500:
                failures.append(f"{case.method} {path} {query!r} {content!r} → {answer.status_code}")

        check()
    assert not failures, failures[:5]
    assert len(statuses) >= 5 * len(fuzzed)
    assert any(200 <= s < 300 for s in statuses)
    assert any(s == 422 for s in statuses)
    # poison reached the service on many operations, and validation refused it there (a 422, not a 5xx)
    assert len(poisoned_statuses) >= 3 * len(fuzzed), len(poisoned_statuses)
    assert sum(s == 422 for s in poisoned_statuses) >= len(fuzzed), poisoned_statuses
