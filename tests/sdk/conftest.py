"""A stand-in titrate service for SDK tests: a real HTTP server on 127.0.0.1 in a thread.

It implements just the SDK's side of the REST contract — ``GET /v1/sdk/config`` (ETag / 304),
``POST /v1/events`` (de-duplicated by ``event_id``), ``POST /v1/exposures``, ``POST /v1/assign`` (answered
with the server's own ``bandits.bucketing``) — and can be stopped and restarted on the same port to
simulate an outage. It speaks HTTP/1.0, so every request opens a new connection and a stopped server
really refuses everything.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bandits.bucketing import assign, experiment_config_from_document


def experiment_doc(key: str = "exp", **overrides: Any) -> dict[str, Any]:
    """One experiment of the config document (spec §4) with 50/50 control/treatment by default."""
    doc: dict[str, Any] = {
        "key": key,
        "salt": key,
        "status": "running",
        "type": "ab",
        "traffic": 1.0,
        "layer": None,
        "layer_start": None,
        "layer_end": None,
        "targeting": [],
        "allocation_version": 1,
        "control": "control",
        "shipped_variant": None,
        "variants": [
            {"key": "control", "weight": 0.5, "payload": {}},
            {"key": "treatment", "weight": 0.5, "payload": {"threshold": 0.4}},
        ],
    }
    doc.update(overrides)
    return doc


def config_doc(*experiments: dict[str, Any], version: int = 1) -> dict[str, Any]:
    """A full ``/v1/sdk/config`` document."""
    return {
        "version": version,
        "generated_at": "2026-11-23T10:00:00Z",
        "buckets": 10000,
        "spec_version": 1,
        "experiments": list(experiments),
    }


class StandIn:
    """State and control of the stand-in service."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version = 1
        self.experiments: list[dict[str, Any]] = [experiment_doc()]
        self.raw_config: bytes | None = None  # when set, served verbatim (garbage tests)
        self.events: dict[str, dict[str, Any]] = {}
        self.event_posts: list[int] = []  # batch sizes
        self.duplicates = 0
        self.exposures: list[dict[str, Any]] = []
        self.config_200 = 0
        self.config_304 = 0
        self.auth: set[str] = set()
        self.fail_posts: list[int] = []  # statuses returned to the next POSTs, in order
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_experiments(self, *experiments: dict[str, Any]) -> None:
        with self.lock:
            self.experiments = list(experiments)
            self.version += 1

    def start(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02})
        self.thread.daemon = True
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            assert self.thread is not None
            self.thread.join()
            self.server = None


def _handler(state: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
            pass

        def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
            data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            state.auth.add(self.headers.get("Authorization", ""))
            if self.path != "/v1/sdk/config":
                self._reply(404, {"detail": "not found"})
                return
            with state.lock:
                etag = f'"{state.version}"'
                if state.raw_config is not None:
                    self._reply(200, state.raw_config, {"ETag": etag})
                    return
                if self.headers.get("If-None-Match") == etag:
                    state.config_304 += 1
                    self._reply(304, headers={"ETag": etag})
                    return
                state.config_200 += 1
                doc = config_doc(*state.experiments, version=state.version)
            self._reply(200, doc, {"ETag": etag})

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            state.auth.add(self.headers.get("Authorization", ""))
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            with state.lock:
                if state.fail_posts:
                    status = state.fail_posts.pop(0)
                    self._reply(status, {"detail": "injected"}, {"Retry-After": "0"} if status == 429 else None)
                    return
                if self.path == "/v1/events":
                    accepted = duplicates = 0
                    state.event_posts.append(len(body["events"]))
                    for event in body["events"]:
                        if event["event_id"] in state.events:
                            duplicates += 1
                        else:
                            state.events[event["event_id"]] = event
                            accepted += 1
                    state.duplicates += duplicates
                    self._reply(200, {"accepted": accepted, "duplicates": duplicates})
                elif self.path == "/v1/exposures":
                    state.exposures.extend(body["exposures"])
                    self._reply(200, {"accepted": len(body["exposures"])})
                elif self.path == "/v1/assign":
                    out = {}
                    for doc in state.experiments:
                        if body.get("experiments") is not None and doc["key"] not in body["experiments"]:
                            continue
                        result = assign(experiment_config_from_document(doc), body["unit_id"], body["attributes"])
                        if result is not None:
                            out[doc["key"]] = {
                                "variant": result.variant,
                                "payload": dict(result.payload),
                                "allocation_version": result.allocation_version,
                            }
                    self._reply(200, {"assignments": out})
                else:
                    self._reply(404, {"detail": "not found"})

    return Handler


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """A running stand-in service, stopped after the test."""
    state = StandIn()
    state.start()
    try:
        yield state
    finally:
        state.stop()


@pytest.fixture
def make_experiment() -> Any:
    """The :func:`experiment_doc` factory (importlib mode: test modules cannot import conftest)."""
    return experiment_doc


@pytest.fixture
def make_config() -> Any:
    """The :func:`config_doc` factory."""
    return config_doc
