"""A live titrate service (uvicorn subprocess on a temporary SQLite database) for the console tests.

The console is not a database test: one service per session, seeded once over REST with metrics, a draft, and
a running experiment with exposures and events so scorecards, decisions and allocations have something to show.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from api import migrate
from api.auth.keys import create_api_key
from api.db.engine import Database
from tests.live import LiveServer


@dataclass(frozen=True)
class Service:
    url: str
    admin_key: str
    analyst_key: str

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key or self.admin_key}"},
                            timeout=30)


def experiment_body(key: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "key": key, "name": f"Experiment {key}", "owner": "ana",
        "hypothesis": {"change": "serve ranker v2", "metric": "conversion", "direction": "increase",
                       "rationale": "fresher features"},
        "variants": [{"key": "control", "control": True, "weight": 0.5}, {"key": "v2", "weight": 0.5}],
        "metrics": {"primary": "conversion", "secondary": ["revenue"], "guardrails": [{"metric": "latency",
                                                                                       "margin": 0.05}]},
    }
    body.update(overrides)
    return body


def _seed(service: Service) -> None:
    with service.client() as http:
        for metric in (
            {"key": "conversion", "kind": "proportion", "event": "purchase", "direction": "higher_is_better"},
            {"key": "revenue", "kind": "mean", "event": "purchase", "aggregation": "sum"},
            {"key": "latency", "kind": "mean", "event": "latency_ms", "direction": "lower_is_better"},
        ):
            http.post("/v1/metrics", json=metric).raise_for_status()
        http.post("/v1/experiments", json=experiment_body("draft-exp")).raise_for_status()
        http.post("/v1/experiments", json=experiment_body("live-exp")).raise_for_status()
        http.post("/v1/experiments/live-exp/start").raise_for_status()
        assigned = {}
        for i in range(300):
            unit = f"u-{i}"
            reply = http.post("/v1/assign", json={"unit_id": unit, "experiments": ["live-exp"]})
            assigned[unit] = reply.json()["assignments"]["live-exp"]["variant"]
        time.sleep(0.5)  # exposures are written by a batched writer (flush every 0.1 s here)
        # Events after every exposure (an event before a unit's first exposure does not count).
        now = datetime.now(UTC).isoformat()
        events = []
        for i, (unit, variant) in enumerate(assigned.items()):
            if i % (3 if variant == "v2" else 5) == 0:
                events.append({"event_id": str(uuid.uuid4()), "unit_id": unit, "name": "purchase",
                               "value": 10.0 + i % 7, "timestamp": now, "attributes": {}})
            events.append({"event_id": str(uuid.uuid4()), "unit_id": unit, "name": "latency_ms",
                           "value": 100.0 + i % 13, "timestamp": now, "attributes": {}})
        http.post("/v1/events", json={"events": events}).raise_for_status()


@pytest.fixture(scope="session")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    url = f"sqlite:///{tmp_path_factory.mktemp('console-db') / 'titrate.db'}"
    migrate.upgrade(url)
    db = Database(url)
    with db.transaction() as session:
        _, admin = create_api_key(session, "admin", "console-tests-admin")
        _, analyst = create_api_key(session, "analyst", "console-tests-analyst")
    db.dispose()
    server = LiveServer(url)
    server.start()
    try:
        service = Service(server.url, admin, analyst)
        _seed(service)
        yield service
    finally:
        server.stop()


# A contextual Thompson experiment (created on demand by the ``contextual_experiment`` fixture): on each declared
# platform a different arm converts best, so after one recompute each platform has its own leader.
CONTEXT = {"attribute": "platform", "values": ["ios", "android", "web"]}
CONTEXT_LEADERS = {"ios": "b", "android": "c", "web": "control"}


def _seed_contextual(service: Service, key: str) -> None:
    arms = [{"key": "control", "control": True, "weight": 0.34}, {"key": "b", "weight": 0.33},
            {"key": "c", "weight": 0.33}]
    body = experiment_body(key, variants=arms, allocation={"strategy": "thompson", "context": CONTEXT, "floor": 0.05},
                           metrics={"primary": "conversion", "secondary": [], "guardrails": []})
    with service.client() as http:
        http.post("/v1/experiments", json=body).raise_for_status()
        http.post(f"/v1/experiments/{key}/start").raise_for_status()
        assigned: dict[str, tuple[str, str]] = {}
        for platform in CONTEXT_LEADERS:
            for i in range(60):
                unit = f"{key}-{platform}-{i}"
                reply = http.post("/v1/assign", json={"unit_id": unit, "attributes": {"platform": platform},
                                                      "experiments": [key]})
                assigned[unit] = (platform, reply.json()["assignments"][key]["variant"])
        time.sleep(0.5)  # the batched exposure writer
        now = datetime.now(UTC).isoformat()
        events = [{"event_id": str(uuid.uuid4()), "unit_id": unit, "name": "purchase", "value": 10.0,
                   "timestamp": now, "attributes": {}}
                  for i, (unit, (platform, variant)) in enumerate(assigned.items())
                  # the platform's leader converts 3 in 4 units, the other arms 1 in 10
                  if (i % 4 != 0 if variant == CONTEXT_LEADERS[platform] else i % 10 == 0)]
        http.post("/v1/events", json={"events": events}).raise_for_status()
        step = http.post(f"/v1/experiments/{key}/allocations/recompute", params={"force": "true"})
        step.raise_for_status()
        assert step.json()["context_weights"], step.json()


@pytest.fixture(scope="session")
def contextual_experiment(live_service: Service) -> str:
    """The key of a running contextual bandit whose newest allocation version has ``context_weights``."""
    _seed_contextual(live_service, "ctx-exp")
    return "ctx-exp"


SEGMENTED = "seg-exp"


@pytest.fixture(scope="session")
def segmented(live_service: Service) -> str:
    """A running A/B test whose v2 converts far better in US (600 units) and far worse in DE (300 units), so DE
    moves significantly opposite to the overall (positive) effect."""
    with live_service.client() as http:
        http.post("/v1/experiments", json=experiment_body(SEGMENTED)).raise_for_status()
        http.post(f"/v1/experiments/{SEGMENTED}/start").raise_for_status()
        assigned = {}
        for country, count in (("US", 600), ("DE", 300)):
            for i in range(count):
                unit = f"seg-{country}-{i}"
                reply = http.post("/v1/assign", json={"unit_id": unit, "attributes": {"country": country},
                                                      "experiments": [SEGMENTED]})
                assigned[unit] = (country, i, reply.json()["assignments"][SEGMENTED]["variant"])
        time.sleep(0.5)  # the batched exposure writer
        now = datetime.now(UTC).isoformat()  # after every exposure, and not after the scorecard's "now"
        events = [{"event_id": str(uuid.uuid4()), "unit_id": unit, "name": "purchase", "value": 10.0,
                   "timestamp": now, "attributes": {}}
                  for unit, (country, i, variant) in assigned.items()
                  # 4 in 5 convert where the variant is favoured (v2 in US, control in DE), 1 in 5 elsewhere
                  if (i % 5 != 0) == ((variant == "v2") == (country == "US"))]
        http.post("/v1/events", json={"events": events}).raise_for_status()
    return SEGMENTED


ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "ui" / "app.py")


@pytest.fixture
def console_env(live_service: Service, monkeypatch: pytest.MonkeyPatch) -> Service:
    """Point the console (run in-process by AppTest) at the live service. No key in the environment: each test
    signs in through the sign-in page (``sign_in``), as a person does."""
    monkeypatch.setenv("TITRATE_API_URL", live_service.url)
    monkeypatch.delenv("TITRATE_API_KEY", raising=False)
    return live_service


def sign_in(at: AppTest, key: str) -> AppTest:
    """Sign in through the sign-in page of a fresh ``AppTest`` (its first run shows that page)."""
    at.run()
    at.text_input(key="sign_in_key").input(key)
    at.button(key="FormSubmitter:sign_in-Sign in").click().run()
    return at





_browser_skips: list[str] = []


def note_browser_skip(reason: str) -> None:
    """Remember that the browser test skipped, for the loud line at the end of the run."""
    _browser_skips.append(reason)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _browser_skips:
        terminalreporter.write_sep("!", _browser_skips[0], red=True, bold=True)
