"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``TITRATE_TEST_POSTGRES_URL`` (``.ci/run`` starts one). Without it the PostgreSQL
half is skipped — loudly, in the header and the summary — unless ``TITRATE_REQUIRE_POSTGRES=1`` (CI), where
its absence fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text

from api import migrate
from api.app import create_app
from api.auth.keys import create_api_key
from api.db.base import Base
from api.db.engine import Database, normalise_url
from api.settings import Settings

POSTGRES_URL = os.environ.get("TITRATE_TEST_POSTGRES_URL", "")
REQUIRE_POSTGRES = os.environ.get("TITRATE_REQUIRE_POSTGRES") == "1"
BACKENDS = ("sqlite", "postgresql")
_skipped_postgres: list[str] = []


def pytest_report_header(config: pytest.Config) -> str:
    if POSTGRES_URL:
        return f"titrate: database tests on SQLite and PostgreSQL ({POSTGRES_URL})"
    return ("titrate: !!! TITRATE_TEST_POSTGRES_URL is not set — the PostgreSQL half of the database tests "
            "WILL BE SKIPPED (run `.ci/run` or export TITRATE_TEST_POSTGRES_URL) !!!")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skipped_postgres:
        terminalreporter.write_sep(
            "!", "the PostgreSQL half of the database tests was SKIPPED: set TITRATE_TEST_POSTGRES_URL",
            red=True, bold=True,
        )


def _private_postgres_database(url: str) -> tuple[str, Callable[[], None]]:
    """A fresh database on the server of ``url`` for this pytest process (concurrent runs never collide);
    returns its URL and a function that drops it."""
    base = make_url(normalise_url(url))
    name = f"{base.database}_{os.getpid()}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def _drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), _drop


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database of each backend, shared by the session (tables are emptied after each test)."""
    drop: Callable[[], None] | None = None
    if request.param == "postgresql":
        if not POSTGRES_URL:
            if REQUIRE_POSTGRES:
                pytest.fail("TITRATE_REQUIRE_POSTGRES=1 but TITRATE_TEST_POSTGRES_URL is not set")
            _skipped_postgres.append(request.node.nodeid)
            pytest.skip("PostgreSQL half skipped: TITRATE_TEST_POSTGRES_URL is not set")
        url, drop = _private_postgres_database(POSTGRES_URL)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'titrate.db'}"
    migrate.upgrade(url)
    yield url
    if drop is not None:
        drop()


def _empty_tables(db: Database) -> None:
    names = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name != "config_version"]
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
        else:
            for name in names:
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The test database, emptied after the test."""
    database = Database(database_url)
    try:
        yield database
    finally:
        try:
            _empty_tables(database)
        finally:  # a failed TRUNCATE must not leak the pool's connections into a later test's garbage collection
            database.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings pointing at the test database, with quick background loops."""
    return Settings(database_url=database_url, log_json=False, exposure_flush_seconds=0.05,
                    config_refresh_seconds=0.2, api_key_cache_seconds=30)


@dataclass(frozen=True)
class Keys:
    """One API key per role."""

    sdk: str
    analyst: str
    admin: str

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}


@pytest.fixture
def keys(db: Database) -> Keys:
    """Fresh keys for each role."""
    with db.transaction() as session:
        secrets = {role: create_api_key(session, role, f"test-{role}")[1] for role in ("sdk", "analyst", "admin")}
    return Keys(**secrets)


@pytest.fixture
def client(db: Database, settings: Settings) -> Iterator[TestClient]:
    """The app, started (lifespan) against the test database."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
