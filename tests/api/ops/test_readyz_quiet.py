"""``/readyz`` is probed every few seconds: it logs nothing of its own per call (issue 17 item 6: each call logged
alembic's "Context impl SQLiteImpl." and "Will assume non-transactional DDL."), while a migration still logs."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from api import migrate


def test_readyz_logs_no_alembic_lines(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="alembic")
    for _ in range(3):
        assert client.get("/readyz").json()["status"] == "ok"
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []


def test_a_migration_still_logs(tmp_path: object, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="alembic")
    migrate.upgrade(f"sqlite:///{tmp_path}/m.db")
    assert any(r.name.startswith("alembic") and "Running upgrade" in r.getMessage() for r in caplog.records)
