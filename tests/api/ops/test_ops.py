"""Operability: health, readiness, Prometheus metrics, CLI."""

from __future__ import annotations

import os
import subprocess
import sys

from fastapi.testclient import TestClient

from api import migrate
from api.db.engine import Database
from tests.conftest import Keys
from tests.factories import create_experiment, create_metrics


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["schema"] == migrate.head_revision()


def test_readiness_fails_when_schema_is_behind(client: TestClient, db: Database) -> None:
    migrate.downgrade(db.url, "base")
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "titrate migrate" in response.json()["schema"]
    finally:
        migrate.upgrade(db.url)


def test_prometheus_metrics_count_what_happened(client: TestClient, keys: Keys) -> None:
    admin, sdk = keys.headers("admin"), keys.headers("sdk")
    create_metrics(client, admin)
    create_experiment(client, admin, start=True)
    client.post("/v1/assign", json={"unit_id": "metrics-u"}, headers=sdk)
    client.post("/v1/events", json={"events": [{"event_id": "m1", "unit_id": "u", "name": "n",
                                               "timestamp": "2026-11-23T10:00:00Z"}]}, headers=sdk)
    text = client.get("/metrics").text
    assert 'titrate_request_seconds_count{method="POST",route="/v1/assign",status="200"}' in text
    assert 'titrate_assignments_total{experiment="ranker-v2"}' in text
    for name in ("titrate_exposures_queued_total", "titrate_exposures_written_total",
                 "titrate_events_accepted_total", "titrate_events_duplicate_total"):
        assert name in text


def test_cli_migrate_and_keys_create(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    env = {**os.environ, "TITRATE_DATABASE_URL": url}
    cli = [sys.executable, "-m", "api.cli"]
    done = subprocess.run([*cli, "migrate"], env=env, capture_output=True, text=True, check=True)
    assert migrate.head_revision() in done.stdout
    key = subprocess.run([*cli, "keys", "create", "--role", "analyst"], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert key.startswith("tk_")
    bad = subprocess.run([*cli, "keys", "create", "--role", "root"], env=env, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "role" in bad.stderr
    db = Database(url)
    from api.auth.keys import find_principal

    with db.read() as session:
        principal = find_principal(session, key)
    db.dispose()
    assert principal is not None
    assert principal.role == "analyst"


def test_cli_keys_revoke(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    env = {**os.environ, "TITRATE_DATABASE_URL": url}
    cli = [sys.executable, "-m", "api.cli"]
    subprocess.run([*cli, "migrate"], env=env, capture_output=True, text=True, check=True)
    sdk_key = subprocess.run([*cli, "keys", "create", "--role", "sdk", "--name", "leaked"], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
    admin_key = subprocess.run([*cli, "keys", "create", "--role", "admin"], env=env, capture_output=True, text=True,
                               check=True).stdout.strip()
    db = Database(url)
    from api.auth.keys import find_principal

    with db.read() as session:
        sdk_principal, admin_principal = find_principal(session, sdk_key), find_principal(session, admin_key)
    assert sdk_principal is not None
    assert admin_principal is not None
    done = subprocess.run([*cli, "keys", "revoke", "--id", str(sdk_principal.key_id)], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "leaked, sdk) revoked at" in done.stdout
    last_admin = subprocess.run([*cli, "keys", "revoke", "--id", str(admin_principal.key_id)], env=env,
                                capture_output=True, text=True)
    assert last_admin.returncode == 1
    assert "last active admin key" in last_admin.stderr
    missing = subprocess.run([*cli, "keys", "revoke", "--id", "999"], env=env, capture_output=True, text=True)
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    with db.read() as session:
        assert find_principal(session, sdk_key) is None
        assert find_principal(session, admin_key) is not None
    db.dispose()
