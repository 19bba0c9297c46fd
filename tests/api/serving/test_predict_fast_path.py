"""``/predict``'s fast path (``api/serving/fast_path.py``) against the router, both databases, with a real loopback
inference server: the same status, headers and bytes for every input — answered beside the router when the
route's checks pass (successes, and the refusals and 503 that ``ServingRuntime.predict`` raises, through the app's
own handlers), by the router otherwise — and the same exposures, serving events and upstream calls."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Router

from api.app import create_app
from api.db.engine import Database
from api.db.tables import Event, Exposure
from api.serving.fast_path import PredictFastPath
from api.settings import Settings
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics
from tests.inference_server.fake import FakeInferenceServer, FakeModel, fake_embedding
from tests.inference_server.harness import Remote

AB = [{"key": "control", "control": True, "weight": 0.5, "model": "remote-a"},
      {"key": "v2", "weight": 0.5, "model": "remote-b"}]
_VOLATILE = re.compile(rb'"latency_ms":[0-9.e+-]+|"request_id":"[0-9a-f]{32}"')
_NEXT_TRIAL = re.compile(rb"next trial in [0-9.]+ s")


class Pair:
    """The same app twice on one database: with the fast path, and with the router alone."""

    def __init__(self, fast: TestClient, router: TestClient, keys: Keys, db: Database, url: str,
                 server: FakeInferenceServer, routed: list[str]) -> None:
        self.fast, self.router, self.keys, self.url, self.server, self.routed = fast, router, keys, url, server, routed
        self.remotes = (Remote(fast, keys, db, url, server), Remote(router, keys, db, url, server))

    def both(self, path: str, *, routed: bool, **kwargs: Any) -> tuple[Any, Any]:
        """POST to both apps; ``routed``: whether the fast-path app must have passed the request to its router."""
        self.routed.clear()
        fast = self.fast.post(path, **kwargs)
        assert bool(self.routed) is routed, (path, kwargs, fast.status_code, fast.text)
        router = self.router.post(path, **kwargs)
        return fast, router


@pytest.fixture
def pair(db: Database, keys: Keys, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pair]:
    routed: list[str] = []
    call = Router.__call__

    async def counting(self: Router, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):  # titrate's (not the inference server's)
            routed.append(scope["path"])
        await call(self, scope, receive, send)

    monkeypatch.setattr(Router, "__call__", counting)
    server = FakeInferenceServer({"emb-a": FakeModel(), "emb-b": FakeModel()}).start()
    config = settings.model_copy(update={"serving_retain_seconds": 3600.0, "serving_remote_breaker_failures": 2,
                                         "serving_remote_breaker_reset_seconds": 3600.0, "max_attributes_bytes": 256})
    router_app = create_app(config)
    router_app.user_middleware = [m for m in router_app.user_middleware if m.cls is not PredictFastPath]
    try:
        with TestClient(create_app(config)) as fast:
            admin = keys.headers("admin")
            create_metrics(fast, admin)
            for key, model in (("remote-a", "emb-a"), ("remote-b", "emb-b")):
                registered = fast.post("/v1/models", headers=admin, json={
                    "key": key, "task": "embedding", "max_batch": 4,
                    "endpoint": {"url": server.url, "protocol": "v2", "model": model, "timeout_ms": 2000}})
                assert registered.status_code == 201, registered.text
            create_experiment(fast, admin, start=True, variants=AB)
            create_experiment(fast, admin, key="drafted", variants=AB)
            with TestClient(router_app) as router:  # started after the experiments: its snapshot has them
                yield Pair(fast, router, keys, db, server.url, server, routed)
    finally:
        server.stop()


def _timed(client: TestClient) -> float:
    """``/predict``'s 200s in the latency histogram (one process-wide registry: both apps count there)."""
    match = re.search(r'titrate_request_seconds_count\{method="POST",route="/v1/experiments/\{key\}/predict",'
                      r'status="200"\} (\S+)', client.get("/metrics").text)
    return float(match.group(1)) if match else 0.0


def _same(fast: Any, router: Any) -> None:
    assert fast.status_code == router.status_code, (fast.text, router.text)
    if fast.status_code == 200:  # a success (the router reads a BOM): the same bytes but for id and latency
        assert _VOLATILE.sub(b"", fast.content) == _VOLATILE.sub(b"", router.content)
        return
    if b"circuit breaker open" in fast.content:  # each app's breaker opened at its own time
        fast_text, router_text = (_NEXT_TRIAL.sub(b"", r.content) for r in (fast, router))
        assert fast_text == router_text
        assert len(fast.content) - len(router.content) in (-1, 0, 1)
        return
    assert fast.content == router.content
    assert fast.headers.items() == router.headers.items()


def test_a_success_is_answered_beside_the_router_with_the_routes_bytes(pair: Pair) -> None:
    sdk = pair.keys.headers("sdk")
    timed = _timed(pair.fast)
    for i in range(6):
        unit, texts = f"u-{i}", [f"hello {i}", "world"]
        body: dict[str, Any] = {"unit_id": unit, "inputs": texts, "attributes": {"country": "NZ"}}
        fast, router = pair.both("/v1/experiments/ranker-v2/predict", routed=False, json=body, headers=sdk)
        assert fast.status_code == router.status_code == 200, (fast.text, router.text)
        # the same bytes but for this request's id and latency (and so its length)
        assert _VOLATILE.sub(b"", fast.content) == _VOLATILE.sub(b"", router.content)
        assert fast.headers["content-type"] == router.headers["content-type"] == "application/json"
        assert int(fast.headers["content-length"]) == len(fast.content)
        answer = fast.json()
        assert answer["variant"] == pair.remotes[0].variant_of(unit)
        assert answer["outputs"] == [fake_embedding(t) for t in texts]
        assert re.fullmatch("[0-9a-f]{32}", answer["request_id"])
    fast_remote, router_remote = pair.remotes
    fast_remote.settle()
    router_remote.settle()
    # each app logged one serving.request per call (and the exposure, one per unit), and sent one inference
    # request per call
    assert fast_remote.count(Event, Event.name == "serving.request") == 12
    assert fast_remote.count(Exposure) == 6
    calls = sum(len(pair.server.models[m].batch_sizes) for m in ("emb-a", "emb-b"))
    assert calls == 2 + 12  # the registrations' probes, then one per request
    assert _timed(pair.fast) == timed + 12, "both apps' successes are timed under the route template"


@pytest.mark.parametrize(("path", "body", "headers", "status", "routed"), [
    # refused by the route's own checks before any effect: the router answers (body replayed)
    ("ranker-v2", {"unit_id": "u", "inputs": ["a"]}, {}, 401, True),
    ("ranker-v2", {"unit_id": "u", "inputs": ["a"]}, {"Authorization": "Bearer tk_nope"}, 401, True),
    ("ranker-v2", {"unit_id": "u", "inputs": ["a"]}, {"Authorization": "Basic abc"}, 401, True),
    ("ranker-v2", {"unit_id": "u", "inputs": []}, None, 422, True),
    ("ranker-v2", {"unit_id": "", "inputs": ["a"]}, None, 422, True),
    ("ranker-v2", {"unit_id": "u", "inputs": ["a"], "extra": 1}, None, 422, True),
    ("ranker-v2", {"unit_id": "u", "inputs": ["a"], "attributes": {"x": "y" * 300}}, None, 422, True),
    ("ranker-v2", b"{", None, 422, True),
    ("ranker-v2", b"\xef\xbb\xbf" + b'{"unit_id": "u", "inputs": ["a"]}', None, None, True),
    ("ranker-v2", b'{"unit_id": "u", "inputs": ["\\ud800"]}', None, None, True),
    ("ranker-v2", b"", None, 422, True),
    ("bad key!", {"unit_id": "u", "inputs": ["a"]}, None, 422, True),
    # refused by ServingRuntime.predict: answered beside the router by the app's own handler
    ("nope", {"unit_id": "u", "inputs": ["a"]}, None, 404, False),
    ("drafted", {"unit_id": "u", "inputs": ["a"]}, None, 409, False),
    ("ranker-v2", {"unit_id": "u", "inputs": ["a"] * 5}, None, 422, False),  # more than max_batch
])
def test_every_refusal_is_the_routers_bytes(pair: Pair, path: str, body: Any, headers: dict[str, str] | None,
                                            status: int | None, routed: bool) -> None:
    sent = {"content-type": "application/json", **(pair.keys.headers("sdk") if headers is None else headers)}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    fast, router = pair.both(f"/v1/experiments/{path}/predict", routed=routed, content=content, headers=sent)
    _same(fast, router)
    if status is not None:
        assert fast.status_code == status, fast.text


def test_unusual_requests_take_the_router(pair: Pair) -> None:
    sdk = pair.keys.headers("sdk")
    body = b'{"unit_id": "u-1", "inputs": ["a"]}'
    for content_type in ("text/plain", "application/vnd.api+json"):
        fast, router = pair.both("/v1/experiments/ranker-v2/predict", routed=True, content=body,
                                 headers={**sdk, "content-type": content_type})
        assert fast.status_code == router.status_code, (fast.text, router.text)
        assert _VOLATILE.sub(b"", fast.content) == _VOLATILE.sub(b"", router.content)
    pair.routed.clear()
    assert pair.fast.get("/v1/experiments/ranker-v2/predict", headers=sdk).status_code == 405
    assert pair.routed


def test_a_dead_endpoint_gives_the_routes_503_once_per_request(pair: Pair) -> None:
    sdk = pair.keys.headers("sdk")
    unit = next(f"u-{i}" for i in range(100) if pair.remotes[0].variant_of(f"u-{i}") == "control")
    for remote in pair.remotes:
        assert remote.predict(unit, ["warm"]).status_code == 200
    pair.server.stop()  # connections refused from now on
    for _ in range(3):  # unreachable (one try and one retry), again, then the open breaker
        fast, router = pair.both("/v1/experiments/ranker-v2/predict", routed=False,
                                 json={"unit_id": unit, "inputs": ["hello"]}, headers=sdk)
        _same(fast, router)
        assert fast.status_code == 503
        assert fast.json()["detail"].startswith("model 'remote-a' failed: ")
    assert "circuit breaker open" in fast.json()["detail"]
    apps: list[Any] = [pair.fast.app, pair.router.app]
    attempts = [app.state.model_manager.variant("remote-a").endpoint_state.attempts for app in apps]
    assert attempts == [1 + 2 * 2] * 2  # never replayed: the same upstream calls as the router's
    fast_remote = pair.remotes[0]
    fast_remote.settle()
    pair.remotes[1].settle()
    assert fast_remote.count(Event, Event.name == "serving.error") == 6  # 3 per app
    assert fast_remote.count(Event, Event.name == "serving.request") == 8  # warm + 3 failures, per app
    assert fast_remote.count(Exposure) == 1  # intent to treat: the unit's exposure is logged
