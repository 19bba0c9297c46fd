"""The console's REST client: httpx against the titrate service, nothing of the service's internals.

Every call returns a :class:`Reply` instead of raising on HTTP errors, so pages can show a refusal next to the
field it names (422), a "not available yet" note (404 from a route that has not landed), or the rule broken (409).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class FieldError:
    """One validation error: where (``loc`` without the leading ``"body"``) and what."""

    path: tuple[str | int, ...]
    msg: str

    @property
    def dotted(self) -> str:
        """The location joined with dots (``"hypothesis.metric"``); empty for the whole body."""
        return ".".join(str(p) for p in self.path)


@dataclass(frozen=True)
class Reply:
    """The outcome of one request: HTTP status, decoded JSON body (or ``None``), and a transport error if any."""

    status: int
    data: Any = None
    error: str | None = None
    field_errors: list[FieldError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx (a transport error has status 0, so is never ok)."""
        return 200 <= self.status < 300

    @property
    def missing(self) -> bool:
        """404: an unknown key, or a route this service does not have yet."""
        return self.status == 404

    @property
    def message(self) -> str:
        """A human sentence for a refusal."""
        if self.error:
            return self.error
        detail = self.data.get("detail") if isinstance(self.data, dict) else self.data
        if isinstance(detail, list):
            return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:]) or 'body'}: {e.get('msg')}"
                             for e in detail if isinstance(e, dict))
        if isinstance(detail, dict) and "message" in detail:  # a ship refusal: message plus the reasons
            reasons = " ".join(str(r) for r in detail.get("reasons") or [])
            return f"HTTP {self.status}: {detail['message']} {reasons}".strip()
        return f"HTTP {self.status}: {detail}"


def _field_errors(status: int, data: Any) -> list[FieldError]:
    if status != 422 or not isinstance(data, dict) or not isinstance(data.get("detail"), list):
        return []
    errors = []
    for item in data["detail"]:
        if not isinstance(item, dict):
            continue
        loc = list(item.get("loc") or [])
        if loc and loc[0] == "body":
            loc = loc[1:]
        msg = str(item.get("msg", "invalid"))
        errors.append(FieldError(tuple(loc), msg.removeprefix("Value error, ")))
    return errors


def api_url_from_env() -> str:
    """The service's base URL: ``TITRATE_API_URL`` (default ``http://127.0.0.1:8000``). Never a key: each person
    signs in with their own (``ui.auth``)."""
    return os.environ.get("TITRATE_API_URL", DEFAULT_URL).rstrip("/")


def make_http(base_url: str, timeout: float = 15.0, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """The connection pool every console session shares: no credentials in it (each request carries its own)."""
    return httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)


class TitrateClient:
    """The REST calls of one signed-in person: a shared, credential-free ``httpx.Client`` (thread-safe) plus that
    person's API key, sent with each request and never kept anywhere else (``ui.auth`` holds it in their session).
    """

    def __init__(self, http: httpx.Client, api_key: str) -> None:
        self._http = http
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = str(http.base_url).rstrip("/")

    def __repr__(self) -> str:  # never the key
        return f"TitrateClient({self.base_url!r})"

    def request(self, method: str, path: str, *, json: Any = None, params: Any = None) -> Reply:
        """Sends one request with this person's key; returns a ``Reply`` (status 0 when unreachable), never raises."""
        try:
            response = self._http.request(method, path, json=json, params=params, headers=self._headers)
        except httpx.HTTPError as exc:
            return Reply(status=0, error=f"cannot reach the service at {self.base_url}: {exc}")
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = response.text
        return Reply(status=response.status_code, data=data,
                     field_errors=_field_errors(response.status_code, data))

    def get(self, path: str, **params: Any) -> Reply:
        """``GET path`` with the non-``None`` keyword arguments as query parameters."""
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None} or None)

    def post(self, path: str, body: Any = None) -> Reply:
        """``POST path`` with ``body`` as JSON."""
        return self.request("POST", path, json=body)

    # The REST contract (DESIGN.md), one method per route the console uses.
    def health(self) -> Reply:
        """``GET /healthz``: the service's liveness."""
        return self.get("/healthz")

    def whoami(self) -> Reply:
        """``GET /v1/keys/me``: the key's ``name``, ``role``, ``prefix`` and audit ``actor``."""
        return self.get("/v1/keys/me")

    def metrics(self) -> Reply:
        """``GET /v1/metrics``: the metrics catalog."""
        return self.get("/v1/metrics")

    def create_metric(self, body: dict[str, Any]) -> Reply:
        """``POST /v1/metrics``: registers a metric definition."""
        return self.post("/v1/metrics", body)

    def experiments(self, status: list[str] | None = None) -> Reply:
        """``GET /v1/experiments``, optionally only those in the given statuses."""
        return self.get("/v1/experiments", status=status or None)

    def experiment(self, key: str) -> Reply:
        """``GET /v1/experiments/{key}``: one experiment with its plan and status."""
        return self.get(f"/v1/experiments/{key}")

    def create_experiment(self, body: dict[str, Any]) -> Reply:
        """``POST /v1/experiments``: registers an experiment (a draft)."""
        return self.post("/v1/experiments", body)

    def transition(self, key: str, action: str, body: dict[str, Any] | None = None) -> Reply:
        """``POST /v1/experiments/{key}/{action}``: a lifecycle transition (start, pause, ship, ...)."""
        return self.post(f"/v1/experiments/{key}/{action}", body)

    def audit(self, key: str) -> Reply:
        """``GET /v1/experiments/{key}/audit``: the experiment's audit trail."""
        return self.get(f"/v1/experiments/{key}/audit")

    def allocations(self, key: str) -> Reply:
        """``GET /v1/experiments/{key}/allocations``: the history of variant weights."""
        return self.get(f"/v1/experiments/{key}/allocations")

    def scorecard(self, key: str, as_of: str | None = None, segment: str | None = None,
                  fresh: bool = False) -> Reply:
        """``GET /v1/experiments/{key}/scorecard``, now or ``as_of`` an ISO timestamp; ``segment``: broken down by
        that exposure attribute; ``fresh``: recomputed now rather than read from the last refresh (analyst)."""
        return self.get(f"/v1/experiments/{key}/scorecard", as_of=as_of, segment=segment,
                        fresh="true" if fresh else None)

    def sources(self) -> Reply:
        """``GET /v1/sources``: the analysis sources an experiment may name (``"analysis": {"source": key}``)."""
        return self.get("/v1/sources")

    def decision(self, key: str) -> Reply:
        """``GET /v1/experiments/{key}/decision``: the ship/no-ship recommendation."""
        return self.get(f"/v1/experiments/{key}/decision")

    def design(self, body: dict[str, Any]) -> Reply:
        """``POST /v1/design``: sample size, total units and duration for a planned test."""
        return self.post("/v1/design", body)

    def models(self) -> Reply:
        """``GET /v1/models``: the registered model variants."""
        return self.get("/v1/models")

    def create_model(self, body: dict[str, Any]) -> Reply:
        """``POST /v1/models``: registers a model variant."""
        return self.post("/v1/models", body)

    def serving(self, key: str) -> Reply:
        """``GET /v1/experiments/{key}/serving``: per-variant latency, errors, output drift and shadow agreement."""
        return self.get(f"/v1/experiments/{key}/serving")
