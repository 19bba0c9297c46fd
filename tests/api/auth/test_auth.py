"""The auth matrix: every route × role gives the documented 2xx / 401 / 403."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Keys
from tests.factories import METRICS, create_experiment, create_metrics, experiment_body, register_model

ROLES = ("sdk", "analyst", "admin")
# (method, path, body, minimum role); paths use experiment "ranker-v2" which exists (draft or running).
ROUTES: list[tuple[str, str, object, str]] = [
    ("POST", "/v1/assign", {"unit_id": "u"}, "sdk"),
    ("POST", "/v1/events", {"events": [{"event_id": "x", "unit_id": "u", "name": "n", "value": 1,
                                         "timestamp": "2026-11-23T10:00:00Z"}]}, "sdk"),
    ("POST", "/v1/exposures", {"exposures": [{"experiment": "ranker-v2", "unit_id": "u", "variant": "v2",
                                              "timestamp": "2026-11-23T10:00:00Z"}]}, "sdk"),
    ("GET", "/v1/sdk/config", None, "sdk"),
    ("GET", "/v1/metrics", None, "analyst"),
    ("GET", "/v1/metrics/conversion", None, "analyst"),
    ("POST", "/v1/metrics", {**METRICS["conversion"], "key": "conv-{role}"}, "analyst"),
    ("GET", "/v1/experiments", None, "analyst"),
    ("GET", "/v1/experiments/ranker-v2", None, "analyst"),
    ("GET", "/v1/experiments/ranker-v2/audit", None, "analyst"),
    ("GET", "/v1/experiments/ranker-v2/allocations", None, "analyst"),
    ("POST", "/v1/experiments/ranker-v2/allocations/recompute", None, "admin"),
    ("POST", "/v1/experiments", experiment_body(key="draft-{role}"), "analyst"),
    ("PATCH", "/v1/experiments/ranker-v2", {"owner": "bo"}, "analyst"),
    ("POST", "/v1/experiments/ranker-v2/pause", None, "admin"),
    ("POST", "/v1/experiments/ranker-v2/resume", None, "admin"),
    ("POST", "/v1/experiments/ranker-v2/ship", {"variant": "v2", "override_reason": "auth test"}, "admin"),
    ("GET", "/v1/experiments/ranker-v2/scorecard", None, "analyst"),
    ("GET", "/v1/experiments/ranker-v2/decision", None, "analyst"),
    ("POST", "/v1/design", {"kind": "proportion", "baseline": 0.1, "mde": 0.05, "daily_units": 1000}, "analyst"),
    ("GET", "/v1/keys/me", None, "sdk"),
    ("GET", "/v1/keys", None, "admin"),
    ("GET", "/v1/dead-letters", None, "admin"),
    ("GET", "/v1/sources", None, "analyst"),
    ("POST", "/v1/keys", {"role": "sdk", "name": "n"}, "admin"),
    ("GET", "/v1/models", None, "analyst"),
    ("GET", "/v1/models/tiny", None, "analyst"),
    ("POST", "/v1/models", {"key": "m-{role}", "task": "text-classification", "path": "{model_dir}",
                            "dtype": "float32", "device": "cpu"}, "analyst"),
    ("POST", "/v1/experiments/served/predict", {"unit_id": "u-1", "inputs": ["hello world"]}, "sdk"),
    ("GET", "/v1/experiments/served/serving", None, "analyst"),
    ("GET", "/v1/experiments/ranker-v2/scorecard", None, "analyst"),
    ("GET", "/v1/experiments/ranker-v2/decision", None, "analyst"),
    ("GET", "/v1/scorecards?metric=conversion", None, "analyst"),
    ("POST", "/v1/design", {"kind": "proportion", "baseline": 0.1, "mde": 0.05, "alpha": 0.05, "power": 0.8,
                            "variants": 2, "daily_units": 20000}, "analyst"),
]
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
RANK = {role: i for i, role in enumerate(ROLES)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.factories.models import make_tiny_bert

    return str(make_tiny_bert(tmp_path_factory.mktemp("auth-model"), "text-classification"))


def _body(body: object, role: str, model_dir: str = "") -> object:
    if isinstance(body, dict):
        return {k: (v.replace("{role}", role).replace("{model_dir}", model_dir) if isinstance(v, str) else v)
                for k, v in body.items()}
    return body


def _template(path: str) -> str:
    path = path.split("?")[0]
    for concrete, template in (("/ranker-v2", "/{key}"), ("/served", "/{key}"), ("/conversion", "/{key}"),
                               ("/tiny", "/{key}")):
        path = path.replace(concrete, template)
    return path


def test_the_matrix_covers_every_route(client: TestClient) -> None:
    documented = {(method.upper(), path) for path, item in client.app.openapi()["paths"].items()  # type: ignore[attr-defined]
                  for method in item}
    covered = {(method, _template(path)) for method, path, _, _ in ROUTES} | PUBLIC
    covered |= {("POST", "/v1/experiments/{key}/start"), ("POST", "/v1/experiments/{key}/stop"),
                ("POST", "/v1/experiments/{key}/rollback")}  # admin lifecycle, checked in test_admin_lifecycle_routes
    covered |= {("DELETE", "/v1/keys/{key_id}")}  # checked in test_revoking_a_key_refuses_it_at_once
    # a registered source (a DuckDB file with mapped tables) is needed: tests/api/sources/test_sources.py checks
    # these roles (analyst reads, admin registers and deletes)
    covered |= {("POST", "/v1/sources"), ("GET", "/v1/sources/{key}"), ("DELETE", "/v1/sources/{key}")}
    assert documented - covered == set(), "routes missing from the auth matrix"


@pytest.mark.parametrize("action", ["start", "stop", "rollback"])
def test_admin_lifecycle_routes(client: TestClient, keys: Keys, action: str) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    create_experiment(client, admin, start=action != "start")
    body = {"reason": "r"} if action == "rollback" else None
    path = f"/v1/experiments/ranker-v2/{action}"
    assert client.post(path, json=body).status_code == 401
    for role in ("sdk", "analyst"):
        assert client.post(path, json=body, headers=keys.headers(role)).status_code == 403
    assert client.post(path, json=body, headers=admin).status_code == 200


@pytest.mark.parametrize(("method", "path", "body", "minimum"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_route_by_role(client: TestClient, keys: Keys, model_dir: str, method: str, path: str, body: object,
                      minimum: str) -> None:
    admin = keys.headers("admin")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True)
    if "/models" in path or "/served" in path:
        register_model(client, admin, "tiny", model_dir)
        create_experiment(client, admin, start=True, key="served", variants=[
            {"key": "control", "control": True, "weight": 0.5, "model": "tiny"},
            {"key": "v2", "weight": 0.5, "model": "tiny"}])
    if path.endswith("/resume"):
        client.post("/v1/experiments/ranker-v2/pause", headers=admin)
    assert client.request(method, path, json=_body(body, "none", model_dir)).status_code == 401
    bogus = {"Authorization": "Bearer tk_not-a-key"}
    assert client.request(method, path, json=_body(body, "bogus", model_dir), headers=bogus).status_code == 401
    for role in ROLES:
        response = client.request(method, path, json=_body(body, role, model_dir), headers=keys.headers(role))
        if RANK[role] >= RANK[minimum]:
            assert 200 <= response.status_code < 300, (role, response.status_code, response.text)
            if method == "POST" and path.endswith(("/pause", "/resume", "/ship")):
                break  # the transition happened; repeating it would be a 409, not an auth answer
        else:
            assert response.status_code == 403, (role, response.text)
            assert minimum in response.json()["detail"]


def test_keys_me_names_the_calling_key_and_its_role(client: TestClient, keys: Keys) -> None:
    """``GET /v1/keys/me`` (the console's sign-in check): the caller's own name, role and audit actor."""
    for role in ROLES:
        me = client.get("/v1/keys/me", headers=keys.headers(role))
        assert me.status_code == 200, me.text
        body = me.json()
        assert (body["name"], body["role"]) == (f"test-{role}", role)
        assert getattr(keys, role).startswith(body["prefix"])
        assert body["actor"] == f"test-{role} ({body['prefix']}…)"
        assert getattr(keys, role) not in me.text


def test_keys_never_appear_in_logs(client: TestClient, keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/v1/assign", json={"unit_id": "u"}, headers=keys.headers("sdk"))
    client.get("/v1/keys", headers=keys.headers("sdk"))
    created = client.post("/v1/keys", json={"role": "sdk"}, headers=keys.headers("admin")).json()["key"]
    text = caplog.text
    for secret in (keys.sdk, keys.admin, created):
        assert secret not in text


def test_revoked_and_unknown_keys_are_401(client: TestClient, keys: Keys) -> None:
    response = client.get("/v1/metrics", headers={"Authorization": "Basic abc"})
    assert response.status_code in (401, 403)
    assert client.get("/v1/metrics", headers={"Authorization": "Bearer "}).status_code == 401


def test_revoking_a_key_refuses_it_at_once(client: TestClient, keys: Keys) -> None:
    admin = keys.headers("admin")
    created = client.post("/v1/keys", json={"role": "sdk", "name": "to-revoke"}, headers=admin).json()
    victim = {"Authorization": f"Bearer {created['key']}"}
    assert client.get("/v1/sdk/config", headers=victim).status_code == 200  # verified and cached
    path = f"/v1/keys/{created['id']}"
    assert client.delete(path).status_code == 401
    for role in ("sdk", "analyst"):
        assert client.delete(path, headers=keys.headers(role)).status_code == 403
    revoked = client.delete(path, headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    assert revoked.json()["already_revoked"] is False
    assert client.get("/v1/sdk/config", headers=victim).status_code == 401  # not after the cache's 30 s: now
    again = client.delete(path, headers=admin)  # idempotent
    assert (again.status_code, again.json()["revoked_at"]) == (200, revoked.json()["revoked_at"])
    assert again.json()["already_revoked"] is True  # says so (issue 17)
    listed = {k["id"]: k for k in client.get("/v1/keys", headers=admin).json()}
    assert listed[created["id"]]["revoked_at"] == revoked.json()["revoked_at"]
    assert client.delete("/v1/keys/999999", headers=admin).status_code == 404
    response = client.delete("/v1/keys/0", headers=admin)
    assert response.status_code == 422
    assert "key_id" in str(response.json()["detail"])


def test_the_last_active_admin_key_cannot_be_revoked(client: TestClient, keys: Keys) -> None:
    first = keys.headers("admin")
    second = client.post("/v1/keys", json={"role": "admin", "name": "second-admin"}, headers=first).json()
    ids = {k["name"]: k["id"] for k in client.get("/v1/keys", headers=first).json()}
    second_headers = {"Authorization": f"Bearer {second['key']}"}
    assert client.delete(f"/v1/keys/{ids['test-admin']}", headers=second_headers).status_code == 200
    last = client.delete(f"/v1/keys/{second['id']}", headers=second_headers)
    assert last.status_code == 409
    assert "last active admin key" in last.json()["detail"]
    assert client.get("/v1/keys", headers=second_headers).status_code == 200  # still in
